"""Export and retention: JSON lines out, old events pruned, the rest of the chain still proven."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text, update

from authserver.audit_chain import EVENTS, seal_pending
from authserver.extensions import db
from authserver.models import AuditCheckpoint
from authserver.services.audit import Actor, EventType, Origin, Target, event_to_dict, record_event

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=40)
CUTOFF = (NOW - timedelta(days=30)).date().isoformat()


def add_event(workspace, number: int, created_at: datetime | None = None) -> int:
    event_id = record_event(
        EventType.ACCESS_TOKEN_GRANT,
        workspace=(workspace.id, workspace.name) if workspace else None,
        actor=Actor(id="u-1", user_name="alice@example.com", technical_user=False),
        target=Target(type="API_TOKEN", id="t-1", name="sync"),
        origin=Origin(ip="203.0.113.7", user_agent="pytest"),
        payload={"n": number},
    )
    if created_at is not None:
        db.session.execute(
            update(EVENTS).where(EVENTS.c.id == event_id).values(created_at=created_at)
        )
    db.session.commit()
    return event_id


@pytest.fixture
def history(app, factory):
    """Workspace acme: 5 events 40 days old, then 4 recent ones, all sealed; returns the ids."""
    workspace = factory.workspace("acme")
    db.session.execute(EVENTS.delete())
    db.session.commit()
    old = [add_event(workspace, n, OLD + timedelta(minutes=n)) for n in range(5)]
    recent = [add_event(workspace, n) for n in range(5, 9)]
    seal_pending(settle_seconds=0)
    return workspace, old, recent


def invoke(runner, *args):
    return runner.invoke(args=["audit", *args])


def rows(ids):
    found = db.session.execute(select(EVENTS).where(EVENTS.c.id.in_(ids)).order_by(EVENTS.c.id))
    result = found.all()
    db.session.rollback()
    return result


def test_export_writes_json_lines_with_the_chain_position_and_hash(runner, history, tmp_path):
    workspace, old, recent = history
    output = tmp_path / "audit.jsonl"
    since = (OLD - timedelta(days=1)).date().isoformat()
    result = invoke(runner, "export", "--since", since, "--until", CUTOFF, "--output", str(output))
    assert result.exit_code == 0, result.output
    assert "exported 5 event(s)" in result.output
    lines = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [line["id"] for line in lines] == old
    for line, row in zip(lines, rows(old), strict=True):
        assert line == {
            **event_to_dict(row),
            "chainSeq": row.chain_seq,
            "chainHash": row.chain_hash,
        }
    assert lines[0]["workspace"] == {"id": workspace.id, "name": "acme"}
    assert [line["chainSeq"] for line in lines] == [1, 2, 3, 4, 5]


def test_export_to_standard_output_by_workspace_and_range(runner, history, factory):
    workspace, old, recent = history
    other = factory.workspace("other")
    add_event(other, 99)
    add_event(None, 100)
    until = (NOW + timedelta(days=1)).isoformat()
    result = invoke(runner, "export", "--since", CUTOFF, "--until", until, "--workspace", "acme")
    assert result.exit_code == 0, result.output
    exported = [json.loads(line) for line in result.stdout.splitlines()]
    assert [event["id"] for event in exported] == recent
    nothing = invoke(runner, "export", "--since", CUTOFF, "--until", until, "--workspace", "-")
    assert [json.loads(line)["type"] for line in nothing.stdout.splitlines()] == [
        "ACCESS_TOKEN_GRANT"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2027-01-02", "--until", "2027-01-01"], "must be after --since"),
        (["--since", "yesterday", "--until", "2027-01-01"], "use an ISO 8601 date"),
        (["--since", "2027-01-01", "--until", "2027-02-01", "--workspace", "nope"], "no workspace"),
    ],
)
def test_export_refuses_bad_arguments(runner, history, args, message):
    result = invoke(runner, "export", *args)
    assert result.exit_code == 2
    assert message in result.output


def test_prune_keeps_a_checkpoint_so_verify_still_proves_the_rest(runner, history):
    workspace, old, recent = history
    dry = invoke(runner, "prune", "--before", CUTOFF, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"acme ({workspace.id}): would delete 5 event(s) through position 5" in dry.output
    assert len(rows(old)) == 5

    result = invoke(runner, "prune", "--before", CUTOFF)
    assert result.exit_code == 0, result.output
    assert f"deleted 5 event(s) through position 5 (event {old[-1]})" in result.output
    assert rows(old) == []
    checkpoint = db.session.get(AuditCheckpoint, workspace.id)
    assert (checkpoint.pruned_through_seq, checkpoint.pruned_through_id) == (5, old[-1])
    assert checkpoint.pruned_hash is not None
    db.session.rollback()

    verified = invoke(runner, "verify")
    assert verified.exit_code == 0, verified.output
    assert f"ok      acme ({workspace.id}): 4 event(s), positions 6-9" in verified.output

    again = invoke(runner, "prune", "--before", CUTOFF)
    assert again.exit_code == 0
    assert again.output.strip() == "pruned 0 event(s)"

    add_event(workspace, 10)
    seal_pending(settle_seconds=0)
    assert invoke(runner, "verify").exit_code == 0


def test_after_a_prune_tampering_is_still_caught(runner, history):
    workspace, old, recent = history
    assert invoke(runner, "prune", "--before", CUTOFF).exit_code == 0
    db.session.execute(text("DELETE FROM audit_events WHERE id = :id"), {"id": recent[0]})
    db.session.commit()
    result = invoke(runner, "verify", "--json")
    assert result.exit_code == 1
    broken = json.loads(result.output)["chains"][0]["broken"]
    assert (broken["kind"], broken["eventId"], broken["position"]) == ("removed", recent[1], 7)
    assert f"after event {old[-1]} removed" in broken["detail"]


def test_a_broken_chain_is_not_pruned(runner, history):
    workspace, old, recent = history
    db.session.execute(text("UPDATE audit_events SET ip = NULL WHERE id = :id"), {"id": old[2]})
    db.session.commit()
    result = invoke(runner, "prune", "--before", CUTOFF)
    assert result.exit_code == 1
    assert f"REFUSED acme ({workspace.id}): chain broken: event {old[2]} at position 3" in (
        result.output
    )
    assert len(rows(old)) == 5


def test_prune_never_deletes_unsealed_events(runner, history):
    workspace, old, recent = history
    unsealed = add_event(workspace, 50, OLD)
    result = invoke(runner, "prune", "--before", CUTOFF)
    assert result.exit_code == 0, result.output
    assert [row.id for row in rows([unsealed])] == [unsealed]
    seal_pending(settle_seconds=0)
    assert invoke(runner, "verify").exit_code == 0


def test_prune_refuses_a_date_in_the_future(runner, history):
    tomorrow = (NOW + timedelta(days=1)).isoformat()
    result = invoke(runner, "prune", "--before", tomorrow)
    assert result.exit_code == 2
    assert "must not be in the future" in result.output
