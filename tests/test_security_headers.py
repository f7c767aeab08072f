"""Security headers on every response; CORS off unless configured."""

import pytest

from authserver import create_app

from .conftest import TOKEN_URL

PATHS = [
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/.well-known/oauth-authorization-server"),
    ("POST", TOKEN_URL),
    ("GET", "/services/mtm/v1/technicalusers"),
    ("GET", "/services/mtm/v1/openapi.json"),
    ("GET", "/no-such-page"),
]


@pytest.mark.parametrize("method, path", PATHS)
def test_every_response_carries_the_security_headers(client, method, path):
    response = client.open(path, method=method)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert "Access-Control-Allow-Origin" not in response.headers


def test_hsts_only_over_https(client):
    assert "Strict-Transport-Security" not in client.get("/.well-known/jwks.json").headers
    secure = client.get("/.well-known/jwks.json", base_url="https://localhost")
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=")


def test_cors_is_off_by_default(client):
    response = client.options(
        TOKEN_URL,
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in response.headers


def test_cors_for_a_configured_origin(test_config, app):
    configured = create_app({**test_config, "CORS_ORIGINS": ("https://app.example",)})
    client = configured.test_client()
    preflight = client.options(
        "/services/mtm/v1/technicalusers",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    other = client.options(
        "/services/mtm/v1/technicalusers",
        headers={"Origin": "https://other.example", "Access-Control-Request-Method": "GET"},
    )
    assert "Access-Control-Allow-Origin" not in other.headers
    plain = client.get("/.well-known/jwks.json", headers={"Origin": "https://app.example"})
    assert plain.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Origin" in plain.headers["Vary"]
