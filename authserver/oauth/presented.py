"""What a caller presents to the revocation and introspection endpoints.

The caller authenticates exactly as at the token endpoint (Basic
`apitoken:<its API token>` or `client_id`/`client_secret` in the body). The
token it asks about is recognised by its format, not by `token_type_hint`:
an API token has the configured prefix and a valid checksum; anything with
two dots is read as one of our access tokens. Anything else is unknown.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from flask import current_app
from sqlalchemy import select

from .. import tokens
from ..extensions import db
from ..keys import SigningKey
from ..models import ApiToken
from ..models.types import utcnow
from ..services.credentials import note_use
from ..verify import ACCEPTED_TYPES, REQUIRED_CLAIMS
from .client_auth import AUTH_METHOD, ApiTokenClient
from .server import request_origin

# The claims and `typ` values are those resource APIs require (`authserver.verify`): a
# JWT without them is not ours. Lifetime is judged by the caller (introspection: exp and
# nbf; revocation: any), so PyJWT checks only the signature, the issuer and that claims
# exist.
_DECODE_OPTIONS = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": True,
    "require": list(REQUIRED_CLAIMS),
}


@dataclass(frozen=True)
class PresentedAccessToken:
    """One of our access tokens, its signature verified, whatever its lifetime."""

    claims: dict[str, Any]
    jti: str
    workspace_id: str
    subject_id: str
    user_name: str
    technical_user: bool
    client_id: str
    expires_at: int
    not_before: int

    def __repr__(self) -> str:
        return f"PresentedAccessToken(jti={self.jti!r}, exp={self.expires_at})"


def _published_key(kid: Any) -> SigningKey | None:
    """The active or retiring key with this kid, if any."""
    for key in current_app.extensions["authserver.keys"].published():
        if key.kid == kid:
            return key
    return None


def read_access_token(token: str) -> PresentedAccessToken | None:
    """Verify an access token's header, signature, issuer and claims; None if it is not ours."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return None
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYPES:
        return None
    key = _published_key(header.get("kid"))
    # The key pins the algorithm: never the token's own `alg` (no none, no HS256).
    if key is None or header.get("alg") != key.alg:
        return None
    try:
        claims = jwt.decode(
            token,
            key.private_key.public_key(),
            algorithms=[key.alg],
            options=_DECODE_OPTIONS,
            issuer=current_app.config["ISSUER"],
        )
    except jwt.PyJWTError:
        return None
    return _presented(claims)


def _presented(claims: dict[str, Any]) -> PresentedAccessToken | None:
    """The facts revocation and introspection need, or None if the claims have the wrong shape."""
    principal = claims.get("principal")
    permission = principal.get("permission") if isinstance(principal, dict) else None
    if not isinstance(permission, dict):
        return None
    values = (
        claims["jti"], permission.get("workspaceId"), claims["sub"],
        principal.get("username"), claims["client_id"],
    )  # fmt: skip
    if not all(isinstance(value, str) for value in values):
        return None
    if type(principal.get("technicalUser")) is not bool:
        return None
    if not all(type(claims[name]) is int for name in ("exp", "nbf")):
        return None
    jti, workspace_id, subject_id, user_name, client_id = values
    return PresentedAccessToken(
        claims=claims,
        jti=jti,
        workspace_id=workspace_id,
        subject_id=subject_id,
        user_name=user_name,
        technical_user=principal["technicalUser"],
        client_id=client_id,
        expires_at=claims["exp"],
        not_before=claims["nbf"],
    )


def find_api_token(secret: str) -> ApiToken | None:
    """The API token row for a presented secret, by digest; None if malformed or unknown."""
    if not tokens.is_well_formed(secret, current_app.config["TOKEN_PREFIX"]):
        return None
    query = select(ApiToken).where(ApiToken.secret_sha256 == tokens.digest(secret))
    return db.session.execute(query).scalar()


def identify_token(value: str) -> PresentedAccessToken | ApiToken | None:
    """An API token row or one of our access tokens; None for anything else."""
    if value.startswith(current_app.config["TOKEN_PREFIX"]):
        return find_api_token(value)
    if value.count(".") == 2:
        return read_access_token(value)
    return None


def as_of(timestamp: int) -> datetime:
    """A JWT NumericDate as an aware UTC datetime."""
    return datetime.fromtimestamp(timestamp, UTC)


class CallerAuthenticated:
    """Mixin for Authlib's token endpoints: our client auth, the token in the body only."""

    CLIENT_AUTH_METHODS = [AUTH_METHOD]

    def authenticate_endpoint_client(self, request) -> ApiTokenClient:
        """Authenticate the caller as at the token endpoint, and note the use of its API token."""
        client = super().authenticate_endpoint_client(request)
        principal = client.principal
        note_use(principal, request_origin().ip, utcnow(), current_app.config["LAST_USED_INTERVAL"])
        return client

    def check_params(self, request, client) -> None:
        """`token` is required in the body; `token_type_hint` is accepted and ignored.

        The token's format says what it is, so an unknown or wrong hint never
        makes a difference (RFC 7009 section 2.1 lets the server search across
        all token types it supports).
        """
        if "token" in request.args:
            raise InvalidRequestError("Send the token in the request body, not the URL")
        if not request.form.get("token"):
            raise InvalidRequestError("Missing token")
