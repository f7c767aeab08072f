"""Client authentication for API tokens: the literal client id `apitoken` and the token as secret.

Accepted (real LeanIX clients use both): HTTP Basic `apitoken:<token>`, or
`client_id=apitoken&client_secret=<token>` in the form body. A token that is
malformed or fails its checksum is refused before any database work.
"""

import base64
import binascii
from datetime import UTC, datetime

from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from flask import current_app

from .. import tokens
from ..services.credentials import CredentialRefused, Principal, resolve_principal
from .errors import InvalidClient

CLIENT_ID = "apitoken"
AUTH_METHOD = "apitoken"
# The same client authentication at the token endpoint, where the lookup also locks the API
# token row until the grant commits (see `services.credentials.resolve_principal`).
GRANT_AUTH_METHOD = "apitoken-grant"


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """Split an `Authorization: Basic` header into (user, password); None if absent or not Basic."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClient("malformed_authorization_header") from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise InvalidClient("malformed_authorization_header")
    return user, password


class ApiTokenClient(ClientMixin):
    """The Authlib client for one request: the principal behind the presented API token."""

    def __init__(self, principal: Principal):
        self.principal = principal
        self.granted_scopes: tuple[str, ...] = principal.scopes
        self.audience: tuple[str, ...] = ()
        self.issued = None

    def get_client_id(self):
        """The API token's id (the `client_id` claim)."""
        return self.principal.token_id

    def get_default_redirect_uri(self):
        """No redirects: client credentials only."""
        return None

    def get_allowed_scope(self, scope):
        """The requested scopes the principal holds."""
        return " ".join(s for s in scope.split() if s in self.principal.scopes)

    def check_redirect_uri(self, redirect_uri):
        """No redirects: client credentials only."""
        return False

    def check_client_secret(self, client_secret):
        """Never called: the secret is checked by digest lookup in authenticate_api_token."""
        return False

    def check_endpoint_auth_method(self, method, endpoint):
        """Only the apitoken method is accepted."""
        return method in (AUTH_METHOD, GRANT_AUTH_METHOD)

    def check_response_type(self, response_type):
        """No authorization endpoint."""
        return False

    def check_grant_type(self, grant_type):
        """Only client_credentials."""
        return grant_type == "client_credentials"


def presented_credentials(request) -> tuple[str, str]:
    """(client_id, secret) from Basic or the form body.

    Two secrets (Basic and `client_secret`) are one method too many (RFC 6749
    section 2.3); a body `client_id` beside Basic is tolerated when it names the
    same client, as some clients send it out of habit.
    """
    basic = parse_basic(request.headers.get("Authorization"))
    form = request.form
    if basic:
        if "client_secret" in form:
            raise InvalidRequestError("Use one client authentication method, not both")
        if "client_id" in form and form["client_id"] != basic[0]:
            raise InvalidRequestError("client_id does not match the Authorization header")
        return basic
    if "client_id" in form or "client_secret" in form:
        return form.get("client_id", ""), form.get("client_secret", "")
    raise InvalidClient("missing_credentials")


def authenticate_api_token(query_client, request, *, lock: bool = False) -> ApiTokenClient:
    """Authlib client-auth hook: the checksum first, then one indexed lookup by SHA-256."""
    client_id, secret = presented_credentials(request)
    if client_id != CLIENT_ID:
        raise InvalidClient("wrong_client_id")
    if not tokens.is_well_formed(secret, current_app.config["TOKEN_PREFIX"]):
        raise InvalidClient("malformed_token")
    try:
        principal = resolve_principal(tokens.digest(secret), datetime.now(UTC), lock=lock)
    except CredentialRefused as refused:
        raise InvalidClient(refused.reason, refused.principal) from None
    return ApiTokenClient(principal)


def authenticate_for_grant(query_client, request) -> ApiTokenClient:
    """The token endpoint's hook: as `authenticate_api_token`, holding the token row.

    Only the grant locks: the revocation endpoint's caller may revoke its own
    token (FOR UPDATE), and holding a KEY SHARE lock on it first would let two
    such requests deadlock.
    """
    return authenticate_api_token(query_client, request, lock=True)
