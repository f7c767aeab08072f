"""`authserver serve` on a fresh install: it initialises, prints a token, serves the exchange."""

import re

import jwt
import pytest
import requests

from .conftest import LiveServer, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def fresh_server(tmp_path):
    import os

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
