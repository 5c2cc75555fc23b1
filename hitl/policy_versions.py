"""Stored policy versions, and the source the rules layer reads the applied policy from.

A policy version is the policy's ``full_version`` (declared version plus content
digest) with its canonical JSON body. At most one version is ``active``; workers
screen under it, or under their own policy file when none is active (that file
is registered here with source ``file`` at worker start, so every version a
decision records is in this table). Proposals (``recalibration``, ``operator``)
wait as ``proposed`` until someone activates or rejects them; activating retires
the previous active version, which ``rollback`` can bring back.

``PolicySource`` keeps what screening applies (the policy, audit statistics and
the review backlog) in memory and refreshes it in the background every few
seconds: screening never waits on the database, an activation reaches every
worker within one refresh interval, and a database outage keeps the last good
figures rather than failing decisions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Index, Text, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, col, select

from hitl.errors import InputError, PolicyError
from hitl.policy import Policy, parse_policy

if TYPE_CHECKING:
    from hitl.sampling import AuditStats

log = logging.getLogger("hitl.policy")

SOURCES = ("file", "recalibration", "operator")
DEFAULT_REFRESH_SECONDS = 10.0


class PolicyVersionNotFound(InputError):
    """No stored policy version with that name (or nothing to roll back to)."""


class PolicyVersionConflict(InputError):
    """A transition the version's status does not allow (activate a rejected one...)."""


class PolicyVersionStatus(StrEnum):
    PROPOSED = "proposed"
    ACTIVE = "active"
    RETIRED = "retired"
    REJECTED = "rejected"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class PolicyVersionRow(SQLModel, table=True):
    """One policy version: its body, where it came from and what was decided about it."""

    __tablename__ = "policy_versions"
    # The database itself holds "at most one active version": two operators (or an
    # operator and a recalibration) activating at once cannot leave two active.
    __table_args__ = (
        Index("uq_policy_versions_one_active", "status", unique=True,
              sqlite_where=text("status = 'active'"),
              postgresql_where=text("status = 'active'")),
    )

    version: str = Field(primary_key=True, max_length=120)
    body: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(max_length=20)
    source: str = Field(max_length=20)
    proposal: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=_utcnow)
    activated_at: datetime | None = None
    activated_by: str | None = Field(default=None, max_length=200)
    note: str | None = Field(default=None, sa_column=Column(Text))


def propose(session: Session, policy: Policy, *, source: str,
            proposal: dict[str, Any] | None = None) -> PolicyVersionRow:
    """Store ``policy`` as a proposed version; an existing version is returned unchanged.

    Idempotent on the version (content digest included), so a retried proposal or
    every worker registering the same file writes one row, and re-proposing a
    rejected policy does not revive it.
    """
    if source not in SOURCES:
        raise InputError(f"source: must be one of {', '.join(SOURCES)}, not {source!r}",
                         field="source")
    existing = session.get(PolicyVersionRow, policy.full_version)
    if existing is not None:
        return existing
    row = PolicyVersionRow(
        version=policy.full_version, body=policy.model_dump_json(),
        status=PolicyVersionStatus.PROPOSED.value, source=source,
        proposal=json.dumps(proposal, sort_keys=True, default=str) if proposal else None)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:  # a concurrent proposer won the race: theirs is the same row
        session.rollback()
        found = session.get(PolicyVersionRow, policy.full_version)
        if found is None:
            raise
        return found
    session.refresh(row)
    return row


def get(session: Session, version: str) -> PolicyVersionRow | None:
    return session.get(PolicyVersionRow, version)


def active(session: Session) -> PolicyVersionRow | None:
    return session.exec(select(PolicyVersionRow).where(
        PolicyVersionRow.status == PolicyVersionStatus.ACTIVE.value)).first()


def versions(session: Session) -> list[PolicyVersionRow]:
    """Every stored version, newest first."""
    return list(session.exec(select(PolicyVersionRow).order_by(
        col(PolicyVersionRow.created_at).desc(), col(PolicyVersionRow.version))).all())


def activate(session: Session, version: str, *, by: str,
             note: str | None = None) -> PolicyVersionRow:
    """Make ``version`` the active policy and retire the one it replaces.

    Idempotent: activating the active version changes nothing. ``by`` is recorded
    (an operator's name, or the recalibration decision that approved it).

    Raises:
        PolicyVersionNotFound: no such version.
        PolicyVersionConflict: the version was rejected, or its body no longer
            validates as a policy.
    """
    if not by.strip():
        raise InputError("by: who activates the version must be named", field="by")
    row = _require(session, version)
    if row.status == PolicyVersionStatus.ACTIVE.value:
        return row
    if row.status == PolicyVersionStatus.REJECTED.value:
        raise PolicyVersionConflict(
            f"version: {version} was rejected ({row.note or 'no note'}); propose a new "
            "version instead", field="version")
    try:
        policy_of(row)
    except PolicyError as exc:
        raise PolicyVersionConflict(f"version: {version} cannot be applied: {exc}",
                                    field="version") from exc
    current = active(session)
    if current is not None:
        current.status = PolicyVersionStatus.RETIRED.value
        session.add(current)
        session.flush()  # the one-active index: retire before the new one turns active
    row.status = PolicyVersionStatus.ACTIVE.value
    row.activated_at, row.activated_by = _utcnow(), by
    if note is not None:
        row.note = note
    session.add(row)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise PolicyVersionConflict(
            f"version: another activation happened at the same time; retry ({version})",
            field="version") from exc
    session.refresh(row)
    log.info("policy version activated", extra={
        "version": version, "by": by, "replaced": current.version if current else None})
    return row


def reject(session: Session, version: str, *, by: str,
           note: str | None = None) -> PolicyVersionRow:
    """Record that ``version`` must not be applied. Idempotent on a rejected version.

    Raises:
        PolicyVersionNotFound: no such version.
        PolicyVersionConflict: the version is active (roll back or activate another first).
    """
    row = _require(session, version)
    if row.status == PolicyVersionStatus.REJECTED.value:
        return row
    if row.status == PolicyVersionStatus.ACTIVE.value:
        raise PolicyVersionConflict(
            f"version: {version} is active; activate another version or roll back first",
            field="version")
    row.status = PolicyVersionStatus.REJECTED.value
    row.note = f"rejected by {by}" + (f": {note}" if note else "")
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def previous(session: Session) -> PolicyVersionRow | None:
    """The version that was active before the current one: the latest retired."""
    return session.exec(select(PolicyVersionRow).where(
        PolicyVersionRow.status == PolicyVersionStatus.RETIRED.value,
        col(PolicyVersionRow.activated_at).is_not(None),
    ).order_by(col(PolicyVersionRow.activated_at).desc())).first()


def rollback(session: Session, *, by: str, note: str | None = None) -> PolicyVersionRow:
    """Re-activate the previously active version (rolling back twice returns).

    Raises:
        PolicyVersionNotFound: no version was ever retired, so there is nothing to go back to.
    """
    target = previous(session)
    if target is None:
        raise PolicyVersionNotFound("version: no previously active version to roll back to",
                                    field="version")
    return activate(session, target.version, by=by,
                    note=note if note is not None else "rollback")


def policy_of(row: PolicyVersionRow) -> Policy:
    """The stored policy, checked against its version.

    Raises:
        PolicyError: the body does not validate, or it no longer hashes to the
            version (edited in the table, or a policy schema change gave its
            defaults new fields): applying it would record a version that is not
            the one screened under.
    """
    try:
        data = json.loads(row.body)
    except ValueError as exc:
        raise PolicyError(f"policy version {row.version}: body is not JSON: {exc}",
                          field="body") from exc
    policy = parse_policy(data, source=f"policy version {row.version}")
    if policy.full_version != row.version:
        raise PolicyError(f"policy version {row.version}: body hashes to "
                          f"{policy.full_version}", field="body")
    return policy


def _require(session: Session, version: str) -> PolicyVersionRow:
    row = session.get(PolicyVersionRow, version)
    if row is None:
        raise PolicyVersionNotFound(f"version: unknown policy version {version!r} "
                                    "(see hitl policy versions)", field="version")
    return row


# ------------------------------------------------------------------ the source

@dataclass(frozen=True)
class Screening:
    """What screening applies right now: one consistent snapshot."""

    policy: Policy
    origin: str  # "store" (the active version) or "file" (no version is active)
    audit_stats: dict[str, AuditStats] = field(default_factory=dict)
    queue_depth: int | None = None  # None until the backlog was read once


class PolicySource:
    """The applied policy and live figures, refreshed every ``refresh_seconds``.

    ``current()`` never touches the database. ``refresh()`` reads the active
    version, the audit statistics and the review backlog in one session; a
    failure (logged) keeps the previous snapshot, so an outage degrades to
    slightly stale figures instead of failing or slowing decisions.
    """

    def __init__(self, *, engine: Engine, fallback: Policy,
                 refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if refresh_seconds <= 0:
            raise InputError("refresh_seconds: must be positive", field="refresh_seconds")
        self._engine = engine
        self._fallback = fallback
        self.refresh_seconds = refresh_seconds
        self._clock = clock
        self._snapshot = Screening(policy=fallback, origin="file")
        self.refreshed_at: float | None = None

    def current(self) -> Screening:
        return self._snapshot

    def register_fallback(self) -> PolicyVersionRow:
        """Store the file policy as a version (source ``file``), so decisions screened
        under it name a version the table knows."""
        with Session(self._engine, expire_on_commit=False) as session:
            return propose(session, self._fallback, source="file")

    def refresh(self) -> Screening:
        """Reload from the store; on failure keep (and return) the last good snapshot."""
        # Imported here: hitl.store registers this module's table by importing it.
        from hitl.sampling import audit_stats, review_backlog

        previous_snapshot = self._snapshot
        try:
            with Session(self._engine, expire_on_commit=False) as session:
                policy, origin = self._applied(active(session), previous_snapshot)
                adaptive = policy.audit.adaptive
                stats = audit_stats(session=session, window=adaptive.window,
                                    recent=adaptive.recent)
                depth = review_backlog(session=session)
        except SQLAlchemyError as exc:
            cause = getattr(exc, "orig", None) or exc
            log.warning("policy refresh failed; keeping the last good policy", extra={
                "policy": previous_snapshot.policy.full_version,
                "error": (str(cause).strip().splitlines() or [""])[0][:200]})
            return previous_snapshot
        if policy.full_version != previous_snapshot.policy.full_version:
            log.info("policy changed", extra={"policy": policy.full_version, "origin": origin,
                                              "was": previous_snapshot.policy.full_version})
        self._snapshot = Screening(policy=policy, origin=origin, audit_stats=stats,
                                   queue_depth=depth)
        self.refreshed_at = self._clock()
        return self._snapshot

    def _applied(self, row: PolicyVersionRow | None,
                 previous_snapshot: Screening) -> tuple[Policy, str]:
        if row is None:
            return self._fallback, "file"
        try:
            return policy_of(row), "store"
        except PolicyError as exc:
            # Keep what this worker applied last rather than silently falling back.
            log.error("active policy version cannot be applied; keeping the last good policy",
                      extra={"version": row.version, "error": str(exc),
                             "policy": previous_snapshot.policy.full_version})
            return previous_snapshot.policy, previous_snapshot.origin

    async def run(self) -> None:
        """Refresh every ``refresh_seconds`` until cancelled (the worker runs this)."""
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception:  # noqa: BLE001 - the loop must outlive any one failure
                log.exception("policy refresh crashed; retrying next interval")
