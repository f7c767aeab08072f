"""Helpers for the reliability tests that drive live servers: concurrency, crash, instances.

Every server listens on loopback only; every request has a timeout; every loop
is bounded in count and in time. Tests read the database through the `app`
fixture's session and must end that transaction (`db.session.rollback()`)
before they make HTTP calls, or a SQLite server waits on the write lock.
"""

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import requests
from sqlalchemy import select

from authserver.extensions import db
from authserver.models import ApiToken, AuditEvent

from .conftest import MTM, TOKEN_URL, LiveServer, basic, free_port, iso_in_days, server_env

TIMEOUT = 30
SERVER_ERRORS = ("Traceback", "[ERROR]", "[CRITICAL]")


def start_server(test_config: dict, log_path: Path, *, workers: int = 4, **settings) -> LiveServer:
    """`authserver serve` on a free loopback port over the test database and keys."""
    port = free_port()
    settings.setdefault("ISSUER", f"http://127.0.0.1:{port}")
    env = server_env(test_config, **settings)
    return LiveServer(env, port, workers=workers, log_path=log_path)


def server_errors(log_path: Path) -> list[str]:
    """Lines of a server log that show an error or a traceback (there must be none)."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return [line for line in text.splitlines() if any(mark in line for mark in SERVER_ERRORS)]


class Api:
    """One live server over HTTP. Thread-safe: no connection is shared between calls."""

    def __init__(self, url: str):
        self.url = url

    def grant(self, secret: str, **form) -> requests.Response:
        """The client-credentials grant with Basic apitoken:<secret>."""
        return requests.post(
            self.url + TOKEN_URL,
            data={"grant_type": "client_credentials", **form},
            headers=basic(secret),
            timeout=TIMEOUT,
        )

    def access_token(self, secret: str) -> str:
        """An access token for the API token; fail if refused."""
        response = self.grant(secret)
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def call(self, token: str, method: str, path: str, **kwargs) -> requests.Response:
        """A management API call with a bearer access token."""
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        return requests.request(
            method, self.url + MTM + path, headers=headers, timeout=TIMEOUT, **kwargs
        )

    def create_technical_user(self, token: str, user_name: str, role: str = "MEMBER"):
        """POST /technicalusers (the response, whatever its status)."""
        body = {
            "userName": user_name,
            "permissionRole": role,
            "apiTokenData": {"expiry": iso_in_days(5)},
        }
        return self.call(token, "POST", "/technicalusers", json=body)


def run_together(count: int, task: Callable[[int], object]) -> list:
    """Run `task(0..count-1)` on `count` threads released at the same moment; results in order."""
    barrier = threading.Barrier(count, timeout=TIMEOUT)

    def released(index: int):
        barrier.wait()
        return task(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(released, range(count)))


def statuses(responses) -> Counter:
    """How many responses had each status code."""
    return Counter(response.status_code for response in responses)


def events(*, workspace_id: str | None = None, types=(), target_id: str | None = None):
    """Committed audit events as plain rows, oldest first (the test's transaction is ended)."""
    table = AuditEvent.__table__
    query = select(table).order_by(table.c.id)
    if workspace_id is not None:
        query = query.where(table.c.workspace_id == workspace_id)
    if types:
        query = query.where(table.c.type.in_(types))
    if target_id is not None:
        query = query.where(table.c.target_id == target_id)
    return _rows(query)


def tokens_of(technical_user_id: str):
    """Every API token a technical user ever had, as plain rows (the transaction is ended)."""
    table = ApiToken.__table__
    return _rows(select(table).where(table.c.technical_user_id == technical_user_id))


def is_live(token, now: datetime) -> bool:
    """Whether a token row works at `now` (the rule of `ApiToken.is_live`)."""
    return token.expires_at > now and (token.revoked_at is None or token.revoked_at > now)


def _rows(query) -> list:
    db.session.rollback()
    try:
        return list(db.session.execute(query).all())
    finally:
        db.session.rollback()


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
