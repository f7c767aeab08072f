"""Rate limits (Flask-Limiter over the `limits` storage: memory by default, Redis to share).

- Token, revocation and introspection endpoints: a budget per client IP, a
  budget per presented API token, and a much stricter budget of *failed*
  authentications per IP (credential stuffing): only 401 answers count
  against it, but once it is spent every request from that IP gets 429.
- Management API: a budget per authenticated principal (LeanIX's 1,800 a
  minute by default), counted after authentication so nobody can spend
  another principal's budget with forged tokens.

429 answers carry `Retry-After`, use the surface's error shape, and at the
token endpoint are audited as `ACCESS_TOKEN_DENY` with reason `rate_limited`.
`AUTHSERVER_RATELIMIT_ENABLED=false` turns every limit off.
"""

import functools
import hashlib
import math
import time

from flask import current_app, request
from flask_limiter.errors import RateLimitExceeded
from limits import parse

from .errors import ApiError, render_http_error
from .extensions import db, limiter

TOKEN_ENDPOINT = "/services/mtm/v1/oauth2/token"  # noqa: S105 - a path, not a secret


def client_ip() -> str:
    """The caller's address (behind a proxy, configure the proxy to set REMOTE_ADDR)."""
    return request.remote_addr or "unknown"


def presented_token_key() -> str:
    """A key per presented API token: a digest, never the secret itself."""
    from .oauth.client_auth import presented_credentials

    try:
        _, secret = presented_credentials(request)
    except Exception:  # noqa: BLE001 - any malformed credential falls back to the IP budget
        return "ip:" + client_ip()
    return "tok:" + hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()[:32]


def _setting(name: str):
    return lambda: current_app.config[name]


def _failed_auth(response) -> bool:
    return response.status_code == 401


def client_auth_limits(view):
    """Decorate an endpoint that authenticates with an API token.

    With limits off, the view runs undecorated: Flask-Limiter's wrappers would
    still sort through the limits on every request before finding nothing to do.
    """
    limited = limiter.limit(
        _setting("RATELIMIT_FAILED_AUTH_PER_IP"),
        key_func=client_ip,
        scope="failed-auth",
        deduct_when=_failed_auth,
    )(view)
    limited = limiter.limit(
        _setting("RATELIMIT_TOKEN_PER_TOKEN"), key_func=presented_token_key, scope="per-token"
    )(limited)
    limited = limiter.limit(_setting("RATELIMIT_TOKEN_PER_IP"), key_func=client_ip, scope="per-ip")(
        limited
    )

    @functools.wraps(view)
    def endpoint(*args, **kwargs):
        return (limited if limiter.enabled else view)(*args, **kwargs)

    return endpoint


class PrincipalRateLimited(ApiError):
    """429 on the management API: the principal's budget is spent."""

    status = 429
    type = "TooManyRequests"


def charge_principal(principal_id: str) -> None:
    """Count one management call against the principal's budget; raise once it is spent."""
    if not limiter.enabled:
        return
    item = parse(current_app.config["RATELIMIT_MANAGEMENT_PER_PRINCIPAL"])
    if limiter.limiter.hit(item, "authserver", "mtm-principal", principal_id):
        return
    reset_at, _ = limiter.limiter.get_window_stats(
        item, "authserver", "mtm-principal", principal_id
    )
    raise PrincipalRateLimited(
        f"Rate limit exceeded: {item}",
        headers={"Retry-After": str(max(1, math.ceil(reset_at - time.time())))},
    )


def handle_rate_limited(error: RateLimitExceeded):
    """429 in the surface's shape with Retry-After; audited at the token endpoint."""
    db.session.rollback()
    current = limiter.current_limit
    retry_after = max(1, math.ceil(current.reset_at - time.time())) if current else 60
    if request.path == TOKEN_ENDPOINT:
        from authlib.oauth2.rfc6749.errors import OAuth2Error

        from .oauth.server import record_denial

        denial = OAuth2Error(description="Rate limit exceeded")
        denial.error = "rate_limited"
        record_denial(denial)
    return render_http_error(
        429, f"Rate limit exceeded: {error.description}", {"Retry-After": str(retry_after)}
    )


def init_app(app) -> None:
    """Bind the limiter to the configured storage."""
    config = app.config
    # Retry-After is set on 429 answers only (Flask-Limiter would stamp it on every response).
    config["RATELIMIT_HEADERS_ENABLED"] = False
    config["RATELIMIT_STRATEGY"] = "moving-window"
    limiter.enabled = config["RATELIMIT_ENABLED"]
    limiter.init_app(app)
    app.register_error_handler(RateLimitExceeded, handle_rate_limited)
