"""audit chain: a hash chain per decision over its review and execution records

Adds ``seq``, ``prev_hash`` and ``record_hash`` to reviews and executions, the
``audit_chain_heads`` table, and links every existing record (per decision, in
time order, then table, then id) so ``hitl audit verify`` passes on an upgraded
store that nobody tampered with.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

from hitl.audit_chain import CHAINED_FIELDS, RECORDED_AT, ChainRecord, FieldKind, build_chain

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_TYPES: dict[FieldKind, Any] = {
    "str": sa.Text(), "int": sa.Integer(), "float": sa.Float(), "bool": sa.Boolean(),
    "datetime": sqlmodel.sql.sqltypes.UTCDateTime(),
}
_CONSTRAINTS = {"reviews": "uq_review_chain_seq", "executions": "uq_execution_chain_seq"}


def upgrade() -> None:
    for table, constraint in _CONSTRAINTS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('seq', sa.Integer(), nullable=True))
            batch_op.add_column(sa.Column(
                'prev_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
            batch_op.add_column(sa.Column(
                'record_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
            batch_op.create_unique_constraint(constraint, ['decision_id', 'seq'])

    heads = op.create_table('audit_chain_heads',
    sa.Column('decision_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('head_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.PrimaryKeyConstraint('decision_id')
    )
    _backfill(heads)


def _backfill(heads: sa.Table) -> None:
    """Link the rows written before the chain existed, one decision at a time."""
    bind = op.get_bind()
    tables = {
        name: sa.table(name, sa.column('id', sa.Integer()), sa.column('seq', sa.Integer()),
                       sa.column('prev_hash', sa.Text()), sa.column('record_hash', sa.Text()),
                       *(sa.column(field, _TYPES[kind]) for field, kind in fields))
        for name, fields in CHAINED_FIELDS.items()
    }
    by_decision: dict[str, list[ChainRecord]] = defaultdict(list)
    for name, table in tables.items():
        for row in bind.execute(sa.select(table)).mappings():
            by_decision[row['decision_id']].append(ChainRecord(
                table=name, row_id=row['id'], decision_id=row['decision_id'], seq=None,
                prev_hash=None, record_hash=None, content=dict(row),
                recorded_at=row[RECORDED_AT[name]]))
    for decision_id in sorted(by_decision):
        links = build_chain(decision_id, by_decision[decision_id])
        for link in links:
            table = tables[link.table]
            bind.execute(table.update().where(table.c.id == link.row_id).values(
                seq=link.seq, prev_hash=link.prev_hash, record_hash=link.record_hash))
        bind.execute(heads.insert().values(decision_id=decision_id, seq=links[-1].seq,
                                           head_hash=links[-1].record_hash))


def downgrade() -> None:
    op.drop_table('audit_chain_heads')
    for table, constraint in _CONSTRAINTS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(constraint, type_='unique')
            batch_op.drop_column('record_hash')
            batch_op.drop_column('prev_hash')
            batch_op.drop_column('seq')
