"""Many instances: two `authserver serve` processes on one database and one Redis.

The two servers share the test database (PostgreSQL when
AUTHSERVER_TEST_DATABASE_URL names one, else the SQLite file), the keys folder,
the issuer (the URL a load balancer would publish) and the rate-limit storage
(Redis at 127.0.0.1:6379; skipped if it is not running). What one instance
does, the other sees at once: there is no per-instance cache of credentials.

Key rotation on one instance reaching the other without a restart is shown by
tests/test_key_rotation.py::test_every_instance_sees_a_rotation_without_restart
(and under load by test_a_rotation_under_load_loses_no_request); the full
shared rate-limit test is tests/test_ratelimit.py::
test_limits_are_shared_across_instances_through_redis.
"""

import pytest

from authserver.extensions import db

from .conftest import iso_in_days
from .live import Api, server_errors, start_server

pytestmark = pytest.mark.slow

REDIS_URL = "redis://127.0.0.1:6379"
FAILED_AUTH_BUDGET = 4
KEY_PATTERN = "*authserver*"


@pytest.fixture(scope="module")
def redis_connection():
    """The local Redis, or skip."""
    redis = pytest.importorskip("redis")
    connection = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2)
    try:
        connection.ping()
    except redis.ConnectionError:
        pytest.skip("Redis is not running at 127.0.0.1:6379")
    yield connection
    connection.close()


def forget_limits(connection) -> None:
    """Drop every rate-limit counter the servers keep in Redis."""
    for key in connection.scan_iter(KEY_PATTERN):
        connection.delete(key)


@pytest.fixture(scope="module")
def instances(test_config, _schema, redis_connection, tmp_path_factory):
    """Two servers, two workers each, behind one (imagined) load balancer."""
    forget_limits(redis_connection)
    folder = tmp_path_factory.mktemp("instances")
    servers = []
    try:
        for name in ("a", "b"):
            settings = {
                "RATELIMIT_STORAGE_URI": REDIS_URL,
                "RATELIMIT_FAILED_AUTH_PER_IP": f"{FAILED_AUTH_BUDGET}/minute",
            }
            if servers:
                settings["ISSUER"] = servers[0].url
            servers.append(start_server(test_config, folder / f"{name}.log", workers=2, **settings))
        yield servers
    finally:
        for server in servers:
            server.stop()
        forget_limits(redis_connection)


@pytest.fixture
def pair(instances, app, factory, redis_connection):
    """(a, b) as Api objects; `a.admin` is an admin's access token issued by a."""
    forget_limits(redis_connection)
    _, _, secret = factory.admin_token()
    db.session.rollback()  # SQLite: hold no transaction while the servers write
    a, b = (Api(server.url) for server in instances)
    a.admin = a.access_token(secret)
    a.admin_secret = secret
    yield a, b
    for server in instances:
        assert server_errors(server.log_path) == []


def test_a_token_made_on_one_instance_works_on_the_other(pair):
    a, b = pair
    created = a.create_technical_user(a.admin, "shared", "VIEWER")
    assert created.status_code == 201, created.text
    technical_user = created.json()["data"]

    assert b.grant(technical_user["apiTokenData"]["token"]).status_code == 200
    # An access token issued by a is accepted by b's management API, and the reverse.
    path = f"/technicalusers/{technical_user['id']}"
    assert b.call(a.admin, "GET", path).json()["data"]["userName"] == "shared"
    from_b = b.access_token(a.admin_secret)
    assert a.call(from_b, "GET", path).status_code == 200


def test_a_replace_or_delete_on_one_is_refused_on_the_other_at_once(pair):
    a, b = pair
    created = a.create_technical_user(a.admin, "rolled", "MEMBER").json()["data"]
    first = created["apiTokenData"]["token"]
    path = f"/technicalusers/{created['id']}"
    assert b.grant(first).status_code == 200

    replaced = a.call(a.admin, "PUT", path + "/replaceToken")
    assert replaced.status_code == 200
    second = replaced.json()["data"]["apiTokenData"]["token"]
    assert b.grant(first).status_code == 401  # the very next request, on the other instance
    assert b.grant(second).status_code == 200

    assert b.call(a.admin, "DELETE", path).status_code == 204
    assert a.grant(second).status_code == 401
    assert a.call(a.admin, "GET", path).status_code == 404

    # A personal token deleted on one instance: its access tokens stop on the other.
    body = {"description": "laptop", "expiry": iso_in_days(1)}
    personal = b.call(a.admin, "POST", "/apiTokens", json=body).json()["data"]
    token_from_b = b.access_token(personal["token"])
    assert a.call(token_from_b, "GET", "/apiTokens").status_code == 200
    assert a.call(a.admin, "DELETE", f"/apiTokens/{personal['id']}").status_code == 204
    assert b.call(token_from_b, "GET", "/apiTokens").status_code == 401


def test_rate_limits_are_shared(pair):
    """The failed-authentication budget is one budget across both instances."""
    a, b = pair
    wrong = "lxt_" + "B" * 49
    statuses = [(a, b)[i % 2].grant(wrong).status_code for i in range(FAILED_AUTH_BUDGET + 2)]
    assert statuses == [401] * FAILED_AUTH_BUDGET + [429, 429]
