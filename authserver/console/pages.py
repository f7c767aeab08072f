"""The console's frame: hooks every request passes, error pages, and the Administration page."""

import logging

from flask import abort, g, redirect, render_template, request, session, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from ..errors import ApiError
from ..extensions import db
from . import auth, bp, csrf

# Reachable without a workspace: signing in and out, choosing a workspace, static files.
OPEN_ENDPOINTS = frozenset({"console.login", "console.static", "console.not_found"})
NO_WORKSPACE_ENDPOINTS = frozenset({"console.choose_workspace", "console.logout"})
NOT_FOUND = "There is nothing here, or it was deleted."

log = logging.getLogger(__name__)

# 'self' only: no inline script or style, no framing, forms post only here.
CSP = (
    "default-src 'self'; base-uri 'none'; object-src 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@bp.before_request
def guard():
    """CSRF on every state change, then: signed in, and an ACTIVE ADMIN of the chosen workspace."""
    csrf.protect()
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    user = auth.session_user()
    if user is None:
        auth.end_session()
        return redirect(url_for("console.login", next=_here()))
    if request.endpoint in NO_WORKSPACE_ENDPOINTS:
        return None
    admin = auth.enter_workspace(user, session.get(auth.WORKSPACE))
    if admin is None:
        session.pop(auth.WORKSPACE, None)
        return redirect(url_for("console.choose_workspace"))
    g.console_admin = admin
    return None


def _here() -> str | None:
    """Where to come back to after signing in: this page, if it was a GET."""
    if request.method != "GET":
        return None
    return request.full_path if request.query_string else request.path


@bp.after_request
def security_headers(response: Response) -> Response:
    """Security headers on every console response; pages are never cached."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.endpoint != "console.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.context_processor
def frame():
    """What every console page may use."""
    admin = g.get("console_admin")
    return {
        "csrf_token": csrf.token,
        "csrf_field": csrf.FIELD,
        "admin": admin,
        "can_switch": lambda: admin is not None and len(auth.admin_workspaces(admin.user)) > 1,
    }


def error_page(status: int, title: str, message: str) -> tuple[str, int]:
    """A plain error page in the console's frame."""
    return render_template("admin/error.html", title=title, message=message), status


@bp.errorhandler(csrf.CsrfError)
def csrf_refused(error: csrf.CsrfError):
    """400, nothing changed."""
    db.session.rollback()
    return error_page(400, "The form could not be accepted", error.description)


@bp.errorhandler(ApiError)
def service_refused(error: ApiError):
    """A service refusal no form handles (most often: not found, or another admin's token)."""
    db.session.rollback()
    if error.status == 404:
        return error_page(404, "Not found", NOT_FOUND)
    return error_page(error.status, "That did not work", error.message)


@bp.errorhandler(HTTPException)
def http_error(error: HTTPException):
    """Other HTTP errors as console pages, never JSON."""
    db.session.rollback()
    status = error.code or 500
    if status == 404:
        return error_page(404, "Not found", NOT_FOUND)
    return error_page(status, error.name, error.description or "")


@bp.errorhandler(Exception)
def unexpected(error: Exception):
    """A bug: roll back, log it, show a plain 500 page."""
    db.session.rollback()
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_page(500, "Something went wrong", "Nothing was changed. Please try again.")


@bp.route("/<path:anything>", methods=["GET", "POST"])
def not_found(anything: str):
    """Unknown console paths are console 404 pages."""
    abort(404)


@bp.get("/")
def administration():
    """Administration: the entry to technical users, API tokens and the audit log."""
    return render_template("admin/administration.html")
