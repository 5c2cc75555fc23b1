"""Alembic environment: run against the connection hitl.store hands over.

There is no alembic.ini: hitl.store.migrate() builds the configuration in code,
so the same migrations run from the worker, the CLI and the tests.
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import hitl.review_queue  # noqa: F401  - registers the review_queue table
import hitl.reviewers  # noqa: F401  - registers the reviewers table
import hitl.store  # noqa: F401  - registers the store's tables

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters by table copy
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
