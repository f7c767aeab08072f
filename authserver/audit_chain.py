"""Tamper evidence: the per-workspace hash chain of audit events.

Events are inserted with `chain_hash` and `chain_seq` NULL, so the hot path is
one INSERT and writers never wait on one another. Sealing happens later, in
batches, off the request path: `seal_pending` (run by `BackgroundSealer` after
requests, at most once per interval per process, and by `authserver audit seal`)
gives each committed event its position in its chain and

    chain_hash = SHA-256(previous chain_hash + "\\n" + canonical JSON of the event)

where the canonical JSON holds every column of the event (id, type, created_at,
workspace, actor, target, ip, user agent, payload) plus its position, with
sorted keys. There is one chain per workspace, and one ("-") for events that
belong to no workspace (denials of unknown tokens). `AuditCheckpoint` keeps,
per chain, the last position, event and hash, and the point up to which the
chain was pruned.

Why the chain order is the seal order, not strictly the id order
----------------------------------------------------------------
Ids come from a sequence when the INSERT runs, but transactions commit in any
order. On PostgreSQL, transaction A can take id 10, transaction B id 11, and B
can commit first. A sealer that chains strictly by id and has sealed 11 can
then neither insert 10 before 11 (that rewrites the sealed chain) nor skip it
(the event would never be sealed). The usual remedies only narrow the window:
"seal only events older than N seconds" compares `created_at`, which the
application sets before the transaction commits and which comes from the clock
of whichever instance wrote it; "refuse to pass an id gap until it is old"
cannot tell a rolled-back id (a gap forever) from a slow transaction, so it
must give up after a timeout, and a transaction slower than the timeout breaks
the chain. No timeout is a proof.

So the position is recorded (`chain_seq`, 1, 2, 3, ... per chain) and the chain
is defined as "in the order the sealer chained the events": every run takes
the committed, unsealed events of a chain in id order and appends them after
the chain's last position. An event that commits late, below ids already
sealed, is simply appended by the next run. Nothing is ever skipped (the
sealer looks for unsealed rows, not for ids above a high-water mark) and no
sealed position is ever rewritten, whatever the commit order. `verify` walks
each chain by position, so it checks exactly what was hashed.

Two measures keep that order equal to the id order in practice and keep
sealers apart:
- a settle delay (`AUDIT_SEAL_SETTLE`, default 2 s): a run seals only events
  whose `created_at` is at least that old, which leaves in-flight transactions
  time to commit. If a transaction is slower, nothing breaks: its event is
  appended later, out of id order but in the chain.
- read, then write what was read only if the chain did not move: a run reads
  the events and the chain's head and computes the hashes on a read-only
  connection (no lock: on SQLite a seal must not hold the one write lock
  while it hashes), then locks the chain's checkpoint row (`SELECT ... FOR
  UPDATE SKIP LOCKED` on PostgreSQL, so a second sealer skips a chain that is
  being sealed; on SQLite the write transaction serialises) and writes the
  positions only if the head is still the one it read. A chain that another
  sealer moved meanwhile is left to the next run. Positions and the
  checkpoint are written in the same transaction, so a crash leaves either
  the whole batch sealed or none of it.

What it proves, and what it cannot
----------------------------------
Changing any column of a sealed event, deleting one, moving one to another
position, or swapping the contents of two makes `verify` fail at the first
affected position and name the event. An unsealed event (younger than a few
seconds) is not yet protected; the sinks hold a copy from the moment it
commits. Someone able to rewrite every row after a point and the checkpoint
can forge a consistent chain: compare the chain heads (logged at every seal and
printed by `authserver audit verify`) with a copy kept elsewhere to rule it out.
"""

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from .database import read_only_connection
from .extensions import db
from .models import AuditCheckpoint, AuditEvent

log = logging.getLogger("authserver.audit")

NO_WORKSPACE = "-"
GENESIS_PREFIX = b"authserver audit chain v1\n"
SEAL_BATCH = 1000
# The background sealer's batches are small and spaced out (see BackgroundSealer).
BACKGROUND_BATCH = 100
BACKGROUND_PAUSE = 0.005
YIELD_EVERY = 8
VERIFY_PAGE = 1000
# On a break, how many later events to search for the contents that were moved there.
SWAP_SEARCH_LIMIT = 100_000

# Every column of an event except its seal, in the canonical form. Adding a column to
# AuditEvent means deciding whether it is hashed (tests/test_audit_chain.py checks).
HASHED_COLUMNS = (
    "id",
    "type",
    "created_at",
    "workspace_id",
    "workspace_name",
    "actor_id",
    "actor_user_name",
    "actor_technical",
    "target_type",
    "target_id",
    "target_name",
    "ip",
    "user_agent",
    "payload",
)
EVENTS = AuditEvent.__table__
UNSEALED = (EVENTS.c.chain_hash.is_(None), EVENTS.c.chain_seq.is_(None))


# --- the hash ------------------------------------------------------------------------


def chain_key(workspace_id: str | None) -> str:
    """The chain an event belongs to: its workspace id, or "-" for none."""
    return workspace_id or NO_WORKSPACE


def genesis_hash(key: str) -> str:
    """The hash before the first event of a chain (bound to the chain)."""
    return hashlib.sha256(GENESIS_PREFIX + key.encode()).hexdigest()


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_event(row, seq: int) -> bytes:
    """Every column of the event and its position, as canonical JSON (sorted keys, UTF-8)."""
    document = {name: getattr(row, name) for name in HASHED_COLUMNS}
    document["created_at"] = _timestamp(row.created_at)
    document["chain_seq"] = seq
    text = json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


def link_hash(previous: str, row, seq: int) -> str:
    """The chain hash of `row` at position `seq` after a link whose hash is `previous`."""
    return hashlib.sha256(previous.encode("ascii") + b"\n" + canonical_event(row, seq)).hexdigest()


def _key_filter(keys: Iterable[str]):
    """A WHERE clause selecting the events of these chains."""
    keys = set(keys)
    workspace_ids = sorted(keys - {NO_WORKSPACE})
    clauses = []
    if workspace_ids:
        clauses.append(EVENTS.c.workspace_id.in_(workspace_ids))
    if NO_WORKSPACE in keys:
        clauses.append(EVENTS.c.workspace_id.is_(None))
    return or_(*clauses)


# --- sealing -------------------------------------------------------------------------


@dataclass
class SealReport:
    """What one `seal_pending` run did: events sealed per chain, and the new heads."""

    sealed: dict[str, int] = field(default_factory=dict)
    heads: dict[str, tuple[int, int, str]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Events sealed in all chains."""
        return sum(self.sealed.values())


def seal_pending(
    *,
    settle_seconds: float,
    batch_size: int = SEAL_BATCH,
    now: datetime | None = None,
    pause: float = 0,
) -> SealReport:
    """Chain every committed, unsealed event at least `settle_seconds` old, batch by batch.

    Commits after each batch (so it ends the caller's transaction). Chains that
    another sealer holds are skipped; that sealer seals them. `pause` sleeps
    between batches (see BackgroundSealer).
    """
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=settle_seconds)
    report = SealReport()
    while True:
        sealed = _seal_batch(cutoff, batch_size, report, pause)
        if sealed == 0:
            return report
        if pause:
            time.sleep(pause)


@dataclass
class _Plan:
    """The seals of one chain's events, computed from the head as it was read."""

    start: tuple[int, str]  # (last_seq, last_hash) of the checkpoint when read
    head: tuple[int, int, str]  # (seq, event id, hash) after these seals
    seals: list[dict] = field(default_factory=list)


def _seal_batch(cutoff: datetime, batch_size: int, report: SealReport, pause: float = 0) -> int:
    """Seal up to `batch_size` events; return how many.

    The events and the chains' heads are read, and the hashes computed, on a
    read-only connection, so writers are not held up meanwhile (on SQLite a
    seal would otherwise hold the one write lock for milliseconds). Only the
    UPDATE and the checkpoints' move then write, in one short transaction,
    after checking under each checkpoint's row lock that its head is still the
    one read; a chain that another sealer moved meanwhile is left to the next
    batch.
    """
    # The ids first, through the partial index of unsealed events; a query that also
    # filtered by workspace would walk the workspace's sealed events to reach them.
    oldest = (
        select(EVENTS.c.id, EVENTS.c.workspace_id)
        .where(*UNSEALED, EVENTS.c.created_at <= cutoff)
        .order_by(EVENTS.c.id)
        .limit(batch_size)
    )
    with read_only_connection() as connection:
        pending = connection.execute(oldest).all()
        keys = {chain_key(workspace_id) for _, workspace_id in pending}
        if not keys:
            return 0
        heads = {
            key: (seq, digest)
            for key, seq, digest in connection.execute(
                select(
                    AuditCheckpoint.chain_key, AuditCheckpoint.last_seq, AuditCheckpoint.last_hash
                ).where(AuditCheckpoint.chain_key.in_(sorted(keys)))
            )
        }
        rows = connection.execute(
            select(EVENTS)
            .where(EVENTS.c.id.in_([event_id for event_id, _ in pending]), *UNSEALED)
            .order_by(EVENTS.c.id)
        ).all()
    missing = keys - heads.keys()
    if missing:
        _ensure_checkpoints(missing)
        heads.update((key, (0, genesis_hash(key))) for key in missing)
    plans = _plan(rows, heads, pause)
    return _apply(plans, report)


def _plan(rows, heads: dict[str, tuple[int, str]], pause: float) -> dict[str, _Plan]:
    """Chain the rows (in id order) after their chains' heads."""
    plans: dict[str, _Plan] = {}
    for number, row in enumerate(rows, 1):
        key = chain_key(row.workspace_id)
        plan = plans.get(key)
        if plan is None:
            seq, digest = heads[key]
            plan = plans[key] = _Plan(start=(seq, digest), head=(seq, 0, digest))
        seq = plan.head[0] + 1
        digest = link_hash(plan.head[2], row, seq)
        plan.seals.append({"event_id": row.id, "hash": digest, "seq": seq})
        plan.head = (seq, row.id, digest)
        if pause and number % YIELD_EVERY == 0:
            time.sleep(0)  # let a request thread of this process have the GIL
    return plans


def _apply(plans: dict[str, _Plan], report: SealReport) -> int:
    """Write the plans whose chains nobody moved since they were read; how many events."""
    if not plans:
        return 0
    checkpoints = _lock_checkpoints(set(plans))
    applied = {}
    for key, plan in plans.items():
        checkpoint = checkpoints.get(key)
        if checkpoint is None or (checkpoint.last_seq, checkpoint.last_hash) != plan.start:
            continue
        checkpoint.last_seq, checkpoint.last_event_id, checkpoint.last_hash = plan.head
        checkpoint.updated_at = datetime.now(UTC)
        applied[key] = plan
    seals = [seal for plan in applied.values() for seal in plan.seals]
    if seals:
        db.session.execute(
            update(EVENTS)
            .where(EVENTS.c.id == bindparam("event_id"))
            .values(chain_hash=bindparam("hash"), chain_seq=bindparam("seq")),
            seals,
        )
    db.session.commit()
    for key, plan in applied.items():
        report.sealed[key] = report.sealed.get(key, 0) + len(plan.seals)
        report.heads[key] = plan.head
        log.info("audit chain %s sealed through position %d (event %d): %s", key, *plan.head)
    return len(seals)


def _ensure_checkpoints(keys: set[str]) -> None:
    """Create missing checkpoint rows (in key order, so concurrent sealers cannot deadlock)."""
    existing = set(
        db.session.execute(
            select(AuditCheckpoint.chain_key).where(AuditCheckpoint.chain_key.in_(keys))
        ).scalars()
    )
    missing = sorted(keys - existing)
    if not missing:
        return
    rows = [
        {
            "chain_key": key,
            "last_event_id": 0,
            "last_hash": genesis_hash(key),
            "last_seq": 0,
            "pruned_through_id": 0,
            "pruned_through_seq": 0,
            "updated_at": datetime.now(UTC),
        }
        for key in missing
    ]
    dialect = db.session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    for row in rows:
        db.session.execute(insert(AuditCheckpoint).values(row).on_conflict_do_nothing())
    db.session.commit()


def _lock_checkpoints(keys: set[str]) -> dict[str, AuditCheckpoint]:
    """Lock the checkpoints of these chains that no other sealer holds."""
    query = (
        select(AuditCheckpoint)
        .where(AuditCheckpoint.chain_key.in_(sorted(keys)))
        .order_by(AuditCheckpoint.chain_key)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    return {checkpoint.chain_key: checkpoint for checkpoint in db.session.execute(query).scalars()}


def has_unsealed() -> bool:
    """True if any committed event waits to be sealed."""
    found = db.session.execute(select(EVENTS.c.id).where(*UNSEALED).limit(1)).first()
    db.session.rollback()
    return found is not None


class BackgroundSealer:
    """Seals after requests, in a thread of this process, at most once per `interval` seconds.

    `notify` runs after every commit that carried events: it only compares a
    clock and sets an Event, so the request never waits for sealing. The
    thread comes back on its own while events are still settling, so the last
    events before a quiet period are sealed too.

    The thread shares the GIL with the worker's request thread. A thread that
    computes for long holds the request thread back by up to the interpreter's
    switch interval (5 ms) each time the request thread returns from I/O, which
    costs far more than the sealing's CPU time: sealing 1,000 events in one go
    made grants about 13% slower while it ran. So this thread seals small
    batches, yields the GIL every few events and sleeps a moment between
    batches; measured, the grants then run as fast as without it
    (tests/perf/bench_audit.py).
    """

    def __init__(self, app, *, interval: float, settle: float):
        self._app = app
        self.interval = interval
        self.settle = settle
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._next_notify = 0.0
        self.runs = 0
        self.failures = 0

    def notify(self) -> None:
        """Ask for a seal soon; cheap, and a no-op if asked within the last interval."""
        now = time.monotonic()
        if now < self._next_notify:
            return
        self._next_notify = now + self.interval
        self._ensure_thread()
        self._wake.set()

    def _ensure_thread(self) -> None:
        with self._lock:
            alive = self._thread is not None and self._thread.is_alive()
            if alive and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="audit-sealer", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5) -> None:
        """Stop the thread (tests; the process exit stops it otherwise)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        come_back: float | None = None
        while not self._stop.is_set():
            self._wake.wait(come_back)
            self._wake.clear()
            if self._stop.is_set():
                return
            come_back = self.seal_once()
            self._stop.wait(self.interval)

    def seal_once(self) -> float | None:
        """One run; returns when to come back on our own (None: wait for a notify)."""
        try:
            with self._app.app_context():
                try:
                    seal_pending(
                        settle_seconds=self.settle,
                        batch_size=BACKGROUND_BATCH,
                        pause=BACKGROUND_PAUSE,
                    )
                    pending = has_unsealed()
                finally:
                    db.session.remove()
        except Exception:  # noqa: BLE001 - the sealer thread must survive a database outage
            self.failures += 1
            log.exception("audit sealing failed (%d failures); will retry", self.failures)
            return min(60.0, self.interval * 2 ** min(self.failures, 6))
        self.runs += 1
        self.failures = 0
        return max(self.interval, self.settle) if pending else None


# --- verification --------------------------------------------------------------------


@dataclass
class Break:
    """The first place a chain fails: the event where it shows, and what broke."""

    kind: str  # changed, removed, reordered, added, checkpoint
    event_id: int | None
    seq: int | None
    detail: str


@dataclass
class ChainReport:
    """The result of verifying one chain."""

    key: str
    name: str | None = None
    verified: int = 0
    first_seq: int = 0
    last_seq: int = 0
    last_event_id: int | None = None
    head: str | None = None
    unsealed: int = 0
    below_prune_point: int = 0
    broken: Break | None = None

    @property
    def ok(self) -> bool:
        """True if nothing in the chain was changed, removed or reordered."""
        return self.broken is None


def chain_keys() -> list[str]:
    """Every chain: those with a checkpoint and those with events."""
    keys = set(db.session.execute(select(AuditCheckpoint.chain_key)).scalars())
    workspace_ids = db.session.execute(select(EVENTS.c.workspace_id).distinct()).scalars()
    keys.update(chain_key(workspace_id) for workspace_id in workspace_ids)
    db.session.rollback()
    return sorted(keys)


@dataclass(frozen=True)
class CheckpointState:
    """A checkpoint as read, detached from the session (reads end their transaction)."""

    last_event_id: int
    last_hash: str
    last_seq: int
    pruned_through_id: int
    pruned_hash: str | None
    pruned_through_seq: int


def _checkpoint(key: str) -> CheckpointState | None:
    """The chain's checkpoint as it is now (ends the transaction)."""
    table = AuditCheckpoint.__table__
    row = db.session.execute(
        select(*(table.c[name] for name in CheckpointState.__dataclass_fields__)).where(
            table.c.chain_key == key
        )
    ).first()
    db.session.rollback()
    return CheckpointState(**row._mapping) if row else None


def _sealed_pages(key: str, after_seq: int, through_seq: int | None) -> Iterator:
    """The chain's sealed events by position, a page per short transaction.

    Short transactions keep SQLite's write lock (taken at BEGIN) free for the
    server between pages; sealed rows never change, so pages read consistently.
    """
    while True:
        query = (
            select(EVENTS)
            .where(_key_filter([key]), EVENTS.c.chain_seq > after_seq)
            .order_by(EVENTS.c.chain_seq, EVENTS.c.id)
            .limit(VERIFY_PAGE)
        )
        if through_seq is not None:
            query = query.where(EVENTS.c.chain_seq <= through_seq)
        rows = db.session.execute(query).all()
        db.session.rollback()
        if not rows:
            return
        yield from rows
        after_seq = rows[-1].chain_seq


class _Walk:
    """The state of one pass along a chain."""

    def __init__(self, key: str, checkpoint: CheckpointState | None):
        self.key = key
        pruned = checkpoint.pruned_through_seq if checkpoint else 0
        self.start = pruned
        self.seq = pruned
        self.hash = checkpoint.pruned_hash if pruned else genesis_hash(key)
        self.event_id = checkpoint.pruned_through_id if pruned else None
        self.verified = 0

    def check(self, row) -> Break | None:
        """Check the next event; advance if it is intact."""
        where = f"event {row.id} at position {row.chain_seq}"
        if row.chain_seq == self.seq:
            return Break(
                "reordered", row.id, row.chain_seq, f"{where}: two events claim this position"
            )
        if row.chain_seq > self.seq + 1:
            missing = row.chain_seq - self.seq - 1
            span = (
                f"position {self.seq + 1}"
                if missing == 1
                else (f"positions {self.seq + 1}-{row.chain_seq - 1}")
            )
            after = f"after event {self.event_id}" if self.event_id else "at the start of the chain"
            return Break(
                "removed",
                row.id,
                row.chain_seq,
                f"{span} missing: {missing} event(s) {after} removed, before {where}",
            )
        if row.chain_hash is None:
            return Break("changed", row.id, row.chain_seq, f"{where}: its seal was removed")
        if link_hash(self.hash, row, row.chain_seq) != row.chain_hash:
            return Break(
                "changed",
                row.id,
                row.chain_seq,
                f"{where} was changed: its contents no longer match its seal",
            )
        self.seq = row.chain_seq
        self.hash = row.chain_hash
        self.event_id = row.id
        self.verified += 1
        return None


def verify_chain(key: str, *, through_seq: int | None = None) -> ChainReport:
    """Recompute one chain from its start (or its prune point) and report the first break.

    Ends the caller's transaction (it reads in short transactions).
    """
    checkpoint = _checkpoint(key)
    report = ChainReport(key=key, name=chain_name(key))
    walk = _Walk(key, checkpoint)
    report.first_seq = walk.start + 1
    broken = _walk_chain(walk, through_seq)
    if broken is None and through_seq is None:
        broken = _check_tail(walk)
    if broken is None:
        broken = _check_unpositioned(key)
    report.broken = broken
    report.verified = walk.verified
    report.last_seq = walk.seq
    report.last_event_id = walk.event_id
    report.head = walk.hash
    report.unsealed, report.below_prune_point = _counts(key, walk.start)
    db.session.rollback()
    return report


def _walk_chain(walk: _Walk, through_seq: int | None) -> Break | None:
    for row in _sealed_pages(walk.key, walk.seq, through_seq):
        broken = walk.check(row)
        if broken is not None and broken.kind == "removed" and _resume_after_prune(walk, row):
            broken = walk.check(row)
        if broken is not None and broken.kind == "changed" and row.chain_hash is not None:
            broken = _find_swap(walk, row) or broken
        if broken is not None:
            return broken
    return None


def _resume_after_prune(walk: _Walk, row) -> bool:
    """A gap made by a prune that ran during this walk is not a break: resume after it."""
    checkpoint = _checkpoint(walk.key)
    if checkpoint is None or checkpoint.pruned_through_seq != row.chain_seq - 1:
        return False
    if checkpoint.pruned_through_seq <= walk.seq:
        return False
    walk.seq = checkpoint.pruned_through_seq
    walk.hash = checkpoint.pruned_hash
    walk.event_id = checkpoint.pruned_through_id
    return True


def _find_swap(walk: _Walk, row) -> Break | None:
    """If the contents (or the id) now found elsewhere in the chain belong here, say so."""
    searched = 0
    for other in _sealed_pages(walk.key, row.chain_seq, None):
        searched += 1
        if searched > SWAP_SEARCH_LIMIT:
            return None
        contents_moved = _Renamed(other, id=row.id)
        id_moved = _Renamed(row, id=other.id)
        for candidate in (contents_moved, id_moved):
            if link_hash(walk.hash, candidate, row.chain_seq) == row.chain_hash:
                return Break(
                    "reordered",
                    row.id,
                    row.chain_seq,
                    f"event {row.id} at position {row.chain_seq} and event {other.id} at "
                    f"position {other.chain_seq} were swapped: the contents sealed at position "
                    f"{row.chain_seq} are now in event {other.id}",
                )
    return None


class _Renamed:
    """A row seen with some columns replaced (to test where moved contents belong)."""

    def __init__(self, row, **replaced):
        self._row = row
        self._replaced = replaced

    def __getattr__(self, name):
        if name in self._replaced:
            return self._replaced[name]
        return getattr(self._row, name)


def _check_tail(walk: _Walk) -> Break | None:
    """The walk must end where the checkpoint says the chain ends, on the same hash."""
    while True:
        checkpoint = _checkpoint(walk.key)
        if checkpoint is None:
            if walk.verified == 0 and walk.start == 0:
                return None
            return Break(
                "checkpoint",
                walk.event_id,
                walk.seq,
                f"the chain's checkpoint is missing (chain ends at event {walk.event_id})",
            )
        if checkpoint.last_seq <= walk.seq:
            break
        # Sealed while we read? The checkpoint commits with its events: read up to it.
        more = _walk_chain(walk, checkpoint.last_seq)
        if more is not None:
            return more
        if walk.seq < checkpoint.last_seq:
            missing = checkpoint.last_seq - walk.seq
            return Break(
                "removed",
                checkpoint.last_event_id,
                checkpoint.last_seq,
                f"{missing} event(s) removed from the end: the chain stops at position "
                f"{walk.seq} (event {walk.event_id}) but was sealed through position "
                f"{checkpoint.last_seq} (event {checkpoint.last_event_id})",
            )
    if checkpoint.last_seq < walk.seq:
        return Break(
            "added",
            walk.event_id,
            walk.seq,
            f"events after position {checkpoint.last_seq} were added outside the sealer "
            f"(event {walk.event_id} at position {walk.seq})",
        )
    if checkpoint.last_hash != walk.hash:
        return Break(
            "changed",
            walk.event_id,
            walk.seq,
            f"event {walk.event_id} at position {walk.seq}: its seal differs from the "
            "checkpoint's (the chain was rewritten)",
        )
    return None


def _check_unpositioned(key: str) -> Break | None:
    """A sealed event that lost its position was taken out of the chain."""
    row = db.session.execute(
        select(EVENTS.c.id)
        .where(_key_filter([key]), EVENTS.c.chain_seq.is_(None), EVENTS.c.chain_hash.isnot(None))
        .order_by(EVENTS.c.id)
        .limit(1)
    ).first()
    db.session.rollback()
    if row is None:
        return None
    return Break("changed", row.id, None, f"event {row.id} has a seal but its position was removed")


def _counts(key: str, pruned_seq: int) -> tuple[int, int]:
    unsealed = db.session.execute(
        select(func.count()).select_from(EVENTS).where(_key_filter([key]), *UNSEALED)
    ).scalar_one()
    leftover = db.session.execute(
        select(func.count())
        .select_from(EVENTS)
        .where(_key_filter([key]), EVENTS.c.chain_seq <= pruned_seq)
    ).scalar_one()
    return unsealed, leftover


def chain_name(key: str) -> str | None:
    """The name of the chain's workspace (None for the chain without one)."""
    if key == NO_WORKSPACE:
        return None
    from .models import Workspace

    name = db.session.execute(select(Workspace.name).where(Workspace.id == key)).scalar()
    if name is None:
        name = db.session.execute(
            select(EVENTS.c.workspace_name).where(EVENTS.c.workspace_id == key).limit(1)
        ).scalar()
    return name


# --- retention -----------------------------------------------------------------------


@dataclass
class PruneResult:
    """What a prune did to one chain."""

    key: str
    deleted: int = 0
    through_seq: int = 0
    through_event_id: int | None = None
    refused: Break | None = None


def prune_chain(key: str, before: datetime, *, dry_run: bool = False) -> PruneResult:
    """Delete the chain's sealed events older than `before`, keeping a checkpoint to verify from.

    Only a prefix of the chain is pruned: events up to (not including) the first
    position that is newer than `before`. The part to prune is verified first;
    a broken chain is never pruned (that would destroy the evidence).
    """
    result = PruneResult(key=key)
    cut = _prune_cut(key, before)
    checkpoint = _checkpoint(key)
    if cut is None or checkpoint is None or cut <= checkpoint.pruned_through_seq:
        return result
    report = verify_chain(key, through_seq=cut)
    if report.broken is None and report.last_seq != cut:
        report.broken = Break(
            "removed",
            None,
            report.last_seq + 1,
            f"position {report.last_seq + 1} missing, after event {report.last_event_id}",
        )
    if report.broken is not None:
        result.refused = report.broken
        return result
    result.through_seq, result.through_event_id = cut, report.last_event_id
    if dry_run:
        result.deleted = cut - checkpoint.pruned_through_seq
        return result
    _move_prune_point(key, cut, report)
    result.deleted = _delete_through(key, cut)
    return result


def _prune_cut(key: str, before: datetime) -> int | None:
    """The last position of the prefix of sealed events all older than `before`."""
    newer = db.session.execute(
        select(func.min(EVENTS.c.chain_seq)).where(
            _key_filter([key]), EVENTS.c.chain_seq.isnot(None), EVENTS.c.created_at >= before
        )
    ).scalar()
    if newer is not None:
        return newer - 1
    return db.session.execute(
        select(func.max(EVENTS.c.chain_seq)).where(_key_filter([key]))
    ).scalar()


def _move_prune_point(key: str, cut: int, report: ChainReport) -> None:
    """Record where the chain now starts, under the chain's lock."""
    checkpoint = db.session.execute(
        select(AuditCheckpoint)
        .where(AuditCheckpoint.chain_key == key)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()
    checkpoint.pruned_through_seq = cut
    checkpoint.pruned_through_id = report.last_event_id
    checkpoint.pruned_hash = report.head
    checkpoint.updated_at = datetime.now(UTC)
    db.session.commit()
    log.info(
        "audit chain %s pruned through position %d (event %d): %s",
        key,
        cut,
        report.last_event_id,
        report.head,
    )


def _delete_through(key: str, cut: int) -> int:
    """Delete the pruned prefix in batches (a short transaction each)."""
    deleted = 0
    while True:
        ids = (
            select(EVENTS.c.id)
            .where(_key_filter([key]), EVENTS.c.chain_seq <= cut)
            .limit(SEAL_BATCH)
        )
        batch = list(db.session.execute(ids).scalars())
        if not batch:
            db.session.rollback()
            return deleted
        db.session.execute(delete(EVENTS).where(EVENTS.c.id.in_(batch)))
        db.session.commit()
        deleted += len(batch)
