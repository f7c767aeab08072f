"""Errors and the handlers that render them, one shape per surface.

- OAuth endpoints (`/services/mtm/v1/oauth2/...`): RFC 6749 JSON `{error, error_description}`.
- The management API (`/services/mtm/v1/...`): the MTM envelope.
- Everything else: RFC 6749-style JSON as well, so no HTML error page ever leaks.
"""

import logging
import sqlite3
from http import HTTPStatus

from flask import Response, jsonify, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, InternalServerError

from .extensions import db

log = logging.getLogger(__name__)

OAUTH_PREFIX = "/services/mtm/v1/oauth2/"
MTM_PREFIX = "/services/mtm/v1/"

HTTP_TO_OAUTH_ERROR = {
    401: "invalid_client",
    429: "slow_down",
    500: "server_error",
    503: "temporarily_unavailable",
}


class ApiError(Exception):
    """A management-API error: an HTTP status, a message and optional per-field messages."""

    status = 400
    type = "BadRequest"

    def __init__(self, message: str, errors: list[dict] | None = None, headers=None):
        super().__init__(message)
        self.message = message
        self.errors = errors or []
        self.headers = headers or {}


class ValidationError(ApiError):
    """400: a field is missing or invalid."""


class Unauthorized(ApiError):
    """401: no bearer token, or a bad one."""

    status = 401
    type = "Unauthorized"


class Forbidden(ApiError):
    """403: wrong role or audience."""

    status = 403
    type = "Forbidden"


class NotFound(ApiError):
    """404: unknown, or belongs to another workspace or another admin."""

    status = 404
    type = "NotFound"


class Conflict(ApiError):
    """409: a duplicate live userName."""

    status = 409
    type = "Conflict"


class PayloadTooLarge(ApiError):
    """413: the body is over MAX_CONTENT_LENGTH."""

    status = 413
    type = "PayloadTooLarge"


class UnsupportedMediaType(ApiError):
    """415: the body is not in a media type the endpoint accepts."""

    status = 415
    type = "UnsupportedMediaType"


def field_error(field: str, message: str) -> dict:
    """One entry of the envelope's `errors` list."""
    return {"value": field, "messages": [message]}


def envelope(status: str, type_: str, message=None, errors=None, data=None, total=None) -> dict:
    """The MTM response envelope."""
    return {
        "status": status,
        "type": type_,
        "message": message,
        "errors": errors or [],
        "total": total,
        "data": data,
    }


def render_api_error(error: ApiError) -> Response:
    """Render an ApiError in the MTM envelope."""
    response = jsonify(envelope("ERROR", error.type, error.message, error.errors))
    response.status_code = error.status
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def render_http_error(status: int, description: str, headers=None) -> Response:
    """Render a framework-level error in the shape of the surface the path belongs to."""
    path = request.path
    if path.startswith(MTM_PREFIX) and not path.startswith(OAUTH_PREFIX):
        type_ = HTTPStatus(status).phrase.replace(" ", "")
        response = jsonify(envelope("ERROR", type_, description))
    else:
        error = HTTP_TO_OAUTH_ERROR.get(status, "invalid_request")
        response = jsonify({"error": error, "error_description": description})
        response.headers["Cache-Control"] = "no-store"
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def handle_http_exception(error: HTTPException) -> Response:
    """404/405/413/415 and friends, in the surface's shape, never an HTML page."""
    db.session.rollback()
    headers = {}
    if error.code == 405 and error.valid_methods:
        headers["Allow"] = ", ".join(error.valid_methods)
    description = error.description if error.code != 404 else "Not found"
    return render_http_error(error.code or 500, description, headers)


def handle_database_unavailable(error: Exception) -> Response:
    """The database is locked or unreachable: 503, try again shortly; never a stack trace.

    SQLAlchemy's OperationalError, or sqlite3's own when the write lock times
    out at BEGIN (raised under SQLAlchemy's begin hook, so not wrapped).
    """
    db.session.rollback()
    log.warning(
        "database unavailable on %s %s: %s",
        request.method,
        request.path,
        getattr(error, "orig", error),
    )
    return render_http_error(503, "The service is busy; try again", {"Retry-After": "1"})


def handle_unexpected(error: Exception) -> Response:
    """A bug: roll back, log it (without request data), answer a plain 500."""
    db.session.rollback()
    if not isinstance(error, InternalServerError):
        log.exception("unhandled error on %s %s", request.method, request.path)
    return render_http_error(500, "Internal server error")


def init_app(app) -> None:
    """Register the handlers."""
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(OperationalError, handle_database_unavailable)
    app.register_error_handler(sqlite3.OperationalError, handle_database_unavailable)
    app.register_error_handler(Exception, handle_unexpected)


def handle_api_error(error: ApiError) -> Response:
    """Roll back the failed change, then render the envelope."""
    db.session.rollback()
    return render_api_error(error)
