"""Database wiring: a locked SQLite database answers 503, never 500 or a hang; statements
run straight on the driver give exactly what their Core execution gives."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from authserver import database
from authserver.extensions import db
from authserver.models import AuditEvent, Role
from authserver.services import credentials

from .conftest import exchange


def test_a_held_write_lock_gives_503_after_the_busy_timeout(app, client, factory, monkeypatch):
    if not db.engine.url.get_backend_name() == "sqlite":
        pytest.skip("the file lock is the SQLite embedded default's")
    _, _, secret = factory.admin_token()
    monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT_MS", 200)
    holder = db.engine.connect()
    holder.begin()  # BEGIN IMMEDIATE under the file lock, as a busy writer would
    try:
        response = exchange(client, secret)
    finally:
        holder.rollback()
        holder.close()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.get_json()["error"] == "temporarily_unavailable"
    assert exchange(client, secret).status_code == 200


def core_and_direct(statement, values: dict) -> tuple[dict | None, dict | None]:
    """One statement's first row as a Core execution and as a DirectStatement give it."""
    connection = db.session.connection()
    core = connection.execute(statement, values).first()
    direct = database.DirectStatement(statement).first(connection, values)
    db.session.rollback()
    return (
        None if core is None else dict(core._mapping),
        None if direct is None else direct._asdict(),
    )


def test_a_direct_statement_reads_the_row_a_core_execution_reads(factory):
    workspace, user, _ = factory.admin_token()
    personal, _ = factory.personal_token(workspace, user)
    _, technical, _ = factory.technical_user(workspace, Role.VIEWER)
    personal.revoked_at = datetime.now(UTC)
    db.session.commit()
    for token_id in (personal.id, technical.id):
        core, direct = core_and_direct(credentials._BY_ID, {"value": token_id})
        assert direct == core
        # Same types too: aware datetimes, enum members, None for the other owner's columns.
        assert {k: type(v) for k, v in direct.items()} == {k: type(v) for k, v in core.items()}
    assert core_and_direct(credentials._BY_ID, {"value": "no-such-token"}) == (None, None)


def test_a_direct_insert_stores_what_a_core_insert_stores(app):
    table = AuditEvent.__table__
    values = {
        "type": "ACCESS_TOKEN_GRANT",
        "created_at": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        "workspace_id": "3f1c2d8e-0000-4000-8000-000000000001",
        "workspace_name": "wörkspace",
        "actor_id": "actor",
        "actor_user_name": "bench",
        "actor_technical": True,
        "target_type": "API_TOKEN",
        "target_id": None,
        "target_name": None,
        "ip": "127.0.0.1",
        "user_agent": None,
        "payload": {"aud": ["mtm"], "exp": 1, "nested": {"ok": False, "none": None}},
    }
    connection = db.session.connection()
    core_id = connection.execute(table.insert().returning(table.c.id), values).scalar_one()
    statement = database.DirectStatement(table.insert().returning(table.c.id), list(values))
    direct_id = statement.execute(connection, values).fetchone()[0]
    db.session.commit()
    rows = {
        row.id: {k: v for k, v in row._mapping.items() if k != "id"}
        for row in db.session.execute(select(table).where(table.c.id.in_([core_id, direct_id])))
    }
    assert rows[direct_id] == rows[core_id]
    assert rows[direct_id]["created_at"] == values["created_at"]
