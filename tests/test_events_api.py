"""GET /services/mtm/v1/events: the workspace's audit log for its admins, newest first."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from authserver.extensions import db
from authserver.models import AuditEvent
from authserver.services.audit import event_to_dict

from .conftest import admin_mgmt, exchange


@pytest.fixture
def history(client, factory, admin):
    """A workspace with a few changes, a grant and a denial, and another busy workspace."""
    created = admin.create_technical_user("bot")
    admin.put(f"/technicalusers/{created['id']}", json={"description": "x"})
    exchange(client, created["apiTokenData"]["token"])
    admin.get("/technicalusers", headers={"Authorization": "Bearer nonsense"})
    other = admin_mgmt(client, factory)
    other.create_technical_user("elsewhere")
    return created


def workspace_events(workspace_id: str) -> list[AuditEvent]:
    """The workspace's events, newest first, straight from the table."""
    query = select(AuditEvent).where(AuditEvent.workspace_id == workspace_id)
    return list(db.session.execute(query.order_by(AuditEvent.id.desc())).scalars())


def test_lists_the_workspace_log_newest_first(admin, history):
    """Every event of the caller's workspace and no other, in the wire shape of event_to_dict."""
    response = admin.get("/events")
    assert response.status_code == 200
    envelope = response.get_json()
    assert (envelope["status"], envelope["type"]) == ("OK", "AuditEvent")
    expected = [event_to_dict(e) for e in workspace_events(admin.workspace.id)]
    assert envelope["data"] == expected
    assert envelope["total"] == len(expected)
    assert [e["type"] for e in envelope["data"]][:4] == [
        "ACCESS_TOKEN_GRANT",
        "TECHNICAL_USER_UPDATE",
        "APITOKEN_CREATE",
        "TECHNICAL_USER_CREATE",
    ]
    assert all(e["workspace"]["id"] == admin.workspace.id for e in envelope["data"])
    assert all(e["createdAt"].endswith("Z") for e in envelope["data"])


def test_filters(admin, history):
    """type, actorId, targetId, from and to narrow the log."""
    by_type = admin.get("/events?type=TECHNICAL_USER_UPDATE").get_json()
    assert by_type["total"] == 1
    assert by_type["data"][0]["payload"]["after"]["description"] == "x"

    by_actor = admin.get(f"/events?actorId={history['id']}").get_json()
    assert [e["type"] for e in by_actor["data"]] == ["ACCESS_TOKEN_GRANT"]

    by_target = admin.get(f"/events?targetId={history['id']}").get_json()
    assert [e["type"] for e in by_target["data"]] == [
        "TECHNICAL_USER_UPDATE",
        "TECHNICAL_USER_CREATE",
    ]
    combined = admin.get(f"/events?targetId={history['id']}&type=TECHNICAL_USER_CREATE")
    assert combined.get_json()["total"] == 1

    everything = admin.get("/events").get_json()["total"]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert admin.get("/events", query_string={"from": future}).get_json()["total"] == 0
    assert admin.get("/events", query_string={"to": past}).get_json()["total"] == 0
    window = admin.get("/events", query_string={"from": past, "to": future}).get_json()
    assert window["total"] == everything


def test_pages(admin, history):
    """1-indexed pages with the total across pages."""
    total = admin.get("/events").get_json()["total"]
    first = admin.get("/events?size=2").get_json()
    second = admin.get("/events?size=2&page=2").get_json()
    assert first["total"] == second["total"] == total
    assert len(first["data"]) == 2
    assert first["data"][1]["id"] > second["data"][0]["id"]


def test_denials_without_a_workspace_are_not_shown(admin, history):
    """An unauthenticated denial belongs to no workspace, so no workspace's log lists it."""
    types = {e["type"] for e in admin.get("/events").get_json()["data"]}
    assert "MANAGEMENT_ACCESS_DENY" not in types
    assert db.session.execute(
        select(AuditEvent).where(
            AuditEvent.type == "MANAGEMENT_ACCESS_DENY", AuditEvent.workspace_id.is_(None)
        )
    ).first()


def test_a_technical_users_denial_is_in_its_workspace_log(client, factory, admin):
    """A technical user knocking on the management API shows up for the admins."""
    _, _, secret = factory.technical_user(admin.workspace)
    granted = exchange(client, secret).get_json()["access_token"]
    client.get("/services/mtm/v1/events", headers={"Authorization": f"Bearer {granted}"})
    denials = admin.get("/events?type=MANAGEMENT_ACCESS_DENY").get_json()
    assert denials["total"] == 1
    event = denials["data"][0]
    assert event["actor"]["technicalUser"] is True
    assert event["payload"]["reason"] == "wrong_audience"
    assert event["payload"]["status"] == 403


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("type=NOPE", "type", "must be one of TECHNICAL_USER_CREATE"),
        ("from=yesterday", "from", "must be an ISO 8601 date-time"),
        ("to=2030-01-01T00:00:00", "to", "must be ISO 8601 with a time zone"),
        ("from=2030-01-02T00:00:00Z&to=2030-01-01T00:00:00Z", "from", "must not be after to"),
        ("actorId=" + "x" * 65, "actorId", "must be at most 64 printable characters"),
        ("targetId=a%01", "targetId", "must be at most 64 printable characters"),
        ("size=101", "size", "must be a whole number from 1 to 100"),
        ("type=APITOKEN_CREATE&type=APITOKEN_DELETE", "type", "must be given once"),
    ],
)
def test_bad_filters_are_400(admin, query, field, message):
    """Each bad filter names its field."""
    response = admin.get(f"/events?{query}")
    assert response.status_code == 400
    (error,) = response.get_json()["errors"]
    assert error["value"] == field
    assert error["messages"][0].startswith(message)
