"""review queue table

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('review_queue',
    sa.Column('decision_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('task_type', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('zone', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('risk', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('sla_deadline', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('hard_deadline', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('escalated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('waiting', sa.Boolean(), nullable=False),
    sa.Column('summary', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('decision_id')
    )
    with op.batch_alter_table('review_queue', schema=None) as batch_op:
        batch_op.create_index('ix_review_queue_order', ['waiting', 'priority', 'sla_deadline'], unique=False)
        batch_op.create_index('ix_review_queue_risk_order', ['risk', 'waiting', 'priority', 'sla_deadline'], unique=False)
        batch_op.create_index('ix_review_queue_task_order', ['task_type', 'waiting', 'priority', 'sla_deadline'], unique=False)
        batch_op.create_index('ix_review_queue_zone_order', ['zone', 'waiting', 'priority', 'sla_deadline'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('review_queue', schema=None) as batch_op:
        batch_op.drop_index('ix_review_queue_zone_order')
        batch_op.drop_index('ix_review_queue_task_order')
        batch_op.drop_index('ix_review_queue_risk_order')
        batch_op.drop_index('ix_review_queue_order')

    op.drop_table('review_queue')
