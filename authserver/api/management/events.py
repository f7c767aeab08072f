"""The workspace's audit log."""

from ...errors import ValidationError, field_error
from ...services import events as service
from ...services.audit import EventType, event_to_dict
from . import bp, caller, render
from .params import paging, query_datetime, query_text, query_value

ID_MAX_CHARS = 64  # the width of actor_id and target_id


def _event_type() -> EventType | None:
    raw = query_value("type")
    if raw is None or raw == "":
        return None
    try:
        return EventType(raw)
    except ValueError:
        raise ValidationError(
            "type is unknown",
            [field_error("type", "must be one of " + ", ".join(t.value for t in EventType))],
        ) from None


def _filter() -> service.EventFilter:
    created_from = query_datetime("from")
    created_to = query_datetime("to")
    if created_from and created_to and created_from > created_to:
        raise ValidationError("from is after to", [field_error("from", "must not be after to")])
    return service.EventFilter(
        type=_event_type(),
        actor_id=query_text("actorId", ID_MAX_CHARS),
        target_id=query_text("targetId", ID_MAX_CHARS),
        created_from=created_from,
        created_to=created_to,
    )


@bp.get("/events")
def list_events():
    """The workspace's audit events, newest first; filters: type, actorId, targetId, from, to.

    Newest first by createdAt, then by id. `total` is exact up to EXACT_TOTAL_LIMIT
    matches; beyond, it is the limit and `totalExact` is false (paging still works).
    """
    where = _filter()
    offset, limit = paging()
    page = service.list_events(caller().workspace_id, where, offset=offset, limit=limit)
    return render.ok(
        [event_to_dict(row) for row in page.rows],
        "AuditEvent",
        total=page.total,
        total_exact=page.total_exact,
    )
