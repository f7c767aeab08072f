"""The management API under /services/mtm/v1: technical users, personal API tokens, events.

Every call but the OpenAPI document needs a human ADMIN's bearer access token
(see `authserver.auth_bearer`); the workspace is the token's. Views parse and
authorise, call one service function, and render; the request wrapper commits.
"""

from flask import Blueprint, current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from ... import auth_bearer
from ...errors import PayloadTooLarge, field_error, handle_api_error
from ...extensions import db
from ...models import Workspace
from ...ratelimit import charge_principal
from .. import refuse_long_chunked_body
from .params import origin

bp = Blueprint("management", __name__, url_prefix="/services/mtm/v1")
bp.before_request(refuse_long_chunked_body)

PUBLIC_ENDPOINTS = frozenset({"management.openapi"})


@bp.record_once
def _init(state) -> None:
    auth_bearer.init_app(state.app)


@bp.before_request
def authenticate():
    """Every call but the public ones needs an ADMIN's bearer token."""
    if request.endpoint in PUBLIC_ENDPOINTS:
        return
    g.caller = auth_bearer.authenticate(request.headers.get("Authorization"), request.method)
    charge_principal(g.caller.user_id)


@bp.errorhandler(auth_bearer.ManagementAccessDenied)
def access_denied(error: auth_bearer.ManagementAccessDenied):
    """Roll back, render, then audit the refusal in the fresh transaction the wrapper commits."""
    response = handle_api_error(error)
    error.record(request.method, request.path, origin())
    return response


@bp.errorhandler(RequestEntityTooLarge)
def too_large(error: RequestEntityTooLarge):
    """413 in the envelope, naming the limit."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    return handle_api_error(
        PayloadTooLarge(
            f"The request body is larger than {limit} bytes",
            [field_error("body", f"must be at most {limit} bytes")],
        )
    )


@bp.after_request
def no_store(response):
    """Management answers are per-caller and may hold a secret: never cache them."""
    response.headers["Cache-Control"] = "no-store"
    return response


def caller() -> auth_bearer.Caller:
    """The authenticated ADMIN of this request."""
    return g.caller


def caller_workspace() -> Workspace:
    """The caller's workspace (the one in the access token)."""
    return db.session.get(Workspace, g.caller.workspace_id)


# The route modules register their views on `bp`.
from . import api_tokens, events, openapi_view, technical_users  # noqa: E402, F401
