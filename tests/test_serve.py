"""`authserver serve` on a fresh install: it initialises, prints a token, serves the exchange."""

import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import jwt
import pytest
import requests

from .conftest import LiveServer, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def fresh_server(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    env.update(
        AUTHSERVER_DATABASE_URL="sqlite:///" + str(tmp_path / "fresh.db"),
        AUTHSERVER_KEYS_DIR=str(tmp_path / "keys"),
    )
    server = LiveServer(env, port, workers=2, log_path=tmp_path / "serve.log")
    yield server, tmp_path
    server.stop()


def test_fresh_install_prints_a_token_that_exchanges_for_a_verifiable_jwt(fresh_server):
    server, tmp_path = fresh_server
    output = (tmp_path / "serve.log").read_text()
    tokens = re.findall(r"lxt_[0-9A-Za-z]{49}", output)
    assert len(tokens) == 1, output
    assert (tmp_path / "keys" / "keys.json").exists()

    response = requests.post(
        server.url + "/services/mtm/v1/oauth2/token",
        auth=("apitoken", tokens[0]),
        data={"grant_type": "client_credentials"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    access_token = response.json()["access_token"]

    metadata = requests.get(
        server.url + "/.well-known/oauth-authorization-server", timeout=5
    ).json()
    assert metadata["issuer"] == server.url
    jwks = jwt.PyJWKClient(metadata["jwks_uri"])
    key = jwks.get_signing_key_from_jwt(access_token)
    claims = jwt.decode(
        access_token, key.key, algorithms=["ES256"], audience="mtm", issuer=server.url
    )
    assert claims["principal"]["permission"]["workspaceName"] == "default"
    assert claims["principal"]["permission"]["role"] == "ADMIN"
    assert claims["instanceUrl"] == server.url
    # The secret is never logged by the server itself.
    later_output = (tmp_path / "serve.log").read_text()[len(output) :]
    assert tokens[0] not in later_output
    assert access_token not in later_output


def children(pid: int) -> dict[int, str]:
    """The child processes of `pid` and their command lines."""
    out = subprocess.run(
        ["ps", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    rows = [line.split(None, 1) for line in out.strip().splitlines()]
    return {int(pid): args for pid, args in rows}


def sealer_pid(server, timeout: float = 15) -> int:
    """The pid of the server's sealer process, waiting for it to (re)start."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p for p, args in children(server.process.pid).items() if "seal --follow" in args]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no sealer process: {children(server.process.pid)}")


def unsealed_events(database: Path) -> tuple[int, int]:
    with sqlite3.connect(database) as connection:
        return connection.execute(
            "SELECT count(*) FILTER (WHERE chain_hash IS NULL), count(*) FROM audit_events"
        ).fetchone()


def test_a_sealer_process_beside_the_workers_seals_is_restarted_and_stops_with_the_server(
    fresh_server,
):
    server, tmp_path = fresh_server
    output = (tmp_path / "serve.log").read_text()
    secret = re.findall(r"lxt_[0-9A-Za-z]{49}", output)[0]
    first = sealer_pid(server)
    for _ in range(5):
        response = requests.post(
            server.url + "/services/mtm/v1/oauth2/token",
            auth=("apitoken", secret),
            data={"grant_type": "client_credentials"},
            timeout=10,
        )
        assert response.status_code == 200
    database = tmp_path / "fresh.db"
    deadline = time.monotonic() + 20
    while unsealed_events(database)[0] and time.monotonic() < deadline:
        time.sleep(0.3)
    unsealed, total = unsealed_events(database)
    assert (unsealed, total >= 5) == (0, True)

    os.kill(first, signal.SIGKILL)  # a crashed sealer is started again by the master
    second = sealer_pid(server)
    assert second != first
    assert "starting it again" in (tmp_path / "serve.log").read_text()

    server.stop()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{second}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{second}").exists()
