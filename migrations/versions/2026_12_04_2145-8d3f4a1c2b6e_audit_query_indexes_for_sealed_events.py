"""Audit events: the workspace log's four indexes hold sealed events only.

Every grant inserts an event. With the four indexes of the workspace's log
(by time, type, actor and target) over every row, that INSERT changed six
B-trees, and on SQLite it wrote eight pages under the write lock and made
every other connection read them again. As partial indexes over sealed
events (`chain_hash IS NOT NULL`) they are left alone by the INSERT; the
sealer adds each batch to them at once. `GET /events` reads sealed events
from them and the few unsealed ones through `ix_audit_events_unsealed`.

The new indexes are created before the old ones are dropped, so the log is
never without one. On a large table each CREATE INDEX takes a while and,
on PostgreSQL, blocks writes to the table meanwhile: build them beforehand
with CREATE INDEX CONCURRENTLY under the same names and this keeps them.

Revision ID: 8d3f4a1c2b6e
Revises: 25be86e5af08
Create Date: 2026-12-04 21:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = "8d3f4a1c2b6e"
down_revision = "25be86e5af08"
branch_labels = None
depends_on = None

TABLE = "audit_events"
HASHED = sa.text("chain_hash IS NOT NULL")

COLUMNS = {
    "workspace_created_at": ["workspace_id", "created_at", "id"],
    "workspace_type": ["workspace_id", "type", "created_at", "id"],
    "workspace_actor": ["workspace_id", "actor_id", "created_at", "id"],
    "workspace_target": ["workspace_id", "target_id", "created_at", "id"],
}
OLD_NAMES = {
    "workspace_created_at": "ix_audit_events_workspace_created_at_id",
    "workspace_type": "ix_audit_events_workspace_type_created_at",
    "workspace_actor": "ix_audit_events_workspace_actor_created_at",
    "workspace_target": "ix_audit_events_workspace_target_created_at",
}


def upgrade():
    for key, columns in COLUMNS.items():
        op.create_index(
            f"ix_audit_events_sealed_{key}",
            TABLE,
            columns,
            unique=False,
            if_not_exists=True,
            sqlite_where=HASHED,
            postgresql_where=HASHED,
        )
    for name in OLD_NAMES.values():
        op.drop_index(name, table_name=TABLE)


def downgrade():
    for key, columns in COLUMNS.items():
        op.create_index(OLD_NAMES[key], TABLE, columns, unique=False, if_not_exists=True)
    for key in COLUMNS:
        op.drop_index(f"ix_audit_events_sealed_{key}", table_name=TABLE)
