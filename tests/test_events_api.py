"""GET /services/mtm/v1/events: the workspace's audit log for its admins, newest first."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from authserver import passwords
from authserver.audit_chain import seal_pending
from authserver.extensions import db
from authserver.models import AuditEvent
from authserver.services import events as event_queries
from authserver.services.audit import CLI_ACTOR, EventType, Target, event_to_dict, record_event

from .conftest import admin_mgmt, exchange
from .test_console import PASSWORD, sign_in, text


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
    newest_first = (AuditEvent.created_at.desc(), AuditEvent.id.desc())
    return list(db.session.execute(query.order_by(*newest_first)).scalars())


def add_events(workspace, times, event_type=EventType.ACCESS_TOKEN_REVOKE, target_id="t-1"):
    """Record one event per time, in this order (so ids grow), then date each as given."""
    ids = []
    for moment in times:
        event_id = record_event(
            event_type,
            workspace=(workspace.id, workspace.name),
            actor=CLI_ACTOR,
            target=Target("API_TOKEN", target_id, "token"),
        )
        db.session.execute(
            update(AuditEvent).where(AuditEvent.id == event_id).values(created_at=moment)
        )
        ids.append(event_id)
    db.session.commit()
    return ids


def iso(moment: datetime) -> str:
    """A query-string time."""
    return moment.isoformat().replace("+00:00", "Z")


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


# --- order and total ----------------------------------------------------------------------


def test_newest_first_by_created_at_then_by_id(admin):
    """createdAt orders the log, not insertion order; events of the same moment: higher id first."""
    base = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    seconds = [2, 0, 1, 1, 0]
    ids = add_events(admin.workspace, [base + timedelta(seconds=s) for s in seconds])
    newest_first = [ids[0], ids[3], ids[2], ids[4], ids[1]]
    unfiltered = admin.get("/events?size=5").get_json()
    assert [e["id"] for e in unfiltered["data"]] == newest_first
    for query in ("targetId=t-1", "type=ACCESS_TOKEN_REVOKE", "actorId=cli"):
        page = admin.get(f"/events?{query}").get_json()
        assert [e["id"] for e in page["data"]][:5] == newest_first, query
    window = admin.get(
        "/events", query_string={"from": iso(base), "to": iso(base + timedelta(seconds=2))}
    ).get_json()
    assert [e["id"] for e in window["data"]] == newest_first[1:]
    assert window["total"] == 4
    paged = [admin.get(f"/events?targetId=t-1&size=2&page={n}").get_json() for n in (1, 2, 3)]
    assert [e["id"] for page in paged for e in page["data"]] == newest_first


def test_the_changelog_orders_by_created_at_then_id_both_ways(admin):
    """The changelog is ordered like the log, in the direction of `sort`."""
    created = admin.create_technical_user("bot")
    admin.put(f"/technicalusers/{created['id']}", json={"description": "x"})
    changes = admin.get(f"/technicalusers/{created['id']}/changelog?sort=createdAt-ASC")
    ids = [e["id"] for e in changes.get_json()["data"]]
    assert len(ids) == 3  # TECHNICAL_USER_CREATE, APITOKEN_CREATE, TECHNICAL_USER_UPDATE
    # The update is dated before the creation; the creation and its token share a moment.
    moment = datetime(2030, 1, 1, tzinfo=UTC)
    dated = {ids[0]: moment, ids[1]: moment, ids[2]: moment - timedelta(seconds=1)}
    for event_id, created_at in dated.items():
        db.session.execute(
            update(AuditEvent).where(AuditEvent.id == event_id).values(created_at=created_at)
        )
    db.session.commit()
    url = f"/technicalusers/{created['id']}/changelog"
    ascending = admin.get(url + "?sort=createdAt-ASC").get_json()
    descending = admin.get(url + "?sort=createdAt-DESC").get_json()
    assert [e["id"] for e in ascending["data"]] == [ids[2], ids[0], ids[1]]
    assert [e["id"] for e in descending["data"]] == [ids[1], ids[0], ids[2]]
    assert ascending["total"] == descending["total"] == 3
    assert "totalExact" not in ascending


def test_the_total_is_exact_below_the_limit(admin, history):
    """Up to EXACT_TOTAL_LIMIT matches, `total` is the count and `totalExact` is true."""
    everything = admin.get("/events?size=1").get_json()
    assert everything["totalExact"] is True
    assert everything["total"] == len(workspace_events(admin.workspace.id))
    assert len(everything["data"]) == 1
    by_type = admin.get("/events?type=TECHNICAL_USER_UPDATE").get_json()
    assert (by_type["total"], by_type["totalExact"]) == (1, True)
    none = admin.get("/events?type=ACCESS_TOKEN_REVOKE").get_json()
    assert (none["total"], none["totalExact"], none["data"]) == (0, True, [])


def test_other_envelopes_have_no_total_exact(admin, history):
    """Only the workspace's log counts up to a limit; other lists keep their envelope."""
    listed = admin.get("/technicalusers").get_json()
    assert "totalExact" not in listed
    assert listed["total"] == 1


def test_above_the_limit_the_total_is_the_limit_and_pages_go_on(admin, monkeypatch):
    """More matches than the limit: total is the limit, totalExact false, later pages still read."""
    monkeypatch.setattr(event_queries, "EXACT_TOTAL_LIMIT", 5)
    base = datetime.now(UTC) - timedelta(hours=1)
    ids = add_events(admin.workspace, [base + timedelta(seconds=n) for n in range(8)])
    first = admin.get("/events?targetId=t-1&size=5").get_json()
    assert (first["total"], first["totalExact"]) == (5, False)
    assert [e["id"] for e in first["data"]] == ids[:2:-1]
    second = admin.get("/events?targetId=t-1&size=5&page=2").get_json()
    assert (second["total"], second["totalExact"]) == (5, False)
    assert [e["id"] for e in second["data"]] == ids[2::-1]
    assert admin.get("/events?targetId=t-1&size=5&page=3").get_json()["data"] == []


def test_exactly_the_limit_is_exact(admin, monkeypatch):
    """As many matches as the limit: still exact."""
    monkeypatch.setattr(event_queries, "EXACT_TOTAL_LIMIT", 5)
    base = datetime.now(UTC) - timedelta(hours=1)
    add_events(admin.workspace, [base + timedelta(seconds=n) for n in range(5)])
    page = admin.get("/events?targetId=t-1").get_json()
    assert (page["total"], page["totalExact"], len(page["data"])) == (5, True, 5)


def test_a_time_range_counts_up_to_the_limit(admin, monkeypatch):
    """from (inclusive) and to (exclusive) select by createdAt; alone or with a type."""
    base = datetime(2030, 6, 1, tzinfo=UTC)
    minutes = [base + timedelta(minutes=n) for n in range(8)]
    ids = add_events(admin.workspace, minutes)
    add_events(admin.workspace, minutes[3:5], EventType.APITOKEN_DELETE)
    window = {"from": iso(minutes[2]), "to": iso(minutes[6])}
    page = admin.get("/events", query_string=window).get_json()
    assert (page["total"], page["totalExact"]) == (6, True)
    revokes = admin.get("/events", query_string={**window, "type": "ACCESS_TOKEN_REVOKE"})
    assert [e["id"] for e in revokes.get_json()["data"]] == ids[5:1:-1]
    assert revokes.get_json()["totalExact"] is True
    monkeypatch.setattr(event_queries, "EXACT_TOTAL_LIMIT", 3)
    capped = admin.get("/events", query_string={**window, "type": "ACCESS_TOKEN_REVOKE"})
    assert (capped.get_json()["total"], capped.get_json()["totalExact"]) == (3, False)
    assert [e["id"] for e in capped.get_json()["data"]] == ids[5:1:-1]


# --- the console's audit log --------------------------------------------------------------


@pytest.fixture
def console(client, factory):
    """A client signed in to the console as the ADMIN of a new workspace: (client, workspace)."""
    workspace = factory.workspace()
    user = factory.user(workspace)
    user.password_hash = passwords.hash_password(PASSWORD)
    db.session.commit()
    assert sign_in(client, user.user_name).status_code == 302
    return client, workspace


def test_the_console_counts_exactly_below_the_limit(console):
    client, workspace = console
    add_events(workspace, [datetime.now(UTC)] * 3)
    page = text(client.get("/admin/audit-log?type=ACCESS_TOKEN_REVOKE"))
    assert "3 events" in page and "More than" not in page


def test_the_console_says_more_than_the_limit_and_pages_on(console, monkeypatch):
    """Above the limit the console says "More than", and pages on while pages are full."""
    client, workspace = console
    monkeypatch.setattr(event_queries, "EXACT_TOTAL_LIMIT", 5)
    monkeypatch.setattr("authserver.console.audit_log.PAGE_SIZE", 3)
    add_events(workspace, [datetime.now(UTC)] * 8)
    first = text(client.get("/admin/audit-log?type=ACCESS_TOKEN_REVOKE"))
    assert "More than 5 events" in first
    assert "Page 1 of more than 1" in first and 'rel="next"' in first
    third = text(client.get("/admin/audit-log?type=ACCESS_TOKEN_REVOKE&page=3"))
    assert "More than 5 events" in third
    assert third.count("ACCESS_TOKEN_REVOKE</span>") == 2
    assert "<span>Page 3</span>" in third
    assert 'rel="prev"' in third and 'rel="next"' not in third


def test_sealed_and_unsealed_events_are_listed_and_counted_together(admin, monkeypatch):
    """Sealed events come from their indexes, unsealed ones are merged in, in one order."""
    base = datetime(2030, 3, 1, tzinfo=UTC)
    sealed_ids = add_events(admin.workspace, [base + timedelta(seconds=s) for s in (5, 0, 3, 7)])
    seal_pending(settle_seconds=0, now=base + timedelta(days=1))
    unsealed_ids = add_events(admin.workspace, [base + timedelta(seconds=s) for s in (4, 1, 7, 9)])
    add_events(admin.workspace, [base + timedelta(seconds=2)], EventType.APITOKEN_DELETE, "t-2")
    states = dict(
        db.session.execute(
            select(AuditEvent.id, AuditEvent.chain_hash.is_not(None)).where(
                AuditEvent.id.in_(sealed_ids + unsealed_ids)
            )
        ).all()
    )
    assert [states[i] for i in sealed_ids + unsealed_ids] == [True] * 4 + [False] * 4
    expected = [e.id for e in workspace_events(admin.workspace.id) if e.target_id == "t-1"]
    for query in ("targetId=t-1", "type=ACCESS_TOKEN_REVOKE"):
        for size in (1, 3):
            pages = [
                admin.get(f"/events?{query}&size={size}&page={n}").get_json()
                for n in range(1, 8 // size + 2)
            ]
            assert [e["id"] for page in pages for e in page["data"]] == expected, (query, size)
            assert {page["total"] for page in pages} == {8}
    everything = [e["id"] for e in admin.get("/events?size=100").get_json()["data"]]
    assert everything == [e.id for e in workspace_events(admin.workspace.id)]
    window = {"from": iso(base + timedelta(seconds=1)), "to": iso(base + timedelta(seconds=7))}
    inside = admin.get("/events", query_string={**window, "targetId": "t-1"}).get_json()
    newest_first = [sealed_ids[0], unsealed_ids[0], sealed_ids[2], unsealed_ids[1]]
    assert [e["id"] for e in inside["data"]] == newest_first
    monkeypatch.setattr(event_queries, "EXACT_TOTAL_LIMIT", 6)
    capped = admin.get("/events?targetId=t-1").get_json()
    assert (capped["total"], capped["totalExact"], len(capped["data"])) == (6, False, 8)
