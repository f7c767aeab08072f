"""The workspace's audit log, newest first, filterable by type, actor and time."""

from datetime import date, timedelta

from flask import render_template, request
from sqlalchemy import select

from ..extensions import db
from ..models import Permission, TechnicalUser, User
from ..services import events as event_queries
from ..services.audit import CLI_ACTOR, EventType
from . import auth, bp
from .forms import Form, page_number, parse_date, start_of

PAGE_SIZE = 50
ACTOR_ID_MAX = 64  # the width of audit_events.actor_id
LABELS = {"type": "Type", "actor": "Actor", "from": "From", "to": "To"}


def actor_choices(workspace_id: str) -> list[tuple[str, str]]:
    """(id, label) of everyone who can act in the workspace: its people, technical users, CLI."""
    people = db.session.execute(
        select(User.id, User.user_name)
        .join(Permission, Permission.user_id == User.id)
        .where(Permission.workspace_id == workspace_id)
        .order_by(User.user_name)
    ).all()
    machines = db.session.execute(
        select(TechnicalUser.id, TechnicalUser.user_name, TechnicalUser.deleted_at)
        .where(TechnicalUser.workspace_id == workspace_id)
        .order_by(TechnicalUser.user_name)
    ).all()
    choices = [(row.id, row.user_name) for row in people]
    choices += [
        (row.id, f"{row.user_name} (technical user{', deleted' if row.deleted_at else ''})")
        for row in machines
    ]
    choices.append((CLI_ACTOR.id, "authserver command line"))
    return choices


def _filter(form: Form) -> event_queries.EventFilter:
    """The filter form, checked; an invalid field is reported and ignored."""
    event_type = None
    if form.value("type"):
        try:
            event_type = EventType(form.value("type"))
        except ValueError:
            form.error("type", "must be one of the listed event types")
    actor = form.value("actor").strip() or None
    if actor is not None and (len(actor) > ACTOR_ID_MAX or not actor.isprintable()):
        form.error("actor", "must be one of the listed actors")
        actor = None
    start, end = parse_date(form, "from", False), parse_date(form, "to", False)
    if start and end and start > end:
        form.error("from", "must not be after To")
    return event_queries.EventFilter(
        type=event_type,
        actor_id=actor,
        created_from=start_of(start) if start else None,
        # "To" includes that whole day.
        created_to=start_of(end + timedelta(days=1)) if end and end < date.max else None,
    )


@bp.get("/audit-log")
def audit_log():
    """Every event of the workspace: who did what to which, from where."""
    admin = auth.current_admin()
    form = Form(request.args, LABELS)
    where = _filter(form)
    page = page_number(request.args)
    found = event_queries.list_events(
        admin.workspace.id, where, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE
    )
    query = {k: v for k, v in request.args.items() if k in LABELS and v}
    if found.total_exact:
        pages = max(1, -(-found.total // PAGE_SIZE))
    else:
        # More than `total` events: more than this many pages, and a next page as long
        # as this one is full.
        pages = found.total // PAGE_SIZE
    page_html = render_template(
        "admin/audit_log.html",
        form=form,
        events=found.rows,
        total=found.total,
        total_exact=found.total_exact,
        page=page,
        pages=pages,
        more=not found.total_exact and len(found.rows) == PAGE_SIZE,
        types=[t.value for t in EventType],
        actors=actor_choices(admin.workspace.id),
        query=query,
    )
    return page_html, 400 if form.errors else 200
