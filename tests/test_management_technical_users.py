"""Technical users over HTTP: create, list, get, update, replaceToken, delete, changelog."""

from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy import select

from authserver import tokens
from authserver.extensions import db
from authserver.models import ApiToken, AuditEvent, Role, TechnicalUser

from .conftest import admin_mgmt, exchange, iso_in_days

USER_AGENT = "mgmt-tests/1.0"


def events_of(event_type: str) -> list[AuditEvent]:
    """Audit events of one type, oldest first."""
    query = select(AuditEvent).where(AuditEvent.type == event_type).order_by(AuditEvent.id)
    return list(db.session.execute(query).scalars())


def claims_of(response) -> dict:
    """The claims of the access token in a token response (unverified)."""
    assert response.status_code == 200, response.get_json()
    return jwt.decode(response.get_json()["access_token"], options={"verify_signature": False})


def parse_time(text: str) -> datetime:
    """A wire timestamp (ISO 8601 with Z)."""
    assert text.endswith("Z")
    return datetime.fromisoformat(text)


# --- create -----------------------------------------------------------------------------


def test_create_returns_the_token_once(client, admin):
    """201 with the technical user and its token; GET never shows the token again."""
    expiry = iso_in_days(30)
    body = {
        "userName": "ci-bot",
        "description": "deploys",
        "permissionRole": "VIEWER",
        "apiTokenData": {"expiry": expiry, "description": "first"},
    }
    response = admin.post("/technicalusers", json=body, headers={"User-Agent": USER_AGENT})
    assert response.status_code == 201
    envelope = response.get_json()
    assert envelope["status"] == "OK"
    assert envelope["type"] == "TechnicalUser"
    assert envelope["errors"] == []
    data = envelope["data"]
    assert data["userName"] == "ci-bot"
    assert data["description"] == "deploys"
    assert data["permissionRole"] == "VIEWER"
    assert data["status"] == "ACTIVE"
    assert data["createdBy"] == admin.user.id
    token = data["apiTokenData"]
    secret = token.pop("token")
    assert tokens.is_well_formed(secret, "lxt_")
    assert token["hint"] == secret[-4:]
    assert token["description"] == "first"
    assert token["status"] == "ACTIVE"
    assert parse_time(token["expiry"]) == datetime.fromisoformat(expiry)
    assert parse_time(data["createdAt"]).tzinfo == UTC

    again = admin.get(f"/technicalusers/{data['id']}").get_json()["data"]
    assert "token" not in again["apiTokenData"]
    assert again["apiTokenData"] == token
    assert secret not in admin.get("/technicalusers").get_data(as_text=True)

    claims = claims_of(exchange(client, secret))
    assert claims["principal"]["technicalUser"] is True
    assert claims["principal"]["permission"]["role"] == "VIEWER"
    assert claims["scope"] == "read"


def test_create_is_audited_with_actor_target_ip_and_user_agent(admin):
    """TECHNICAL_USER_CREATE and APITOKEN_CREATE, never the secret."""
    created = admin.post(
        "/technicalusers",
        json={
            "userName": "bot",
            "permissionRole": "ADMIN",
            "apiTokenData": {"expiry": iso_in_days(5)},
        },
        headers={"User-Agent": USER_AGENT},
    ).get_json()["data"]
    (create,) = events_of("TECHNICAL_USER_CREATE")
    assert (create.actor_id, create.actor_user_name, create.actor_technical) == (
        admin.user.id,
        admin.user.user_name,
        False,
    )
    assert (create.target_type, create.target_id, create.target_name) == (
        "TECHNICAL_USER",
        created["id"],
        "bot",
    )
    assert (create.ip, create.user_agent) == ("127.0.0.1", USER_AGENT)
    assert create.workspace_id == admin.workspace.id
    assert create.payload["permissionRole"] == "ADMIN"
    token_event = events_of("APITOKEN_CREATE")[-1]
    assert token_event.target_id == created["apiTokenData"]["id"]
    assert token_event.user_agent == USER_AGENT
    secret = created["apiTokenData"]["token"]
    for event in db.session.execute(select(AuditEvent)).scalars():
        assert secret not in str(event.payload)


def test_same_name_in_another_workspace_is_fine(client, factory, admin):
    """userName is unique per workspace only."""
    admin.create_technical_user("shared")
    other = admin_mgmt(client, factory)
    other.create_technical_user("shared")


# --- list --------------------------------------------------------------------------------


def test_list_pages_searches_and_sorts(client, factory, admin):
    """1-indexed pages, total across pages, case-insensitive literal search, sort."""
    for name in ("beta", "Alpha", "gamma", "delta_1", "delta%2"):
        admin.create_technical_user(name)
    admin_mgmt(client, factory).create_technical_user("other-workspace")

    everything = admin.get("/technicalusers").get_json()
    assert everything["total"] == 5
    assert [u["userName"] for u in everything["data"]] == [
        "Alpha",
        "beta",
        "delta%2",
        "delta_1",
        "gamma",
    ]
    assert all("token" not in u["apiTokenData"] for u in everything["data"])

    page = admin.get("/technicalusers?page=2&size=2").get_json()
    assert page["total"] == 5
    assert [u["userName"] for u in page["data"]] == ["delta%2", "delta_1"]
    assert admin.get("/technicalusers?page=4&size=2").get_json()["data"] == []

    desc = admin.get("/technicalusers?sort=userName-DESC&size=1").get_json()
    assert desc["data"][0]["userName"] == "gamma"
    newest = admin.get("/technicalusers?sort=createdAt-DESC&size=1").get_json()
    assert newest["data"][0]["userName"] == "delta%2"

    search = admin.get("/technicalusers?queryUserName=ALP").get_json()
    assert (search["total"], search["data"][0]["userName"]) == (1, "Alpha")
    literal = admin.get("/technicalusers?queryUserName=a_").get_json()
    assert [u["userName"] for u in literal["data"]] == ["delta_1"]
    percent = admin.get("/technicalusers", query_string={"queryUserName": "%"}).get_json()
    assert [u["userName"] for u in percent["data"]] == ["delta%2"]


def test_default_page_size_is_30(factory, admin):
    """Without size, a page holds 30."""
    for number in range(31):
        factory.technical_user(admin.workspace, name=f"bot-{number:02d}")
    listing = admin.get("/technicalusers").get_json()
    assert (listing["total"], len(listing["data"])) == (31, 30)
    assert len(admin.get("/technicalusers?page=2").get_json()["data"]) == 1
    assert len(admin.get("/technicalusers?size=100").get_json()["data"]) == 31


# --- update ------------------------------------------------------------------------------


def test_update_changes_fields_and_audits_before_and_after(client, admin):
    """description, permissionRole and apiTokenData.expiry change; one event holds both states."""
    created = admin.create_technical_user("bot", role="VIEWER")
    new_expiry = iso_in_days(60)
    response = admin.put(
        f"/technicalusers/{created['id']}",
        json={
            "description": "now writes",
            "permissionRole": "MEMBER",
            "apiTokenData": {"expiry": new_expiry, "description": "rotated yearly"},
        },
    )
    assert response.status_code == 200
    data = response.get_json()["data"]
    assert (data["description"], data["permissionRole"]) == ("now writes", "MEMBER")
    assert parse_time(data["apiTokenData"]["expiry"]) == datetime.fromisoformat(new_expiry)
    assert data["apiTokenData"]["description"] == "rotated yearly"
    assert "token" not in data["apiTokenData"]
    assert data["updatedAt"] > created["updatedAt"]

    (event,) = events_of("TECHNICAL_USER_UPDATE")
    assert event.target_id == created["id"]
    assert event.actor_id == admin.user.id
    before, after = event.payload["before"], event.payload["after"]
    assert (before["permissionRole"], after["permissionRole"]) == ("VIEWER", "MEMBER")
    assert (before["description"], after["description"]) == ("", "now writes")
    assert before["apiTokenData"]["expiry"] != after["apiTokenData"]["expiry"]

    # The new role applies to the next exchange.
    claims = claims_of(exchange(client, created["apiTokenData"]["token"]))
    assert claims["scope"] == "read write"
    assert claims["principal"]["permission"]["role"] == "MEMBER"


def test_update_with_nothing_new_records_nothing(admin):
    """Sending back what GET returned (read-only fields included) is a no-op."""
    created = admin.create_technical_user("bot")
    current = admin.get(f"/technicalusers/{created['id']}").get_json()["data"]
    current["apiTokenData"].pop("expiry")
    response = admin.put(f"/technicalusers/{created['id']}", json=current)
    assert response.status_code == 200, response.get_json()
    assert events_of("TECHNICAL_USER_UPDATE") == []


def test_expiry_of_an_expired_token_cannot_be_revived(factory, admin):
    """A dead token is replaced, not extended: 409 naming the field."""
    technical_user, token, _ = factory.technical_user(admin.workspace)
    token.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    db.session.commit()
    response = admin.put(
        f"/technicalusers/{technical_user.id}", json={"apiTokenData": {"expiry": iso_in_days(9)}}
    )
    assert response.status_code == 409
    assert response.get_json()["errors"] == [
        {
            "value": "apiTokenData.expiry",
            "messages": ["cannot be changed on an expired or revoked token"],
        }
    ]


# --- replaceToken ---------------------------------------------------------------------------


def test_replace_gives_a_new_secret_and_kills_the_old(client, admin):
    """The old token fails at once; the new one works and is shown once."""
    created = admin.create_technical_user("bot", description="x")
    old = created["apiTokenData"]["token"]
    response = admin.put(f"/technicalusers/{created['id']}/replaceToken")
    assert response.status_code == 200
    data = response.get_json()["data"]
    new = data["apiTokenData"]["token"]
    assert new != old
    assert data["apiTokenData"]["id"] != created["apiTokenData"]["id"]
    assert data["apiTokenData"]["expiry"] == created["apiTokenData"]["expiry"]
    assert exchange(client, old).status_code == 401
    assert exchange(client, new).status_code == 200
    assert (
        "token"
        not in admin.get(f"/technicalusers/{created['id']}").get_json()["data"]["apiTokenData"]
    )

    (event,) = events_of("APITOKEN_REPLACE")
    assert event.target_id == data["apiTokenData"]["id"]
    assert event.payload["replaced"]["id"] == created["apiTokenData"]["id"]
    assert event.payload["gracePeriodSeconds"] == 0
    old_row = db.session.get(ApiToken, created["apiTokenData"]["id"])
    assert old_row.revoke_reason == "replaced"


def test_replace_with_a_grace_period_keeps_the_old_token_for_a_while(client, admin):
    """gracePeriodSeconds=N: the old secret keeps working until now + N."""
    created = admin.create_technical_user("bot")
    old = created["apiTokenData"]["token"]
    started = datetime.now(UTC)
    response = admin.put(f"/technicalusers/{created['id']}/replaceToken?gracePeriodSeconds=600")
    assert response.status_code == 200
    assert exchange(client, old).status_code == 200
    assert exchange(client, response.get_json()["data"]["apiTokenData"]["token"]).status_code == 200
    old_row = db.session.get(ApiToken, created["apiTokenData"]["id"])
    db.session.refresh(old_row)
    assert started + timedelta(seconds=599) < old_row.revoked_at
    assert old_row.revoked_at < datetime.now(UTC) + timedelta(seconds=601)

    # A second replace without grace cuts every older secret now: one live token remains.
    third = admin.put(f"/technicalusers/{created['id']}/replaceToken").get_json()["data"]
    assert exchange(client, old).status_code == 401
    db.session.rollback()
    live = [
        t
        for t in db.session.execute(
            select(ApiToken).where(ApiToken.technical_user_id == created["id"])
        ).scalars()
        if t.is_live(datetime.now(UTC))
    ]
    assert [t.id for t in live] == [third["apiTokenData"]["id"]]


def test_replace_may_set_a_new_expiry(admin):
    """An optional body gives the new token its own expiry and description."""
    created = admin.create_technical_user("bot")
    expiry = iso_in_days(90)
    response = admin.put(
        f"/technicalusers/{created['id']}/replaceToken",
        json={"apiTokenData": {"expiry": expiry, "description": "second"}},
    )
    token = response.get_json()["data"]["apiTokenData"]
    assert parse_time(token["expiry"]) == datetime.fromisoformat(expiry)
    assert token["description"] == "second"


def test_replace_after_expiry_needs_a_new_expiry(factory, admin):
    """The old expiry is in the past, so the new token needs one: 400 naming the field."""
    technical_user, token, _ = factory.technical_user(admin.workspace)
    token.expires_at = datetime.now(UTC) - timedelta(days=1)
    db.session.commit()
    response = admin.put(f"/technicalusers/{technical_user.id}/replaceToken")
    assert response.status_code == 400
    assert response.get_json()["errors"] == [
        {"value": "apiTokenData.expiry", "messages": ["is required: the current token has expired"]}
    ]
    ok = admin.put(
        f"/technicalusers/{technical_user.id}/replaceToken",
        json={"apiTokenData": {"expiry": iso_in_days(3)}},
    )
    assert ok.status_code == 200


# --- delete and changelog ----------------------------------------------------------------------


def test_delete_archives_kills_the_token_keeps_history_and_frees_the_name(client, admin):
    """204; the token fails; GET 404; changelog by id still works; the userName is reusable."""
    created = admin.create_technical_user("bot")
    secret = created["apiTokenData"]["token"]
    admin.put(f"/technicalusers/{created['id']}", json={"description": "edited"})
    admin.put(f"/technicalusers/{created['id']}/replaceToken?gracePeriodSeconds=60")
    response = admin.delete(f"/technicalusers/{created['id']}")
    assert response.status_code == 204
    assert response.data == b""
    assert exchange(client, secret).status_code == 401
    assert admin.get(f"/technicalusers/{created['id']}").status_code == 404
    assert admin.put(f"/technicalusers/{created['id']}", json={}).status_code == 404
    assert admin.delete(f"/technicalusers/{created['id']}").status_code == 404
    assert admin.get("/technicalusers").get_json()["total"] == 0

    row = db.session.get(TechnicalUser, created["id"])
    db.session.refresh(row)
    assert row.deleted_at is not None

    log = admin.get(f"/technicalusers/{created['id']}/changelog").get_json()
    assert log["type"] == "AuditEvent"
    assert [e["type"] for e in log["data"]] == [
        "APITOKEN_DELETE",  # both tokens: the replacement, and the old one
        "APITOKEN_DELETE",  # still in its grace period
        "TECHNICAL_USER_DELETE",
        "APITOKEN_REPLACE",
        "TECHNICAL_USER_UPDATE",
        "APITOKEN_CREATE",
        "TECHNICAL_USER_CREATE",
    ]
    assert log["total"] == 7
    assert all(e["actor"]["id"] == admin.user.id for e in log["data"])

    again = admin.create_technical_user("bot")
    assert again["id"] != created["id"]


def test_changelog_pages_sorts_and_leaves_out_usage(client, admin):
    """Grants are usage, not changes; createdAt-ASC reverses; pages are 1-indexed."""
    created = admin.create_technical_user("bot")
    assert exchange(client, created["apiTokenData"]["token"]).status_code == 200
    for number in range(3):
        admin.put(f"/technicalusers/{created['id']}", json={"description": f"v{number}"})
    url = f"/technicalusers/{created['id']}/changelog"
    newest = admin.get(url + "?size=2").get_json()
    assert newest["total"] == 5
    assert [e["payload"]["after"]["description"] for e in newest["data"]] == ["v2", "v1"]
    oldest = admin.get(url + "?sort=createdAt-ASC&size=2&page=1").get_json()
    assert [e["type"] for e in oldest["data"]] == ["TECHNICAL_USER_CREATE", "APITOKEN_CREATE"]
    assert admin.get(url + "?page=3&size=2").get_json()["data"][0]["type"] == (
        "TECHNICAL_USER_CREATE"
    )


def test_unknown_id_is_404(admin):
    """A well-formed id that names nothing is 404 in the envelope."""
    response = admin.get("/technicalusers/00000000-0000-4000-8000-000000000000")
    assert response.status_code == 404
    assert response.get_json() == {
        "status": "ERROR",
        "type": "NotFound",
        "message": "No such technical user",
        "errors": [{"value": "id", "messages": ["not found"]}],
        "total": None,
        "data": None,
    }


def test_upper_case_id_is_accepted(admin):
    """UUIDs are compared in canonical lower case."""
    created = admin.create_technical_user("bot")
    assert admin.get(f"/technicalusers/{created['id'].upper()}").status_code == 200


def test_every_admin_manages_every_technical_user(client, factory, admin):
    """A second admin of the workspace sees, edits, replaces and deletes what the first made."""
    created = admin.create_technical_user("bot")
    second = admin_mgmt(client, factory, admin.workspace)
    assert second.get(f"/technicalusers/{created['id']}").status_code == 200
    assert (
        second.put(f"/technicalusers/{created['id']}", json={"description": "x"}).status_code == 200
    )
    assert second.put(f"/technicalusers/{created['id']}/replaceToken").status_code == 200
    assert second.get(f"/technicalusers/{created['id']}/changelog").get_json()["total"] == 4
    assert second.delete(f"/technicalusers/{created['id']}").status_code == 204


def test_the_cli_and_the_api_share_the_rules(factory, admin):
    """A technical user made by the CLI service is listed and managed like any other."""
    technical_user, _, _ = factory.technical_user(admin.workspace, Role.ADMIN, name="from-cli")
    listing = admin.get("/technicalusers").get_json()
    assert [u["userName"] for u in listing["data"]] == ["from-cli"]
    assert listing["data"][0]["createdBy"] is None
    conflict = admin.post(
        "/technicalusers",
        json={
            "userName": "from-cli",
            "permissionRole": "ADMIN",
            "apiTokenData": {"expiry": iso_in_days(1)},
        },
    )
    assert conflict.status_code == 409
