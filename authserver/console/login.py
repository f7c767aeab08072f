"""Signing in and out, and choosing a workspace."""

from flask import flash, redirect, render_template, request, session, url_for

from .. import passwords
from ..api.management.params import origin
from ..models import Status
from . import auth, bp
from .forms import Form

LABELS = {"email": "Email", "password": "Password"}
WRONG_CREDENTIALS = "The email or password is wrong."


def safe_next(value: str | None) -> str | None:
    """A console path to return to after signing in; anything else (another site) is dropped."""
    if not value or not value.startswith(bp.url_prefix + "/"):
        return None
    if "\\" in value or not value.isprintable() or value.startswith(url_for("console.login")):
        return None
    return value


def _login_page(form: Form | None = None, status: int = 200, **extra):
    next_path = safe_next(request.values.get("next"))
    page = render_template("admin/login.html", form=form, next=next_path, **extra)
    return page, status


def _refuse(form: Form, email: str, user, reason: str):
    """Audit the refusal; the page says only that email or password is wrong."""
    auth.record_login_denied(email, user, reason, origin())
    form.general.append(WRONG_CREDENTIALS)
    return _login_page(form, 400)


def _denied_page(user, reason: str, status: int = 403):
    """The clear page for someone whose password is right but who may not enter."""
    auth.record_login_denied(user.user_name, user, reason, origin())
    auth.end_session()
    held = auth.permissions_of(user)
    page = render_template("admin/denied.html", user=user, reason=reason, permissions=held)
    return page, status


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Email and password; only ACTIVE ADMINs of a workspace get in."""
    if request.method == "GET":
        if auth.session_user() is not None and session.get(auth.WORKSPACE):
            return redirect(safe_next(request.args.get("next")) or url_for(".administration"))
        return _login_page()
    form = Form(request.form, LABELS)
    email, password = form.value("email").strip(), form.value("password")
    for name, value in (("email", email), ("password", password)):
        if not value:
            form.error(name, "is required")
    if not form.valid:
        return _login_page(form, 400)
    wait = auth.login_retry_after(email, origin().ip)
    if wait is not None:
        auth.record_login_denied(email, None, "rate_limited", origin())
        minutes = -(-wait // 60)
        form.general.append(f"Too many failed sign-ins. Wait {minutes} minutes, then try again.")
        page, _ = _login_page(form)
        return page, 429, {"Retry-After": str(wait)}
    return _check_password(form, email, password)


def _check_password(form: Form, email: str, password: str):
    user = passwords.find_user(email) if auth.loggable_email(email) else None
    hashed = user.password_hash if user is not None else None
    if not passwords.verify_password(hashed, password):
        if user is None:
            reason = "unknown_user"
        else:
            reason = "no_password" if not hashed else "wrong_password"
        return _refuse(form, email, user, reason)
    if user.status != Status.ACTIVE:
        return _denied_page(user, "user_not_active")
    if passwords.needs_rehash(hashed):
        user.password_hash = passwords.hash_password(password)
    workspaces = auth.admin_workspaces(user)
    if not workspaces:
        return _denied_page(user, "not_admin")
    auth.start_session(user)
    next_path = safe_next(request.form.get("next"))
    if len(workspaces) > 1:
        return redirect(url_for(".choose_workspace", next=next_path))
    return _enter(auth.enter_workspace(user, workspaces[0][1].id), next_path)


def _enter(admin: auth.ConsoleAdmin, next_path: str | None):
    """Work in this workspace from now on; audited as CONSOLE_LOGIN."""
    session[auth.WORKSPACE] = admin.workspace.id
    auth.record_login(admin, origin())
    return redirect(next_path or url_for(".administration"))


@bp.route("/workspace", methods=["GET", "POST"])
def choose_workspace():
    """An admin of several workspaces picks the one to work in."""
    user = auth.session_user()
    choices = auth.admin_workspaces(user)
    if not choices:
        return _denied_page(user, "not_admin")
    next_path = safe_next(request.values.get("next"))
    if request.method == "GET" and len(choices) == 1:
        only = choices[0][1].id
        if session.get(auth.WORKSPACE) == only:  # already working there: nothing to record
            return redirect(next_path or url_for(".administration"))
        return _enter(auth.enter_workspace(user, only), next_path)
    form = Form(request.form, {"workspace": "Workspace"})
    if request.method == "POST":
        admin = auth.enter_workspace(user, form.value("workspace"))
        if admin is not None:
            return _enter(admin, next_path)
        form.error("workspace", "must be one of the workspaces listed")
    status = 400 if form.errors else 200
    current = session.get(auth.WORKSPACE)
    page = render_template(
        "admin/workspace.html", form=form, choices=choices, current=current, next=next_path
    )
    return page, status


@bp.post("/logout")
def logout():
    """Sign out (audited when the admin was in a workspace)."""
    user = auth.session_user()
    admin = auth.enter_workspace(user, session.get(auth.WORKSPACE)) if user else None
    if admin is not None:
        auth.record_logout(admin, origin())
    auth.end_session()
    flash("You are signed out.", "info")
    return redirect(url_for(".login"))
