"""Concurrency: racing replacements, racing creates, and grants racing a deletion or replacement.

The live tests drive `authserver serve --workers 4` over the test database
(PostgreSQL when AUTHSERVER_TEST_DATABASE_URL says so, else SQLite, whose
writers are serialised by a file lock and which must hold the same rules).
Rate limits are off on that server: these tests are about correctness under
contention, and tests/test_ratelimit.py covers the limits.

"No grant committed after the deletion's commit" is made precise with the
audit log, which records both in the transactions that make them. For a token
cut off by a DELETE (or a replaceToken) while grants hammer it:

- every ACCESS_TOKEN_GRANT event of the token has a smaller id, and an earlier
  or equal createdAt, than the TECHNICAL_USER_DELETE (APITOKEN_REPLACE) event,
  and every ACCESS_TOKEN_DENY of it a larger id;
- every grant request sent after the change's response arrived was refused;
- grant events equal 200 responses (the same jtis) and deny events 401s.

Event ids are drawn inside the transactions. A grant holds a KEY SHARE lock on
its token row from its lookup to its commit; the change takes the row FOR
UPDATE before it draws its event id and keeps it to its commit (see
`credentials.resolve_principal`). So a grant that succeeded drew its id and
committed before the change drew its own: "grant id < change id" means
"grant committed before the change". Without the lock this test fails on
PostgreSQL. On SQLite the grant reads without a lock and reads again under
the write lock before it records (`credentials.confirm_principal`); writers
are serialised there, so the same order holds. The in-process tests below
show the lock itself, deterministically: a deletion, replacement or
revocation waits for a grant in flight, and a grant that comes while one of
them holds the rows waits and is then refused (on SQLite: a grant whose
token is cut off after its lookup is refused when it confirms).
"""

import queue
import threading
import time
from collections import Counter
from datetime import UTC, datetime

import jwt
import pytest
from sqlalchemy import select

from authserver import tokens
from authserver.extensions import db
from authserver.models import ApiToken, Role, TechnicalUser, Workspace
from authserver.services import revocation, technical_users
from authserver.services.api_tokens import TokenChanges
from authserver.services.audit import CLI_ACTOR, NO_ORIGIN, EventType, record_event
from authserver.services.credentials import (
    CredentialRefused,
    confirm_principal,
    note_use,
    resolve_principal,
    resolve_principal_by_token_id,
)

from .live import (
    Api,
    events,
    is_live,
    run_together,
    server_errors,
    start_server,
    statuses,
    tokens_of,
    wait_until,
)

RACERS = 20
GRANT_THREADS = 6
RACE_ROUNDS = 3
# How long a transaction that must wait is watched to be still waiting.
HOLD = 0.5


# --- live server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(test_config, _schema, tmp_path_factory):
    """`authserver serve --workers 4`, rate limits off."""
    log_path = tmp_path_factory.mktemp("concurrency") / "server.log"
    live = start_server(test_config, log_path, workers=4, RATELIMIT_ENABLED="false")
    yield live
    live.stop()


@pytest.fixture
def api(server, app, factory):
    """The live server, with an admin's access token (`api.admin`) and workspace."""
    workspace, _, secret = factory.admin_token()
    api = Api(server.url)
    api.workspace_id = workspace.id
    db.session.rollback()  # SQLite: hold no transaction while the server writes
    api.admin = api.access_token(secret)
    yield api
    assert server_errors(server.log_path) == []


def jti_of(access_token: str) -> str:
    return jwt.decode(access_token, options={"verify_signature": False})["jti"]


@pytest.mark.slow
def test_concurrent_replacements_leave_one_live_token_and_refuse_the_rest(api):
    """20 simultaneous replaceToken: 20 x 200, one chain of replacements, one live token."""
    created = api.create_technical_user(api.admin, "rotor", "ADMIN")
    assert created.status_code == 201, created.text
    technical_user = created.json()["data"]
    first = technical_user["apiTokenData"]
    path = f"/technicalusers/{technical_user['id']}/replaceToken"

    responses = run_together(RACERS, lambda _: api.call(api.admin, "PUT", path))

    assert statuses(responses) == {200: RACERS}
    issued = {r.json()["data"]["apiTokenData"]["id"]: r.json()["data"]["apiTokenData"]["token"]
              for r in responses}  # fmt: skip
    issued[first["id"]] = first["token"]
    assert len(issued) == RACERS + 1

    now = datetime.now(UTC)
    rows = tokens_of(technical_user["id"])
    assert {row.id for row in rows} == set(issued)
    (live,) = [row for row in rows if is_live(row, now)]
    # The replacements queued on the technical user's lock: each replaced the token that
    # was current, so every token but the last was replaced exactly once.
    replaces = events(types=[EventType.APITOKEN_REPLACE], workspace_id=api.workspace_id)
    assert len(replaces) == RACERS
    assert {event.target_id for event in replaces} == set(issued) - {first["id"]}
    replaced = Counter(event.payload["replaced"]["id"] for event in replaces)
    assert set(replaced) == set(issued) - {live.id}
    assert set(replaced.values()) == {1}
    assert replaces[-1].target_id == live.id

    # At the token endpoint only the live token works; each refusal is audited as revoked.
    refused = [token_id for token_id, secret in issued.items() if token_id != live.id]
    results = {token_id: api.grant(secret).status_code for token_id, secret in issued.items()}
    assert results == {live.id: 200, **dict.fromkeys(refused, 401)}
    denials = events(types=[EventType.ACCESS_TOKEN_DENY], workspace_id=api.workspace_id)
    assert sorted(event.target_id for event in denials) == sorted(refused)
    assert {event.payload["reason"] for event in denials} == {"token_revoked"}
    grants = events(types=[EventType.ACCESS_TOKEN_GRANT], target_id=live.id)
    assert len(grants) == 1
    print(
        f"\n{RACERS} racing replaceToken: {dict(statuses(responses))}, {len(rows)} tokens, "
        f"1 live, {len(refused)} refused, {len(replaces)} APITOKEN_REPLACE and "
        f"{len(denials)} ACCESS_TOKEN_DENY events"
    )


@pytest.mark.slow
def test_concurrent_creates_of_one_name_make_exactly_one(api):
    """20 simultaneous creates of one userName: one 201, nineteen 409, one user, its events."""
    responses = run_together(RACERS, lambda _: api.create_technical_user(api.admin, "racer"))

    assert statuses(responses) == {201: 1, 409: RACERS - 1}
    (winner,) = [r.json()["data"] for r in responses if r.status_code == 201]
    for response in responses:
        if response.status_code == 409:
            assert response.json()["errors"][0]["value"] == "userName"
    db.session.rollback()
    users = db.session.query(TechnicalUser).filter_by(workspace_id=api.workspace_id).all()
    assert [(user.id, user.user_name) for user in users] == [(winner["id"], "racer")]
    db.session.rollback()
    (token,) = tokens_of(winner["id"])
    created = events(
        types=[EventType.TECHNICAL_USER_CREATE, EventType.APITOKEN_CREATE],
        workspace_id=api.workspace_id,
    )
    # The admin's own personal token was created by the CLI actor before the race.
    by_admin = [event for event in created if event.actor_id != CLI_ACTOR.id]
    assert sorted((event.type, event.target_id) for event in by_admin) == [
        ("APITOKEN_CREATE", token.id),
        ("TECHNICAL_USER_CREATE", winner["id"]),
    ]
    assert api.grant(winner["apiTokenData"]["token"]).status_code == 200
    print(
        f"\n{RACERS} racing creates of one userName: {dict(statuses(responses))}, "
        f"1 technical user, 1 token, {len(by_admin)} create events"
    )


CUTS = {
    # How the admin cuts a token off: the request, and the event that records it.
    "delete": ("DELETE", "/technicalusers/{id}", 204, EventType.TECHNICAL_USER_DELETE),
    "replace": ("PUT", "/technicalusers/{id}/replaceToken", 200, EventType.APITOKEN_REPLACE),
}
REFUSED_REASONS = {"token_revoked", "technical_user_deleted"}


def race_grants_against(api: Api, kind: str, name: str) -> dict:
    """Grant threads hammer one token while the admin deletes or replaces it."""
    created = api.create_technical_user(api.admin, name)
    assert created.status_code == 201, created.text
    technical_user = created.json()["data"]
    secret = technical_user["apiTokenData"]["token"]
    method, path, expected, _ = CUTS[kind]
    results: list[tuple[float, float, int, str | None]] = []
    deadline = time.monotonic() + 20

    def hammer():
        refused_in_a_row = 0
        for _ in range(400):
            if refused_in_a_row >= 3 or time.monotonic() > deadline:
                return
            started = time.monotonic()
            response = api.grant(secret)
            finished = time.monotonic()
            ok = response.status_code == 200
            jti = jti_of(response.json()["access_token"]) if ok else None
            results.append((started, finished, response.status_code, jti))
            refused_in_a_row = 0 if ok else refused_in_a_row + 1

    threads = [threading.Thread(target=hammer) for _ in range(GRANT_THREADS)]
    for thread in threads:
        thread.start()
    try:
        assert wait_until(lambda: len(results) >= 4 * GRANT_THREADS, timeout=15)
        sent = time.monotonic()
        cut = api.call(api.admin, method, path.format(id=technical_user["id"]))
        answered = time.monotonic()
    finally:
        for thread in threads:
            thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert cut.status_code == expected, cut.text
    return {
        "token_id": technical_user["apiTokenData"]["id"],
        "results": results,
        "sent": sent,
        "answered": answered,
    }


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(CUTS))
def test_no_grant_commits_after_the_change_that_cut_its_token_off(api, kind):
    """Grants racing a DELETE or replaceToken: all before it in the audit order, none lost."""
    overlapping = 0
    totals: Counter = Counter()
    for round_ in range(RACE_ROUNDS):
        race = race_grants_against(api, kind, f"{kind}-{round_}")
        results = race["results"]
        codes = Counter(status for _, _, status, _ in results)
        assert set(codes) <= {200, 401}, codes
        # Once the change was answered, every grant sent afterwards was refused.
        assert all(status == 401 for started, _, status, _ in results if started > race["answered"])
        overlapping += sum(
            1 for started, finished, _, _ in results
            if started < race["answered"] and finished > race["sent"]
        )  # fmt: skip

        change = change_event(kind, api.workspace_id, race["token_id"])
        grants = events(types=[EventType.ACCESS_TOKEN_GRANT], target_id=race["token_id"])
        denials = events(types=[EventType.ACCESS_TOKEN_DENY], target_id=race["token_id"])
        # No event lost, none invented: one per answer, the same access tokens.
        assert sorted(event.payload["jti"] for event in grants) == sorted(
            jti for _, _, status, jti in results if status == 200
        )
        assert len(denials) == codes[401]
        assert {event.payload["reason"] for event in denials} <= REFUSED_REASONS
        # The audit order: every grant before the change, every refusal after it.
        assert all(event.id < change.id for event in grants)
        assert all(event.created_at <= change.created_at for event in grants)
        assert all(event.id > change.id for event in denials)
        totals.update({"200": codes[200], "401": codes[401], "grant events": len(grants),
                       "deny events": len(denials)})  # fmt: skip
    # The races were real: grants were in flight while the change was.
    assert overlapping > 0
    print(
        f"\ngrants racing {kind} ({RACE_ROUNDS} rounds, {GRANT_THREADS} threads): {dict(totals)}, "
        f"{overlapping} grants in flight during the {kind}, none committed after it"
    )


def change_event(kind: str, workspace_id: str, token_id: str):
    """The deletion or replacement event that cut this token off."""
    found = [
        event
        for event in events(types=[CUTS[kind][3]], workspace_id=workspace_id)
        if token_id in event.payload.get("revokedTokens", [])
        or event.payload.get("replaced", {}).get("id") == token_id
    ]
    assert len(found) == 1, found
    return found[0]


# --- the lock, shown in process ----------------------------------------------------------------


class Pending:
    """The outcome of a step a Worker runs."""

    def __init__(self):
        self.done = threading.Event()
        self.result = None
        self.error: BaseException | None = None

    def wait(self, timeout: float) -> bool:
        """Whether the step finished within `timeout` seconds."""
        return self.done.wait(timeout)

    def value(self, timeout: float = 15):
        """The step's result (or its exception, raised here)."""
        assert self.done.wait(timeout), "the step did not finish"
        if self.error is not None:
            raise self.error
        return self.result


class Worker:
    """A thread with its own app context, so its own session and transaction."""

    def __init__(self, app):
        self.app = app
        self.steps: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self.app.app_context():
            try:
                while (step := self.steps.get()) is not None:
                    function, pending = step
                    try:
                        pending.result = function()
                    except BaseException as error:  # noqa: BLE001 - handed to the test
                        pending.error = error
                    pending.done.set()
            finally:
                db.session.rollback()
                db.session.remove()

    def submit(self, function) -> Pending:
        """Run `function` on this worker after the steps before it."""
        pending = Pending()
        self.steps.put((function, pending))
        return pending

    def close(self) -> None:
        """End the worker (its open transaction is rolled back)."""
        self.steps.put(None)
        self.thread.join(timeout=15)


@pytest.fixture
def workers(app):
    """Make workers; every one is closed at the end."""
    made: list[Worker] = []

    def make() -> Worker:
        made.append(Worker(app))
        return made[-1]

    yield make
    for worker in made:
        worker.close()


def lookup(secret: str):
    """The grant's lookup, holding the token row as the token endpoint does."""
    return lambda: resolve_principal(tokens.digest(secret), datetime.now(UTC), lock=True)


def record_grant(principal, *, noted: bool = False) -> int:
    """The rest of a grant: confirm the principal, note the use (unless done), record, commit."""
    principal = confirm_principal(principal)
    if not noted:
        note_use(principal, "127.0.0.1", datetime.now(UTC), 60)
    event_id = record_event(
        EventType.ACCESS_TOKEN_GRANT,
        workspace=principal.workspace,
        actor=principal.actor,
        target=principal.token_target,
        payload={},
    )
    db.session.commit()
    return event_id


def hold_rows(technical_user_id: str):
    """Lock the technical user and its tokens as a deletion or replacement first does."""

    def run():
        db.session.execute(
            select(TechnicalUser.id).where(TechnicalUser.id == technical_user_id).with_for_update()
        )
        db.session.execute(
            select(ApiToken.id)
            .where(ApiToken.technical_user_id == technical_user_id)
            .with_for_update()
        )

    return run


# What cuts a token off, in process: the management API's two changes and RFC 7009 revocation.
IN_PROCESS_CUTS = {
    "delete": EventType.TECHNICAL_USER_DELETE,
    "replace": EventType.APITOKEN_REPLACE,
    "revoke": EventType.ACCESS_TOKEN_REVOKE,
}


def cut_off(kind: str, workspace_id: str, technical_user_id: str):
    """Delete the technical user, replace its token, or let it revoke its own token; commit."""

    def run():
        if kind == "revoke":
            (token,) = technical_users.current_tokens([technical_user_id]).values()
            caller = resolve_principal_by_token_id(token.id, datetime.now(UTC))
            revocation.revoke_api_token(
                token, owner_name=None, caller=caller, origin=NO_ORIGIN, now=datetime.now(UTC)
            )
            db.session.commit()
            return
        workspace = db.session.get(Workspace, workspace_id)
        technical_user = technical_users.get_technical_user(
            workspace_id, technical_user_id, lock=True
        )
        if kind == "delete":
            technical_users.delete_technical_user(
                workspace, technical_user, actor=CLI_ACTOR, origin=NO_ORIGIN
            )
        else:
            technical_users.replace_token(
                workspace,
                technical_user,
                grace_seconds=0,
                changes=TokenChanges(),
                actor=CLI_ACTOR,
                origin=NO_ORIGIN,
            )
        db.session.commit()

    return run


def change_event_id(kind: str, workspace_id: str) -> int:
    """The id of the committed event of the change (the workspace has one)."""
    (event,) = events(types=[IN_PROCESS_CUTS[kind]], workspace_id=workspace_id)
    return event.id


@pytest.fixture
def doomed(app, factory):
    """A technical user, its workspace and its token's secret; no transaction left open."""
    workspace = factory.workspace()
    technical_user, _, secret = factory.technical_user(workspace, Role.MEMBER)
    ids = (workspace.id, technical_user.id, secret)
    db.session.rollback()
    return ids


@pytest.fixture
def row_locks(database_url):
    """PostgreSQL only: the grant's lookup holds the token row until it commits."""
    if database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's row locks; on SQLite the grant confirms under the write lock")


@pytest.fixture
def confirmation(database_url):
    """SQLite only: the grant reads without a lock and confirms under the write lock."""
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's confirmation; PostgreSQL holds the row from the lookup")


@pytest.mark.parametrize("kind", sorted(IN_PROCESS_CUTS))
def test_a_change_waits_for_a_grant_in_flight(doomed, workers, kind, row_locks):
    workspace_id, technical_user_id, secret = doomed
    grant, writer = workers(), workers()
    principal = grant.submit(lookup(secret)).value()

    changing = writer.submit(cut_off(kind, workspace_id, technical_user_id))
    assert not changing.wait(HOLD), f"the {kind} did not wait for the grant holding the token"
    grant_id = grant.submit(lambda: record_grant(principal)).value()
    changing.value()

    assert grant_id < change_event_id(kind, workspace_id)


@pytest.mark.parametrize("kind", sorted(IN_PROCESS_CUTS))
def test_a_grant_waits_for_a_change_in_flight_and_is_refused(doomed, workers, kind, row_locks):
    """The grant comes while the writer holds the rows but has not written them yet."""
    workspace_id, technical_user_id, secret = doomed
    grant, writer = workers(), workers()
    writer.submit(hold_rows(technical_user_id)).value()

    looking_up = grant.submit(lookup(secret))
    assert not looking_up.wait(HOLD), "the grant did not wait for the rows a writer holds"
    writer.submit(cut_off(kind, workspace_id, technical_user_id)).value()

    with pytest.raises(CredentialRefused) as refused:
        looking_up.value()
    assert refused.value.reason in REFUSED_REASONS


@pytest.mark.parametrize("kind", sorted(IN_PROCESS_CUTS))
def test_on_sqlite_a_grant_whose_token_was_cut_off_after_its_lookup_is_refused(
    doomed, workers, kind, confirmation
):
    """SQLite: the lookup holds nothing, so the change commits; the grant's confirmation refuses."""
    workspace_id, technical_user_id, secret = doomed
    grant, writer = workers(), workers()
    principal = grant.submit(lookup(secret)).value()
    writer.submit(cut_off(kind, workspace_id, technical_user_id)).value()

    with pytest.raises(CredentialRefused) as refused:
        grant.submit(lambda: record_grant(principal)).value()
    assert refused.value.reason in REFUSED_REASONS
    grant.submit(db.session.rollback).value()
    assert not events(types=[EventType.ACCESS_TOKEN_GRANT], workspace_id=workspace_id)


@pytest.mark.parametrize("kind", sorted(IN_PROCESS_CUTS))
def test_on_sqlite_a_grant_confirming_during_a_change_waits_and_is_refused(
    doomed, workers, kind, confirmation
):
    """SQLite: a change holds the write lock; the grant's confirmation waits, then refuses."""
    workspace_id, technical_user_id, secret = doomed
    grant, writer = workers(), workers()
    writer.submit(hold_rows(technical_user_id)).value()
    principal = grant.submit(lookup(secret)).value()  # reads without waiting

    recording = grant.submit(lambda: record_grant(principal))
    assert not recording.wait(HOLD), "the grant's confirmation did not wait for the write lock"
    writer.submit(cut_off(kind, workspace_id, technical_user_id)).value()

    with pytest.raises(CredentialRefused) as refused:
        recording.value()
    assert refused.value.reason in REFUSED_REASONS


def test_on_sqlite_a_role_changed_after_the_lookup_refuses_the_grant(doomed, workers, confirmation):
    """The access token was signed with the role read first; a grant never records a stale role."""
    _, technical_user_id, secret = doomed
    grant, writer = workers(), workers()
    principal = grant.submit(lookup(secret)).value()

    def demote():
        db.session.get(TechnicalUser, technical_user_id).permission_role = Role.VIEWER
        db.session.commit()

    writer.submit(demote).value()
    with pytest.raises(CredentialRefused) as refused:
        grant.submit(lambda: record_grant(principal)).value()
    assert refused.value.reason == "changed_during_grant"
    assert refused.value.principal.role is Role.VIEWER


def test_grants_noting_a_use_never_deadlock_with_a_delete(doomed, workers, row_locks):
    """Two grants hold the token; one notes the use; a delete queues; the other notes it too.

    Had the second grant waited for the row, it would have queued behind the
    delete, which waits for it: a deadlock. It skips the note instead.
    """
    workspace_id, technical_user_id, secret = doomed
    first, second, writer = workers(), workers(), workers()
    principals = [first.submit(lookup(secret)).value(), second.submit(lookup(secret)).value()]
    second.submit(lambda: note_use(principals[1], "127.0.0.1", datetime.now(UTC), 60)).value()
    deleting = writer.submit(cut_off("delete", workspace_id, technical_user_id))
    assert not deleting.wait(HOLD)

    noted = first.submit(lambda: note_use(principals[0], "127.0.0.1", datetime.now(UTC), 60))
    assert noted.wait(HOLD), "the grant waited for the row behind the delete"
    noted.value()
    ids = [
        worker.submit(lambda principal=principal: record_grant(principal, noted=True)).value()
        for worker, principal in ((first, principals[0]), (second, principals[1]))
    ]
    deleting.value()
    assert max(ids) < change_event_id("delete", workspace_id)
