"""The audit trail's hash chain: hashing and verification, with no SQL.

Every review and execution record of a decision carries ``seq`` (its place in
the decision's chain, from 1), ``prev_hash`` (the previous record's hash, or a
genesis value derived from the decision ID for the first) and ``record_hash``
(SHA-256 over the canonical form of the record's content, its table, its place
and ``prev_hash``). Editing a row's content, deleting a row or moving one then
shows as a broken link, unless whoever did it also recomputed every later hash
and the head: only a head hash anchored outside the database (``head_digest``)
catches that. A chain deleted whole, or cut back with its head, links perfectly:
``hitl.chain_expectations`` holds it against the decision's final record.
``hitl.store`` appends under a per-decision head row; this module is shared by
the store, the 0003 migration's backfill and ``hitl audit verify``.

The content fields per table are frozen here as version 1 rather than read from
the models: a column added later must not silently change old records' hashes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from itertools import groupby
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

CHAIN_VERSION = "hitl-audit-chain/v1"
REVIEWS = "reviews"
EXECUTIONS = "executions"

FieldKind = Literal["str", "int", "float", "bool", "datetime"]

# Content fields hashed per table, in the order they are serialized.
CHAINED_FIELDS: dict[str, tuple[tuple[str, FieldKind], ...]] = {
    REVIEWS: (
        ("decision_id", "str"), ("request_id", "str"), ("task_type", "str"),
        ("reviewer", "str"), ("verdict", "str"), ("accepted", "bool"), ("refusal", "str"),
        ("reason", "str"), ("correct_answer", "str"), ("error_category", "str"),
        ("edited", "bool"), ("flag_for_monitoring", "bool"), ("model_confidence", "float"),
        ("zone", "str"), ("risk", "str"), ("latency_seconds", "float"),
        ("time_on_page_seconds", "float"), ("reviewed_at", "datetime"),
    ),
    EXECUTIONS: (
        ("decision_id", "str"), ("phase", "str"), ("executor", "str"),
        ("action_type", "str"), ("idempotency_key", "str"), ("target_url", "str"),
        ("status_code", "int"), ("output", "str"), ("params_json", "str"),
        ("executed_at", "datetime"),
    ),
}
# The column that orders a table's rows in time, for the migration's backfill.
RECORDED_AT = {REVIEWS: "reviewed_at", EXECUTIONS: "executed_at"}


def genesis_hash(decision_id: str) -> str:
    """What the first record of a decision links to: fixed per decision, so a
    chain cannot be moved to another decision or restarted with other content."""
    return _sha256(f"{CHAIN_VERSION}/genesis\n{decision_id}")


def _canonical_value(kind: FieldKind, value: Any) -> Any:
    # Databases hand values back in their own types (SQLite 0/1 for booleans, an
    # int where a float was written); the hash must not depend on the round trip.
    if value is None:
        return None
    if kind == "datetime":
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        # A naive value is refused by the store's column type when written.
        return (value.astimezone(UTC) if value.utcoffset() is not None else value).isoformat(
            timespec="microseconds")
    if kind == "float":
        return float(value)
    if kind == "int":
        return int(value)
    if kind == "bool":
        return bool(value)
    return str(value)


def canonical_content(table: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The hashed fields of one row of ``table``, normalized; a missing field is
    an error rather than a silent ``None``."""
    try:
        fields = CHAINED_FIELDS[table]
    except KeyError:
        raise ValueError(f"table {table!r} is not chained") from None
    return {name: _canonical_value(kind, values[name]) for name, kind in fields}


def record_hash(*, table: str, seq: int, prev_hash: str, content: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the record's table, place, link and canonical content."""
    body = {"v": CHAIN_VERSION, "table": table, "seq": seq, "prev_hash": prev_hash,
            "content": canonical_content(table, content)}
    return _sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainRecord:
    """One stored row as the verifier sees it; link fields are ``None`` on a row
    written outside the chain."""

    table: str
    row_id: int
    decision_id: str
    seq: int | None
    prev_hash: str | None
    record_hash: str | None
    content: Mapping[str, Any]
    recorded_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ChainHead:
    decision_id: str
    seq: int
    head_hash: str


@dataclass(frozen=True, slots=True)
class ChainLink:
    """Where a record goes in its chain (the backfill's output)."""

    table: str
    row_id: int
    seq: int
    prev_hash: str
    record_hash: str


def build_chain(decision_id: str, records: Iterable[ChainRecord]) -> list[ChainLink]:
    """Chain unlinked records in a deterministic order: time, then table, then id.

    Used once, by the migration, for rows written before the chain existed;
    afterwards the store links each record as it is appended.
    """
    def order(record: ChainRecord) -> tuple[str, str, int]:
        when = record.recorded_at
        stamp = when.astimezone(UTC).isoformat() if when and when.utcoffset() is not None \
            else (when.isoformat() if when else "")
        return stamp, record.table, record.row_id

    links: list[ChainLink] = []
    prev = genesis_hash(decision_id)
    for seq, record in enumerate(sorted(records, key=order), start=1):
        digest = record_hash(table=record.table, seq=seq, prev_hash=prev, content=record.content)
        links.append(ChainLink(table=record.table, row_id=record.row_id, seq=seq,
                               prev_hash=prev, record_hash=digest))
        prev = digest
    return links


class BreakKind(StrEnum):
    EDITED = "edited"  # content (or its place) changed after it was hashed
    DELETED = "deleted"  # a record the chain or its head expects is gone
    REORDERED = "reordered"  # a record does not link to the one before it
    FORKED = "forked"  # two records claim the same place
    UNCHAINED = "unchained"  # a record with no link at all
    HEAD = "head"  # the head row disagrees with the last record


class ChainBreak(BaseModel):
    """One broken link, naming the row (``table``/``row_id``) where there is one."""

    model_config = ConfigDict(frozen=True)

    decision_id: str
    kind: BreakKind
    table: str | None = None
    row_id: int | None = None
    seq: int | None = None
    detail: str

    def describe(self) -> str:
        if self.table and self.row_id is not None:
            where = f"{self.table} row {self.row_id}"
        elif self.table:  # a row the decision's record says must exist (hitl.chain_expectations)
            where = self.table
        else:
            where = "chain head" if self.seq is not None or self.kind is BreakKind.HEAD \
                else "audit chain"
        place = f", seq {self.seq}" if self.seq is not None else ""
        return f"{where} (decision {self.decision_id}{place}): {self.kind.value}: {self.detail}"


def _break(record: ChainRecord, kind: BreakKind, detail: str) -> ChainBreak:
    return ChainBreak(decision_id=record.decision_id, kind=kind, table=record.table,
                      row_id=record.row_id, seq=record.seq, detail=detail)


def _check(record: ChainRecord, prev_hash: str, prev_name: str,
           expected: int) -> list[ChainBreak]:
    """The breaks at one record, given the link and place the chain expects of it."""
    assert record.seq is not None and record.record_hash is not None  # chained records only
    breaks: list[ChainBreak] = []
    own_hash = record_hash(table=record.table, seq=record.seq,
                           prev_hash=record.prev_hash or "", content=record.content)
    if own_hash != record.record_hash:
        breaks.append(_break(record, BreakKind.EDITED,
                             "record_hash does not match the row's content and place: "
                             "the row was changed after it was written"))
    if record.seq < expected:
        breaks.append(_break(record, BreakKind.FORKED,
                             f"seq {record.seq} is already taken by {prev_name}"))
    elif record.seq > expected:
        missing = (f"seq {expected}" if record.seq == expected + 1
                   else f"seq {expected}-{record.seq - 1}")
        breaks.append(_break(record, BreakKind.DELETED,
                             f"{missing} before this row is missing: deleted rows"))
    elif record.prev_hash != prev_hash:
        breaks.append(_break(record, BreakKind.REORDERED,
                             f"prev_hash does not match {prev_name}: a row was moved, "
                             "inserted or rewritten before this one"))
    return breaks


def verify_chain(decision_id: str, records: Sequence[ChainRecord],
                 head: ChainHead | None) -> list[ChainBreak]:
    """Every broken link in one decision's chain; empty when it is intact.

    A record whose own hash fails was edited; one that does not link to its
    predecessor was moved or inserted; a gap in ``seq`` or a head beyond the last
    record means deleted rows. Links are followed through the stored hashes, so
    one edited row is reported once, not once for every record after it.
    """
    breaks: list[ChainBreak] = []
    chained: list[ChainRecord] = []
    for record in records:
        if record.seq is None or record.prev_hash is None or record.record_hash is None:
            breaks.append(_break(record, BreakKind.UNCHAINED,
                                 "the row carries no chain link: it was written outside "
                                 "the chain or its link was cleared"))
        else:
            chained.append(record)
    chained.sort(key=lambda r: (r.seq or 0, r.table, r.row_id))

    prev_hash, prev_name, expected = genesis_hash(decision_id), "the genesis value", 1
    for _, group in groupby(chained, key=lambda r: r.seq):
        # Of two records claiming one place, the one that links on is the chain's.
        first, *others = sorted(group, key=lambda r: r.prev_hash != prev_hash)
        breaks.extend(_check(first, prev_hash, prev_name, expected))
        prev_hash, prev_name = first.record_hash or "", f"{first.table} row {first.row_id}"
        expected = (first.seq or 0) + 1
        for record in others:
            breaks.extend(_check(record, prev_hash, prev_name, expected))

    last_seq = expected - 1
    if head is None:
        if chained:
            breaks.append(ChainBreak(decision_id=decision_id, kind=BreakKind.HEAD,
                                     detail=f"no head row, but the chain has {last_seq} "
                                            "records: the head was deleted"))
    elif head.seq > last_seq:
        breaks.append(ChainBreak(decision_id=decision_id, kind=BreakKind.DELETED,
                                 seq=head.seq,
                                 detail=f"the head is at seq {head.seq} but the last record is "
                                        f"at seq {last_seq}: rows at the end were deleted"))
    elif head.seq < last_seq:
        breaks.append(ChainBreak(decision_id=decision_id, kind=BreakKind.HEAD, seq=head.seq,
                                 detail=f"records run to seq {last_seq} past the head at seq "
                                        f"{head.seq}: rows were appended outside the store"))
    elif head.head_hash != prev_hash:
        breaks.append(ChainBreak(decision_id=decision_id, kind=BreakKind.HEAD, seq=head.seq,
                                 detail=f"the head hash differs from {prev_name}'s record_hash: "
                                        "the last record was replaced"))
    return breaks


def head_digest(heads: Iterable[ChainHead]) -> str:
    """One SHA-256 over every decision's head, in decision order.

    An operator who records this value somewhere the database's writers cannot
    reach (a ticket, a log shipped elsewhere, a signed note) can later tell a
    rewritten chain from an intact one, which the chain alone cannot.
    """
    lines = "".join(f"{h.decision_id}\t{h.seq}\t{h.head_hash}\n"
                    for h in sorted(heads, key=lambda h: h.decision_id))
    return _sha256(f"{CHAIN_VERSION}/heads\n{lines}")
