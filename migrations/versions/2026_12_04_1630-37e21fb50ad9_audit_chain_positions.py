"""Audit chain positions: each sealed event's place in its chain, and the checkpoint's.

The sealer chains events in the order it seals them, which is id order except
for an event whose transaction committed after a later id was already sealed;
that one is appended at the end. `chain_seq` records the position so that
`authserver audit verify` walks the chain in exactly the order it was hashed.

Revision ID: 37e21fb50ad9
Revises: d6b5c8d60445
Create Date: 2026-12-04 16:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '37e21fb50ad9'
down_revision = 'd6b5c8d60445'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('chain_seq', sa.BigInteger(), nullable=True))
        # Partial: only sealed events have an entry, so the hot-path INSERT pays nothing.
        batch_op.create_index(
            'uq_audit_events_workspace_chain_seq', ['workspace_id', 'chain_seq'], unique=True,
            sqlite_where=sa.text('chain_seq IS NOT NULL'),
            postgresql_where=sa.text('chain_seq IS NOT NULL'),
        )

    # Existing checkpoints (if any) predate positions; 0 means "no position recorded".
    with op.batch_alter_table('audit_checkpoints', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('last_seq', sa.BigInteger(), server_default='0', nullable=False)
        )
        batch_op.add_column(
            sa.Column('pruned_through_seq', sa.BigInteger(), server_default='0', nullable=False)
        )


def downgrade():
    with op.batch_alter_table('audit_checkpoints', schema=None) as batch_op:
        batch_op.drop_column('pruned_through_seq')
        batch_op.drop_column('last_seq')

    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index(
            'uq_audit_events_workspace_chain_seq',
            sqlite_where=sa.text('chain_seq IS NOT NULL'),
            postgresql_where=sa.text('chain_seq IS NOT NULL'),
        )
        batch_op.drop_column('chain_seq')
