"""Audit sinks: after a transaction commits, its events go to each configured sink.

There is one hook point, a SQLAlchemy `after_commit` listener on the session;
events of a rolled-back transaction are dropped with it. A sink that fails is
logged and counted, and never fails the request that made the event.
"""

import json
import logging
from collections.abc import Callable

from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from .services.audit import PENDING_KEY

log = logging.getLogger("authserver.audit")

Sink = Callable[[list[dict]], None]


def log_sink(events: list[dict]) -> None:
    """Write each event as one structured JSON log line."""
    if not log.isEnabledFor(logging.INFO):
        return
    for event in events:
        log.info(json.dumps({"audit": event}, separators=(",", ":"), sort_keys=True))


class SinkRegistry:
    """The sinks of this process and their failure counts."""

    def __init__(self) -> None:
        self.sinks: list[tuple[str, Sink]] = []
        self.failures: dict[str, int] = {}

    def add(self, name: str, sink: Sink) -> None:
        """Register a sink under a name."""
        self.sinks.append((name, sink))
        self.failures.setdefault(name, 0)

    def emit(self, events: list[dict]) -> None:
        """Hand committed events to every sink; a failing sink is counted, not raised."""
        for name, sink in self.sinks:
            try:
                sink(events)
            except Exception:  # noqa: BLE001 - a sink must never break the request
                self.failures[name] += 1
                log.exception("audit sink %s failed (%d failures)", name, self.failures[name])


registry = SinkRegistry()


def _after_commit(session: Session) -> None:
    """Hand the committed transaction's events (already rendered) to the sinks."""
    committed = session.info.pop(PENDING_KEY, None)
    if committed and registry.sinks:
        registry.emit(committed)


def _after_rollback(session: Session, _previous_transaction=None) -> None:
    """Events of a rolled-back transaction never existed."""
    session.info.pop(PENDING_KEY, None)


def init_app(app) -> None:
    """Install the commit hook and the configured sinks (once per process)."""
    if not sa_event.contains(Session, "after_commit", _after_commit):
        sa_event.listen(Session, "after_commit", _after_commit)
        sa_event.listen(Session, "after_soft_rollback", _after_rollback)
    if not registry.sinks:
        registry.add("log", log_sink)
