"""Personal API tokens over HTTP: the caller's own only; every other admin gets 404."""

from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy import func, select

from authserver import tokens
from authserver.extensions import db
from authserver.models import ApiToken, AuditEvent

from .conftest import admin_mgmt, exchange, iso_in_days


def events_of(event_type: str) -> list[AuditEvent]:
    """Audit events of one type, oldest first."""
    query = select(AuditEvent).where(AuditEvent.type == event_type).order_by(AuditEvent.id)
    return list(db.session.execute(query).scalars())


def own_token_id(caller) -> str:
    """The id of the API token behind the caller's access token."""
    return jwt.decode(caller.access_token, options={"verify_signature": False})["client_id"]


def test_create_returns_an_admin_token_once(client, admin):
    """201 with the token; it exchanges to an ADMIN, read-write token for every API."""
    expiry = iso_in_days(14)
    response = admin.post("/apiTokens", json={"description": "laptop", "expiry": expiry})
    assert response.status_code == 201
    envelope = response.get_json()
    assert (envelope["status"], envelope["type"]) == ("OK", "ApiToken")
    data = envelope["data"]
    secret = data.pop("token")
    assert tokens.is_well_formed(secret, "lxt_")
    assert data["description"] == "laptop"
    assert data["status"] == "ACTIVE"
    assert data["hint"] == secret[-4:]
    assert datetime.fromisoformat(data["expiry"]) == datetime.fromisoformat(expiry)
    assert admin.get(f"/apiTokens/{data['id']}").get_json()["data"] == data

    granted = exchange(client, secret).get_json()
    assert granted["scope"] == "read write"
    claims = jwt.decode(granted["access_token"], options={"verify_signature": False})
    assert claims["principal"]["permission"]["role"] == "ADMIN"
    assert claims["principal"]["technicalUser"] is False
    assert "mtm" in claims["aud"]

    event = events_of("APITOKEN_CREATE")[-1]
    assert (event.actor_id, event.target_id) == (admin.user.id, data["id"])
    assert event.ip == "127.0.0.1"
    assert secret not in str(event.payload)


def test_list_shows_only_the_callers_tokens(client, factory, admin):
    """Another admin's tokens and deleted tokens are not listed; newest first."""
    other = admin_mgmt(client, factory, admin.workspace)
    first = admin.post("/apiTokens", json={"expiry": iso_in_days(3)}).get_json()["data"]
    admin.post("/apiTokens", json={"expiry": iso_in_days(4), "description": "kept"})
    other.post("/apiTokens", json={"expiry": iso_in_days(5)})
    assert admin.delete(f"/apiTokens/{first['id']}").status_code == 204

    listing = admin.get("/apiTokens").get_json()
    assert listing["total"] == 2  # the fixture's token and "kept"
    assert [t["description"] for t in listing["data"]] == ["kept", "test"]
    assert all("token" not in t for t in listing["data"])
    by_expiry = admin.get("/apiTokens?sort=expiry-ASC").get_json()["data"]
    assert [t["description"] for t in by_expiry] == ["kept", "test"]
    assert other.get("/apiTokens").get_json()["total"] == 2


def test_another_admins_token_does_not_exist(client, factory, admin):
    """GET, PUT and DELETE of a co-admin's token answer 404, and change nothing."""
    other = admin_mgmt(client, factory, admin.workspace)
    foreign = own_token_id(other)
    for response in (
        admin.get(f"/apiTokens/{foreign}"),
        admin.put(f"/apiTokens/{foreign}", json={"description": "mine now"}),
        admin.delete(f"/apiTokens/{foreign}"),
    ):
        assert response.status_code == 404
        assert response.get_json()["message"] == "No such API token"
    row = db.session.get(ApiToken, foreign)
    db.session.refresh(row)
    assert (row.description, row.revoked_at) == ("test", None)
    assert other.get("/apiTokens").status_code == 200


def test_technical_user_tokens_are_not_personal_tokens(factory, admin):
    """A technical user's token id is not reachable under /apiTokens."""
    _, token, _ = factory.technical_user(admin.workspace)
    assert admin.get(f"/apiTokens/{token.id}").status_code == 404


def test_update_changes_description_and_expiry(admin):
    """PUT edits; APITOKEN_UPDATE holds before and after."""
    created = admin.post("/apiTokens", json={"expiry": iso_in_days(3)}).get_json()["data"]
    expiry = iso_in_days(20)
    response = admin.put(
        f"/apiTokens/{created['id']}", json={"description": "renamed", "expiry": expiry}
    )
    assert response.status_code == 200
    data = response.get_json()["data"]
    assert data["description"] == "renamed"
    assert datetime.fromisoformat(data["expiry"]) == datetime.fromisoformat(expiry)
    (event,) = events_of("APITOKEN_UPDATE")
    assert event.payload["before"]["description"] == ""
    assert event.payload["after"]["description"] == "renamed"
    assert event.target_id == created["id"]
    assert (
        admin.put(f"/apiTokens/{created['id']}", json={"description": "renamed"}).status_code == 200
    )
    assert len(events_of("APITOKEN_UPDATE")) == 1  # nothing new, nothing recorded


def test_a_revoked_token_is_listed_as_revoked_and_not_revived(client, admin):
    """A token revoked elsewhere shows REVOKED; giving it a new expiry is a 409."""
    created = admin.post("/apiTokens", json={"expiry": iso_in_days(3)}).get_json()["data"]
    row = db.session.get(ApiToken, created["id"])
    row.revoked_at = datetime.now(UTC) - timedelta(seconds=1)
    row.revoke_reason = "revoked"
    db.session.commit()
    assert admin.get(f"/apiTokens/{created['id']}").get_json()["data"]["status"] == "REVOKED"
    response = admin.put(f"/apiTokens/{created['id']}", json={"expiry": iso_in_days(30)})
    assert response.status_code == 409
    assert response.get_json()["errors"] == [
        {"value": "expiry", "messages": ["cannot be changed on an expired or revoked token"]}
    ]
    assert admin.put(f"/apiTokens/{created['id']}", json={"description": "ok"}).status_code == 200


def test_delete_stops_the_token_at_once(client, admin):
    """204; the exchange refuses it; GET 404; APITOKEN_DELETE recorded."""
    created = admin.post("/apiTokens", json={"expiry": iso_in_days(3)}).get_json()["data"]
    assert exchange(client, created["token"]).status_code == 200
    assert admin.delete(f"/apiTokens/{created['id']}").status_code == 204
    assert exchange(client, created["token"]).status_code == 401
    assert admin.get(f"/apiTokens/{created['id']}").status_code == 404
    assert admin.delete(f"/apiTokens/{created['id']}").status_code == 404
    (event,) = events_of("APITOKEN_DELETE")
    assert (event.target_id, event.actor_id) == (created["id"], admin.user.id)
    row = db.session.get(ApiToken, created["id"])
    assert row.revoke_reason == "deleted"


def test_deleting_the_token_in_use_ends_the_session(admin):
    """An admin may delete the very token they call with; the next call is 401."""
    assert admin.delete(f"/apiTokens/{own_token_id(admin)}").status_code == 204
    assert admin.get("/apiTokens").status_code == 401
    assert db.session.execute(select(func.count()).select_from(ApiToken)).scalar() == 1
