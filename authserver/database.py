"""Database wiring: the URL, SQLite tuning, and the one commit per request."""

import logging
import os

from flask import Response
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from .errors import render_http_error
from .extensions import db

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 10_000


def database_url(app) -> str:
    """The configured URL, or SQLite in the instance folder (the embedded default)."""
    url = app.config["DATABASE_URL"]
    if url:
        return url
    os.makedirs(app.instance_path, exist_ok=True)
    return "sqlite:///" + os.path.join(app.instance_path, "authserver.db")


def _tune_sqlite(engine: Engine) -> None:
    """WAL, foreign keys, a busy timeout, and BEGIN IMMEDIATE.

    Every grant writes (its audit event), so a transaction takes the write lock
    when it begins; a deferred BEGIN that later upgrades would fail at once
    under concurrency instead of waiting for the busy timeout.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def engine_options(url: str) -> dict:
    """Engine options per backend."""
    if url.startswith("sqlite"):
        return {}
    return {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 5}


def commit_request(response: Response) -> Response:
    """The request wrapper commits once; a view or service never does."""
    if response.status_code >= 500:
        db.session.rollback()
        return response
    try:
        db.session.commit()
    except SQLAlchemyError:
        db.session.rollback()
        log.exception("commit failed")
        return render_http_error(503, "The change could not be saved; try again")
    return response


def init_app(app) -> None:
    """Bind SQLAlchemy and the commit wrapper."""
    url = database_url(app)
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(url)
    db.init_app(app)
    if url.startswith("sqlite"):
        with app.app_context():
            _tune_sqlite(db.engine)
    app.after_request(commit_request)
