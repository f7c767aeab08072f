"""Response hygiene: security headers on every response, and CORS only where configured.

Every answer of this server is JSON (or, under /admin, a page that sets its own
Content-Security-Policy), so the defaults forbid everything a browser could do
with it: no framing, no sniffing, no referrer, no scripts.
"""

from flask import Flask, Response, current_app, request

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cross-Origin-Resource-Policy": "same-origin",
}
HSTS = "max-age=31536000; includeSubDomains"
CORS_METHODS = "GET, POST, PUT, DELETE"
CORS_HEADERS = "Authorization, Content-Type"
CORS_MAX_AGE = "600"


def add_security_headers(response: Response) -> Response:
    """Set each security header the view did not set itself."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    return response


def _allowed_origin() -> str | None:
    origin = request.headers.get("Origin")
    if origin and origin in current_app.config["CORS_ORIGINS"]:
        return origin
    return None


def cors_preflight():
    """Answer a CORS preflight for a configured origin; leave everything else alone."""
    if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
        return None
    origin = _allowed_origin()
    if origin is None:
        return None
    response = Response(status=204)
    response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
    response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
    response.headers["Access-Control-Max-Age"] = CORS_MAX_AGE
    return response


def add_cors_headers(response: Response) -> Response:
    """Allow a configured origin to read the answer; no origin is allowed by default."""
    origin = _allowed_origin()
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.add("Vary", "Origin")
    return response


def init_app(app: Flask) -> None:
    """Register the hooks."""
    app.before_request(cors_preflight)
    app.after_request(add_cors_headers)
    app.after_request(add_security_headers)
