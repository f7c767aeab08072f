"""Sinks: committed events only, a failing sink never fails a request, the webhook delivers."""

import hashlib
import hmac
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import func, select

from authserver import ConfigError, create_app
from authserver.audit_chain import BackgroundSealer, has_unsealed
from authserver.audit_sinks import SEALER_KEY, WebhookSink, sinks
from authserver.extensions import db
from authserver.models import AuditEvent
from authserver.services.audit import EventType, Target, record_event

from .conftest import Factory, exchange, free_port

WEBHOOK_SECRET = "s3cret-webhook-key-0123456789"


def event_ids() -> list[int]:
    ids = list(db.session.execute(select(AuditEvent.id).order_by(AuditEvent.id)).scalars())
    db.session.rollback()
    return ids


def note(number: int = 0) -> int:
    """Record one event in the current transaction (not committed)."""
    return record_event(
        EventType.APITOKEN_UPDATE,
        workspace=None,
        actor=None,
        target=Target(type="API_TOKEN", id=f"t-{number}"),
        payload={"n": number},
    )


@pytest.fixture
def captured(app):
    """A sink that keeps what it is given."""
    received: list[dict] = []
    sinks(app).add("capture", received.extend)
    return received


# --- atomicity -------------------------------------------------------------------------


def test_a_committed_event_reaches_the_sinks_with_its_id(app, captured, caplog):
    events_log = logging.getLogger("authserver.audit.events")
    events_log.addHandler(caplog.handler)
    try:
        event_id = note(1)
        db.session.commit()
    finally:
        events_log.removeHandler(caplog.handler)
    assert [event["id"] for event in captured] == [event_id]
    assert captured[0]["type"] == "APITOKEN_UPDATE"
    assert captured[0]["target"] == {"type": "API_TOKEN", "id": "t-1", "name": None}
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith('{"audit"')]
    assert json.loads(line)["audit"] == captured[0]


def test_an_event_of_a_rolled_back_transaction_does_not_exist_and_is_not_emitted(app, captured):
    note(1)
    db.session.rollback()
    assert event_ids() == []
    assert captured == []
    kept = note(2)
    db.session.commit()
    assert [event["id"] for event in captured] == [kept]


def test_a_rolled_back_savepoint_drops_only_its_own_events(app, captured):
    outer = note(1)
    savepoint = db.session.begin_nested()
    note(2)
    savepoint.rollback()
    with db.session.begin_nested():
        released = note(3)
    db.session.commit()
    assert event_ids() == [outer, released]
    assert [event["id"] for event in captured] == [outer, released]


def test_a_failed_request_leaves_no_event_and_emits_nothing(app, client, captured):
    @app.post("/test-audit-failure")
    def fails():
        note(1)
        raise RuntimeError("boom")

    @app.post("/test-audit-500")
    def answers_500():
        note(2)
        return {"error": "server"}, 500

    assert client.post("/test-audit-failure").status_code == 500
    assert client.post("/test-audit-500").status_code == 500
    assert event_ids() == []
    assert captured == []


def test_a_failing_sink_fails_neither_the_request_nor_the_record(app, client, factory, caplog):
    def broken(events):
        raise OSError("disk full")

    workspace, _, secret = factory.admin_token()
    sinks(app).add("broken", broken)
    before = len(event_ids())
    response = exchange(client, secret)
    assert response.status_code == 200
    assert len(event_ids()) == before + 1
    assert sinks(app).failures["broken"] == 1
    assert sinks(app).stats()["broken"] == {"failures": 1}
    assert "audit sink broken failed (1 failures)" in caplog.text
    assert secret not in caplog.text


# --- the webhook -----------------------------------------------------------------------


class Receiver:
    """A local HTTP endpoint that records what it is sent; answers from `statuses` in turn."""

    def __init__(self):
        self.bodies: list[bytes] = []
        self.headers: list[dict] = []
        self.statuses: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server hook name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.gate.wait(10)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status < 300:
                    receiver.bodies.append(body)
                    receiver.headers.append(dict(self.headers))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/audit?key=abc"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def event_ids(self) -> list[int]:
        return [event["id"] for body in self.bodies for event in json.loads(body)["events"]]

    def stop(self):
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    running = Receiver()
    yield running
    running.stop()


@pytest.fixture
def webhook_app(app, test_config):
    """An app whose sinks are the log and a webhook; yields a function to build it."""
    built = []

    def build(url, **settings):
        config = {
            **test_config,
            "TESTING": True,
            "AUDIT_SINKS": ("log", "webhook"),
            "AUDIT_WEBHOOK_URL": url,
            "AUDIT_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "AUDIT_WEBHOOK_RETRIES": 2,
            "AUDIT_WEBHOOK_TIMEOUT": 2,
            **settings,
        }
        own = create_app(config)
        context = own.app_context()
        context.push()
        built.append((own, context))
        return own

    yield build
    for own, context in reversed(built):
        sinks(own).close(5)
        db.session.remove()
        db.engine.dispose()
        context.pop()


def make_traffic(own) -> None:
    """Grants and a denial through the token endpoint, and a CLI-style change."""
    factory = Factory(own)
    client = own.test_client()
    workspace, _, secret = factory.admin_token()
    factory.technical_user(workspace)
    for _ in range(5):
        assert exchange(client, secret).status_code == 200
    assert exchange(client, "lxt_" + "x" * 49).status_code == 401


def test_the_webhook_receives_every_committed_event_signed(webhook_app, receiver):
    own = webhook_app(receiver.url)
    make_traffic(own)
    webhook = sinks(own).get("webhook")
    assert webhook.flush(10)
    assert sorted(receiver.event_ids) == event_ids()
    assert len(receiver.event_ids) >= 9
    assert webhook.stats == {
        "delivered": len(receiver.event_ids),
        "failed_attempts": 0,
        "dropped": 0,
    }
    for body, headers in zip(receiver.bodies, receiver.headers, strict=True):
        expected = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Authserver-Signature"] == f"sha256={expected}"
        assert headers["Content-Type"] == "application/json"


def test_the_webhook_retries_a_failed_delivery(webhook_app, receiver):
    own = webhook_app(receiver.url)
    receiver.statuses = [503, 429]
    note(1)
    db.session.commit()
    webhook = sinks(own).get("webhook")
    assert webhook.flush(15)
    assert receiver.event_ids == event_ids()
    assert webhook.stats == {"delivered": 1, "failed_attempts": 2, "dropped": 0}


def test_a_refused_delivery_is_not_retried(webhook_app, receiver, caplog):
    own = webhook_app(receiver.url)
    receiver.statuses = [400]
    event_id = note(1)
    db.session.commit()
    webhook = sinks(own).get("webhook")
    assert webhook.flush(10)
    assert webhook.stats == {"delivered": 0, "failed_attempts": 1, "dropped": 1}
    assert event_ids() == [event_id]
    assert f"gave up on 1 event(s) (ids {event_id} to {event_id}) after 1 attempt(s): HTTP 400" in (
        caplog.text
    )


def test_with_the_receiver_down_requests_succeed_and_the_database_keeps_everything(
    webhook_app, caplog
):
    port = free_port()  # nobody listens there
    own = webhook_app(f"http://127.0.0.1:{port}/hooks/audit?key=abc", AUDIT_WEBHOOK_RETRIES=1)
    make_traffic(own)  # every request asserts its own success
    stored = event_ids()
    assert len(stored) >= 9
    webhook = sinks(own).get("webhook")
    assert webhook.flush(20)
    assert webhook.stats["delivered"] == 0
    assert webhook.stats["dropped"] == len(stored)
    assert webhook.stats["failed_attempts"] >= 2
    assert sinks(own).stats()["webhook"]["dropped"] == len(stored)
    assert f"audit webhook http://127.0.0.1:{port}: attempt 1 of 2 failed" in caplog.text
    assert "gave up on" in caplog.text
    assert "key=abc" not in caplog.text and "/hooks/audit" not in caplog.text
    assert WEBHOOK_SECRET not in caplog.text


def test_a_full_queue_drops_and_counts_but_never_blocks(receiver, caplog):
    webhook = WebhookSink(receiver.url, queue_size=2, retries=0)
    receiver.gate.clear()  # the receiver holds the first batch
    try:
        webhook([{"id": 1}])
        deadline = time.monotonic() + 5
        while webhook._queue.qsize() and time.monotonic() < deadline:
            time.sleep(0.01)  # the sender took event 1 and waits on the receiver
        started = time.monotonic()
        webhook([{"id": n} for n in range(2, 7)])
        assert time.monotonic() - started < 0.5
        assert webhook.stats["dropped"] == 3
        assert "queue full, 3 event(s) not sent" in caplog.text
    finally:
        receiver.gate.set()
        webhook.close(5)
    assert receiver.event_ids == [1, 2, 3]


# --- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"AUTHSERVER_AUDIT_SINKS": "log,kafka"}, "names unknown sinks kafka"),
        ({"AUTHSERVER_AUDIT_SINKS": "webhook"}, "AUDIT_WEBHOOK_URL is not set"),
        ({"AUTHSERVER_AUDIT_WEBHOOK_URL": "https://siem.example/hook"}, "lacks webhook"),
        ({"AUTHSERVER_AUDIT_WEBHOOK_URL": "ftp://siem.example"}, "absolute http(s) URL"),
        ({"AUTHSERVER_AUDIT_WEBHOOK_SECRET": "short"}, "at least 16 characters"),
        ({"AUTHSERVER_AUDIT_WEBHOOK_RETRIES": "100"}, "between 0 and 20"),
        ({"AUTHSERVER_AUDIT_SEAL_INTERVAL": "-1"}, "AUDIT_SEAL_INTERVAL must be between"),
    ],
)
def test_bad_audit_settings_stop_startup(environ, message):
    from authserver.config import load_config

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(environ)


def test_audit_settings_parse():
    from authserver.config import load_config

    config = load_config(
        {
            "AUTHSERVER_AUDIT_SINKS": "webhook, log, webhook",
            "AUTHSERVER_AUDIT_WEBHOOK_URL": "https://siem.example/hook",
            "AUTHSERVER_AUDIT_SEAL_INTERVAL": "0",
        }
    )
    assert config["AUDIT_SINKS"] == ("webhook", "log")
    assert config["AUDIT_SEAL_INTERVAL"] == 0
    assert load_config({})["AUDIT_SINKS"] == ("log",)


# --- the background sealer -------------------------------------------------------------


def test_no_sealer_thread_under_testing_or_with_interval_zero(app, test_config):
    assert SEALER_KEY not in app.extensions
    own = create_app({**test_config, "AUDIT_SEAL_INTERVAL": 0})
    assert SEALER_KEY not in own.extensions
    own = create_app(test_config)
    assert isinstance(own.extensions[SEALER_KEY], BackgroundSealer)


def test_the_background_sealer_seals_after_a_nudge_and_rate_limits(app):
    for n in range(3):
        note(n)
    db.session.commit()
    sealer = BackgroundSealer(app, interval=5, settle=0)
    try:
        sealer.notify()
        sealer.notify()  # within the interval: no second run
        deadline = time.monotonic() + 10
        while has_unsealed() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not has_unsealed()
        time.sleep(0.2)
        assert (sealer.runs, sealer.failures) == (1, 0)
    finally:
        sealer.stop()
    sealed = db.session.execute(
        select(func.count()).select_from(AuditEvent).where(AuditEvent.chain_seq.isnot(None))
    ).scalar_one()
    db.session.rollback()
    assert sealed == 3
