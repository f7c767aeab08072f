"""Crash safety: kill -9 gunicorn workers while grants and management changes are in flight.

`authserver serve --workers 3` runs over the test database (PostgreSQL or the
SQLite file). Grant threads and admin threads drive it for a few seconds while
the test kills a worker with SIGKILL three times; gunicorn starts a new one
each time. A request on a killed worker ends without an answer (a connection
error), so its outcome is unknown to the client. Afterwards:

- every change a client saw succeed (201, 200, 204) is in the database with its
  audit event, and every access token it was given has its grant event;
- nothing is half-made: each technical user has exactly the tokens its events
  describe (one created, one more per replacement), each with its event, one
  live token while it lives and none once deleted; no event names a change
  that did not happen; an operation with an unknown outcome happened entirely
  or not at all;
- no answer was a 5xx, and the only errors in the server log are the
  master's notes that its workers were killed.

Bounded: at most OPS operations per thread and LOAD_SECONDS of load; loopback only.
"""

import os
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime

import jwt
import pytest
import requests
from sqlalchemy import select

from authserver.extensions import db
from authserver.models import ApiToken, AuditEvent, TechnicalUser
from authserver.services.audit import EventType

from .conftest import iso_in_days
from .live import Api, is_live, server_errors, start_server, wait_until

pytestmark = pytest.mark.slow

WORKERS = 3
KILLS = 3
LOAD_SECONDS = 4.0
OPS = 300
ADMIN_THREADS = 3
GRANT_THREADS = 2
# The gunicorn master reports every killed worker; that is the fault we injected.
KILL_NOTES = ("was sent SIGKILL", "Worker exiting", "WORKER TIMEOUT")
LOST = None  # the status of a request whose worker died under it


def worker_pids(master: int) -> set[int]:
    """The gunicorn workers: the children of the master process but its sealer process."""
    result = subprocess.run(
        ["ps", "--ppid", str(master), "-o", "pid=,args="],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    rows = [line.split(None, 1) for line in result.stdout.strip().splitlines()]
    return {int(pid) for pid, args in rows if "seal --follow" not in args}


class Recorder:
    """What every client thread sent and saw, in one list (appends are atomic)."""

    def __init__(self):
        self.ops: list[dict] = []

    def send(self, op: str, facts: dict, function, *args, **kwargs) -> dict:
        """`function(*args, **kwargs)` (one request), recorded with its status or LOST."""
        record = {"op": op, **facts}
        try:
            response = function(*args, **kwargs)
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
            # The worker died before the whole answer was sent: the outcome is unknown.
            record["status"] = LOST
            self.ops.append(record)
            return record
        record["status"] = response.status_code
        record["body"] = response.json() if response.content else None
        self.ops.append(record)
        return record


def admin_loop(api: Api, recorder: Recorder, index: int, deadline: float) -> None:
    """Create, edit, replace and (every other time) delete technical users; personal tokens."""
    admin = api.admin
    for cycle in range(OPS // 5):
        if time.monotonic() > deadline:
            return
        name = f"crash-{index}-{cycle}"
        created = recorder.send("create", {"name": name}, api.create_technical_user, admin, name)
        if created["status"] == 201:
            user_id = created["body"]["data"]["id"]
            path = f"/technicalusers/{user_id}"
            edit = {"description": f"edited {cycle}"}
            recorder.send(
                "update", {"id": user_id, **edit}, api.call, admin, "PUT", path, json=edit
            )
            recorder.send(
                "replace", {"id": user_id}, api.call, admin, "PUT", path + "/replaceToken"
            )
            if cycle % 2:
                recorder.send("delete", {"id": user_id}, api.call, admin, "DELETE", path)
        body = {"description": "p", "expiry": iso_in_days(2)}
        personal = recorder.send(
            "create_personal", {}, api.call, admin, "POST", "/apiTokens", json=body
        )
        if personal["status"] == 201 and cycle % 2:
            token_id = personal["body"]["data"]["id"]
            path = f"/apiTokens/{token_id}"
            recorder.send("delete_personal", {"id": token_id}, api.call, admin, "DELETE", path)


def grant_loop(api: Api, recorder: Recorder, secret: str, token_id: str, deadline: float) -> None:
    """Exchange one token for access tokens until the deadline."""
    for _ in range(OPS):
        if time.monotonic() > deadline:
            return
        record = recorder.send("grant", {"token_id": token_id}, api.grant, secret)
        if record["status"] == 200:
            token = record.pop("body")["access_token"]
            record["jti"] = jwt.decode(token, options={"verify_signature": False})["jti"]


@pytest.fixture
def crash_server(app, test_config, tmp_path):
    """A server with three workers, rate limits off (the faults here are crashes)."""
    server = start_server(
        test_config, tmp_path / "server.log", workers=WORKERS, RATELIMIT_ENABLED="false"
    )
    yield server
    server.stop()


def test_killed_workers_leave_no_lost_or_half_made_change(crash_server, factory):
    workspace, _, secret = factory.admin_token()
    granted = [factory.technical_user(workspace) for _ in range(GRANT_THREADS)]
    workspace_id = workspace.id
    grant_tokens = [(token.id, token_secret) for _, token, token_secret in granted]
    db.session.rollback()
    api = Api(crash_server.url)
    api.admin = api.access_token(secret)
    recorder = Recorder()
    master = crash_server.process.pid
    # The server answers once one worker is up; wait for all of them.
    assert wait_until(lambda: len(worker_pids(master)) == WORKERS, timeout=30)

    deadline = time.monotonic() + LOAD_SECONDS
    threads = [
        threading.Thread(target=admin_loop, args=(api, recorder, index, deadline))
        for index in range(ADMIN_THREADS)
    ] + [
        threading.Thread(target=grant_loop, args=(api, recorder, token_secret, token_id, deadline))
        for token_id, token_secret in grant_tokens
    ]
    for thread in threads:
        thread.start()
    killed = []
    try:
        for _ in range(KILLS):
            time.sleep(LOAD_SECONDS / (KILLS + 1))
            busy = sorted(worker_pids(master) - set(killed))
            victim = busy[len(killed) % len(busy)]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
    finally:
        for thread in threads:
            thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)

    # gunicorn replaced every killed worker and the server answers again.
    assert wait_until(
        lambda: len(worker_pids(master)) == WORKERS and not worker_pids(master) & set(killed),
        timeout=30,
    )
    assert api.grant(grant_tokens[0][1]).status_code == 200

    statuses = Counter(record["status"] for record in recorder.ops)
    assert not [s for s in statuses if s is not LOST and s >= 500], statuses
    assert sum(statuses[s] for s in (200, 201, 204)) >= 20, statuses
    unexpected = [r for r in recorder.ops if r["status"] not in (LOST, 200, 201, 204)]
    assert unexpected == []
    check_every_success_is_recorded(recorder.ops, workspace_id)
    check_nothing_is_half_made(recorder.ops, workspace_id, {t for t, _ in grant_tokens})
    noise = [line for line in server_errors(crash_server.log_path) if not is_kill_note(line)]
    assert noise == [], crash_server.log_path.read_text()[-6000:]
    print(f"\ncrash: {dict(statuses)} ({KILLS} workers killed)")


def is_kill_note(line: str) -> bool:
    return any(note in line for note in KILL_NOTES)


def snapshot(workspace_id: str) -> dict:
    """Every technical user, token and event of the workspace (plain rows)."""
    db.session.rollback()
    try:
        users = db.session.execute(
            select(TechnicalUser.__table__).where(TechnicalUser.workspace_id == workspace_id)
        ).all()
        tokens = db.session.execute(
            select(ApiToken.__table__).where(ApiToken.workspace_id == workspace_id)
        ).all()
        events = db.session.execute(
            select(AuditEvent.__table__)
            .where(AuditEvent.workspace_id == workspace_id)
            .order_by(AuditEvent.id)
        ).all()
    finally:
        db.session.rollback()
    return {
        "users": {row.id: row for row in users},
        "tokens": {row.id: row for row in tokens},
        "events": events,
    }


def by_type(events, event_type: EventType) -> dict[str, list]:
    """Events of one type, by target id."""
    found: dict[str, list] = defaultdict(list)
    for event in events:
        if event.type == event_type:
            found[event.target_id].append(event)
    return found


def check_every_success_is_recorded(ops: list[dict], workspace_id: str) -> None:
    """Each 200/201/204 a client saw is in the database, with its audit event."""
    state = snapshot(workspace_id)
    users, tokens, events = state["users"], state["tokens"], state["events"]
    grants = {event.payload.get("jti") for event in events if event.type == "ACCESS_TOKEN_GRANT"}
    replaced = by_type(events, EventType.APITOKEN_REPLACE)
    updates = by_type(events, EventType.TECHNICAL_USER_UPDATE)
    for op in ops:
        status, kind = op["status"], op["op"]
        if status not in (200, 201, 204):
            continue
        data = (op.get("body") or {}).get("data") or {}
        if kind == "grant":
            assert op["jti"] in grants, op
        elif kind == "create":
            assert data["id"] in users
            assert by_type(events, EventType.TECHNICAL_USER_CREATE)[data["id"]]
            assert data["apiTokenData"]["id"] in tokens
            assert by_type(events, EventType.APITOKEN_CREATE)[data["apiTokenData"]["id"]]
        elif kind == "update":
            after = [event.payload["after"]["description"] for event in updates[op["id"]]]
            assert op["description"] in after
        elif kind == "replace":
            assert data["apiTokenData"]["id"] in tokens
            assert len(replaced[data["apiTokenData"]["id"]]) == 1
        elif kind == "delete":
            assert users[op["id"]].deleted_at is not None
            assert len(by_type(events, EventType.TECHNICAL_USER_DELETE)[op["id"]]) == 1
        elif kind == "create_personal":
            assert data["id"] in tokens
            assert by_type(events, EventType.APITOKEN_CREATE)[data["id"]]
        elif kind == "delete_personal":
            assert tokens[op["id"]].revoke_reason == "deleted"
            assert len(by_type(events, EventType.APITOKEN_DELETE)[op["id"]]) == 1


def check_nothing_is_half_made(ops: list[dict], workspace_id: str, grant_token_ids) -> None:
    """Every row has its events and every event its rows; unknown outcomes are all or nothing."""
    state = snapshot(workspace_id)
    users, tokens, events = state["users"], state["tokens"], state["events"]
    creates = by_type(events, EventType.TECHNICAL_USER_CREATE)
    token_creates = by_type(events, EventType.APITOKEN_CREATE)
    replaces = by_type(events, EventType.APITOKEN_REPLACE)
    deletes = by_type(events, EventType.TECHNICAL_USER_DELETE)
    token_deletes = by_type(events, EventType.APITOKEN_DELETE)
    now = datetime.now(UTC)

    # Rows -> events.
    for user in users.values():
        own = sorted((t for t in tokens.values() if t.technical_user_id == user.id),
                     key=lambda t: (t.created_at, t.id))  # fmt: skip
        assert len(creates[user.id]) == 1, user.user_name
        assert creates[user.id][0].payload["apiToken"]["id"] == own[0].id
        assert len(token_creates[own[0].id]) == 1
        for later in own[1:]:
            assert len(replaces[later.id]) == 1, (user.user_name, later.id)
        live = [t for t in own if is_live(t, now)]
        if user.deleted_at is None:
            assert len(live) == 1, user.user_name
            assert user.id not in deletes
        else:
            assert live == []
            assert len(deletes[user.id]) == 1
            assert all(len(token_deletes[t.id]) == 1 for t in own if t.revoke_reason == "deleted")
    for token in tokens.values():
        if token.user_id is not None:  # a personal token
            assert len(token_creates[token.id]) == 1
            deleted = token.revoke_reason == "deleted"
            assert len(token_deletes[token.id]) == (1 if deleted else 0)

    # Events -> rows: nothing recorded for a change that is not there.
    for event in events:
        if event.type == "TECHNICAL_USER_CREATE":
            assert event.target_id in users
        elif event.type in ("APITOKEN_CREATE", "APITOKEN_REPLACE", "ACCESS_TOKEN_GRANT"):
            assert event.target_id in tokens, event.type
        elif event.type == "TECHNICAL_USER_DELETE":
            assert users[event.target_id].deleted_at is not None
        elif event.type == "APITOKEN_DELETE":
            assert tokens[event.target_id].revoke_reason == "deleted"
        elif event.type == "TECHNICAL_USER_UPDATE":
            # One edit per technical user: the row holds what the event says.
            assert users[event.target_id].description == event.payload["after"]["description"]

    # Operations whose answer was lost happened entirely or not at all.
    names = {user.user_name: user for user in users.values()}
    for op in ops:
        if op["status"] is LOST and op["op"] == "create":
            user = names.get(op["name"])
            assert user is None or len(creates[user.id]) == 1

    # Grants: every 200 has its event (checked above), and no more events than attempts.
    grant_events = Counter(e.target_id for e in events if e.type == "ACCESS_TOKEN_GRANT")
    for token_id in grant_token_ids:
        answered = sum(1 for op in ops if op.get("token_id") == token_id and op["status"] == 200)
        lost = sum(1 for op in ops if op.get("token_id") == token_id and op["status"] is LOST)
        # +1: the check after the restart.
        assert answered <= grant_events[token_id] <= answered + lost + 1
