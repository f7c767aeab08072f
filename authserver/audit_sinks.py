"""Audit sinks: after a transaction commits, its events go to each configured sink.

There is one hook point: SQLAlchemy session listeners. `record_event` leaves
each event it inserts in `session.info[PENDING_KEY]`; `after_commit` hands the
committed ones to the app's sinks and nudges the background sealer. Events of a
transaction that rolls back are dropped with it, and so are those of a rolled
back SAVEPOINT (the outer transaction's events stay).

A sink never fails the request and never endangers the database record: the
events are already committed when sinks see them, the log sink only formats a
line, and the webhook sink only puts events on a bounded queue that a
background thread drains. Failures are counted and logged, never with the
webhook URL's path or query (they may carry a credential) or its secret.

Sinks (`AUDIT_SINKS`, comma separated):
- `log`: one JSON line per event on the `authserver.audit.events` logger,
  which writes to stderr unless logging is configured for it (default).
- `webhook`: POSTs `{"events": [...]}` batches to `AUDIT_WEBHOOK_URL`, with
  `AUDIT_WEBHOOK_RETRIES` retries and exponential backoff, a timeout of
  `AUDIT_WEBHOOK_TIMEOUT` seconds, at most `AUDIT_WEBHOOK_QUEUE_SIZE` events
  waiting (more are dropped and counted: the database still has them, and
  `authserver audit export` replays them), and, if `AUDIT_WEBHOOK_SECRET` is
  set, an `X-Authserver-Signature: sha256=<HMAC of the body>` header.
"""

import atexit
import hashlib
import hmac
import http.client
import json
import logging
import os
import queue
import random
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from urllib.parse import urlsplit

from flask import current_app, has_app_context, has_request_context
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from .services.audit import PENDING_KEY, event_to_dict

log = logging.getLogger("authserver.audit")
events_log = logging.getLogger("authserver.audit.events")

SINKS_KEY = "authserver.audit_sinks"
SEALER_KEY = "authserver.audit_sealer"
SAVEPOINTS_KEY = "audit_savepoints"

Sink = Callable[[list[dict]], None]


_encode = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode


def log_sink(events: list[dict]) -> None:
    """Write each event as one structured JSON log line: {"audit": <event>}.

    It runs after every grant, so the record is made directly: the logger's
    search of the call stack for the caller's file and line (which nobody
    reads here) is skipped.
    """
    if not events_log.isEnabledFor(logging.INFO):
        return
    for event in events:
        line = '{"audit":' + _encode(event) + "}"
        record = events_log.makeRecord(events_log.name, logging.INFO, "", 0, line, (), None)
        events_log.handle(record)


def _configure_events_log() -> None:
    """By default one JSON object per line on stderr, whatever LOG_LEVEL says.

    A logging configuration that gives `authserver.audit.events` handlers of
    its own (e.g. gunicorn's --log-config) takes over instead. The default
    does not propagate, so the lines are neither repeated nor prefixed by a
    handler on the root logger (Alembic's configuration installs one).
    """
    if events_log.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    events_log.addHandler(handler)
    events_log.setLevel(logging.INFO)
    events_log.propagate = False


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A webhook is not followed elsewhere: a redirect counts as a failed delivery."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        """Refuse every redirect."""
        return None


_STOP = object()
# 4xx answers that may succeed on a retry; any other 4xx (and a redirect) will not.
RETRYABLE_4XX = frozenset({408, 425, 429})


class WebhookSink:
    """POSTs committed events in batches from a background thread, with retries and backoff."""

    BATCH = 100
    MAX_BACKOFF = 30.0

    def __init__(
        self,
        url: str,
        *,
        secret: str | None = None,
        timeout: float = 5,
        retries: int = 5,
        queue_size: int = 10_000,
        backoff: float = 0.5,
    ):
        parts = urlsplit(url)
        self.url = url
        self.target = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._secret = secret.encode() if secret else None
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._opener = urllib.request.build_opener(_NoRedirects)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self.stats = {"delivered": 0, "failed_attempts": 0, "dropped": 0}

    def __call__(self, events: list[dict]) -> None:
        """Queue the events; never blocks, never raises for a full queue (drops and counts)."""
        dropped = 0
        for event in events:
            try:
                self._queue.put_nowait(event)
            except queue.Full:
                dropped += 1
        if dropped:
            self._count("dropped", dropped)
            log.error(
                "audit webhook %s: queue full, %d event(s) not sent (%d dropped so far); "
                "they are in the database",
                self.target,
                dropped,
                self.stats["dropped"],
            )
        self._ensure_thread()

    def _count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.stats[name] += amount

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="audit-webhook", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch = [first]
            while len(batch) < self.BATCH and first is not _STOP:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            events = [event for event in batch if event is not _STOP]
            try:
                if events:
                    self._deliver(events)
            except Exception:  # noqa: BLE001 - the sender thread must outlive any one batch
                self._count("dropped", len(events))
                log.exception("audit webhook %s: delivery crashed", self.target)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if len(events) < len(batch):
                return

    def _deliver(self, events: list[dict]) -> None:
        """Send one batch, retrying with exponential backoff; give up after the last retry."""
        body = json.dumps({"events": events}, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "authserver-audit/1"}
        if self._secret:
            digest = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
            headers["X-Authserver-Signature"] = f"sha256={digest}"
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            error, retryable = self._post(body, headers)
            if error is None:
                self._count("delivered", len(events))
                return
            self._count("failed_attempts")
            if attempt == attempts or not retryable or self._closing.is_set():
                break
            delay = min(self.MAX_BACKOFF, self.backoff * 2 ** (attempt - 1))
            delay *= 0.5 + random.random() / 2  # noqa: S311 - jitter, not a secret
            log.warning(
                "audit webhook %s: attempt %d of %d failed (%s); retrying in %.1f s",
                self.target,
                attempt,
                attempts,
                error,
                delay,
            )
            self._closing.wait(delay)
        self._count("dropped", len(events))
        log.error(
            "audit webhook %s: gave up on %d event(s) (ids %s to %s) after %d attempt(s): %s; "
            "they are in the database",
            self.target,
            len(events),
            events[0].get("id"),
            events[-1].get("id"),
            attempt,
            error,
        )

    def _post(self, body: bytes, headers: dict) -> tuple[str | None, bool]:
        """One POST; returns (error, retryable), error None on a 2xx answer."""
        # The URL's scheme is http or https: the configuration checks it at startup.
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")  # noqa: S310
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read()
                return None, False
        except urllib.error.HTTPError as error:
            error.close()
            retryable = error.code >= 500 or error.code in RETRYABLE_4XX
            return f"HTTP {error.code}", retryable
        except urllib.error.URLError as error:
            return f"{type(error.reason).__name__}: {error.reason}", True
        except (OSError, http.client.HTTPException) as error:
            return type(error).__name__, True

    def pending(self) -> int:
        """Events queued or being sent."""
        return self._queue.unfinished_tasks

    def flush(self, timeout: float) -> bool:
        """Wait until every queued event was delivered or given up; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued (for up to `timeout` seconds), then stop the thread."""
        if self._thread is None or not self._thread.is_alive():
            return
        self.flush(self.timeout if timeout is None else timeout)
        self._closing.set()
        try:
            self._queue.put(_STOP, timeout=1)
        except queue.Full:
            return
        self._thread.join(1)


class SinkRegistry:
    """The sinks of one app and their failure counts."""

    def __init__(self) -> None:
        self.sinks: list[tuple[str, Sink]] = []
        self.failures: dict[str, int] = {}

    def add(self, name: str, sink: Sink) -> None:
        """Register a sink under a name."""
        self.sinks.append((name, sink))
        self.failures.setdefault(name, 0)

    def get(self, name: str) -> Sink | None:
        """The sink registered under this name, if any."""
        return next((sink for sink_name, sink in self.sinks if sink_name == name), None)

    def emit(self, events: list[dict]) -> None:
        """Hand committed events to every sink; a failing sink is counted, not raised."""
        for name, sink in self.sinks:
            try:
                sink(events)
            except Exception:  # noqa: BLE001 - a sink must never break the request
                self.failures[name] += 1
                log.exception("audit sink %s failed (%d failures)", name, self.failures[name])

    def stats(self) -> dict[str, dict[str, int]]:
        """Per sink: failures, and the webhook's delivered, failed attempts and dropped."""
        return {
            name: {"failures": self.failures[name], **getattr(sink, "stats", {})}
            for name, sink in self.sinks
        }

    def close(self, timeout: float | None = None) -> None:
        """Flush and stop the sinks that have a thread."""
        for _, sink in self.sinks:
            close = getattr(sink, "close", None)
            if close is not None:
                close(timeout)


def build_sinks(config) -> SinkRegistry:
    """The sinks named in AUDIT_SINKS."""
    registry = SinkRegistry()
    for name in config["AUDIT_SINKS"]:
        if name == "log":
            _configure_events_log()
            registry.add("log", log_sink)
        elif name == "webhook":
            webhook = WebhookSink(
                config["AUDIT_WEBHOOK_URL"],
                secret=config["AUDIT_WEBHOOK_SECRET"],
                timeout=config["AUDIT_WEBHOOK_TIMEOUT"],
                retries=config["AUDIT_WEBHOOK_RETRIES"],
                queue_size=config["AUDIT_WEBHOOK_QUEUE_SIZE"],
            )
            atexit.register(webhook.close)
            registry.add("webhook", webhook)
    return registry


# --- the hook point ----------------------------------------------------------------------


def _rendered(pending: list) -> list[dict]:
    """Events as dicts (record_event renders them; an ORM row is rendered here)."""
    return [entry if isinstance(entry, dict) else event_to_dict(entry) for entry in pending]


def _before_commit(session: Session) -> None:
    """Render any pending ORM event while its id is readable (after the last flush)."""
    pending = session.info.get(PENDING_KEY)
    if pending and not all(isinstance(entry, dict) for entry in pending):
        session.flush()
        session.info[PENDING_KEY] = _rendered(pending)


def _after_commit(session: Session) -> None:
    """Hand the committed transaction's events to the sinks, and nudge the sealer."""
    committed = session.info.pop(PENDING_KEY, None)
    session.info.pop(SAVEPOINTS_KEY, None)
    if not committed or not has_app_context():
        return
    app = current_app
    registry: SinkRegistry | None = app.extensions.get(SINKS_KEY)
    if registry is not None and registry.sinks:
        registry.emit(_rendered(committed))
    sealer = app.extensions.get(SEALER_KEY)
    if sealer is not None and has_request_context():
        sealer.notify()


def _after_transaction_create(session: Session, transaction) -> None:
    """Remember how many events were pending when a SAVEPOINT began.

    The marks live until the outer transaction ends (a released SAVEPOINT's
    events belong to the outer one from then on).
    """
    if transaction.nested:
        marks = session.info.setdefault(SAVEPOINTS_KEY, {})
        marks[transaction] = len(session.info.get(PENDING_KEY, ()))


def _after_soft_rollback(session: Session, previous_transaction) -> None:
    """Events of a rolled-back transaction never existed; a SAVEPOINT drops only its own."""
    if previous_transaction is not None and previous_transaction.nested:
        mark = session.info.get(SAVEPOINTS_KEY, {}).pop(previous_transaction, None)
        pending = session.info.get(PENDING_KEY)
        if mark is not None and pending is not None:
            del pending[mark:]
        return
    session.info.pop(PENDING_KEY, None)
    session.info.pop(SAVEPOINTS_KEY, None)


LISTENERS = (
    ("before_commit", _before_commit),
    ("after_commit", _after_commit),
    ("after_transaction_create", _after_transaction_create),
    ("after_soft_rollback", _after_soft_rollback),
)


def init_app(app) -> None:
    """Install the commit hook (once per process), this app's sinks and its sealer.

    Automatic sealing (`AUDIT_SEAL_INTERVAL` > 0) is off under TESTING: tests
    seal explicitly, so no thread of one test's app writes into the next test.
    """
    for name, listener in LISTENERS:
        if not sa_event.contains(Session, name, listener):
            sa_event.listen(Session, name, listener)
    app.extensions[SINKS_KEY] = build_sinks(app.config)
    if app.config["AUDIT_SEAL_INTERVAL"] and not app.testing:
        from .audit_chain import BackgroundSealer

        app.extensions[SEALER_KEY] = BackgroundSealer(
            app,
            interval=app.config["AUDIT_SEAL_INTERVAL"],
            settle=app.config["AUDIT_SEAL_SETTLE"],
        )


def stop_background_sealing(app) -> None:
    """This app's commits no longer wake a sealer thread (a sealer process does the work)."""
    sealer = app.extensions.pop(SEALER_KEY, None)
    if sealer is not None:
        sealer.stop()


def sinks(app=None) -> SinkRegistry:
    """The sinks of this app (the current one by default)."""
    return (app or current_app).extensions[SINKS_KEY]
