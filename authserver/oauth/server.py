"""The Authlib authorization server: one grant (client credentials), one client auth method."""

from datetime import UTC, datetime

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import (
    InvalidScopeError,
    OAuth2Error,
    UnsupportedGrantTypeError,
)
from flask import current_app
from flask import request as flask_request

from ..extensions import db
from ..services.audit import EventType, Origin, record_event
from ..services.credentials import CredentialRefused, confirm_principal, note_use
from .client_auth import (
    AUTH_METHOD,
    GRANT_AUTH_METHOD,
    ApiTokenClient,
    authenticate_api_token,
    authenticate_for_grant,
)
from .errors import InvalidClient, InvalidTarget, echo
from .jwt_tokens import AccessTokenIssuer


def request_origin() -> Origin:
    """The caller's address and user agent, for the audit log."""
    return Origin(ip=flask_request.remote_addr, user_agent=flask_request.user_agent.string)


class ApiTokenGrant(grants.ClientCredentialsGrant):
    """Client credentials for API tokens, with scope narrowing and RFC 8707 resources."""

    TOKEN_ENDPOINT_AUTH_METHODS = [GRANT_AUTH_METHOD]

    def validate_requested_scope(self):
        """`scope` may only narrow what the principal holds; `resource` narrows the audience."""
        client: ApiTokenClient = self.request.client
        held = client.principal.scopes
        requested = self.request.payload.scope
        if requested is not None:
            wanted = set(requested.split())
            if not wanted or not wanted <= set(held):
                raise InvalidScopeError(f"Scope must be a subset of: {' '.join(held)}")
            client.granted_scopes = tuple(s for s in held if s in wanted)
        client.audience = self._audience(client)

    def _audience(self, client: ApiTokenClient) -> tuple[str, ...]:
        config = current_app.config
        allowed = (
            config["TECHNICAL_USER_APIS"] if client.principal.technical_user else config["APIS"]
        )
        resources = self.request.payload.datalist.get("resource") or []
        if not resources:
            return tuple(allowed)
        audience = []
        for resource in resources:
            api = resource_to_api(resource, config)
            if api is None or api not in allowed:
                raise InvalidTarget(f"Resource is unknown or not allowed: {echo(resource, 100)}")
            if api not in audience:
                audience.append(api)
        return tuple(audience)


def resource_to_api(resource: str, config) -> str | None:
    """Map an RFC 8707 resource (an API identifier or `<instanceUrl>/services/<api>`) to an API."""
    if resource in config["APIS"]:
        return resource
    base = config["INSTANCE_URL"] + "/services/"
    if resource.startswith(base):
        api = resource[len(base) :].split("/", 1)[0]
        if api in config["APIS"]:
            return api
    return None


class AuthServer(AuthorizationServer):
    """Authlib's Flask server with our token generator, save hook and denial audit."""

    def init_app(self, app, query_client=None, save_token=None):
        """Bind to the app; the client is resolved by our auth method, not query_client."""
        super().init_app(app, query_client=lambda client_id: None, save_token=self._save_grant)
        self.register_client_auth_method(AUTH_METHOD, authenticate_api_token)
        self.register_client_auth_method(GRANT_AUTH_METHOD, authenticate_for_grant)
        self.register_grant(ApiTokenGrant)
        self.register_token_generator("client_credentials", self._generate)

    @staticmethod
    def _issuer() -> AccessTokenIssuer:
        return current_app.extensions["authserver.issuer"]

    def _generate(
        self,
        grant_type,
        client,
        user=None,
        scope=None,
        expires_in=None,
        include_refresh_token=False,
    ):
        """Sign the access token; the response shape is the one LeanIX clients expect."""
        issued = self._issuer().issue(client.principal, client.granted_scopes, client.audience)
        client.issued = issued
        return {
            "access_token": issued.token,
            "token_type": "bearer",
            "expires_in": max(0, issued.expires_at - int(datetime.now(UTC).timestamp()) - 1),
            "scope": " ".join(client.granted_scopes),
            "expired": False,
        }

    def _save_grant(self, token, request):
        """Access tokens are not stored; the grant is audited and the token's use noted.

        The grant commits here rather than when the request ends: on SQLite
        `confirm_principal` takes the write lock, which is then held only while
        the grant is confirmed and recorded, not while the response is built.
        """
        client: ApiTokenClient = request.client
        origin = request_origin()
        try:
            principal = confirm_principal(client.principal)
        except CredentialRefused as refused:
            raise InvalidClient(refused.reason, refused.principal) from None
        note_use(principal, origin.ip, datetime.now(UTC), current_app.config["LAST_USED_INTERVAL"])
        record_event(
            EventType.ACCESS_TOKEN_GRANT,
            workspace=principal.workspace,
            actor=principal.actor,
            target=principal.token_target,
            origin=origin,
            payload={
                "jti": client.issued.jti,
                "kid": client.issued.kid,
                "scope": token["scope"],
                "aud": list(client.audience),
                "exp": client.issued.expires_at,
                "role": principal.role.value,
            },
        )
        db.session.commit()

    def handle_error_response(self, request, error: OAuth2Error):
        """Every refusal at the token endpoint is audited with its true reason.

        At revocation and introspection only a failed client authentication is
        (a malformed request there changes and reveals nothing).
        """
        if not error.description:
            error.description = describe(error)
        view = flask_request.endpoint or ""
        if view == "oauth.token":
            record_denial(error, getattr(request, "client", None))
        elif isinstance(error, InvalidClient):
            record_denial(error, endpoint=view.rpartition(".")[2])
        return super().handle_error_response(request, error)

    def register_endpoint_once(self, endpoint_cls) -> None:
        """Register an endpoint class unless one of its name is there (init_app runs per app)."""
        if endpoint_cls.ENDPOINT_NAME not in self._endpoints:
            self.register_endpoint(endpoint_cls)


DEFAULT_DESCRIPTIONS = {
    "invalid_scope": "The requested scope is invalid",
    "unauthorized_client": "The client may not use this grant type",
}


def describe(error: OAuth2Error) -> str:
    """A description for errors Authlib leaves without one (RFC 6749 makes it optional)."""
    if isinstance(error, UnsupportedGrantTypeError):
        return f"Unsupported grant_type '{echo(error.grant_type)}'; use client_credentials"
    return DEFAULT_DESCRIPTIONS.get(error.error, "The request was refused")


def record_denial(
    error: OAuth2Error, client: ApiTokenClient | None = None, endpoint: str | None = None
) -> None:
    """Audit one refused request; the reason is never shown to the client."""
    principal = getattr(error, "principal", None)
    if principal is None and isinstance(client, ApiTokenClient):
        principal = client.principal
    reason = getattr(error, "audit_reason", None) or error.error
    payload = {"reason": reason, "error": error.error}
    if not isinstance(error, InvalidClient) and error.description:
        payload["description"] = error.description
    if endpoint:
        payload["endpoint"] = endpoint
    record_event(
        EventType.ACCESS_TOKEN_DENY,
        workspace=principal.workspace if principal else None,
        actor=principal.actor if principal else None,
        target=principal.token_target if principal else None,
        origin=request_origin(),
        payload=payload,
    )
