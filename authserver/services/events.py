"""Reading the audit log: a workspace's events and a technical user's changelog.

Both list events by `(created_at, id)`, newest first unless asked otherwise:
`createdAt` is what people see, and the id breaks ties. Each filter of the
workspace's log has an index in that order over sealed events (see
`AuditEvent`), so their part of a page is read straight from an index however
many events match. Events not sealed yet (the last few seconds' while the
sealer runs) are found through the index of unsealed events and merged in.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import func, literal_column, select, union_all

from ..extensions import db
from ..models import AuditEvent
from ..models.audit import HASHED, UNSEALED
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


def _order(columns, *, newest_first: bool) -> tuple:
    created_at, event_id = columns.created_at, columns.id
    if newest_first:
        return created_at.desc(), event_id.desc()
    return created_at.asc(), event_id.asc()


def _page(
    conditions: list, unsealed: int, *, newest_first: bool, offset: int, limit: int
) -> list[AuditEvent]:
    """One page of the events matching `conditions`, sealed and unsealed merged in order.

    `unsealed` is how many of the matches are not sealed yet (few while the
    sealer keeps up). Each of them can stand before at most the whole page, so
    the sealed events on the page or before it are those from position
    `offset - unsealed` to `offset + limit` of the sealed ones in listing order,
    read from a sealed-events index; the sealed events before that window are
    all before the page, and the page starts that many places earlier.
    """
    skipped = max(0, offset - unsealed)
    sealed = (
        select(AuditEvent.id, AuditEvent.created_at)
        .where(*conditions, HASHED)
        .order_by(*_order(AuditEvent, newest_first=newest_first))
        .offset(skipped)
        .limit(offset + limit - skipped)
        .subquery()
    )
    recent = select(AuditEvent.id, AuditEvent.created_at).where(*conditions, UNSEALED)
    candidates = union_all(select(sealed.c.id, sealed.c.created_at), recent).subquery()
    page = (
        select(AuditEvent)
        .join(candidates, AuditEvent.id == candidates.c.id)
        .order_by(*_order(candidates.c, newest_first=newest_first))
        .offset(offset - skipped)
        .limit(limit)
    )
    return list(db.session.execute(page).scalars())


def _counts(conditions: list, cap: int | None = None) -> tuple[int, int]:
    """How many matches are sealed (counted only up to `cap` + 1) and how many are not."""
    sealed = select(literal_column("1")).select_from(AuditEvent).where(*conditions, HASHED)
    if cap is not None:
        sealed = sealed.limit(cap + 1)
    unsealed = select(literal_column("1")).select_from(AuditEvent).where(*conditions, UNSEALED)
    return tuple(
        db.session.execute(select(func.count()).select_from(matches.subquery())).scalar_one()
        for matches in (sealed, unsealed)
    )


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
    sealed, unsealed = _counts(conditions, cap)
    rows = _page(conditions, unsealed, newest_first=True, offset=offset, limit=limit)
    counted = sealed + unsealed
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
    conditions = [
        AuditEvent.workspace_id == workspace_id,
        AuditEvent.target_id.in_([technical_user_id, *token_ids]),
        AuditEvent.type.in_([t.value for t in CHANGELOG_TYPES]),
    ]
    sealed, unsealed = _counts(conditions)
    rows = _page(conditions, unsealed, newest_first=newest_first, offset=offset, limit=limit)
    return rows, sealed + unsealed
