"""Audit events: PostgreSQL statistics on (workspace_id, type) together.

Without them the planner multiplies the two columns' frequencies as if they
were independent, expects thousands of matches for a type a workspace rarely
or never has, and answers `GET /events?type=...` by scanning the primary key
backwards (seconds over a million events) instead of the (workspace_id, type,
id) index (a fraction of a millisecond). SQLite has no such statistics.

Revision ID: 5c1e2f0a9b7d
Revises: 37e21fb50ad9
Create Date: 2026-12-04 18:15:00
"""

from alembic import op

revision = "5c1e2f0a9b7d"
down_revision = "37e21fb50ad9"
branch_labels = None
depends_on = None

STATISTICS = "st_audit_events_workspace_type"


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE STATISTICS IF NOT EXISTS {STATISTICS} (mcv) "
            "ON workspace_id, type FROM audit_events"
        )


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP STATISTICS IF EXISTS {STATISTICS}")
