"""Concurrent grants against a live server: every grant audited once, the chains verify.

On PostgreSQL: 8 threads x 200 grants over 4 workers, whose background sealers
run while the load runs. SQLite serialises writers, so it runs a smaller load.
"""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import func, select

from authserver.audit_chain import EVENTS, UNSEALED
from authserver.extensions import db
from authserver.models import AuditCheckpoint, Role

from .conftest import TOKEN_URL, LiveServer, basic, free_port, server_env

pytestmark = pytest.mark.slow


def start(test_config, tmp_path, workers: int) -> LiveServer:
    port = free_port()
    env = server_env(
        test_config,
        ISSUER=f"http://127.0.0.1:{port}",
        RATELIMIT_ENABLED="false",
        LOG_LEVEL="WARNING",
    )
    return LiveServer(env, port, workers=workers, log_path=tmp_path / "server.log")


def grant_many(url: str, secret: str, count: int) -> list[int]:
    """`count` grants in a row on one connection pool; their status codes."""
    statuses = []
    with requests.Session() as session:
        for _ in range(count):
            response = session.post(
                url + TOKEN_URL,
                data={"grant_type": "client_credentials"},
                headers=basic(secret),
                timeout=30,
            )
            statuses.append(response.status_code)
    return statuses


def grant_events() -> int:
    count = db.session.execute(
        select(func.count()).select_from(EVENTS).where(EVENTS.c.type == "ACCESS_TOKEN_GRANT")
    ).scalar_one()
    db.session.rollback()
    return count


def unsealed() -> int:
    count = db.session.execute(select(func.count()).select_from(EVENTS).where(*UNSEALED))
    result = count.scalar_one()
    db.session.rollback()
    return result


def secrets_in_two_workspaces(factory, count: int) -> list[str]:
    workspaces = [factory.workspace(), factory.workspace()]
    secrets = []
    for n in range(count):
        _, _, secret = factory.technical_user(workspaces[n % 2], Role.MEMBER)
        secrets.append(secret)
    db.session.rollback()  # no open transaction while the server writes
    return secrets


def test_concurrent_grants_are_each_audited_once_and_the_chains_verify(
    app, factory, runner, test_config, tmp_path
):
    postgres = db.engine.dialect.name == "postgresql"
    threads, per_thread = (8, 200) if postgres else (4, 25)
    secrets = secrets_in_two_workspaces(factory, threads)
    before = grant_events()
    server = start(test_config, tmp_path, workers=4)
    try:
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(lambda s: grant_many(server.url, s, per_thread), secrets))
    finally:
        server.stop()
    statuses = [status for result in results for status in result]
    assert statuses == [200] * (threads * per_thread)
    assert grant_events() - before == threads * per_thread

    sealed = runner.invoke(args=["audit", "seal", "--settle-seconds", "0"])
    assert sealed.exit_code == 0, sealed.output
    assert unsealed() == 0
    verified = runner.invoke(args=["audit", "verify"])
    assert verified.exit_code == 0, verified.output
    assert "all intact" in verified.output

    # Every chain is gapless: as many events as positions.
    for checkpoint in db.session.execute(select(AuditCheckpoint)).scalars():
        key = checkpoint.chain_key
        where = EVENTS.c.workspace_id.is_(None) if key == "-" else EVENTS.c.workspace_id == key
        count = db.session.execute(select(func.count()).select_from(EVENTS).where(where))
        assert count.scalar_one() == checkpoint.last_seq
    db.session.rollback()
    log = (tmp_path / "server.log").read_text(errors="replace")
    assert "Traceback" not in log


def test_a_live_server_seals_by_itself_after_requests(app, factory, runner, test_config, tmp_path):
    [secret] = secrets_in_two_workspaces(factory, 1)
    server = start(test_config, tmp_path, workers=2)
    try:
        assert grant_many(server.url, secret, 10) == [200] * 10
        # The settle delay is 2 s and the sealer comes back on its own: no request needed.
        deadline = time.monotonic() + 20
        while unsealed() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert unsealed() == 0
    finally:
        server.stop()
    verified = runner.invoke(args=["audit", "verify"])
    assert verified.exit_code == 0, verified.output
