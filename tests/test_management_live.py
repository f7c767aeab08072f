"""End to end through a running server (gunicorn, 4 workers): the seed workflow and concurrency.

One server for the module. Each test's `app` fixture empties the tables first;
on SQLite a test must end its own transaction (rollback) before HTTP calls.
"""

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import requests
from sqlalchemy import select

from authserver.extensions import db
from authserver.models import ApiToken, AuditEvent, TechnicalUser
from authserver.verify import Verifier

from .conftest import LiveServer, free_port, iso_in_days, server_env
from .live import Api

pytestmark = pytest.mark.slow

MTM = "/services/mtm/v1"
TECHNICAL_USER_APIS = ["integration-api", "webhooks", "graphql"]
TIMEOUT = 30


@pytest.fixture(scope="module")
def server(test_config, _schema, tmp_path_factory):
    """One `authserver serve` with 4 sync workers, for real concurrency."""
    port = free_port()
    live = LiveServer(
        server_env(test_config, ISSUER=f"http://127.0.0.1:{port}"),
        port,
        workers=4,
        log_path=tmp_path_factory.mktemp("live") / "server.log",
    )
    yield live
    live.stop()


@pytest.fixture
def http(server, app, factory):
    """The live server, and an admin's access token obtained from it."""
    _, _, secret = factory.admin_token()
    db.session.rollback()
    client = Api(server.url)
    client.admin = client.access_token(secret)
    return client


def test_seed_workflow_end_to_end(http):
    """Create a VIEWER technical user, use it, edit, replace (with grace), delete, read history."""
    created = http.call(
        http.admin,
        "POST",
        "/technicalusers",
        json={
            "userName": "reporting",
            "description": "nightly export",
            "permissionRole": "VIEWER",
            "apiTokenData": {"expiry": iso_in_days(30)},
        },
    )
    assert created.status_code == 201, created.text
    assert created.headers["Cache-Control"] == "no-store"
    technical_user = created.json()["data"]
    first = technical_user["apiTokenData"]["token"]
    path = f"/technicalusers/{technical_user['id']}"

    # The token works, as a read-only VIEWER limited to the technical-user APIs.
    token = http.access_token(first)
    claims = Verifier(http.url, "graphql").verify(token).claims
    assert claims["principal"]["permission"]["role"] == "VIEWER"
    assert claims["principal"]["technicalUser"] is True
    assert claims["scope"] == "read"
    assert claims["aud"] == TECHNICAL_USER_APIS
    refused = http.call(token, "GET", "/technicalusers")
    assert refused.status_code == 403

    # Read it back without the secret; edit it.
    shown = http.call(http.admin, "GET", path).json()["data"]
    assert "token" not in shown["apiTokenData"]
    edited = http.call(http.admin, "PUT", path, json={"description": "hourly export"})
    assert edited.json()["data"]["description"] == "hourly export"

    # Replace: the old secret fails at once, the new one works.
    second = http.call(http.admin, "PUT", path + "/replaceToken").json()["data"]["apiTokenData"]
    assert http.grant(first).status_code == 401
    assert http.grant(second["token"]).status_code == 200

    # Replace with a grace period: the old secret lives on for it, then stops.
    replaced_at = time.monotonic()
    third = http.call(http.admin, "PUT", path + "/replaceToken?gracePeriodSeconds=2")
    assert third.status_code == 200
    assert http.grant(second["token"]).status_code == 200
    assert http.grant(third.json()["data"]["apiTokenData"]["token"]).status_code == 200
    time.sleep(max(0.0, 2.2 - (time.monotonic() - replaced_at)))
    assert http.grant(second["token"]).status_code == 401

    # Delete: the token fails, the technical user is gone, its history stays.
    assert http.call(http.admin, "DELETE", path).status_code == 204
    assert http.grant(third.json()["data"]["apiTokenData"]["token"]).status_code == 401
    assert http.call(http.admin, "GET", path).status_code == 404
    history = http.call(http.admin, "GET", path + "/changelog").json()
    assert [event["type"] for event in history["data"]] == [
        "APITOKEN_DELETE",
        "TECHNICAL_USER_DELETE",
        "APITOKEN_REPLACE",
        "APITOKEN_REPLACE",
        "TECHNICAL_USER_UPDATE",
        "APITOKEN_CREATE",
        "TECHNICAL_USER_CREATE",
    ]
    assert all(event["ip"] == "127.0.0.1" for event in history["data"])

    # The name is free again.
    again = http.call(
        http.admin,
        "POST",
        "/technicalusers",
        json={
            "userName": "reporting",
            "permissionRole": "MEMBER",
            "apiTokenData": {"expiry": iso_in_days(1)},
        },
    )
    assert again.status_code == 201


def test_errors_over_http_keep_the_envelope(http):
    """401 with its challenge, 413 and 415 in the envelope from the real server."""
    anonymous = requests.get(http.url + MTM + "/technicalusers", timeout=TIMEOUT)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == (
        'Bearer realm="authserver", error="invalid_token"'
    )
    assert anonymous.json()["type"] == "Unauthorized"
    big = http.call(
        http.admin,
        "POST",
        "/apiTokens",
        data=b'{"description": "' + b"x" * 70_000 + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert big.status_code == 413
    assert big.json()["type"] == "PayloadTooLarge"
    form = http.call(http.admin, "POST", "/apiTokens", data={"expiry": iso_in_days(1)})
    assert form.status_code == 415
    assert form.json()["errors"][0]["value"] == "Content-Type"


def test_concurrent_creates_of_one_name_make_exactly_one(http):
    """Ten simultaneous creates of the same userName: one 201, nine 409."""
    body = {
        "userName": "racer",
        "permissionRole": "MEMBER",
        "apiTokenData": {"expiry": iso_in_days(5)},
    }
    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(
            pool.map(
                lambda _: http.call(http.admin, "POST", "/technicalusers", json=body).status_code,
                range(10),
            )
        )
    assert sorted(statuses) == [201] + [409] * 9
    db.session.rollback()
    rows = db.session.execute(select(TechnicalUser).where(TechnicalUser.user_name == "racer"))
    assert len(rows.all()) == 1
    creates = db.session.execute(
        select(AuditEvent).where(AuditEvent.type == "TECHNICAL_USER_CREATE")
    ).all()
    assert len(creates) == 1
    db.session.rollback()


def test_concurrent_replacements_leave_exactly_one_live_token(http):
    """Twenty simultaneous replaceToken calls: all succeed, one token is live, it is the last."""
    created = http.call(
        http.admin,
        "POST",
        "/technicalusers",
        json={
            "userName": "rotor",
            "permissionRole": "ADMIN",
            "apiTokenData": {"expiry": iso_in_days(5)},
        },
    ).json()["data"]
    path = f"/technicalusers/{created['id']}/replaceToken"
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda _: http.call(http.admin, "PUT", path), range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    secrets = [r.json()["data"]["apiTokenData"]["token"] for r in responses]
    assert len(set(secrets)) == 20

    db.session.rollback()
    now = datetime.now(UTC)
    tokens = (
        db.session.execute(select(ApiToken).where(ApiToken.technical_user_id == created["id"]))
        .scalars()
        .all()
    )
    assert len(tokens) == 21
    live = [token for token in tokens if token.is_live(now)]
    assert len(live) == 1
    newest = max(tokens, key=lambda token: token.created_at)
    assert live[0].id == newest.id
    replaces = db.session.execute(
        select(AuditEvent).where(AuditEvent.type == "APITOKEN_REPLACE")
    ).all()
    assert len(replaces) == 20
    db.session.rollback()

    working = [secret for secret in secrets if http.grant(secret).status_code == 200]
    assert len(working) == 1
