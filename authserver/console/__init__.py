"""The admin console under /admin: server-rendered pages over the same services as the API.

- Sign-in with email and password (argon2id, `authserver.passwords`); the
  session is Flask's signed cookie, scoped to /admin, HttpOnly, SameSite=Lax,
  Secure on HTTPS (or always, with AUTHSERVER_SESSION_COOKIE_SECURE).
- Every request re-reads the user and their permission, so an admin who is
  archived, demoted or whose password changes is out at their next click.
- Every POST carries the session's CSRF token (`csrf.py`); a missing or wrong
  one is a 400 page and nothing changes.
- Views parse the form, call one service function (the same one the
  management API calls, so the audit events are the same), and render; the
  request wrapper commits.
"""

from pathlib import Path

from flask import Blueprint, Flask

from . import secret, sessions

STATIC_FOLDER = str(Path(__file__).resolve().parent.parent / "static")
URL_PREFIX = "/admin"

bp = Blueprint(
    "console",
    __name__,
    url_prefix=URL_PREFIX,
    static_folder=STATIC_FOLDER,
    static_url_path="/static",
)


def init_app(app: Flask) -> None:
    """Session cookie settings, the secret key source, and the blueprint."""
    app.config.update(
        SESSION_COOKIE_NAME="authserver_console",
        SESSION_COOKIE_PATH=URL_PREFIX,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=app.config["CONSOLE_SESSION_LIFETIME"],
    )
    app.session_interface = sessions.ConsoleSessionInterface(URL_PREFIX)
    secret.init_app(app)
    app.register_blueprint(bp)


# The view modules register their routes and hooks on `bp`.
from . import (  # noqa: E402
    api_tokens,  # noqa: F401
    audit_log,  # noqa: F401
    display,  # noqa: F401
    login,  # noqa: F401
    pages,  # noqa: F401
    technical_users,  # noqa: F401
)
