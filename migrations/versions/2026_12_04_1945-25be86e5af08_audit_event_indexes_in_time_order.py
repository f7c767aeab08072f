"""Audit events: the workspace log's indexes in the order the log is listed.

`GET /events` lists a workspace's events newest first by (created_at, id):
createdAt is what people see, and the id breaks ties. The filter indexes
ended in `id` alone, so a time range (`from`/`to`) could not come from them
in order: PostgreSQL walked the primary key backwards and filtered over a
million rows to find one page (130 ms). Each filter index now ends in
(created_at, id), so every filter's page, with or without a time range, is
read straight from an index in listing order:

- (workspace_id, id) and (workspace_id, created_at) become
  (workspace_id, created_at, id);
- (workspace_id, type, id) becomes (workspace_id, type, created_at, id);
- (workspace_id, actor_id, id) becomes (workspace_id, actor_id, created_at, id);
- (workspace_id, target_id, id) becomes (workspace_id, target_id, created_at, id).

The partial indexes of the chain (sealed positions, unsealed events) stay.

Revision ID: 25be86e5af08
Revises: 5c1e2f0a9b7d
Create Date: 2026-12-04 19:45:00
"""

from alembic import op

revision = "25be86e5af08"
down_revision = "5c1e2f0a9b7d"
branch_labels = None
depends_on = None

TABLE = "audit_events"

NEW = {
    "ix_audit_events_workspace_created_at_id": ["workspace_id", "created_at", "id"],
    "ix_audit_events_workspace_type_created_at": ["workspace_id", "type", "created_at", "id"],
    "ix_audit_events_workspace_actor_created_at": [
        "workspace_id",
        "actor_id",
        "created_at",
        "id",
    ],
    "ix_audit_events_workspace_target_created_at": [
        "workspace_id",
        "target_id",
        "created_at",
        "id",
    ],
}

OLD = {
    "ix_audit_events_workspace_id_id": ["workspace_id", "id"],
    "ix_audit_events_workspace_type_id": ["workspace_id", "type", "id"],
    "ix_audit_events_workspace_actor_id": ["workspace_id", "actor_id", "id"],
    "ix_audit_events_workspace_target_id": ["workspace_id", "target_id", "id"],
    "ix_audit_events_workspace_created_at": ["workspace_id", "created_at"],
}


def _replace(drop: dict, create: dict) -> None:
    # Create first: the table is never without an index for the workspace's log. An index
    # an operator built beforehand (CREATE INDEX CONCURRENTLY, same name) is kept.
    for name, columns in create.items():
        op.create_index(name, TABLE, columns, unique=False, if_not_exists=True)
    for name in drop:
        op.drop_index(name, table_name=TABLE)


def upgrade():
    _replace(OLD, NEW)


def downgrade():
    _replace(NEW, OLD)
