"""reviewer keys: identity keys for names, verdict-proof public keys, token expiry

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

Existing reviewers keep their names and tokens. ``name_key`` is filled in here
(``hitl.identity.identity_key``); ``verify_key`` cannot be, since only the token
derives it: ``hitl.reviewers.authenticate`` stores it at the reviewer's next
sign-in, or ``hitl reviewers rotate`` issues a new token with it. Existing
tokens do not expire (``token_expires_at`` null) until rotated.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

from hitl.identity import identity_key

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('reviewers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name_key', sqlmodel.sql.sqltypes.AutoString(length=200),
                                      nullable=True))
        batch_op.add_column(sa.Column('verify_key', sqlmodel.sql.sqltypes.AutoString(length=64),
                                      nullable=True))
        batch_op.add_column(sa.Column('token_expires_at', sqlmodel.sql.sqltypes.UTCDateTime(),
                                      nullable=True))
        batch_op.create_index('ix_reviewers_name_key', ['name_key'], unique=False)
    reviewers = sa.table('reviewers', sa.column('name', sa.String), sa.column('name_key', sa.String))
    connection = op.get_bind()
    for (name,) in connection.execute(sa.select(reviewers.c.name)).all():
        connection.execute(reviewers.update().where(reviewers.c.name == name)
                           .values(name_key=identity_key(name)))


def downgrade() -> None:
    with op.batch_alter_table('reviewers', schema=None) as batch_op:
        batch_op.drop_index('ix_reviewers_name_key')
        batch_op.drop_column('token_expires_at')
        batch_op.drop_column('verify_key')
        batch_op.drop_column('name_key')
