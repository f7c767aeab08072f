"""The OAuth endpoints under /services/mtm/v1/oauth2."""

from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
from flask import Blueprint, request

from ..oauth import server
from ..oauth.errors import echo
from ..ratelimit import client_auth_limits
from . import refuse_long_chunked_body

bp = Blueprint("oauth", __name__, url_prefix="/services/mtm/v1/oauth2")
bp.before_request(refuse_long_chunked_body)

FORM_TYPE = "application/x-www-form-urlencoded"
# RFC 8707 allows `resource` more than once; every other parameter must appear at most once.
REPEATABLE = frozenset({"resource"})


def check_form_request(required: tuple[str, ...] = ()) -> None:
    """Refuse what RFC 6749 section 3.2 forbids before Authlib sees the request."""
    body = request.get_data(cache=True)
    if body and request.mimetype != FORM_TYPE:
        raise InvalidRequestError(f"Content-Type must be {FORM_TYPE}")
    try:
        body.decode("utf-8")
        request.query_string.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequestError("The request is not valid UTF-8") from None
    for name in request.values:
        if name not in REPEATABLE and len(request.values.getlist(name)) > 1:
            raise InvalidRequestError(f"Parameter '{echo(name)}' is repeated")
    for name in required:
        if not request.values.get(name):
            raise InvalidRequestError(f"Missing {name}")


@bp.post("/token")
@client_auth_limits
def token():
    """Exchange an API token for a signed access token (client credentials)."""
    try:
        check_form_request(required=("grant_type",))
    except OAuth2Error as error:
        return server.handle_error_response(None, error)
    return server.create_token_response()


@bp.post("/revoke")
@client_auth_limits
def revoke():
    """RFC 7009: revoke an access token or an API token of the caller's workspace."""
    try:
        check_form_request()
    except OAuth2Error as error:
        return server.handle_error_response(None, error)
    return server.create_endpoint_response("revocation")


@bp.post("/introspect")
@client_auth_limits
def introspect():
    """RFC 7662: is this token of the caller's workspace active, and whose is it?"""
    try:
        check_form_request()
    except OAuth2Error as error:
        return server.handle_error_response(None, error)
    return server.create_endpoint_response("introspection")
