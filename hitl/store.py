"""The feedback store: decisions, reviews, audits and executions (sqlmodel).

SQLite by default, any SQLAlchemy URL in production (PostgreSQL). Every write
is idempotent on a natural key, because activities are retried: a review on
(decision_id, request_id), an execution on (decision_id, phase), an audit and
a decision record on decision_id. A retry after a crash finds the row and
returns it instead of writing a second one.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Column, Index, Text, UniqueConstraint, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, create_engine, select

from hitl.audit_chain import EXECUTIONS, REVIEWS, genesis_hash, record_hash
from hitl.errors import StoreError
from hitl.private_files import private_dir, private_file

T = TypeVar("T", bound=SQLModel)


def utcnow() -> datetime:
    return datetime.now(UTC)


class DecisionRecord(SQLModel, table=True):
    """The final record of a decision with its whole trail (state as JSON)."""

    __tablename__ = "decisions"
    # Windows by submission time (metrics, the dashboard) and the export's keyset
    # order (submitted_at, decision_id): an index range, not a scan of every decision.
    __table_args__ = (Index("ix_decisions_submitted", "submitted_at", "decision_id"),)

    decision_id: str = Field(primary_key=True, max_length=200)
    task_type: str = Field(index=True, max_length=64)
    zone: str | None = Field(default=None, index=True, max_length=20)
    risk: str | None = Field(default=None, index=True, max_length=20)
    status: str = Field(index=True, max_length=20)
    confidence: float
    policy_version: str | None = Field(default=None, max_length=120)
    requested_by: str | None = Field(default=None, max_length=200)
    request_json: str = Field(sa_column=Column(Text, nullable=False))
    state_json: str = Field(sa_column=Column(Text, nullable=False))
    submitted_at: datetime
    finished_at: datetime | None = None
    recorded_at: datetime = Field(default_factory=utcnow)


class ReviewRow(SQLModel, table=True):
    """One reviewer action with its reason, correct answer and error category."""

    __tablename__ = "reviews"
    __table_args__ = (UniqueConstraint("decision_id", "request_id", name="uq_review_request"),
                      UniqueConstraint("decision_id", "seq", name="uq_review_chain_seq"),
                      Index("ix_reviews_reviewed_at", "reviewed_at"))  # metrics windows

    id: int | None = Field(default=None, primary_key=True)
    decision_id: str = Field(index=True, max_length=200)
    request_id: str = Field(max_length=200)
    task_type: str = Field(index=True, max_length=64)
    reviewer: str = Field(index=True, max_length=200)
    verdict: str = Field(max_length=20)
    accepted: bool = True
    refusal: str | None = Field(default=None, sa_column=Column(Text))
    reason: str = Field(default="", sa_column=Column(Text, nullable=False))
    correct_answer: str | None = Field(default=None, sa_column=Column(Text))
    error_category: str | None = Field(default=None, max_length=40)
    edited: bool = False
    flag_for_monitoring: bool = False
    model_confidence: float
    zone: str | None = Field(default=None, max_length=20)
    risk: str | None = Field(default=None, max_length=20)
    latency_seconds: float | None = None
    time_on_page_seconds: float | None = None
    reviewed_at: datetime
    # The decision's audit chain (hitl.audit_chain); set by record_review.
    seq: int | None = None
    prev_hash: str | None = Field(default=None, max_length=64)
    record_hash: str | None = Field(default=None, max_length=64)


class AuditRow(SQLModel, table=True):
    """An AUTO_AUDIT decision: executed, logged, and maybe sampled for review."""

    __tablename__ = "audits"
    __table_args__ = (Index("ix_audits_created_at", "created_at"),)  # metrics windows

    decision_id: str = Field(primary_key=True, max_length=200)
    task_type: str = Field(index=True, max_length=64)
    risk: str = Field(max_length=20)
    confidence: float
    sampled: bool = Field(index=True)
    sample_rate: float
    verdict: str | None = Field(default=None, max_length=20)
    reviewer: str | None = Field(default=None, max_length=200)
    error_category: str | None = Field(default=None, max_length=40)
    created_at: datetime = Field(default_factory=utcnow)
    reviewed_at: datetime | None = None


class ExecutionRow(SQLModel, table=True):
    """The executor's ledger: one row per (decision, phase), written after acting."""

    __tablename__ = "executions"
    __table_args__ = (UniqueConstraint("decision_id", "phase", name="uq_execution_phase"),
                      UniqueConstraint("decision_id", "seq", name="uq_execution_chain_seq"))

    id: int | None = Field(default=None, primary_key=True)
    decision_id: str = Field(index=True, max_length=200)
    phase: str = Field(max_length=20)
    executor: str = Field(max_length=20)
    action_type: str = Field(max_length=100)
    idempotency_key: str = Field(max_length=240)
    target_url: str | None = Field(default=None, max_length=2000)
    status_code: int | None = None
    output: str | None = Field(default=None, sa_column=Column(Text))
    params_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    executed_at: datetime = Field(default_factory=utcnow)
    # The decision's audit chain (hitl.audit_chain); set by record_execution.
    seq: int | None = None
    prev_hash: str | None = Field(default=None, max_length=64)
    record_hash: str | None = Field(default=None, max_length=64)


class AuditChainHead(SQLModel, table=True):
    """The last link of a decision's audit chain; appends take its row lock."""

    __tablename__ = "audit_chain_heads"

    decision_id: str = Field(primary_key=True, max_length=200)
    seq: int
    head_hash: str = Field(max_length=64)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL and a busy timeout so a worker's
    threads and a CLI can share one file without 'database is locked'."""
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            private_dir(Path(database).parent)  # the data dir: 0700 when we create it
            private_file(Path(database))  # 0600; SQLite gives -wal and -shm the same mode
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


MIGRATIONS = Path(__file__).parent / "migrations"
_PG_MIGRATION_LOCK = 7_311_2024  # any constant shared by every hitl process
# Alembic's context is process-global: migrations inside one process run one at a time.
_migrating = threading.Lock()


def alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def init_store(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent, safe to race).

    Every worker and the API call this at start; on PostgreSQL an advisory lock
    serialises them, on SQLite the file lock does. Upgrades never drop data:
    each migration is reviewed, and tests upgrade a populated older schema.
    """
    try:
        with _migrating, engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})"))
            command.upgrade(alembic_config(connection), "head")
    except OperationalError as exc:
        raise StoreError(f"cannot initialise the store: {exc.orig}") from exc


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session whose database errors come out as a short ``StoreError``.

    SQLAlchemy's messages carry the SQL, the parameters and a chained stack (about
    5 KB); as an activity failure that exceeds the server's size limit and the
    Temporal UI would show "Failure exceeds size limit." instead of "database is
    locked". Activities raising ``StoreError`` are retried like any other error.
    """
    try:
        with Session(engine, expire_on_commit=False) as session:
            yield session
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        first_line = (str(cause).strip().splitlines() or [""])[0][:300]
        raise StoreError(f"store unavailable: {type(cause).__name__}: {first_line}") from None


def _insert_once(
    *, session: Session, row: T, existing: Callable[[], T | None]
) -> tuple[T, bool]:
    """Insert ``row`` unless its natural key exists; returns (row, inserted).

    Checks first (the common retry case), and still handles the race where a
    concurrent writer inserted between the check and the commit.
    """
    found = existing()
    if found is not None:
        return found, False
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        found = existing()
        if found is None:
            raise
        return found, False
    # No refresh: the flush set the key, and session_scope's expire_on_commit=False keeps
    # the row whole (from a plain Session it reloads on first access, session still open).
    return row, True


# Claims the next place in a decision's chain and returns the link to it. The
# upsert takes the head row's lock (PostgreSQL) or the write lock (SQLite) before
# anything is read, so concurrent appends to one decision queue here and each
# sees the head its predecessor committed.
_CLAIM_NEXT_LINK = text(
    "INSERT INTO audit_chain_heads (decision_id, seq, head_hash) "
    "VALUES (:decision_id, 1, :genesis) "
    "ON CONFLICT (decision_id) DO UPDATE SET seq = audit_chain_heads.seq + 1 "
    "RETURNING seq, head_hash")
_MOVE_HEAD = text(
    "UPDATE audit_chain_heads SET head_hash = :head_hash WHERE decision_id = :decision_id")

C = TypeVar("C", ReviewRow, ExecutionRow)


def _append_chained(
    *, session: Session, row: C, table: str, existing: Callable[[], C | None]
) -> tuple[C, bool]:
    """``_insert_once`` that also links ``row`` into its decision's audit chain.

    The claim, the insert and the head move commit together. A retried write
    whose row exists returns before claiming; one racing the first writer of the
    same natural key fails on that key and its rollback gives the place back, so
    a retry never appends twice and two writers never fork the chain.
    """
    found = existing()
    if found is not None:
        return found, False
    connection = session.connection()
    claimed = connection.execute(_CLAIM_NEXT_LINK, {
        "decision_id": row.decision_id, "genesis": genesis_hash(row.decision_id)}).one()
    row.seq, row.prev_hash = int(claimed.seq), str(claimed.head_hash)
    row.record_hash = record_hash(table=table, seq=row.seq, prev_hash=row.prev_hash,
                                  content=row.model_dump())
    session.add(row)
    try:
        session.flush()
        connection.execute(_MOVE_HEAD, {"decision_id": row.decision_id,
                                        "head_hash": row.record_hash})
        session.commit()
    except IntegrityError:
        session.rollback()
        found = existing()
        if found is None:
            raise
        return found, False
    return row, True  # as in _insert_once: nothing to reload


def record_review(*, session: Session, review: ReviewRow) -> tuple[ReviewRow, bool]:
    return _append_chained(
        session=session, row=review, table=REVIEWS, existing=lambda: session.exec(
            select(ReviewRow).where(ReviewRow.decision_id == review.decision_id,
                                    ReviewRow.request_id == review.request_id)).first())


def find_execution(*, session: Session, decision_id: str, phase: str) -> ExecutionRow | None:
    return session.exec(select(ExecutionRow).where(
        ExecutionRow.decision_id == decision_id, ExecutionRow.phase == phase)).first()


def record_execution(*, session: Session, execution: ExecutionRow) -> tuple[ExecutionRow, bool]:
    return _append_chained(
        session=session, row=execution, table=EXECUTIONS, existing=lambda: find_execution(
            session=session, decision_id=execution.decision_id, phase=execution.phase))


def record_audit(*, session: Session, audit: AuditRow) -> tuple[AuditRow, bool]:
    return _insert_once(session=session, row=audit,
                        existing=lambda: session.get(AuditRow, audit.decision_id))


def record_decision(*, session: Session, decision: DecisionRecord,
                    commit: bool = True) -> DecisionRecord:
    """Upsert the final record: a retried or re-recorded decision replaces its row.

    ``commit=False`` leaves the transaction open for the caller's next write (the
    decision worker commits the record and its review-queue row together).
    """
    existing = session.get(DecisionRecord, decision.decision_id)
    if existing is None:
        session.add(decision)
    else:
        for name, value in decision.model_dump().items():
            setattr(existing, name, value)
        decision = existing
    if commit:
        session.commit()
    return decision


def executions_for(*, session: Session, decision_id: str) -> list[ExecutionRow]:
    return list(session.exec(select(ExecutionRow).where(
        ExecutionRow.decision_id == decision_id).order_by(ExecutionRow.id)).all())  # type: ignore[arg-type]


def reviews_for(*, session: Session, decision_id: str) -> list[ReviewRow]:
    return list(session.exec(select(ReviewRow).where(
        ReviewRow.decision_id == decision_id).order_by(ReviewRow.id)).all())  # type: ignore[arg-type]


def to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


# Tables kept in their own modules, imported here so the metadata the migrations
# compare against has them. At the end: they import this module's models.
import hitl.policy_versions  # noqa: E402,F401  - registers the policy_versions table
