"""initial schema: decisions, reviews, audits, executions, reviewers

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audits',
    sa.Column('decision_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('task_type', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('risk', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=False),
    sa.Column('sampled', sa.Boolean(), nullable=False),
    sa.Column('sample_rate', sa.Float(), nullable=False),
    sa.Column('verdict', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
    sa.Column('reviewer', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('error_category', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('reviewed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('decision_id')
    )
    with op.batch_alter_table('audits', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audits_sampled'), ['sampled'], unique=False)
        batch_op.create_index(batch_op.f('ix_audits_task_type'), ['task_type'], unique=False)

    op.create_table('decisions',
    sa.Column('decision_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('task_type', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('zone', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
    sa.Column('risk', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=False),
    sa.Column('policy_version', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=True),
    sa.Column('requested_by', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('request_json', sa.Text(), nullable=False),
    sa.Column('state_json', sa.Text(), nullable=False),
    sa.Column('submitted_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('finished_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('recorded_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('decision_id')
    )
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_decisions_risk'), ['risk'], unique=False)
        batch_op.create_index(batch_op.f('ix_decisions_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_decisions_task_type'), ['task_type'], unique=False)
        batch_op.create_index(batch_op.f('ix_decisions_zone'), ['zone'], unique=False)

    op.create_table('executions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('decision_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('phase', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('executor', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('action_type', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('idempotency_key', sqlmodel.sql.sqltypes.AutoString(length=240), nullable=False),
    sa.Column('target_url', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('output', sa.Text(), nullable=True),
    sa.Column('params_json', sa.Text(), nullable=False),
    sa.Column('executed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('decision_id', 'phase', name='uq_execution_phase')
    )
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_executions_decision_id'), ['decision_id'], unique=False)

    op.create_table('reviewers',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('token_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('risks', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    with op.batch_alter_table('reviewers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reviewers_token_sha256'), ['token_sha256'], unique=True)

    op.create_table('reviews',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('decision_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('request_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('task_type', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('reviewer', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('verdict', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('accepted', sa.Boolean(), nullable=False),
    sa.Column('refusal', sa.Text(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('correct_answer', sa.Text(), nullable=True),
    sa.Column('error_category', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
    sa.Column('edited', sa.Boolean(), nullable=False),
    sa.Column('flag_for_monitoring', sa.Boolean(), nullable=False),
    sa.Column('model_confidence', sa.Float(), nullable=False),
    sa.Column('zone', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
    sa.Column('risk', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
    sa.Column('latency_seconds', sa.Float(), nullable=True),
    sa.Column('time_on_page_seconds', sa.Float(), nullable=True),
    sa.Column('reviewed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('decision_id', 'request_id', name='uq_review_request')
    )
    with op.batch_alter_table('reviews', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reviews_decision_id'), ['decision_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_reviews_reviewer'), ['reviewer'], unique=False)
        batch_op.create_index(batch_op.f('ix_reviews_task_type'), ['task_type'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('reviews', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reviews_task_type'))
        batch_op.drop_index(batch_op.f('ix_reviews_reviewer'))
        batch_op.drop_index(batch_op.f('ix_reviews_decision_id'))

    op.drop_table('reviews')
    with op.batch_alter_table('reviewers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reviewers_token_sha256'))

    op.drop_table('reviewers')
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_executions_decision_id'))

    op.drop_table('executions')
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_decisions_zone'))
        batch_op.drop_index(batch_op.f('ix_decisions_task_type'))
        batch_op.drop_index(batch_op.f('ix_decisions_status'))
        batch_op.drop_index(batch_op.f('ix_decisions_risk'))

    op.drop_table('decisions')
    with op.batch_alter_table('audits', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audits_task_type'))
        batch_op.drop_index(batch_op.f('ix_audits_sampled'))

    op.drop_table('audits')
