"""RFC 7009 token revocation at `POST /services/mtm/v1/oauth2/revoke`.

The caller authenticates with its own API token, as at the token endpoint.
It may revoke an access token (its `jti` is denied until `exp`) or an API
token (revoked as if deleted), only within its own workspace and only a
credential it manages (see `services.revocation.may_revoke`).

The answer is 200 with an empty object whenever the caller authenticated and
sent a token: for unknown tokens, for tokens of another workspace, for tokens
already revoked or expired, and for tokens it may not revoke. So the endpoint
tells nobody whether a token exists (RFC 7009 section 2.2). A refused attempt
inside the caller's workspace is audited; one across workspaces is not, since
the caller's workspace log must not name another tenant's credentials.
"""

from authlib.oauth2.rfc7009 import RevocationEndpoint

from ..extensions import db
from ..models import ApiToken, TechnicalUser, User
from ..models.types import utcnow
from ..services import revocation
from ..services.audit import Target
from ..services.revocation import Owner
from .client_auth import ApiTokenClient
from .presented import CallerAuthenticated, PresentedAccessToken, as_of, identify_token
from .server import request_origin


class TokenRevocation(CallerAuthenticated, RevocationEndpoint):
    """Revoke access tokens and API tokens of the caller's own workspace."""

    def authenticate_token(self, request, client: ApiTokenClient):
        """The presented token if the caller may revoke it, else None (still a 200)."""
        self.check_params(request, client)
        token = identify_token(request.form["token"])
        if token is None or token.workspace_id != client.principal.workspace_id:
            return None
        if not revocation.may_revoke(client.principal, _owner_of(token)):
            revocation.record_refused_revocation(
                kind=_kind_of(token),
                target=_target_of(token),
                caller=client.principal,
                origin=request_origin(),
            )
            return None
        return token

    def revoke_token(self, token, request) -> None:
        """Deny the access token's jti, or revoke the API token; both audited."""
        caller = request.client.principal
        origin = request_origin()
        now = utcnow()
        if isinstance(token, PresentedAccessToken):
            revocation.revoke_access_token(
                jti=token.jti,
                expires_at=as_of(token.expires_at),
                owner=_owner_of(token),
                owner_name=token.user_name,
                client_id=token.client_id,
                caller=caller,
                origin=origin,
                now=now,
            )
        else:
            revocation.revoke_api_token(
                token, owner_name=_owner_name(token), caller=caller, origin=origin, now=now
            )


def _owner_of(token: PresentedAccessToken | ApiToken) -> Owner:
    if isinstance(token, PresentedAccessToken):
        return Owner(id=token.subject_id, technical_user=token.technical_user)
    return revocation.api_token_owner(token)


def _kind_of(token: PresentedAccessToken | ApiToken) -> str:
    return "access_token" if isinstance(token, PresentedAccessToken) else "api_token"


def _target_of(token: PresentedAccessToken | ApiToken) -> Target:
    if isinstance(token, PresentedAccessToken):
        return Target(type="ACCESS_TOKEN", id=token.jti, name=token.user_name)
    return Target(type="API_TOKEN", id=token.id, name=_owner_name(token))


def _owner_name(token: ApiToken) -> str | None:
    """The user name of the technical user or admin who owns an API token."""
    if token.technical_user_id is not None:
        owner = db.session.get(TechnicalUser, token.technical_user_id)
    else:
        owner = db.session.get(User, token.user_id)
    return owner.user_name if owner is not None else None
