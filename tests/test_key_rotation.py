"""Signing key rotation: the CLI, the JWKS, old tokens, and two live servers sharing the keys."""

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
import requests

from authserver import create_app, keys
from authserver.extensions import db
from authserver.keys import ensure_active_key
from authserver.verify import KeySet, Verifier

from .conftest import TOKEN_URL, LiveServer, basic, free_port, server_env
from .oauth_helpers import INTROSPECT_URL, access_token, events, is_active

JWKS_URL = "/.well-known/jwks.json"


@pytest.fixture
def rotating_app(app, test_config, tmp_path, monkeypatch):
    """An app over the test database with a keys folder of its own, reloaded on every use."""
    keys_dir = tmp_path / "keys"
    ensure_active_key(keys_dir, "ES256")
    monkeypatch.setattr(keys, "RELOAD_CHECK_SECONDS", 0)
    own = create_app({**test_config, "TESTING": True, "KEYS_DIR": str(keys_dir)})
    with own.app_context():
        yield own
        db.session.remove()
        db.engine.dispose()


def kids(client) -> set[str]:
    return {key["kid"] for key in client.get(JWKS_URL).get_json()["keys"]}


def kid_of(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


def states(app) -> dict[str, str]:
    return {entry["kid"]: entry["state"] for entry in keys.list_keys(app.config["KEYS_DIR"])}


def invoke(app, *args) -> dict:
    result = app.test_cli_runner().invoke(args=[*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_rotate_makes_a_new_active_key_and_keeps_the_old_one_published(rotating_app):
    client = rotating_app.test_client()
    (old,) = kids(client)

    result = invoke(rotating_app, "keys", "rotate")

    assert result["oldKid"] == old and result["newKid"] != old and result["alg"] == "ES256"
    assert states(rotating_app) == {old: "retiring", result["newKid"]: "active"}
    assert kids(client) == {old, result["newKid"]}


def test_rotation_is_audited_with_the_cli_actor(rotating_app):
    result = invoke(rotating_app, "keys", "rotate", "--alg", "EdDSA")
    db.session.expire_all()
    [event] = events("SIGNING_KEY_ROTATE")
    assert event.workspace_id is None
    assert (event.actor_id, event.actor_user_name) == ("cli", "authserver-cli")
    assert (event.target_type, event.target_id) == ("SIGNING_KEY", result["newKid"])
    assert event.payload == {
        "action": "rotate",
        "alg": "EdDSA",
        "newKid": result["newKid"],
        "oldKid": result["oldKid"],
    }


def test_tokens_signed_before_a_rotation_keep_working(rotating_app, factory):
    client = rotating_app.test_client()
    workspace, _, secret = factory.admin_token()
    before = access_token(client, secret)

    rotated = invoke(rotating_app, "keys", "rotate")

    after = access_token(client, secret)
    assert kid_of(before) == rotated["oldKid"] and kid_of(after) == rotated["newKid"]
    verifier = Verifier(rotating_app.config["ISSUER"], keys=KeySet(client.get(JWKS_URL).get_json()))
    for token in (before, after):
        assert verifier.verify(token, audience="mtm").workspace_id == workspace.id
        assert is_active(client, secret, token)


def test_prune_retires_only_keys_past_every_token_lifetime(rotating_app, factory):
    client = rotating_app.test_client()
    _, _, secret = factory.admin_token()
    before = access_token(client, secret)
    rotated = invoke(rotating_app, "keys", "rotate")

    assert invoke(rotating_app, "keys", "prune")["retired"] == []
    assert rotated["oldKid"] in kids(client)

    assert invoke(rotating_app, "keys", "prune", "--older-than", "0")["retired"] == [
        rotated["oldKid"]
    ]
    assert kids(client) == {rotated["newKid"]}
    assert states(rotating_app)[rotated["oldKid"]] == "retired"
    assert not (Path(rotating_app.config["KEYS_DIR"]) / f"{rotated['oldKid']}.pem").exists()
    # Its tokens are dead: they have no published key any more.
    assert not is_active(client, secret, before)
    db.session.expire_all()
    retire = [e for e in events("SIGNING_KEY_ROTATE") if e.payload["action"] == "retire"]
    assert [(e.target_id, e.workspace_id) for e in retire] == [(rotated["oldKid"], None)]


def backdate_retiring(app, kid: str, seconds: int) -> None:
    path = Path(app.config["KEYS_DIR"]) / "keys.json"
    metadata = json.loads(path.read_text())
    for entry in metadata["keys"]:
        if entry["kid"] == kid:
            since = datetime.now(UTC) - timedelta(seconds=seconds)
            entry["retiring_since"] = since.isoformat(timespec="seconds")
    path.write_text(json.dumps(metadata))


def test_rotate_retires_keys_that_are_due_first(rotating_app):
    first = invoke(rotating_app, "keys", "rotate")
    ttl = rotating_app.config["ACCESS_TOKEN_TTL"]
    backdate_retiring(rotating_app, first["oldKid"], ttl + 3600)

    second = invoke(rotating_app, "keys", "rotate")

    assert second["retired"] == [first["oldKid"]]
    assert states(rotating_app) == {
        first["oldKid"]: "retired",
        first["newKid"]: "retiring",
        second["newKid"]: "active",
    }


def test_keys_list(rotating_app):
    (old,) = states(rotating_app)
    invoke(rotating_app, "keys", "rotate")
    listed = invoke(rotating_app, "keys", "list")["keys"]
    assert [entry["state"] for entry in listed] == ["retiring", "active"]
    assert listed[0]["kid"] == old and "retiring_since" in listed[0]
    text = rotating_app.test_cli_runner().invoke(args=["keys", "list"]).output
    assert old in text and "retiring since" in text


def test_metadata_lists_revocation_introspection_and_algorithms(client):
    metadata = client.get("/.well-known/oauth-authorization-server").get_json()
    issuer = metadata["issuer"]
    assert metadata["revocation_endpoint"] == issuer + "/services/mtm/v1/oauth2/revoke"
    assert metadata["introspection_endpoint"] == issuer + "/services/mtm/v1/oauth2/introspect"
    assert set(metadata["access_token_signing_alg_values_supported"]) == {
        "ES256",
        "RS256",
        "EdDSA",
    }
    for name in ("revocation", "introspection"):
        assert metadata[f"{name}_endpoint_auth_methods_supported"] == [
            "client_secret_basic",
            "client_secret_post",
        ]


# --- two live servers sharing the keys folder and the database ---------------------------------


@pytest.fixture
def two_servers(app, test_config, tmp_path):
    """Two `authserver serve` processes over one database and one keys folder."""
    keys_dir = tmp_path / "shared-keys"
    ensure_active_key(keys_dir, "ES256")
    ports = free_port(), free_port()
    issuer = f"http://127.0.0.1:{ports[0]}"
    env = server_env({**test_config, "KEYS_DIR": str(keys_dir)}, ISSUER=issuer)
    servers = []
    try:
        for index, port in enumerate(ports):
            servers.append(LiveServer(env, port, workers=2, log_path=tmp_path / f"s{index}.log"))
        yield servers, env
    finally:
        for server in servers:
            server.stop()


def rotate_by_cli(env: dict) -> dict:
    """`authserver keys rotate --json` in its own process, as an operator would run it."""
    result = subprocess.run(
        [sys.executable, "-m", "authserver.cli", "keys", "rotate", "--json"],
        env=env,
        capture_output=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


def live_token(server: LiveServer, secret: str) -> str:
    response = requests.post(
        server.url + TOKEN_URL,
        data={"grant_type": "client_credentials"},
        headers=basic(secret),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def live_kids(server: LiveServer) -> set[str]:
    response = requests.get(server.url + JWKS_URL, timeout=5)
    return {key["kid"] for key in response.json()["keys"]}


def wait_for_kid(servers, kid: str, timeout: float) -> float:
    """Seconds until every server (every worker we hit) publishes `kid`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        # Several requests per server, so both gunicorn workers are likely asked.
        if all(kid in live_kids(server) for server in servers for _ in range(4)):
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{kid} not published by every server within {timeout} s")


@pytest.mark.slow
def test_every_instance_sees_a_rotation_without_restart(two_servers, factory):
    servers, env = two_servers
    workspace = factory.workspace()
    _, _, secret = factory.technical_user(workspace)
    db.session.rollback()  # SQLite: hold no transaction while the servers write
    old_tokens = [live_token(server, secret) for server in servers]
    (old_kid,) = {kid_of(token) for token in old_tokens}

    rotated = rotate_by_cli(env)

    assert rotated["oldKid"] == old_kid
    assert wait_for_kid(servers, rotated["newKid"], timeout=3.0) <= 2.5
    for server in servers:
        assert live_kids(server) == {old_kid, rotated["newKid"]}
        for _ in range(4):
            assert kid_of(live_token(server, secret)) == rotated["newKid"]
    # Tokens from before the rotation still verify offline and introspect as active.
    verifier = Verifier(servers[0].url, jwks_url=servers[1].url + JWKS_URL)
    for token in old_tokens:
        assert verifier.verify(token, audience="integration-api").workspace_id == workspace.id
        response = requests.post(
            servers[1].url + INTROSPECT_URL,
            data={"token": token},
            headers=basic(secret),
            timeout=5,
        )
        assert response.json()["active"] is True


@pytest.mark.slow
def test_a_rotation_under_load_loses_no_request(two_servers, factory):
    servers, env = two_servers
    workspace = factory.workspace()
    _, _, secret = factory.technical_user(workspace)
    db.session.rollback()
    statuses: list[int] = []
    issued: list[str] = []
    stop = threading.Event()

    def hammer():
        # Bounded in count and in time, whatever happens to the rotation.
        deadline = time.monotonic() + 30
        for index in range(3000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            server = servers[index % 2]
            response = requests.post(
                server.url + TOKEN_URL,
                data={"grant_type": "client_credentials"},
                headers=basic(secret),
                timeout=15,
            )
            statuses.append(response.status_code)
            if response.status_code == 200:
                issued.append(response.json()["access_token"])

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        time.sleep(1.0)
        rotated = rotate_by_cli(env)
        wait_for_kid(servers, rotated["newKid"], timeout=3.0)
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join(timeout=40)
    assert not thread.is_alive()

    assert len(statuses) > 20
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert {kid_of(token) for token in issued} == {rotated["oldKid"], rotated["newKid"]}
    verifier = Verifier(servers[0].url, jwks_url=servers[0].url + JWKS_URL)
    for token in issued:
        verifier.verify(token, audience="webhooks")
