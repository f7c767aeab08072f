"""Administration > Technical Users: list, create, detail with history, edit, replace, delete.

Each action calls the same service function as the management API's view for
it, with the signed-in admin as the actor, so the audit events are the same.
"""

from flask import current_app, flash, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from ..api.management.params import origin
from ..errors import ApiError
from ..extensions import db
from ..models import Role, TechnicalUser, User
from ..models.types import utcnow
from ..services import api_tokens as token_rules
from ..services import events as event_queries
from ..services import technical_users as service
from . import auth, bp, display
from .forms import (
    Form,
    default_expiry,
    end_of,
    expiry_bounds,
    page_number,
    parse_date,
    parse_whole_number,
    uuid_or_404,
)

PAGE_SIZE = 20
HISTORY_PAGE_SIZE = 50
LABELS = {
    "name": "Name",
    "description": "Description",
    "role": "Permission",
    "expiry": "Expiration date",
    "grace": "Grace period",
}


def _page(template: str, form: Form | None = None, status: int = 200, **context):
    """Render a page with what every technical-user form needs."""
    now = utcnow()
    first, last = expiry_bounds(now)
    page = render_template(
        template,
        form=form,
        roles=list(Role),
        role_descriptions=display.ROLE_DESCRIPTIONS,
        first_date=first,
        last_date=last,
        now=now,
        **context,
    )
    return page, status


def _form_refused(form: Form, refused: ApiError, template: str, **context):
    """A service refused the change: nothing was saved; show why next to the fields."""
    db.session.rollback()
    form.take(refused)
    return _page(template, form, 409 if refused.status == 409 else 400, **context)


def _expiry(form: Form, required: bool, unchanged_on=None):
    """The expiration date field as the moment the token stops, checked by the token rules.

    `unchanged_on`: the current expiry; a date equal to its date means "leave it".
    """
    day = parse_date(form, "expiry", required)
    if day is None:
        return None
    if unchanged_on is not None and day == unchanged_on.date():
        return None
    return form.check("expiry", token_rules.check_expiry, end_of(day), "expiry")


def _role(form: Form) -> Role | None:
    if not form.value("role"):
        form.error("role", "is required: choose ADMIN, MEMBER or VIEWER")
        return None
    return form.check("role", service.check_role, form.value("role"), "role")


def _description(form: Form) -> str | None:
    return form.check(
        "description", token_rules.check_description, form.value("description"), "description"
    )


@bp.get("/technical-users")
def technical_users():
    """The workspace's technical users: search by name, paged, with role, expiry and last use."""
    admin = auth.current_admin()
    search = request.args.get("q", "").strip()
    search_error = None
    if len(search) > service.USER_NAME_MAX or not search.isprintable():
        search_error = f"Search must be at most {service.USER_NAME_MAX} printable characters."
        search = ""
    page = page_number(request.args)
    rows, total = service.list_technical_users(
        admin.workspace.id,
        user_name_contains=search or None,
        sort=("userName", True),
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    tokens = service.current_tokens([row.id for row in rows])
    now = utcnow()
    items = [
        (row, tokens.get(row.id), display.expiry_state(tokens.get(row.id), now)) for row in rows
    ]
    return _page(
        "admin/technical_users/list.html",
        status=400 if search_error else 200,
        items=items,
        total=total,
        page=page,
        pages=max(1, -(-total // PAGE_SIZE)),
        search=search,
        search_error=search_error,
    )


@bp.route("/technical-users/new", methods=["GET", "POST"])
def create_technical_user():
    """Create Technical User: name, description, permission, expiration date; token shown once."""
    template = "admin/technical_users/create.html"
    if request.method == "GET":
        values = MultiDict({"expiry": default_expiry(utcnow())})
        return _page(template, Form(values, LABELS))
    form = Form(request.form, LABELS)
    name = form.check("name", service.check_user_name, form.value("name"), "name")
    description = _description(form)
    role = _role(form)
    expires_at = _expiry(form, required=True)
    if not form.valid:
        return _page(template, form, 400)
    admin = auth.current_admin()
    try:
        technical_user, token, secret = service.create_technical_user(
            admin.workspace,
            user_name=name,
            role=role,
            description=description,
            expires_at=expires_at,
            token_description="",
            actor=admin.actor,
            origin=origin(),
        )
    except ApiError as refused:
        return _form_refused(form, refused, template)
    # The secret goes into this response only: not the session, not a URL, not a redirect.
    return _page(
        "admin/token_once.html",
        title=f"Technical user {technical_user.user_name} created",
        technical_user=technical_user,
        token=token,
        secret=secret,
        back=url_for(".technical_user", id=technical_user.id),
    )


def _live(technical_user_id: str, lock: bool = False) -> TechnicalUser:
    admin = auth.current_admin()
    return service.get_technical_user(admin.workspace.id, uuid_or_404(technical_user_id), lock=lock)


@bp.get("/technical-users/<id>")
def technical_user(id: str):
    """One technical user: its properties, its current token, and its full history."""
    admin = auth.current_admin()
    technical_user = service.get_technical_user(admin.workspace.id, uuid_or_404(id), deleted=True)
    token = service.current_token(technical_user)
    page = page_number(request.args)
    history, total = event_queries.changelog(
        admin.workspace.id,
        technical_user.id,
        service.token_ids(technical_user.id),
        newest_first=True,
        offset=(page - 1) * HISTORY_PAGE_SIZE,
        limit=HISTORY_PAGE_SIZE,
    )
    creator = db.session.get(User, technical_user.created_by) if technical_user.created_by else None
    now = utcnow()
    return _page(
        "admin/technical_users/detail.html",
        technical_user=technical_user,
        token=token,
        state=display.expiry_state(token, now),
        creator=creator,
        history=history,
        total=total,
        page=page,
        pages=max(1, -(-total // HISTORY_PAGE_SIZE)),
    )


@bp.route("/technical-users/<id>/edit", methods=["GET", "POST"])
def edit_technical_user(id: str):
    """Edit description, permission and expiration date."""
    template = "admin/technical_users/edit.html"
    technical_user = _live(id, lock=request.method == "POST")
    token = service.current_token(technical_user)
    if request.method == "GET":
        values = {
            "description": technical_user.description,
            "role": technical_user.permission_role,
            "expiry": token.expires_at.date().isoformat(),
        }
        return _page(template, Form(MultiDict(values), LABELS), technical_user=technical_user)
    form = Form(request.form, LABELS)
    changes = service.TechnicalUserChanges(
        description=_description(form),
        role=_role(form),
        token=token_rules.TokenChanges(
            expires_at=_expiry(form, required=True, unchanged_on=token.expires_at)
        ),
    )
    if not form.valid:
        return _page(template, form, 400, technical_user=technical_user)
    admin = auth.current_admin()
    try:
        changed = service.update_technical_user(
            admin.workspace, technical_user, changes, actor=admin.actor, origin=origin()
        )
    except ApiError as refused:
        return _form_refused(form, refused, template, technical_user=technical_user)
    flash("Saved." if changed else "Nothing changed.", "ok")
    return redirect(url_for(".technical_user", id=technical_user.id))


@bp.route("/technical-users/<id>/replace-token", methods=["GET", "POST"])
def replace_token(id: str):
    """Replace token: a new secret shown once; the old one stops now or after a grace period."""
    template = "admin/technical_users/replace.html"
    technical_user = _live(id, lock=request.method == "POST")
    token = service.current_token(technical_user)
    limit = current_app.config["MAX_GRACE_PERIOD"]
    context = {
        "technical_user": technical_user,
        "token": token,
        "expired": not token.is_live(utcnow()),
        "grace_choices": display.grace_choices(limit),
    }
    if request.method == "GET":
        return _page(template, Form(MultiDict({"grace": "0"}), LABELS), **context)
    form = Form(request.form, LABELS)
    grace = parse_whole_number(form, "grace", 0)
    if grace is not None:
        grace = form.check("grace", service.check_grace_period, grace, "grace")
    expires_at = _expiry(form, required=False)
    if not form.valid:
        return _page(template, form, 400, **context)
    admin = auth.current_admin()
    try:
        new, secret = service.replace_token(
            admin.workspace,
            technical_user,
            grace_seconds=grace,
            changes=token_rules.TokenChanges(expires_at=expires_at),
            actor=admin.actor,
            origin=origin(),
        )
    except ApiError as refused:
        return _form_refused(form, refused, template, **context)
    return _page(
        "admin/token_once.html",
        title=f"New token for {technical_user.user_name}",
        technical_user=technical_user,
        token=new,
        secret=secret,
        old_token=token,
        grace=grace,
        back=url_for(".technical_user", id=technical_user.id),
    )


@bp.route("/technical-users/<id>/delete", methods=["GET", "POST"])
def delete_technical_user(id: str):
    """Delete, after a confirmation page: the token stops at once; the history stays."""
    technical_user = _live(id, lock=request.method == "POST")
    if request.method == "GET":
        return _page("admin/technical_users/delete.html", technical_user=technical_user)
    admin = auth.current_admin()
    service.delete_technical_user(
        admin.workspace, technical_user, actor=admin.actor, origin=origin()
    )
    flash(
        f"Technical user {technical_user.user_name} was deleted; its token no longer works.", "ok"
    )
    return redirect(url_for(".technical_users"))
