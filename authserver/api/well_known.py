"""Discovery: RFC 8414 metadata and the JWKS."""

from flask import Blueprint, current_app, jsonify

bp = Blueprint("well_known", __name__, url_prefix="/.well-known")

# Public keys may be cached briefly; a rotation is seen within this many seconds.
JWKS_MAX_AGE = 300


@bp.get("/jwks.json")
def jwks():
    """The public keys: the active one and every retiring one."""
    response = jsonify(current_app.extensions["authserver.keys"].jwks())
    response.cache_control.public = True
    response.cache_control.max_age = JWKS_MAX_AGE
    return response


@bp.get("/oauth-authorization-server")
def metadata():
    """RFC 8414 authorization server metadata."""
    return jsonify(authorization_server_metadata())


def authorization_server_metadata() -> dict:
    """The metadata document, every endpoint URL absolute under the issuer."""
    config = current_app.config
    issuer = config["ISSUER"]
    oauth = issuer + "/services/mtm/v1/oauth2"
    auth_methods = ["client_secret_basic", "client_secret_post"]
    return {
        "issuer": issuer,
        "token_endpoint": oauth + "/token",
        "jwks_uri": issuer + "/.well-known/jwks.json",
        "revocation_endpoint": oauth + "/revoke",
        "introspection_endpoint": oauth + "/introspect",
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": [],
        "scopes_supported": ["read", "write"],
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "access_token_signing_alg_values_supported": ["ES256", "RS256", "EdDSA"],
        "resource_indicators_supported": True,
        "service_documentation": issuer + "/services/mtm/v1/openapi.json",
        "x_apis": list(config["APIS"]),
    }
