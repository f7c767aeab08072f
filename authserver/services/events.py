"""Reading the audit log: a workspace's events and a technical user's changelog.

Both list events by `(created_at, id)`, newest first unless asked otherwise:
`createdAt` is what people see, and the id breaks ties. Each filter of the
workspace's log has an index in that order (see `AuditEvent`), so a page is
read straight from an index however many events match.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import func, literal_column, select

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

# The workspace's log counts its matches up to this many. Counting a million index
# entries takes longer than reading the page itself; above the limit the total is
# given as the limit and flagged as not exact (as GitLab and Elasticsearch do).
EXACT_TOTAL_LIMIT = 10_000


@dataclass(frozen=True)
class EventFilter:
    """The filters of GET /events; None means "any"."""

    type: EventType | None = None
    actor_id: str | None = None
    target_id: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


class EventPage(NamedTuple):
    """One page of the workspace's log and its total; `total_exact` False: at least `total`."""

    rows: list[AuditEvent]
    total: int
    total_exact: bool


def _ordered(query, *, newest_first: bool):
    if newest_first:
        return query.order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
    return query.order_by(AuditEvent.created_at.asc(), AuditEvent.id.asc())


def _rows(query, *, newest_first: bool, offset: int, limit: int) -> list[AuditEvent]:
    page = _ordered(query, newest_first=newest_first).offset(offset).limit(limit)
    return list(db.session.execute(page).scalars())


def list_events(workspace_id: str, where: EventFilter, *, offset: int, limit: int) -> EventPage:
    """One page of the workspace's events, newest first, and the total up to the limit."""
    conditions = [AuditEvent.workspace_id == workspace_id]
    if where.type is not None:
        conditions.append(AuditEvent.type == where.type.value)
    if where.actor_id is not None:
        conditions.append(AuditEvent.actor_id == where.actor_id)
    if where.target_id is not None:
        conditions.append(AuditEvent.target_id == where.target_id)
    if where.created_from is not None:
        conditions.append(AuditEvent.created_at >= where.created_from)
    if where.created_to is not None:
        conditions.append(AuditEvent.created_at < where.created_to)
    cap = EXACT_TOTAL_LIMIT
    # One match more than the cap tells "exactly the cap" from "more than the cap".
    matches = select(literal_column("1")).select_from(AuditEvent).where(*conditions)
    counted = db.session.execute(
        select(func.count()).select_from(matches.limit(cap + 1).subquery())
    ).scalar_one()
    rows = _rows(
        select(AuditEvent).where(*conditions), newest_first=True, offset=offset, limit=limit
    )
    return EventPage(rows, min(counted, cap), counted <= cap)


def changelog(
    workspace_id: str,
    technical_user_id: str,
    token_ids: list[str],
    *,
    newest_first: bool,
    offset: int,
    limit: int,
) -> tuple[list[AuditEvent], int]:
    """One page of the changes to a technical user and to each of its API tokens, and the total.

    The total is exact: a technical user's changes are few.
    """
    query = select(AuditEvent).where(
        AuditEvent.workspace_id == workspace_id,
        AuditEvent.target_id.in_([technical_user_id, *token_ids]),
        AuditEvent.type.in_([t.value for t in CHANGELOG_TYPES]),
    )
    total = db.session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    return _rows(query, newest_first=newest_first, offset=offset, limit=limit), total
