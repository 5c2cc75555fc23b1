"""window indexes: the time columns that metrics, the dashboard and the export filter on

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

INDEXES = (
    ("decisions", "ix_decisions_submitted", ["submitted_at", "decision_id"]),
    ("reviews", "ix_reviews_reviewed_at", ["reviewed_at"]),
    ("audits", "ix_audits_created_at", ["created_at"]),
    ("review_queue", "ix_review_queue_escalated_at", ["escalated_at"]),
)


def upgrade() -> None:
    for table, name, columns in INDEXES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(name, columns, unique=False)


def downgrade() -> None:
    for table, name, _ in reversed(INDEXES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(name)
