"""The hash chain: sealing per workspace, late commits, and tampering caught by `verify`."""

import hashlib
import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select, text, update

from authserver import audit_chain
from authserver.audit_chain import (
    EVENTS,
    HASHED_COLUMNS,
    NO_WORKSPACE,
    genesis_hash,
    seal_pending,
    verify_chain,
)
from authserver.extensions import db
from authserver.models import AuditCheckpoint, AuditEvent
from authserver.services.audit import Actor, EventType, Origin, Target, record_event

ACTOR = Actor(id="u-1", user_name="alice@example.com", technical_user=False)


def add_event(workspace=None, number: int = 0, event_type=EventType.ACCESS_TOKEN_GRANT) -> int:
    """Record one event (committed) and return its id."""
    event_id = record_event(
        event_type,
        workspace=(workspace.id, workspace.name) if workspace else None,
        actor=ACTOR,
        target=Target(type="API_TOKEN", id=f"t-{number}", name="sync"),
        origin=Origin(ip="203.0.113.7", user_agent="pytest/1 ünïcode"),
        payload={"n": number, "scope": "read write", "nested": {"b": [1, 2], "a": None}},
    )
    db.session.commit()
    return event_id


def seal(**kwargs):
    return seal_pending(settle_seconds=0, **kwargs)


def rows_of(workspace_id):
    query = select(EVENTS).order_by(EVENTS.c.chain_seq)
    if workspace_id is None:
        query = query.where(EVENTS.c.workspace_id.is_(None))
    else:
        query = query.where(EVENTS.c.workspace_id == workspace_id)
    rows = db.session.execute(query).all()
    db.session.rollback()
    return rows


def tamper(sql: str, **params) -> None:
    db.session.execute(text(sql), params)
    db.session.commit()


def expected_hash(previous: str, row) -> str:
    """The documented formula, written out independently of the implementation."""
    document = {name: getattr(row, name) for name in HASHED_COLUMNS}
    document["created_at"] = row.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    document["chain_seq"] = row.chain_seq
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(previous.encode() + b"\n" + canonical.encode("utf-8")).hexdigest()


def verify_cli(runner, *args):
    return runner.invoke(args=["audit", "verify", *args])


@pytest.fixture
def chain(app, factory):
    """A workspace with six sealed events; returns (workspace, [ids])."""
    workspace = factory.workspace("acme")
    db.session.execute(EVENTS.delete())
    db.session.commit()
    ids = [add_event(workspace, n) for n in range(6)]
    seal()
    return workspace, ids


# --- sealing ---------------------------------------------------------------------------


def test_the_hash_covers_every_column_of_an_event():
    columns = set(AuditEvent.__table__.columns.keys()) - {"chain_hash", "chain_seq"}
    assert columns == set(HASHED_COLUMNS)


def test_events_are_written_unsealed_and_sealed_into_one_chain_per_workspace(app, factory):
    first, second = factory.workspace("first"), factory.workspace("second")
    ids = {first.id: [], second.id: [], None: []}
    for n in range(12):  # interleaved: first, second, none, first, ...
        workspace = (first, second, None)[n % 3]
        key = workspace.id if workspace else None
        ids[key].append(add_event(workspace, n))
    unsealed = db.session.execute(select(EVENTS).where(EVENTS.c.chain_hash.isnot(None))).all()
    assert unsealed == []

    report = seal(batch_size=5)  # several batches, each spanning chains

    assert report.total == sum(len(v) for v in ids.values())
    for key, expected_ids in ids.items():
        rows = rows_of(key)
        chain = key or NO_WORKSPACE
        assert [row.id for row in rows] == [i for i in sorted(expected_ids) if i in expected_ids]
        assert [row.chain_seq for row in rows] == list(range(1, len(rows) + 1))
        previous = genesis_hash(chain)
        for row in rows:
            assert row.chain_hash == expected_hash(previous, row)
            previous = row.chain_hash
        checkpoint = db.session.get(AuditCheckpoint, chain)
        assert (checkpoint.last_seq, checkpoint.last_event_id, checkpoint.last_hash) == (
            rows[-1].chain_seq,
            rows[-1].id,
            rows[-1].chain_hash,
        )
        db.session.rollback()
        assert verify_chain(chain).ok


def test_sealing_continues_the_chain_where_it_stopped(app, chain):
    workspace, ids = chain
    more = [add_event(workspace, n) for n in range(6, 9)]
    assert seal().total == 3
    rows = rows_of(workspace.id)
    assert [row.id for row in rows] == ids + more
    assert [row.chain_seq for row in rows] == list(range(1, 10))
    assert expected_hash(rows[5].chain_hash, rows[6]) == rows[6].chain_hash
    assert seal().total == 0


def test_only_events_older_than_the_settle_delay_are_sealed(app, factory):
    workspace = factory.workspace()
    add_event(workspace)
    assert seal_pending(settle_seconds=2).total == 0
    later = datetime.now(UTC) + timedelta(seconds=3)
    assert seal_pending(settle_seconds=2, now=later).total == 1


def _insert_raw(connection, workspace, number: int, event_id: int | None = None) -> int:
    values = {
        "type": "ACCESS_TOKEN_GRANT",
        "created_at": datetime.now(UTC),
        "workspace_id": workspace.id,
        "workspace_name": workspace.name,
        "payload": {"n": number},
    }
    if event_id is not None:
        values["id"] = event_id
    return connection.execute(insert(EVENTS).values(values).returning(EVENTS.c.id)).scalar_one()


def test_an_event_that_commits_after_a_later_id_was_sealed_is_appended(app, factory):
    workspace = factory.workspace()
    if db.engine.dialect.name == "postgresql":
        # Real out-of-order commit: A takes the lower id, B commits and is sealed first.
        with db.engine.connect() as other:
            transaction = other.begin()
            low = _insert_raw(other, workspace, 1)
            high = add_event(workspace, 2)
            seal()
            transaction.commit()
    else:
        # SQLite serialises writers, so the late commit is simulated with an explicit id.
        high = add_event(workspace, 2) + 100
        db.session.execute(update(EVENTS).values(id=high))
        db.session.commit()
        seal()
        low = _insert_raw(db.session, workspace, 1, event_id=high - 50)
        db.session.commit()
    assert low < high
    assert seal().total == 1
    rows = rows_of(workspace.id)
    assert [(row.id, row.chain_seq) for row in rows] == [(high, 1), (low, 2)]
    assert verify_chain(workspace.id).ok


def test_concurrent_sealers_never_interleave_a_chain(app, factory):
    workspaces = [factory.workspace(), factory.workspace()]
    errors = []
    done = threading.Event()

    def sealer():
        try:
            with app.app_context():
                while not done.is_set():
                    seal(batch_size=7)
                db.session.remove()
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=sealer) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for n in range(60):
            add_event(workspaces[n % 2], n)
    finally:
        done.set()
        for thread in threads:
            thread.join(30)
    assert errors == []
    seal()
    for workspace in workspaces:
        rows = rows_of(workspace.id)
        assert len(rows) == 30
        assert [row.chain_seq for row in rows] == list(range(1, 31))
        assert verify_chain(workspace.id).ok


def test_a_seal_planned_before_another_sealer_moved_the_chain_is_not_written(
    app, factory, monkeypatch
):
    """Hashes are computed without the write lock; a chain moved meanwhile is left alone."""
    workspace = factory.workspace()
    ids = [add_event(workspace, n) for n in range(3)]
    apply = audit_chain._apply
    raced = []

    def another_sealer_first(plans, report):
        if not raced:  # between this sealer's read and its write, another seals everything
            raced.append(True)
            assert seal().total == 3
        return apply(plans, report)

    monkeypatch.setattr(audit_chain, "_apply", another_sealer_first)
    report = seal()

    assert raced and report.total == 0
    rows = rows_of(workspace.id)
    assert [(row.id, row.chain_seq) for row in rows] == list(zip(ids, [1, 2, 3], strict=True))
    assert verify_chain(workspace.id).ok


# --- verify ----------------------------------------------------------------------------


def test_verify_reports_an_intact_log_with_exit_zero(runner, chain):
    workspace, ids = chain
    add_event(None, 99)
    seal()
    add_event(workspace, 100)  # not sealed yet: reported, not an error
    result = verify_cli(runner)
    assert result.exit_code == 0, result.output
    assert f"ok      acme ({workspace.id}): 6 event(s), positions 1-6" in result.output
    assert "ok      (no workspace): 1 event(s)" in result.output
    assert "1 not sealed yet" in result.output
    assert result.output.strip().endswith(
        "2 chain(s), all intact; 7 sealed event(s) verified, 1 not sealed yet"
    )


def test_verify_json(runner, chain):
    workspace, ids = chain
    result = verify_cli(runner, "--json", "--workspace", "acme")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["ok"] is True
    [report] = body["chains"]
    assert report["chain"] == workspace.id
    assert report["workspaceName"] == "acme"
    assert (report["verified"], report["lastEventId"], report["broken"]) == (6, ids[-1], None)


def test_verify_of_an_unknown_workspace_is_a_usage_error(runner, chain):
    result = verify_cli(runner, "--workspace", "nope")
    assert result.exit_code == 2
    assert "no workspace named 'nope'" in result.output


def _broken(runner, workspace):
    result = verify_cli(runner, "--json")
    assert result.exit_code == 1, result.output
    body = json.loads(result.output)
    assert body["ok"] is False
    [report] = [r for r in body["chains"] if r["chain"] == workspace.id]
    return report["broken"]


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("payload", '{"n": 2, "scope": "read"}'),
        ("ip", "198.51.100.1"),
        ("actor_user_name", "mallory@example.com"),
        ("type", "ACCESS_TOKEN_DENY"),
        ("target_id", "t-x"),
    ],
)
def test_verify_names_an_updated_event(runner, chain, column, value):
    workspace, ids = chain
    tamper(f"UPDATE audit_events SET {column} = :value WHERE id = :id", value=value, id=ids[2])  # noqa: S608
    broken = _broken(runner, workspace)
    assert broken["kind"] == "changed"
    assert (broken["eventId"], broken["position"]) == (ids[2], 3)
    result = verify_cli(runner)
    assert f"BROKEN  acme ({workspace.id}): event {ids[2]} at position 3 was changed" in (
        result.output
    )


def test_verify_names_an_event_whose_time_was_changed(runner, chain):
    workspace, ids = chain
    moved = datetime.now(UTC) - timedelta(days=3)
    db.session.execute(update(EVENTS).where(EVENTS.c.id == ids[4]).values(created_at=moved))
    db.session.commit()
    broken = _broken(runner, workspace)
    assert (broken["kind"], broken["eventId"]) == ("changed", ids[4])


def test_verify_names_where_an_event_was_deleted(runner, chain):
    workspace, ids = chain
    tamper("DELETE FROM audit_events WHERE id = :id", id=ids[3])
    broken = _broken(runner, workspace)
    assert broken["kind"] == "removed"
    assert (broken["eventId"], broken["position"]) == (ids[4], 5)
    assert f"position 4 missing: 1 event(s) after event {ids[2]} removed" in broken["detail"]


def test_verify_catches_the_first_event_deleted(runner, chain):
    workspace, ids = chain
    tamper("DELETE FROM audit_events WHERE id = :id", id=ids[0])
    broken = _broken(runner, workspace)
    assert (broken["kind"], broken["eventId"]) == ("removed", ids[1])
    assert "at the start of the chain" in broken["detail"]


def test_verify_catches_the_last_events_deleted(runner, chain):
    workspace, ids = chain
    tamper("DELETE FROM audit_events WHERE id >= :id", id=ids[4])
    broken = _broken(runner, workspace)
    assert broken["kind"] == "removed"
    assert broken["eventId"] == ids[5]
    assert f"chain stops at position 4 (event {ids[3]})" in broken["detail"]
    assert f"sealed through position 6 (event {ids[5]})" in broken["detail"]


def _swap(first: int, second: int, columns) -> None:
    rows = {
        row.id: row
        for row in db.session.execute(select(EVENTS).where(EVENTS.c.id.in_([first, second])))
    }
    for target, source in ((first, second), (second, first)):
        values = {name: getattr(rows[source], name) for name in columns}
        db.session.execute(update(EVENTS).where(EVENTS.c.id == target).values(values))
    db.session.commit()


CONTENT = [c for c in HASHED_COLUMNS if c != "id"]


def test_verify_names_two_events_whose_contents_were_swapped(runner, chain):
    workspace, ids = chain
    _swap(ids[1], ids[4], CONTENT)
    broken = _broken(runner, workspace)
    assert broken["kind"] == "reordered"
    assert (broken["eventId"], broken["position"]) == (ids[1], 2)
    assert (
        f"event {ids[1]} at position 2 and event {ids[4]} at position 5 were swapped"
        in (broken["detail"])
    )


def test_verify_catches_two_whole_rows_swapped(runner, chain):
    """Contents, seal and position all swapped: only the ids stayed."""
    workspace, ids = chain
    _swap(ids[1], ids[4], [*CONTENT, "chain_hash"])
    # Positions go through a free value: (workspace_id, chain_seq) is unique.
    for event_id, seq in ((ids[1], -1), (ids[4], 2), (ids[1], 5)):
        db.session.execute(update(EVENTS).where(EVENTS.c.id == event_id).values(chain_seq=seq))
    db.session.commit()
    broken = _broken(runner, workspace)
    assert broken["kind"] == "reordered"
    assert broken["eventId"] == ids[4]
    assert (
        f"event {ids[4]} at position 2 and event {ids[1]} at position 5 were swapped"
        in (broken["detail"])
    )


def test_verify_catches_a_removed_seal(runner, chain):
    workspace, ids = chain
    tamper("UPDATE audit_events SET chain_hash = NULL WHERE id = :id", id=ids[2])
    broken = _broken(runner, workspace)
    assert (broken["kind"], broken["eventId"]) == ("changed", ids[2])
    assert "seal was removed" in broken["detail"]


def test_verify_catches_a_change_resealed_by_someone_who_knows_the_formula(runner, chain):
    workspace, ids = chain
    rows = rows_of(workspace.id)
    tamper("UPDATE audit_events SET ip = '192.0.2.66' WHERE id = :id", id=ids[2])
    changed = db.session.execute(select(EVENTS).where(EVENTS.c.id == ids[2])).one()
    forged = expected_hash(rows[1].chain_hash, changed)
    tamper("UPDATE audit_events SET chain_hash = :h WHERE id = :id", h=forged, id=ids[2])
    broken = _broken(runner, workspace)
    # The forged seal links back, so the break shows at the next event.
    assert (broken["kind"], broken["eventId"]) == ("changed", ids[3])


def test_a_resealed_last_event_differs_from_the_checkpoint(runner, chain):
    workspace, ids = chain
    rows = rows_of(workspace.id)
    tamper("UPDATE audit_events SET ip = '192.0.2.66' WHERE id = :id", id=ids[5])
    changed = db.session.execute(select(EVENTS).where(EVENTS.c.id == ids[5])).one()
    forged = expected_hash(rows[4].chain_hash, changed)
    tamper("UPDATE audit_events SET chain_hash = :h WHERE id = :id", h=forged, id=ids[5])
    broken = _broken(runner, workspace)
    assert (broken["kind"], broken["eventId"]) == ("changed", ids[5])
    assert "differs from the checkpoint" in broken["detail"]


def test_verify_catches_a_missing_checkpoint(runner, chain):
    workspace, _ = chain
    tamper("DELETE FROM audit_checkpoints")
    assert _broken(runner, workspace)["kind"] == "checkpoint"


def test_a_broken_chain_does_not_hide_the_others(runner, chain, factory):
    workspace, ids = chain
    other = factory.workspace("other")
    add_event(other, 1)
    seal()
    tamper("UPDATE audit_events SET ip = NULL WHERE id = :id", id=ids[0])
    assert verify_cli(runner, "--workspace", "other").exit_code == 0
    result = verify_cli(runner)
    assert result.exit_code == 1
    assert f"ok      other ({other.id})" in result.output
    assert "2 chain(s), 1 BROKEN" in result.output
