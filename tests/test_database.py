"""Database wiring: a locked SQLite database answers 503, never 500 or a hang."""

import pytest

from authserver import database
from authserver.extensions import db

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
