"""``hitl audit verify``: walk every decision's audit chain and report each broken link.

Exit codes: 0 every chain intact, 1 a broken link, a head digest other than
``--expect`` (or the store failed), 2 bad arguments or an unknown ``--decision``.
Reads ``HITL_DATABASE_URL`` (or the SQLite store in ``HITL_DATA_DIR``). Each
finished decision's record is checked too (``hitl.chain_expectations``): a
delivery it lists without its executions row is a break, even when the whole
chain and its head were deleted. The head digest printed at the end is the
value to keep outside the database, and to give back with ``--expect``: the
chain alone cannot tell an intact store from one whose writer recomputed every
hash or rolled a chain back with its head (see ``hitl.audit_chain``).
``hitl/cli.py`` dispatches to ``run_audit``; ``verify_store`` is public for tests
and dashboards.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator, Sequence
from typing import NoReturn

from pydantic import BaseModel, ConfigDict
from sqlalchemy import union
from sqlmodel import Session, col, select

from hitl.audit_chain import (
    EXECUTIONS,
    REVIEWS,
    ChainBreak,
    ChainHead,
    ChainRecord,
    head_digest,
    verify_chain,
)
from hitl.chain_expectations import ChainGap, check_against_record
from hitl.cli_failures import HANDLED, exit_code
from hitl.errors import InputError
from hitl.store import AuditChainHead, DecisionRecord, ExecutionRow, ReviewRow

BATCH = 500  # decisions loaded per round trip: bounded memory on a large store
DIGEST = re.compile(r"(?:sha256:)?([0-9a-f]{64})")


class HeadOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    decision_id: str
    seq: int
    head_hash: str


class AuditReport(BaseModel):
    """What ``verify`` found; ``digest`` covers the stored heads as they are now.

    ``gaps`` (reviews a decision's record lists that the store lacks) do not make
    it broken: such a gap can also be a write that failed. ``expected`` is the
    ``--expect`` digest; ``intact`` needs it to match when it is given.
    """

    model_config = ConfigDict(frozen=True)

    intact: bool
    decisions: int
    records: int
    breaks: list[ChainBreak]
    gaps: list[ChainGap] = []
    heads: list[HeadOut]
    digest: str
    expected: str | None = None

    @property
    def digest_matches(self) -> bool:
        return self.expected is None or self.expected == self.digest


def _decision_ids(session: Session, decision_id: str | None) -> list[str]:
    if decision_id is not None:
        return [decision_id]
    ids = union(select(AuditChainHead.decision_id), select(ReviewRow.decision_id),
                select(ExecutionRow.decision_id), select(DecisionRecord.decision_id))
    return sorted(session.connection().execute(ids).scalars())


def _batches(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), BATCH):
        yield ids[start:start + BATCH]


def _record(table: str, row: ReviewRow | ExecutionRow) -> ChainRecord:
    assert row.id is not None  # loaded from the database
    return ChainRecord(table=table, row_id=row.id, decision_id=row.decision_id, seq=row.seq,
                       prev_hash=row.prev_hash, record_hash=row.record_hash,
                       content=row.model_dump())


def verify_store(*, session: Session, decision_id: str | None = None,
                 expect: str | None = None) -> AuditReport:
    """Verify every chain (or one decision's) against itself and against the
    decision's final record; raises ``InputError`` for a ``decision_id`` the store
    has no record of. ``expect`` is a head digest taken earlier (``sha256:...``)."""
    ids = _decision_ids(session, decision_id)
    breaks: list[ChainBreak] = []
    gaps: list[ChainGap] = []
    heads: list[ChainHead] = []
    decisions = records = 0
    for batch in _batches(ids):
        chains: dict[str, list[ChainRecord]] = {d: [] for d in batch}
        for review in session.exec(select(ReviewRow).where(col(ReviewRow.decision_id).in_(batch))):
            chains[review.decision_id].append(_record(REVIEWS, review))
        for execution in session.exec(
                select(ExecutionRow).where(col(ExecutionRow.decision_id).in_(batch))):
            chains[execution.decision_id].append(_record(EXECUTIONS, execution))
        stored = {h.decision_id: ChainHead(decision_id=h.decision_id, seq=h.seq,
                                           head_hash=h.head_hash)
                  for h in session.exec(select(AuditChainHead).where(
                      col(AuditChainHead.decision_id).in_(batch)))}
        finished = session.connection().execute(
            select(DecisionRecord.decision_id, DecisionRecord.status,
                   DecisionRecord.state_json).where(
                col(DecisionRecord.decision_id).in_(batch))).all()
        for key, status, state_json in finished:
            found, missing = check_against_record(
                decision_id=key, status=status, state_json=state_json, records=chains[key],
                head=stored.get(key))
            breaks.extend(found)
            gaps.extend(missing)
        recorded = {row.decision_id for row in finished}
        for key in batch:
            head = stored.get(key)
            if head is None and not chains[key] and key not in recorded:
                raise InputError(f"--decision: no audit records for decision {key!r}",
                                 field="--decision")
            decisions += 1
            records += len(chains[key])
            breaks.extend(verify_chain(key, chains[key], head))
            if head is not None:
                heads.append(head)
        session.expunge_all()  # the rows are checked; keep memory flat
    digest = f"sha256:{head_digest(heads)}"
    return AuditReport(
        intact=not breaks and (expect is None or expect == digest), decisions=decisions,
        records=records, breaks=sorted(breaks, key=lambda b: b.decision_id), gaps=gaps,
        heads=[HeadOut(decision_id=h.decision_id, seq=h.seq, head_hash=h.head_hash)
               for h in heads],
        digest=digest, expected=expect,
    )


def parse_digest(text: str) -> str:
    """``sha256:<64 hex>`` as ``verify`` prints it (the prefix may be left off)."""
    match = DIGEST.fullmatch(text.strip().lower())
    if match is None:
        raise InputError("--expect: must be a head digest as verify printed it, "
                         "sha256: and 64 hex digits", field="--expect")
    return f"sha256:{match.group(1)}"


def render(report: AuditReport, *, show_heads: bool) -> str:
    lines = [f"BROKEN {b.describe()}" for b in report.breaks]
    lines += [f"GAP {g.describe()}" for g in report.gaps]
    if not report.digest_matches:
        lines.append(f"BROKEN head digest: {report.digest} differs from --expect "
                     f"{report.expected}: chain heads were rewritten, rolled back, deleted or "
                     "appended to since that digest was taken")
    if show_heads:
        lines += [f"head {h.decision_id}\tseq={h.seq}\t{h.head_hash}" for h in report.heads]
    problems = len(report.breaks) + (0 if report.digest_matches else 1)
    state = "intact" if report.intact else _count(problems, "broken link")
    gaps = f", {_count(len(report.gaps), 'gap')}" if report.gaps else ""
    lines.append(f"audit chain: {state}: {_count(report.decisions, 'decision')}, "
                 f"{_count(report.records, 'record')}{gaps}")
    lines.append(f"head digest: {report.digest}  (keep it outside the database)")
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise InputError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hitl audit", description=__doc__.splitlines()[0] if __doc__ else "")
    sub = parser.add_subparsers(dest="action", required=True, parser_class=_Parser)
    verify = sub.add_parser("verify", help="walk every audit chain and report broken links")
    verify.add_argument("--decision", metavar="ID", help="only this decision's chain")
    verify.add_argument("--heads", action="store_true",
                        help="also print every decision's head hash")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument("--expect", metavar="DIGEST",
                        help="exit 1 unless the head digest is DIGEST (printed by an earlier "
                             "verify; any record written since changes it)")
    return parser


def run_audit(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 intact, 1 broken or the store failed, 2 bad arguments."""
    from hitl.settings import Settings
    from hitl.store import init_store, make_engine, session_scope

    try:
        args = build_parser().parse_args(argv)
        if args.decision is not None and not args.decision.strip():
            raise InputError("--decision: must not be empty", field="--decision")
        expect = parse_digest(args.expect) if args.expect is not None else None
        engine = make_engine(Settings().resolved_database_url())
        try:
            init_store(engine)
            with session_scope(engine) as session:
                report = verify_store(session=session, decision_id=args.decision,
                                      expect=expect)
        finally:
            engine.dispose()
    except HANDLED as exc:
        return exit_code("hitl audit", exc)
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        print(render(report, show_heads=args.heads))
    return 0 if report.intact else 1
