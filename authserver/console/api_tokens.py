"""API Tokens: the signed-in admin's own personal tokens; anyone else's are not found.

Ownership is the service's rule (`get_personal_token` and `list_personal_tokens`
take the owner's id); the console passes the signed-in admin's.
"""

from flask import flash, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from ..api.management.params import origin
from ..errors import ApiError
from ..extensions import db
from ..models import ApiToken
from ..models.types import utcnow
from ..services import api_tokens as service
from . import auth, bp, display
from .forms import Form, default_expiry, end_of, expiry_bounds, page_number, parse_date, uuid_or_404

PAGE_SIZE = 20
LABELS = {"name": "Name", "expiry": "Expiration date"}


def _page(template: str, form: Form | None = None, status: int = 200, **context):
    now = utcnow()
    first, last = expiry_bounds(now)
    page = render_template(template, form=form, first_date=first, last_date=last, **context)
    return page, status


def _fields(form: Form, token: ApiToken | None = None) -> service.TokenChanges:
    """Name (the token's description) and expiration date, checked by the token rules."""
    name = form.check("name", service.check_description, form.value("name"), "name")
    if name is not None and not name.strip():
        form.error("name", "is required, so you can tell your tokens apart")
    expires_at = None
    day = parse_date(form, "expiry", required=True)
    if day is not None and (token is None or day != token.expires_at.date()):
        expires_at = form.check("expiry", service.check_expiry, end_of(day), "expiry")
    return service.TokenChanges(description=name, expires_at=expires_at)


def _own(token_id: str, lock: bool = False) -> ApiToken:
    """One of the signed-in admin's tokens in this workspace; anyone else's is a 404."""
    admin = auth.current_admin()
    return service.get_personal_token(
        admin.workspace.id, admin.user.id, uuid_or_404(token_id), lock=lock
    )


@bp.get("/api-tokens")
def api_tokens():
    """The signed-in admin's personal tokens, newest first."""
    admin = auth.current_admin()
    page = page_number(request.args)
    rows, total = service.list_personal_tokens(
        admin.workspace.id,
        admin.user.id,
        sort=("createdAt", False),
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    now = utcnow()
    items = [(row, display.expiry_state(row, now)) for row in rows]
    return _page(
        "admin/api_tokens/list.html",
        items=items,
        total=total,
        page=page,
        pages=max(1, -(-total // PAGE_SIZE)),
    )


@bp.route("/api-tokens/new", methods=["GET", "POST"])
def create_api_token():
    """A new personal token (ADMIN level, like its owner); shown once."""
    template = "admin/api_tokens/create.html"
    if request.method == "GET":
        return _page(template, Form(MultiDict({"expiry": default_expiry(utcnow())}), LABELS))
    form = Form(request.form, LABELS)
    fields = _fields(form)
    if not form.valid:
        return _page(template, form, 400)
    admin = auth.current_admin()
    try:
        token, secret = service.create_personal_token(
            admin.workspace,
            admin.user,
            expires_at=fields.expires_at,
            description=fields.description,
            actor=admin.actor,
            origin=origin(),
        )
    except ApiError as refused:
        db.session.rollback()
        form.take(refused)
        return _page(template, form, 400)
    # The secret goes into this response only: not the session, not a URL, not a redirect.
    return _page(
        "admin/token_once.html",
        title=f"API token {token.description} created",
        token=token,
        secret=secret,
        back=url_for(".api_tokens"),
    )


@bp.route("/api-tokens/<id>/edit", methods=["GET", "POST"])
def edit_api_token(id: str):
    """Edit the name and expiration date of one of the admin's tokens."""
    template = "admin/api_tokens/edit.html"
    token = _own(id, lock=request.method == "POST")
    if request.method == "GET":
        values = {"name": token.description, "expiry": token.expires_at.date().isoformat()}
        return _page(template, Form(MultiDict(values), LABELS), token=token)
    form = Form(request.form, LABELS)
    fields = _fields(form, token)
    if not form.valid:
        return _page(template, form, 400, token=token)
    admin = auth.current_admin()
    try:
        changed = service.update_personal_token(
            admin.workspace, token, fields, actor=admin.actor, origin=origin()
        )
    except ApiError as refused:
        db.session.rollback()
        form.take(refused)
        return _page(template, form, 409 if refused.status == 409 else 400, token=token)
    flash("Saved." if changed else "Nothing changed.", "ok")
    return redirect(url_for(".api_tokens"))


@bp.route("/api-tokens/<id>/delete", methods=["GET", "POST"])
def delete_api_token(id: str):
    """Delete one of the admin's tokens, after a confirmation page; it stops working at once."""
    token = _own(id, lock=request.method == "POST")
    if request.method == "GET":
        return _page("admin/api_tokens/delete.html", token=token)
    admin = auth.current_admin()
    service.delete_personal_token(admin.workspace, token, actor=admin.actor, origin=origin())
    flash(f"API token {token.description} was deleted; it no longer works.", "ok")
    return redirect(url_for(".api_tokens"))
