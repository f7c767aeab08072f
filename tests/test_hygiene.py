"""Hygiene: no secret in any log line or response header, over the whole workflow.

A live server runs with AUTHSERVER_LOG_LEVEL=DEBUG, its stdout and stderr in one
file. The test drives everything a deployment sees: `authserver init` and
`create-technical-user` (their stderr is a log; their stdout is the one place
a new token is printed, by design), the three forms of the exchange, every
management call on technical users and personal tokens, revocation,
introspection, and failed authentications of every kind (unknown, malformed,
revoked, replaced and deleted tokens, secrets in the wrong place, forged
bearer tokens). It collects every API token, access token and client secret
it saw or sent, and proves that none of them, nor anything shaped like one,
appears in the server log, the CLI's stderr, or any response header; and that
every response carries the security headers and no CORS grant.

What was already covered elsewhere is not repeated: strict JSON (duplicate
keys, NaN, Infinity, huge numbers, deep nesting, bad UTF-8) and the 413 with a
Content-Length are in tests/test_management_bad_input.py and
tests/test_token_endpoint.py; CORS and the security headers per route in
tests/test_security_headers.py. Added here: a body over the limit sent
chunked (no Content-Length) is still refused with 413, at the token endpoint
and at the management API, by the real server.
"""

import json
import logging
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
import requests

from authserver import tokens
from authserver.extensions import db
from authserver.security import SECURITY_HEADERS

from .conftest import MTM, TOKEN_URL, basic, exchange, iso_in_days, server_env
from .live import TIMEOUT, server_errors, start_server
from .oauth_helpers import INTROSPECT_URL, REVOKE_URL

API_TOKEN_SHAPE = re.compile(r"lxt_[0-9A-Za-z]{20,}")
JWT_SHAPE = re.compile(r"eyJ[\w-]{10,}\.[\w-]{10,}\.[\w-]{10,}")
LIMIT = 64 * 1024


class Client:
    """HTTP to the live server; keeps every response and every secret it meets."""

    def __init__(self, url: str):
        self.url = url
        self.responses: list[requests.Response] = []
        self.secrets: set[str] = set()

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        """One request; the response is kept."""
        response = requests.request(method, self.url + path, timeout=TIMEOUT, **kwargs)
        self.responses.append(response)
        return response

    def keep(self, *secrets: str) -> None:
        """Remember secrets that must never show up."""
        self.secrets.update(secret for secret in secrets if secret)

    def grant(self, secret: str, **kwargs) -> requests.Response:
        """The grant with Basic apitoken:<secret>; an access token it returns is kept."""
        self.keep(secret)
        data = {"grant_type": "client_credentials", **kwargs.pop("data", {})}
        headers = kwargs.pop("headers", None) or basic(secret)
        response = self.request("POST", TOKEN_URL, data=data, headers=headers, **kwargs)
        if response.status_code == 200:
            self.keep(response.json()["access_token"])
        return response

    def access_token(self, secret: str, **data) -> str:
        response = self.grant(secret, data=data)
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def mtm(self, token: str, method: str, path: str, **kwargs) -> requests.Response:
        """A management call with a bearer token; an API token in the answer is kept."""
        self.keep(token)
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        response = self.request(method, MTM + path, headers=headers, **kwargs)
        body = response.json() if response.content else {}
        data = body.get("data") if isinstance(body, dict) else None
        if isinstance(data, dict):
            self.keep(data.get("token"), (data.get("apiTokenData") or {}).get("token"))
        return response


def cli(env: dict, *args: str) -> tuple[dict, str]:
    """Run `authserver <args> --json`; its JSON output and its stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "authserver.cli", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout), result.stderr


def forged(token: str) -> str:
    """The access token with its last signature characters changed."""
    head, _, signature = token.rpartition(".")
    return f"{head}.{signature[:-4]}{'AAAA' if not signature.endswith('AAAA') else 'BBBB'}"


def chunked(size: int):
    """A body of `size` bytes sent in chunks, so without a Content-Length."""
    chunk = b"x" * 8192
    for _ in range(size // len(chunk)):
        yield chunk


@pytest.fixture
def debug_server(app, test_config, tmp_path):
    """Start (once) a server logging at DEBUG, rate limits off (failed logins are the point).

    It is started after `authserver init`, as in a deployment: on an empty
    database `serve` would first bootstrap a workspace and print its admin's
    token to stdout, once, by design (DESIGN section 7).
    """
    servers = []

    def start():
        servers.append(
            start_server(
                test_config,
                tmp_path / "server.log",
                workers=2,
                LOG_LEVEL="DEBUG",
                RATELIMIT_ENABLED="false",
            )
        )
        return servers[0]

    yield start
    for server in servers:
        server.stop()


@pytest.mark.slow
def test_no_secret_in_any_log_line_or_response_header(debug_server, test_config):
    db.session.rollback()
    env = server_env(test_config, LOG_LEVEL="DEBUG")
    logs: list[str] = []

    # The command line: a workspace, an admin and their token; a technical user.
    init, stderr = cli(env, "init", "--workspace", "hygiene", "--admin", "admin@hygiene.example")
    logs.append(stderr)
    admin_secret = init["apiToken"]
    expires = (datetime.now(UTC) + timedelta(days=3)).date().isoformat()
    made, stderr = cli(
        env, "create-technical-user", "--workspace", "hygiene", "--name", "cli-made",
        "--role", "MEMBER", "--expires", expires,
    )  # fmt: skip
    logs.append(stderr)
    server = debug_server()
    http = Client(server.url)
    http.keep(admin_secret, made["apiToken"])

    # The exchange in its three forms, narrowed by scope and resource.
    admin = http.access_token(admin_secret)
    body_form = http.request(
        "POST",
        TOKEN_URL,
        data={"grant_type": "client_credentials", "client_id": "apitoken",
              "client_secret": admin_secret},
    )  # fmt: skip
    assert body_form.status_code == 200
    http.keep(body_form.json()["access_token"])
    query_form = http.request(
        "POST", TOKEN_URL + "?grant_type=client_credentials", headers=basic(admin_secret)
    )
    assert query_form.status_code == 200
    http.keep(query_form.json()["access_token"])
    http.access_token(admin_secret, scope="read")
    http.access_token(admin_secret, resource="pathfinder")
    cli_made = http.access_token(made["apiToken"])

    # Technical users: create, read, list, edit, replace (twice, once with grace), history.
    created = http.mtm(
        admin,
        "POST",
        "/technicalusers",
        json={"userName": "hygienic", "permissionRole": "ADMIN", "description": "d",
              "apiTokenData": {"expiry": iso_in_days(3), "description": "t"}},
    )  # fmt: skip
    assert created.status_code == 201
    user = created.json()["data"]
    path = f"/technicalusers/{user['id']}"
    first = user["apiTokenData"]["token"]
    assert http.mtm(admin, "GET", path).status_code == 200
    assert http.mtm(admin, "GET", "/technicalusers?queryUserName=hyg").status_code == 200
    assert http.mtm(admin, "PUT", path, json={"description": "e"}).status_code == 200
    second = http.mtm(admin, "PUT", path + "/replaceToken").json()["data"]["apiTokenData"]
    third = http.mtm(admin, "PUT", path + "/replaceToken?gracePeriodSeconds=60").json()["data"]
    third = third["apiTokenData"]
    assert http.mtm(admin, "GET", path + "/changelog").status_code == 200
    assert http.mtm(admin, "GET", "/events?size=100").status_code == 200
    in_grace = http.access_token(second["token"])
    machine = http.access_token(third["token"])

    # Personal tokens: create, list, read, edit, use, delete.
    personal = http.mtm(
        admin, "POST", "/apiTokens", json={"description": "p", "expiry": iso_in_days(2)}
    ).json()["data"]
    assert http.mtm(admin, "GET", "/apiTokens").status_code == 200
    assert http.mtm(admin, "GET", f"/apiTokens/{personal['id']}").status_code == 200
    edited = http.mtm(admin, "PUT", f"/apiTokens/{personal['id']}", json={"description": "q"})
    assert edited.status_code == 200
    personal_access = http.access_token(personal["token"])
    assert http.mtm(admin, "DELETE", f"/apiTokens/{personal['id']}").status_code == 204

    # Revocation and introspection, as the technical user and as the admin.
    for token in (machine, third["token"], in_grace, admin):
        answer = http.request(
            "POST", INTROSPECT_URL, data={"token": token}, headers=basic(third["token"])
        )
        assert answer.status_code == 200
    revoked = http.request(
        "POST", REVOKE_URL, data={"token": machine}, headers=basic(third["token"])
    )
    assert revoked.status_code == 200
    revoked = http.request(
        "POST", REVOKE_URL, data={"token": second["token"]}, headers=basic(third["token"])
    )
    assert revoked.status_code == 200
    assert http.mtm(admin, "DELETE", path).status_code == 204

    # Failed authentications of every kind.
    unknown = tokens.generate("lxt_").secret
    bad_checksum = first[:-1] + ("A" if first[-1] != "A" else "B")
    http.keep(unknown, bad_checksum)
    for secret in (first, second["token"], third["token"], personal["token"], unknown,
                   bad_checksum, "lxt_short", admin):  # fmt: skip
        assert http.grant(secret).status_code == 401
    assert http.grant(admin_secret, headers=basic(admin_secret, user="someone")).status_code == 401
    both = http.request(
        "POST",
        TOKEN_URL,
        data={"grant_type": "client_credentials", "client_secret": admin_secret},
        headers=basic(admin_secret),
    )
    assert both.status_code == 400
    in_query = http.request(
        "POST", TOKEN_URL + f"?grant_type=client_credentials&client_secret={admin_secret}"
    )
    assert in_query.status_code in (400, 401)
    for bearer in (admin_secret, made["apiToken"], forged(admin), cli_made, personal_access,
                   machine, "not-a-token"):  # fmt: skip
        assert http.mtm(bearer, "GET", "/technicalusers").status_code in (401, 403)
    assert http.request(
        "POST", INTROSPECT_URL, data={"token": admin}, headers=basic(unknown)
    ).status_code == 401  # fmt: skip
    assert http.request(
        "POST", REVOKE_URL, data={"token": admin}, headers=basic(first)
    ).status_code == 401  # fmt: skip

    # Bodies over the limit, sent chunked: no Content-Length to refuse them by. (Under the
    # limit, a chunked body is read as any other.)
    small = http.request(
        "POST",
        TOKEN_URL,
        data=iter([b"grant_type=", b"client_credentials"]),
        headers={**basic(admin_secret), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert small.status_code == 200
    http.keep(small.json()["access_token"])
    over = http.request(
        "POST",
        TOKEN_URL,
        data=chunked(LIMIT + 8192),
        headers={**basic(admin_secret), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert over.status_code == 413
    over = http.mtm(
        admin,
        "POST",
        "/technicalusers",
        data=chunked(LIMIT + 8192),
        headers={"Content-Type": "application/json"},
    )
    assert over.status_code == 413
    assert over.json()["type"] == "PayloadTooLarge"

    server.stop()
    logs.append(server.log_path.read_text(errors="replace"))
    log_text = "\n".join(logs)
    assert '"type":"ACCESS_TOKEN_GRANT"' in log_text  # the capture works: audit lines are there
    assert len(http.secrets) >= 15

    leaked = sorted(secret[:12] for secret in http.secrets if secret in log_text)
    assert leaked == []
    assert [line[:300] for line in log_text.splitlines() if API_TOKEN_SHAPE.search(line)] == []
    assert JWT_SHAPE.findall(log_text) == []
    assert server_errors(server.log_path) == []

    assert len(http.responses) >= 50
    for response in http.responses:
        assert response.status_code < 500, (response.request.method, response.url)
        headers = "\n".join(f"{name}: {value}" for name, value in response.headers.items())
        assert not [secret for secret in http.secrets if secret in headers], response.url
        assert API_TOKEN_SHAPE.findall(headers) == []
        assert JWT_SHAPE.findall(headers) == []
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (name, response.url)
        assert "Access-Control-Allow-Origin" not in response.headers
    print(
        f"\nhygiene: {len(http.responses)} responses, {len(log_text.splitlines())} log lines, "
        f"{len(http.secrets)} secrets: none in a log line or a header"
    )


def test_no_access_token_in_third_party_debug_logs(client, factory, caplog):
    """Even with the root logger at DEBUG, Authlib does not log the token it issues."""
    workspace = factory.workspace()
    _, _, secret = factory.technical_user(workspace)
    caplog.set_level(logging.DEBUG)
    response = exchange(client, secret)
    assert response.status_code == 200
    assert response.get_json()["access_token"] not in caplog.text
    assert secret not in caplog.text
