"""Rate limits: per IP, per API token, failed authentications, per management principal."""

import pytest
import requests
from sqlalchemy import select

from authserver import create_app
from authserver.extensions import db
from authserver.models import AuditEvent

from .conftest import (
    TOKEN_URL,
    LiveServer,
    Mgmt,
    access_token_of,
    basic,
    exchange,
    free_port,
    server_env,
)


@pytest.fixture
def limited(app, test_config):
    """Build an app over the same (emptied) database with some limits overridden."""

    def build(**overrides):
        limited_app = create_app({**test_config, "TESTING": True, **overrides})
        context = limited_app.app_context()
        context.push()
        contexts.append(context)
        return limited_app, limited_app.test_client()

    contexts = []
    yield build
    for context in reversed(contexts):
        db.session.remove()
        context.pop()


def denials(reason: str) -> int:
    rows = db.session.execute(select(AuditEvent).where(AuditEvent.type == "ACCESS_TOKEN_DENY"))
    return sum(1 for event in rows.scalars() if event.payload.get("reason") == reason)


def assert_429_oauth(response):
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    body = response.get_json()
    assert set(body) == {"error", "error_description"}
    assert "Rate limit exceeded" in body["error_description"]


def test_failed_authentications_have_a_strict_budget_per_ip(limited, factory):
    _, client = limited(RATELIMIT_FAILED_AUTH_PER_IP="3/minute")
    _, _, secret = factory.admin_token()
    wrong = basic("lxt_" + "A" * 49)
    for _ in range(3):
        assert (
            client.post(
                TOKEN_URL, data={"grant_type": "client_credentials"}, headers=wrong
            ).status_code
            == 401
        )
    assert_429_oauth(
        client.post(TOKEN_URL, data={"grant_type": "client_credentials"}, headers=wrong)
    )
    # Once spent, even a good token from that address waits.
    assert_429_oauth(exchange(client, secret))
    assert denials("rate_limited") == 2


def test_successful_grants_do_not_spend_the_failure_budget(limited, factory):
    _, client = limited(RATELIMIT_FAILED_AUTH_PER_IP="2/minute")
    _, _, secret = factory.admin_token()
    for _ in range(5):
        assert exchange(client, secret).status_code == 200


def test_each_api_token_has_its_own_budget(limited, factory):
    _, client = limited(RATELIMIT_TOKEN_PER_TOKEN="2/minute")
    workspace, user, secret = factory.admin_token()
    _, other = factory.personal_token(workspace, user)
    assert exchange(client, secret).status_code == 200
    assert exchange(client, secret).status_code == 200
    assert_429_oauth(exchange(client, secret))
    assert exchange(client, other).status_code == 200


def test_each_ip_has_a_budget(limited, factory):
    _, client = limited(RATELIMIT_TOKEN_PER_IP="2/minute")
    workspace, user, secret = factory.admin_token()
    _, other = factory.personal_token(workspace, user)
    assert exchange(client, secret).status_code == 200
    assert exchange(client, other).status_code == 200
    assert_429_oauth(exchange(client, secret))
    elsewhere = client.post(
        TOKEN_URL,
        data={"grant_type": "client_credentials"},
        headers=basic(other),
        environ_base={"REMOTE_ADDR": "10.1.2.3"},
    )
    assert elsewhere.status_code == 200


def test_management_budget_is_per_principal(limited, factory):
    _, client = limited(RATELIMIT_MANAGEMENT_PER_PRINCIPAL="3/minute")
    workspace, user, secret = factory.admin_token()
    caller = Mgmt(client, access_token_of(client, secret))
    for _ in range(3):
        assert caller.get("/technicalusers").status_code == 200
    response = caller.get("/technicalusers")
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    body = response.get_json()
    assert body["status"] == "ERROR"
    assert body["type"] == "TooManyRequests"
    # Another admin of the same workspace is not affected.
    other_user = factory.user(workspace)
    _, other_secret = factory.personal_token(workspace, other_user)
    assert (
        Mgmt(client, access_token_of(client, other_secret)).get("/technicalusers").status_code
        == 200
    )


def test_forged_tokens_do_not_spend_a_principals_budget(limited, factory):
    _, client = limited(RATELIMIT_MANAGEMENT_PER_PRINCIPAL="2/minute")
    _, _, secret = factory.admin_token()
    forged = Mgmt(client, "eyJhbGciOiJub25lIn0.e30.")
    for _ in range(5):
        assert forged.get("/technicalusers").status_code == 401
    assert Mgmt(client, access_token_of(client, secret)).get("/technicalusers").status_code == 200


def test_limits_can_be_turned_off(limited, factory):
    _, client = limited(RATELIMIT_ENABLED=False, RATELIMIT_TOKEN_PER_TOKEN="1/minute")
    _, _, secret = factory.admin_token()
    for _ in range(4):
        assert exchange(client, secret).status_code == 200


@pytest.mark.slow
def test_limits_are_shared_across_instances_through_redis(app, test_config, tmp_path):
    redis = pytest.importorskip("redis")
    connection = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2)
    try:
        connection.ping()
    except redis.ConnectionError:
        pytest.skip("Redis is not running at 127.0.0.1:6379")
    for key in connection.scan_iter("*authserver*"):
        connection.delete(key)
    db.session.commit()
    servers = []
    try:
        for name in ("a", "b"):
            port = free_port()
            env = server_env(
                test_config,
                ISSUER=f"http://127.0.0.1:{port}",
                RATELIMIT_STORAGE_URI="redis://127.0.0.1:6379",
                RATELIMIT_FAILED_AUTH_PER_IP="4/minute",
            )
            servers.append(LiveServer(env, port, log_path=tmp_path / f"{name}.log"))
        wrong = ("apitoken", "lxt_" + "B" * 49)
        statuses = []
        for i in range(6):
            server = servers[i % 2]
            response = requests.post(
                server.url + TOKEN_URL,
                auth=wrong,
                data={"grant_type": "client_credentials"},
                timeout=10,
            )
            statuses.append(response.status_code)
        assert statuses == [401, 401, 401, 401, 429, 429]
    finally:
        for server in servers:
            server.stop()
        for key in connection.scan_iter("*authserver*"):
            connection.delete(key)
