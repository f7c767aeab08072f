"""RFC 7662 token introspection at `POST /services/mtm/v1/oauth2/introspect`.

The caller authenticates with its own API token, as at the token endpoint, and
sees only its own workspace: any token of another workspace introspects as
`{"active": false}`, exactly like an unknown one. Any credential of the
workspace may introspect any token of it (a resource API's checker is usually
a technical user).

An access token is active when its signature verifies against an active or
retiring key, it is inside `nbf`..`exp`, its `jti` is not denylisted, and the
API token behind it (`client_id`) is still live with a live owner. An API
token (the `lxt_` format) is active when it is live. Active answers carry the
standard members and the `principal` object the access token would carry.
"""

from datetime import datetime

from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from flask import current_app

from ..models import ApiToken
from ..models.types import utcnow
from ..services.credentials import (
    CredentialRefused,
    Principal,
    resolve_principal_by_token_id,
)
from ..services.revocation import is_access_token_revoked
from .client_auth import ApiTokenClient
from .jwt_tokens import build_claims
from .presented import CallerAuthenticated, PresentedAccessToken, identify_token

INACTIVE = {"active": False}
# Instances' clocks may differ a little: a token signed by another instance an
# instant ago must not introspect as "not yet valid" here. `exp` gets no
# leeway: this server decides, and a token past its exp is over.
NBF_SKEW_SECONDS = 5
API_TOKEN_TYPE = "api_token"  # noqa: S105 - a token type name, not a secret


class TokenIntrospection(CallerAuthenticated, IntrospectionEndpoint):
    """Introspect access tokens and API tokens of the caller's own workspace."""

    def query_token(self, token_string, token_type_hint):
        """One of our access tokens or an API token row; None for anything else."""
        return identify_token(token_string)

    def check_permission(self, token, client: ApiTokenClient, request) -> bool:
        """Only tokens of the caller's own workspace; the rest look unknown."""
        return token.workspace_id == client.principal.workspace_id

    def create_introspection_payload(self, token):
        """The RFC 7662 answer: inactive unless every liveness rule holds."""
        if token is None:
            return dict(INACTIVE)
        now = utcnow()
        if isinstance(token, PresentedAccessToken):
            return _introspect_access_token(token, now)
        return _introspect_api_token(token, now)


def _live_principal(token_id: str, now: datetime) -> Principal | None:
    try:
        return resolve_principal_by_token_id(token_id, now)
    except CredentialRefused:
        return None


def _introspect_access_token(token: PresentedAccessToken, now: datetime) -> dict:
    timestamp = int(now.timestamp())
    if token.expires_at <= timestamp or token.not_before > timestamp + NBF_SKEW_SECONDS:
        return dict(INACTIVE)
    if is_access_token_revoked(token.jti):
        return dict(INACTIVE)
    principal = _live_principal(token.client_id, now)
    if principal is None or principal.subject_id != token.subject_id:
        return dict(INACTIVE)
    claims = token.claims
    return {
        "active": True,
        "scope": claims["scope"],
        "client_id": claims["client_id"],
        "username": token.user_name,
        "token_type": "bearer",
        "exp": claims["exp"],
        "iat": claims["iat"],
        "nbf": claims["nbf"],
        "sub": claims["sub"],
        "aud": claims["aud"],
        "iss": claims["iss"],
        "jti": claims["jti"],
        "instanceUrl": claims["instanceUrl"],
        "region": claims["region"],
        "principal": claims["principal"],
    }


def _introspect_api_token(token: ApiToken, now: datetime) -> dict:
    principal = _live_principal(token.id, now)
    if principal is None:
        return dict(INACTIVE)
    config = current_app.config
    # The same principal object an access token exchanged from this API token would carry.
    claims = build_claims(
        principal,
        scopes=principal.scopes,
        audience=(),
        issuer=config["ISSUER"],
        instance_url=config["INSTANCE_URL"],
        region=config["REGION"],
        issued_at=int(token.created_at.timestamp()),
        ttl=0,
        jti="",
    )
    # A replaced token in its grace period ends at revoked_at, before its expiry.
    ends_at = min(t for t in (token.expires_at, token.revoked_at) if t is not None)
    return {
        "active": True,
        "scope": claims["scope"],
        "client_id": token.id,
        "username": principal.user_name,
        "token_type": API_TOKEN_TYPE,
        "exp": int(ends_at.timestamp()),
        "iat": int(token.created_at.timestamp()),
        "sub": principal.subject_id,
        "iss": config["ISSUER"],
        "principal": claims["principal"],
    }
