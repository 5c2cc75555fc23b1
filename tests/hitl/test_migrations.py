"""Schema migrations: the migrated schema is exactly the models', and re-running keeps data."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

from hitl.store import (
    ExecutionRow,
    alembic_config,
    init_store,
    make_engine,
    record_execution,
)


def test_migrations_produce_exactly_the_models_schema(engine: Engine) -> None:
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert diff == []
    tables = set(inspect(engine).get_table_names())
    assert {"decisions", "reviews", "audits", "executions", "reviewers",
            "alembic_version"} <= tables


def test_upgrading_again_keeps_every_row(engine: Engine) -> None:
    with Session(engine) as session:
        record_execution(session=session, execution=ExecutionRow(
            decision_id="d1", phase="execute", executor="ledger", action_type="refund",
            idempotency_key="d1:execute", executed_at=datetime.now(UTC)))
    init_store(engine)
    init_store(engine)
    with Session(engine) as session:
        rows = session.exec(select(ExecutionRow)).all()
    assert [(r.decision_id, r.phase) for r in rows] == [("d1", "execute")]


def test_concurrent_starts_migrate_once_without_errors(engine: Engine) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            init_store(engine)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == _head()


def _head() -> str | None:
    return ScriptDirectory.from_config(alembic_config(None)).get_current_head()  # type: ignore[arg-type]


def test_upgrading_a_populated_older_schema_keeps_its_data(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0001")
    # The row is written as 0001's code wrote it: today's store code expects today's columns.
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO executions (decision_id, phase, executor, action_type, idempotency_key,"
            " params_json, executed_at) VALUES ('old', 'execute', 'ledger', 'refund',"
            " 'old:execute', '{}', :at)"), {"at": datetime.now(UTC).isoformat(sep=" ")})
    assert "review_queue" not in inspect(engine).get_table_names()
    init_store(engine)
    assert "review_queue" in inspect(engine).get_table_names()
    with Session(engine) as session:
        assert [r.decision_id for r in session.exec(select(ExecutionRow)).all()] == ["old"]


def test_reviewers_from_before_keys_keep_working_and_get_identity_keys(
        tmp_path: Path) -> None:
    """0006 on a registry written by 0005's code: names keep their tokens, gain identity
    keys (a look-alike of one can no longer be added), and their public key arrives
    with their next sign-in."""
    from hitl.errors import InputError
    from hitl.reviewers import add_reviewer, authenticate, get_reviewer, hash_token

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0005")
        connection.execute(text(
            "INSERT INTO reviewers (name, token_sha256, risks, active, created_at) VALUES "
            "('Carol', :digest, 'low,medium', 1, :at)"),
            {"digest": hash_token("hitl_old-token-from-before-keys-0123456789"),
             "at": datetime.now(UTC).isoformat(sep=" ")})
    init_store(engine)
    with Session(engine) as session:
        old = get_reviewer(session=session, name="carol")
        assert old is not None and old.name == "Carol" and old.verify_key is None
        assert old.token_expires_at is None
        with pytest.raises(InputError):
            add_reviewer(session=session, name="c\u0430rol", risks=[])  # Cyrillic а
        signed_in = authenticate(session=session,
                                 token="hitl_old-token-from-before-keys-0123456789")
        assert signed_in is not None and signed_in.verify_key is not None
