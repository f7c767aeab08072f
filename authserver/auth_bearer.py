"""Bearer authentication for the management API: a human ADMIN's access token, checked live.

Every call is checked in this order, and every refusal is audited as
MANAGEMENT_ACCESS_DENY with its true reason:

1. a bearer token is present (401);
2. `authserver.verify` checks it against this server's own key ring: signature,
   `typ` at+jwt, `iss`, `exp`/`nbf`/`iat`, required claims; `aud` must contain
   `mtm` (403 if the token is good but meant for other APIs, 401 otherwise);
3. the token speaks for a human ADMIN (403 for technical users and other roles);
4. its `jti` is not on the denylist (401);
5. the API token behind it (`client_id`) is still live and its owner still an
   ACTIVE ADMIN of the workspace (401; 403 for an owner who lost ADMIN), so a
   revoked, expired, deleted or demoted credential stops working at once;
6. a write needs the `write` scope (403).

401 answers carry `WWW-Authenticate: Bearer error="invalid_token"`, also when
no token was sent (the contract asks for it; RFC 6750 would leave `error` out).
"""

from dataclasses import dataclass
from datetime import UTC, datetime

import jwt
from flask import current_app

from .errors import ApiError
from .models import Role
from .services.audit import Actor, EventType, Origin, Target, record_event
from .services.credentials import CredentialRefused, resolve_principal_by_token_id
from .services.revocation import is_access_token_revoked
from .verify import InvalidToken, Verifier
from .verify import Principal as TokenPrincipal

MTM_API = "mtm"
REALM = "authserver"
EXTENSION_KEY = "authserver.mgmt_verifier"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The client sees why in general terms; the audit log keeps the precise reason.
DEAD_CREDENTIAL = "The API token behind this access token is no longer valid"


class ManagementAccessDenied(ApiError):
    """A refused management call; recorded as MANAGEMENT_ACCESS_DENY after the rollback."""

    def __init__(self, message: str, reason: str, *, token: TokenPrincipal | None = None):
        super().__init__(message, headers={"WWW-Authenticate": self.challenge()})
        self.reason = reason
        self.token = token

    def challenge(self) -> str:
        """The WWW-Authenticate value."""
        raise NotImplementedError

    def record(self, method: str, path: str, origin: Origin) -> None:
        """Add the denial event to the (fresh) transaction; the request wrapper commits it."""
        token = self.token
        record_event(
            EventType.MANAGEMENT_ACCESS_DENY,
            workspace=(token.workspace_id, token.workspace_name) if token else None,
            actor=Actor(token.id, token.username, token.technical_user) if token else None,
            target=Target(type="API_TOKEN", id=token.client_id) if token else None,
            origin=origin,
            payload={
                "reason": self.reason,
                "status": self.status,
                "method": method,
                "path": path[:200],
                **({"jti": token.jti} if token else {}),
            },
        )


class BearerUnauthorized(ManagementAccessDenied):
    """401: no bearer token, or one that is not (or no longer) valid."""

    status = 401
    type = "Unauthorized"

    def challenge(self) -> str:
        """RFC 6750 challenge for a bad or missing token."""
        return f'Bearer realm="{REALM}", error="invalid_token"'


class BearerForbidden(ManagementAccessDenied):
    """403: a valid token that may not use the management API, or not for this."""

    status = 403
    type = "Forbidden"

    def challenge(self) -> str:
        """RFC 6750 challenge for a token that lacks the privileges."""
        return f'Bearer realm="{REALM}", error="insufficient_scope"'


@dataclass(frozen=True)
class Caller:
    """The human ADMIN behind a management call."""

    user_id: str
    user_name: str
    workspace_id: str
    workspace_name: str
    token_id: str
    jti: str
    scopes: frozenset[str]

    @property
    def actor(self) -> Actor:
        """The caller as an audit actor."""
        return Actor(id=self.user_id, user_name=self.user_name, technical_user=False)


class VerifierCache:
    """An `authserver.verify.Verifier` over the key ring, rebuilt when the published keys change."""

    def __init__(self) -> None:
        self._current: tuple[dict, Verifier] | None = None

    def get(self, keyring, issuer: str) -> Verifier:
        """The verifier for the key ring's current JWKS."""
        jwks = keyring.jwks()
        current = self._current
        if current is None or (current[0] is not jwks and current[0] != jwks):
            current = (jwks, Verifier(issuer, MTM_API, keys=jwks))
            self._current = current  # one assignment: threads see the old pair or the new
        return current[1]


def init_app(app) -> None:
    """One verifier cache per application."""
    app.extensions.setdefault(EXTENSION_KEY, VerifierCache())


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = (header or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def _verify(token: str) -> TokenPrincipal:
    cache: VerifierCache = current_app.extensions[EXTENSION_KEY]
    verifier = cache.get(current_app.extensions["authserver.keys"], current_app.config["ISSUER"])
    try:
        return verifier.verify(token, audience=MTM_API)
    except InvalidToken as refused:
        # PyJWT checks the audience after signature, lifetime and issuer, so a token
        # refused for its audience is our own, valid one, just not meant for this API.
        if isinstance(refused.__cause__, jwt.InvalidAudienceError):
            raise BearerForbidden(
                "This access token is not valid for the management API",
                "wrong_audience",
                token=_verified_for_its_own_api(verifier, token),
            ) from None
        raise BearerUnauthorized(
            f"Invalid access token: {refused.description}", "invalid_token"
        ) from None


def _verified_for_its_own_api(verifier: Verifier, token: str) -> TokenPrincipal | None:
    """Who a token for another API speaks for (fully verified for that API), for the audit log."""
    try:
        audience = jwt.decode(token, options={"verify_signature": False}).get("aud")
        first = audience[0] if isinstance(audience, list) and audience else audience
        return verifier.verify(token, audience=first) if isinstance(first, str) else None
    except (jwt.PyJWTError, InvalidToken):
        return None


def authenticate(authorization: str | None, method: str) -> Caller:
    """The ADMIN caller behind an Authorization header, or raise ManagementAccessDenied."""
    token = bearer_token(authorization)
    if token is None:
        raise BearerUnauthorized("A bearer access token is required", "missing_token")
    claims = _verify(token)
    if claims.technical_user:
        raise BearerForbidden(
            "Technical users cannot use the management API", "technical_user", token=claims
        )
    if claims.role != Role.ADMIN:
        raise BearerForbidden("Only workspace admins may do this", "not_admin", token=claims)
    if is_access_token_revoked(claims.jti):
        raise BearerUnauthorized(
            "This access token was revoked", "access_token_revoked", token=claims
        )
    _check_credential(claims)
    if method in WRITE_METHODS and "write" not in claims.scopes:
        raise BearerForbidden("This needs the write scope", "insufficient_scope", token=claims)
    return Caller(
        user_id=claims.id,
        user_name=claims.username,
        workspace_id=claims.workspace_id,
        workspace_name=claims.workspace_name,
        token_id=claims.client_id,
        jti=claims.jti,
        scopes=claims.scopes,
    )


def _check_credential(claims: TokenPrincipal) -> None:
    """The API token behind the access token is live, for the same human and workspace."""
    try:
        live = resolve_principal_by_token_id(claims.client_id, datetime.now(UTC))
    except CredentialRefused as refused:
        if refused.reason == "owner_not_admin":
            raise BearerForbidden(
                "Only workspace admins may do this", refused.reason, token=claims
            ) from None
        raise BearerUnauthorized(DEAD_CREDENTIAL, refused.reason, token=claims) from None
    if (
        live.technical_user
        or live.subject_id != claims.id
        or live.workspace_id != claims.workspace_id
    ):
        raise BearerUnauthorized(DEAD_CREDENTIAL, "principal_mismatch", token=claims)
