"""End to end: a live authserver, the demonstration resource APIs, and tokens good and bad."""

import os
import subprocess
import sys
import threading
import time

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from werkzeug.serving import make_server

from authserver.demo_resources import DiscoveryError, create_demo_app, discover
from authserver.extensions import db
from authserver.models import Role

from .conftest import TOKEN_URL, LiveServer, basic, free_port, server_env
from .oauth_helpers import (
    INTROSPECT_URL,
    REVOKE_URL,
    claims_of,
    forge_hs256,
    forge_unsigned,
    resign,
)

GRAPHQL = "/services/pathfinder/v1/graphql"
SYNC_RUNS = "/services/integration-api/v1/synchronizationRuns"
WEBHOOKS = "/services/webhooks/v1/subscriptions"
FACT_SHEETS = "/services/pathfinder/v1/factSheets"
TECHNICAL_USER_ROUTES = (GRAPHQL, SYNC_RUNS, WEBHOOKS)
ALL_ROUTES = (*TECHNICAL_USER_ROUTES, FACT_SHEETS)


@pytest.fixture(scope="module")
def authserver_url(test_config, _schema, tmp_path_factory):
    """One live authserver for the module (each test's `app` empties the tables it reads)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("demo") / "authserver.log"
    server = LiveServer(server_env(test_config, ISSUER=url), port, workers=2, log_path=log)
    yield url
    server.stop()


class DemoServer:
    """The demo app served by werkzeug in a thread, on loopback."""

    def __init__(self, app):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = make_server("127.0.0.1", self.port, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def call(self, method: str, path: str, token: str | None = None, **kwargs):
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        headers.update(kwargs.pop("headers", {}))
        return requests.request(method, self.url + path, headers=headers, timeout=10, **kwargs)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def demo(authserver_url):
    """The demonstration APIs in offline mode, trusting the live authserver."""
    server = DemoServer(create_demo_app(authserver_url))
    yield server
    server.stop()


@pytest.fixture
def online_demo(authserver_url):
    """Start demo APIs in online mode with a given introspection token."""
    started = []

    def start(introspection_token: str, cache_seconds: float = 0) -> DemoServer:
        app = create_demo_app(
            authserver_url,
            introspection_token=introspection_token,
            online_cache_seconds=cache_seconds,
        )
        started.append(DemoServer(app))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def live_token(authserver_url: str, secret: str, **form) -> str:
    db.session.rollback()  # SQLite: hold no transaction while the server writes
    response = requests.post(
        authserver_url + TOKEN_URL,
        data={"grant_type": "client_credentials", **form},
        headers=basic(secret),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def assert_refused(response, status: int, error: str, description: str | None = None):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error
    if description is not None:
        assert body["error_description"] == description
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer realm=")
    assert f'error="{error}"' in challenge


# --- the seed's API restriction, end to end ---------------------------------------------------


def test_technical_user_reaches_the_three_technical_apis_only(authserver_url, demo, factory):
    workspace = factory.workspace()
    technical_user, _, secret = factory.technical_user(workspace, Role.MEMBER, name="sync-bot")
    token = live_token(authserver_url, secret)

    for path in TECHNICAL_USER_ROUTES:
        for method in ("GET", "POST"):
            response = demo.call(method, path, token)
            assert response.status_code == 200, (path, method, response.text)
            body = response.json()
            assert body["method"] == method
            assert body["principal"] == {
                "id": technical_user.id,
                "username": "sync-bot",
                "technicalUser": True,
                "workspaceId": workspace.id,
                "workspaceName": workspace.name,
                "role": "MEMBER",
                "scopes": ["read", "write"],
            }
    for method in ("GET", "POST"):
        assert_refused(
            demo.call(method, FACT_SHEETS, token),
            403,
            "insufficient_scope",
            "technical users may not call this API",
        )


def test_the_api_each_route_checks(authserver_url, demo, factory):
    _, _, secret = factory.admin_token()
    token = live_token(authserver_url, secret)
    apis = {path: demo.call("GET", path, token).json()["api"] for path in ALL_ROUTES}
    assert apis == {
        GRAPHQL: "graphql",
        SYNC_RUNS: "integration-api",
        WEBHOOKS: "webhooks",
        FACT_SHEETS: "pathfinder",
    }


def test_viewer_reads_but_cannot_write(authserver_url, demo, factory):
    workspace = factory.workspace()
    _, _, secret = factory.technical_user(workspace, Role.VIEWER)
    token = live_token(authserver_url, secret)
    for path in TECHNICAL_USER_ROUTES:
        assert demo.call("GET", path, token).status_code == 200
        response = demo.call("POST", path, token)
        assert_refused(response, 403, "insufficient_scope", "requires scope write")
        assert 'scope="write"' in response.headers["WWW-Authenticate"]


def test_personal_admin_token_reaches_every_api(authserver_url, demo, factory):
    workspace, admin, secret = factory.admin_token()
    token = live_token(authserver_url, secret)
    for path in ALL_ROUTES:
        for method in ("GET", "POST"):
            response = demo.call(method, path, token)
            assert response.status_code == 200, (path, method, response.text)
            principal = response.json()["principal"]
            assert (principal["id"], principal["technicalUser"]) == (admin.id, False)
            assert principal["role"] == "ADMIN"


def test_a_token_narrowed_to_read_cannot_write(authserver_url, demo, factory):
    _, _, secret = factory.admin_token()
    token = live_token(authserver_url, secret, scope="read")
    assert demo.call("GET", FACT_SHEETS, token).status_code == 200
    assert_refused(demo.call("POST", FACT_SHEETS, token), 403, "insufficient_scope")


def test_a_token_narrowed_to_one_resource_is_401_elsewhere(authserver_url, demo, factory):
    # Not the seed's rule: a token for the right resource would be let in, so 401.
    workspace = factory.workspace()
    _, _, secret = factory.technical_user(workspace)
    token = live_token(authserver_url, secret, resource="graphql")
    assert demo.call("GET", GRAPHQL, token).status_code == 200
    assert_refused(
        demo.call("GET", WEBHOOKS, token), 401, "invalid_token", "token not valid for this API"
    )


# --- revocation and online verification -------------------------------------------------------


def test_online_verification_refuses_a_revoked_token_at_once(
    authserver_url, demo, online_demo, factory
):
    workspace, _, admin_secret = factory.admin_token()
    _, _, checker_secret = factory.technical_user(workspace, Role.VIEWER, name="checker")
    _, _, secret = factory.technical_user(workspace)
    online = online_demo(checker_secret)
    token = live_token(authserver_url, secret)
    assert online.call("GET", GRAPHQL, token).status_code == 200

    revoked = requests.post(
        authserver_url + REVOKE_URL, data={"token": token}, headers=basic(admin_secret), timeout=10
    )
    assert revoked.status_code == 200

    assert_refused(online.call("GET", GRAPHQL, token), 401, "invalid_token", "token is not active")
    # Offline verification cannot see revocation: it trusts the token until its exp.
    assert demo.call("GET", GRAPHQL, token).status_code == 200


def test_online_verification_sees_a_revoked_api_token(authserver_url, online_demo, factory):
    workspace, _, admin_secret = factory.admin_token()
    _, _, checker_secret = factory.technical_user(workspace, Role.VIEWER)
    _, _, secret = factory.technical_user(workspace)
    online = online_demo(checker_secret)
    token = live_token(authserver_url, secret)
    assert online.call("POST", WEBHOOKS, token).status_code == 200

    requests.post(
        authserver_url + REVOKE_URL, data={"token": secret}, headers=basic(admin_secret), timeout=10
    )

    assert_refused(online.call("POST", WEBHOOKS, token), 401, "invalid_token")


def test_online_verification_only_answers_for_the_checkers_workspace(
    authserver_url, online_demo, factory
):
    workspace = factory.workspace()
    _, _, checker_secret = factory.technical_user(workspace, Role.VIEWER)
    _, _, stranger_secret = factory.admin_token()
    online = online_demo(checker_secret)
    token = live_token(authserver_url, stranger_secret)
    assert_refused(online.call("GET", GRAPHQL, token), 401, "invalid_token")


def test_introspection_answer_for_the_demo(authserver_url, factory):
    workspace = factory.workspace()
    _, _, secret = factory.technical_user(workspace)
    token = live_token(authserver_url, secret)
    body = requests.post(
        authserver_url + INTROSPECT_URL, data={"token": token}, headers=basic(secret), timeout=10
    ).json()
    assert body["active"] is True and body["jti"] == claims_of(token)["jti"]


# --- bad input through HTTP ---------------------------------------------------------------------


def public_pem(app) -> bytes:
    public_key = app.extensions["authserver.keys"].active().private_key.public_key()
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


BAD_TOKENS = {
    "truncated": lambda app, t: t[: len(t) - 12],
    "header-only": lambda app, t: t.split(".")[0],
    "garbage": lambda app, t: "not.a.jwt",
    "other-key": lambda app, t: resign(app, t, key=ec.generate_private_key(ec.SECP256R1())),
    "alg-none": lambda app, t: forge_unsigned(t),
    "hs256-public-key": lambda app, t: forge_hs256(t, public_pem(app)),
    "typ-jwt": lambda app, t: resign(app, t, header={"typ": "JWT"}),
    "no-typ": lambda app, t: resign(app, t, header={"typ": None}),
    "unknown-kid": lambda app, t: resign(app, t, header={"kid": "no-such-key"}),
    "expired": lambda app, t: resign(
        app, t, exp=int(time.time()) - 3600, iat=int(time.time()) - 7200
    ),
    "not-yet-valid": lambda app, t: resign(app, t, nbf=int(time.time()) + 3600),
    "other-audience": lambda app, t: resign(app, t, aud=["mtm"]),
    "other-issuer": lambda app, t: resign(app, t, iss="https://evil.example.com"),
    "missing-jti": lambda app, t: resign(app, t, drop=("jti",)),
    "missing-principal": lambda app, t: resign(app, t, drop=("principal",)),
    "missing-exp": lambda app, t: resign(app, t, drop=("exp",)),
}


@pytest.mark.parametrize("name", sorted(BAD_TOKENS))
def test_bad_tokens_are_401_invalid_token(app, authserver_url, demo, factory, name):
    _, _, secret = factory.admin_token()
    good = live_token(authserver_url, secret)
    assert demo.call("GET", GRAPHQL, good).status_code == 200

    bad = BAD_TOKENS[name](app, good)
    for path in (GRAPHQL, FACT_SHEETS):
        response = demo.call("GET", path, bad)
        assert_refused(response, 401, "invalid_token")
        assert response.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    "authorization", [None, "Basic YXBpdG9rZW46eA==", "Bearer", "Bearer a b", "bearer "]
)
def test_missing_or_malformed_authorization_is_401(demo, authorization):
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = demo.call("GET", GRAPHQL, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="graphql"')
    assert response.json()["error"] in ("invalid_request", "invalid_token")


def test_unknown_paths_and_methods_are_json(demo):
    assert demo.call("GET", "/nope").json()["error"] == "invalid_request"
    response = demo.call("DELETE", GRAPHQL)
    assert response.status_code == 405 and response.json()["error"] == "invalid_request"


# --- starting it -----------------------------------------------------------------------------


def test_discovery_checks_the_issuer(authserver_url):
    assert discover(authserver_url + "/")["issuer"] == authserver_url
    with pytest.raises(DiscoveryError, match="cannot read"):
        discover(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(DiscoveryError, match="http"):
        discover("file:///etc/passwd")


def test_the_demo_resources_command(authserver_url, test_config, factory, tmp_path):
    _, _, secret = factory.admin_token()
    token = live_token(authserver_url, secret)
    port = free_port()
    env = server_env(test_config, ISSUER=authserver_url)
    log = open(tmp_path / "demo.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "authserver.cli", "demo-resources", "--port", str(port)],
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                response = requests.get(
                    url + FACT_SHEETS, headers={"Authorization": f"Bearer {token}"}, timeout=2
                )
                break
            except requests.ConnectionError:
                assert process.poll() is None, (tmp_path / "demo.log").read_text()
                assert time.monotonic() < deadline, "demo-resources did not start"
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.json()["api"] == "pathfinder"
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
    assert f"trusting {authserver_url} (offline)" in (tmp_path / "demo.log").read_text()


def test_the_command_fails_clearly_without_an_issuer(test_config):
    env = server_env(test_config, ISSUER=f"http://127.0.0.1:{free_port()}")
    result = subprocess.run(
        [sys.executable, "-m", "authserver.cli", "demo-resources"],
        env={**env, "PATH": os.environ.get("PATH", "")},
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert b"cannot read" in result.stderr
