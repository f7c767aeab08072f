"""Reading the audit log: a workspace's events and a technical user's changelog.

Both are newest first by event id (ids grow with insertion; `createdAt` may tie).
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from ..extensions import db
from ..models import AuditEvent
from .audit import EventType

# A technical user's changelog: the changes to it and to its API tokens. Grants and
# denials are usage, not changes; they are in the workspace's event log.
CHANGELOG_TYPES = (
    EventType.TECHNICAL_USER_CREATE,
    EventType.TECHNICAL_USER_UPDATE,
    EventType.TECHNICAL_USER_DELETE,
    EventType.APITOKEN_CREATE,
    EventType.APITOKEN_UPDATE,
    EventType.APITOKEN_REPLACE,
    EventType.APITOKEN_DELETE,
    EventType.ACCESS_TOKEN_REVOKE,
)


@dataclass(frozen=True)
class EventFilter:
    """The filters of GET /events; None means "any"."""

    type: EventType | None = None
    actor_id: str | None = None
    target_id: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


def _page(query, *, newest_first: bool, offset: int, limit: int) -> tuple[list[AuditEvent], int]:
    total = db.session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    order = AuditEvent.id.desc() if newest_first else AuditEvent.id.asc()
    rows = db.session.execute(query.order_by(order).offset(offset).limit(limit)).scalars()
    return list(rows), total


def list_events(
    workspace_id: str, where: EventFilter, *, offset: int, limit: int
) -> tuple[list[AuditEvent], int]:
    """One page of the workspace's events, newest first, and the total count."""
    query = select(AuditEvent).where(AuditEvent.workspace_id == workspace_id)
    if where.type is not None:
        query = query.where(AuditEvent.type == where.type.value)
    if where.actor_id is not None:
        query = query.where(AuditEvent.actor_id == where.actor_id)
    if where.target_id is not None:
        query = query.where(AuditEvent.target_id == where.target_id)
    if where.created_from is not None:
        query = query.where(AuditEvent.created_at >= where.created_from)
    if where.created_to is not None:
        query = query.where(AuditEvent.created_at < where.created_to)
    return _page(query, newest_first=True, offset=offset, limit=limit)


def changelog(
    workspace_id: str,
    technical_user_id: str,
    token_ids: list[str],
    *,
    newest_first: bool,
    offset: int,
    limit: int,
) -> tuple[list[AuditEvent], int]:
    """One page of the changes to a technical user and to each of its API tokens."""
    query = select(AuditEvent).where(
        AuditEvent.workspace_id == workspace_id,
        AuditEvent.target_id.in_([technical_user_id, *token_ids]),
        AuditEvent.type.in_([t.value for t in CHANGELOG_TYPES]),
    )
    return _page(query, newest_first=newest_first, offset=offset, limit=limit)
