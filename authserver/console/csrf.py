"""CSRF protection for console forms: one random token per session, on every form.

The token lives in the signed session cookie, which another site can neither
read nor forge; every state-changing request must send it back as the form
field `csrf_token`. It is compared in constant time. A missing or wrong token
stops the request before any view runs, so nothing changes. The token is
replaced at sign-in, so one planted before sign-in is worth nothing after.
"""

import hmac
import secrets

from flask import request, session
from werkzeug.exceptions import BadRequest

SESSION_KEY = "csrf"
FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CsrfError(BadRequest):
    """400: the form's CSRF token is missing or does not match the session's."""

    description = (
        "This form has expired or did not come from this site, so nothing was changed. "
        "Go back, reload the page and try again."
    )


def token() -> str:
    """This session's CSRF token, made on first use."""
    value = session.get(SESSION_KEY)
    if not value:
        value = session[SESSION_KEY] = secrets.token_urlsafe(32)
    return value


def rotate() -> None:
    """A fresh token (at sign-in and sign-out)."""
    session[SESSION_KEY] = secrets.token_urlsafe(32)


def protect() -> None:
    """Refuse a state-changing request whose token is missing or wrong."""
    if request.method in SAFE_METHODS:
        return
    expected = session.get(SESSION_KEY)
    sent = request.form.get(FIELD)
    if not expected or not sent:
        raise CsrfError()
    # Bytes, so a non-ASCII value is a mismatch rather than a TypeError.
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfError()
