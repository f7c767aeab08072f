"""Database wiring: the URL, SQLite tuning, and the one commit per request."""

import fcntl
import logging
import os
import sqlite3
import time
import weakref
from collections import namedtuple
from collections.abc import Iterable, Mapping

from flask import Response
from sqlalchemy import event, make_url
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql import Select

from .errors import render_http_error
from .extensions import db

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 10_000
# Waiting for the write lock: first pause and longest pause, seconds. A write
# transaction here lasts well under a millisecond, so waiters look again soon.
LOCK_POLL_FIRST = 0.00005
LOCK_POLL_MAX = 0.001


def database_url(app) -> str:
    """The configured URL, or SQLite in the instance folder (the embedded default)."""
    url = app.config["DATABASE_URL"]
    if url:
        return url
    os.makedirs(app.instance_path, exist_ok=True)
    return "sqlite:///" + os.path.join(app.instance_path, "authserver.db")


class _LockedSQLiteConnection(sqlite3.Connection):
    """A SQLite connection whose write transactions are serialised by a file lock.

    Workers of one server are separate processes writing one SQLite file. SQLite's
    own busy handler waits by sleeping (1, 2, 5, 10 ms ... up to 100 ms), which
    under load costs far more than the transactions themselves; an exclusive
    `flock` on a lock file beside the database, polled every 50 us to 1 ms, hands
    the lock on almost at once. The lock is taken when a transaction begins and
    dropped when it ends; a writer that cannot get it within the busy timeout
    fails with "database is locked", as SQLite itself would.
    """

    lock_path: str | None = None

    def _lock_fd(self) -> int:
        fd = getattr(self, "_fd", None)
        if fd is None:
            fd = self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        return fd

    def begin_immediate(self) -> None:
        """Take the file lock (waiting at most the busy timeout), then SQLite's write lock."""
        self._acquire()
        try:
            self.execute("BEGIN IMMEDIATE")
        except BaseException:
            fcntl.flock(self._lock_fd(), fcntl.LOCK_UN)
            raise

    def _acquire(self) -> None:
        """Poll the lock with short, growing pauses: a blocking flock could wait forever."""
        fd = self._lock_fd()
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
        pause = LOCK_POLL_FIRST
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise sqlite3.OperationalError("database is locked") from None
                time.sleep(pause)
                pause = min(pause * 2, LOCK_POLL_MAX)

    def _unlock(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._unlock()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._unlock()

    def close(self) -> None:
        try:
            super().close()
        finally:
            fd = getattr(self, "_fd", None)
            if fd is not None:
                self._fd = None
                os.close(fd)


def _sqlite_connect_args(url: str) -> dict:
    """Connections of a file database use the locking connection class."""
    path = make_url(url).database
    if not path or path == ":memory:":
        return {}
    factory = type(
        "LockedSQLiteConnection", (_LockedSQLiteConnection,), {"lock_path": path + ".lock"}
    )
    return {"factory": factory}


# Execution option of a connection that only reads: on SQLite its transaction begins
# deferred and takes neither the file lock nor the write lock (WAL readers never wait).
READ_ONLY = "authserver_read_only"


def read_only_connection():
    """A pooled connection of its own for reads that must not hold up writers (a context)."""
    return db.engine.connect().execution_options(**{READ_ONLY: True})


class DirectStatement:
    """A Core statement run straight on the driver's connection (sqlite3 or psycopg).

    For the statements every grant runs; on SQLite they run under the one write
    lock. SQLAlchemy's per-execution work (cache lookup, execution context,
    result object) costs several times what the database spends on such a
    statement. The statement is compiled once per dialect, with SQLAlchemy's
    own bind and result processors for its types, so the values going in and
    the row coming out are exactly those a Core execution would give. It runs
    in the connection's open transaction, like any statement of the session.
    """

    def __init__(self, statement, column_keys: Iterable[str] | None = None):
        self._statement = statement
        self._column_keys = list(column_keys) if column_keys is not None else None
        self._compiled: dict[str, tuple] = {}

    def _compile(self, dialect: Dialect) -> tuple:
        compiled = self._statement.compile(dialect=dialect, column_keys=self._column_keys)
        names = compiled.positiontup if compiled.positional else list(compiled.binds)
        binds = [
            (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in names
        ]
        row_type = processors = None
        if isinstance(self._statement, Select):
            columns = list(self._statement.selected_columns)
            row_type = namedtuple("DirectRow", [column.key for column in columns])
            processors = [
                column.type.dialect_impl(dialect).result_processor(dialect, None)
                for column in columns
            ]
        entry = (str(compiled), binds, compiled.positional, row_type, processors)
        self._compiled[dialect.name] = entry
        return entry

    def execute(self, connection: Connection, values: Mapping):
        """Run in the connection's transaction; the driver's cursor."""
        dialect = connection.dialect
        sql, binds, positional, _, _ = self._compiled.get(dialect.name) or self._compile(dialect)
        if positional:
            parameters = [
                values[name] if process is None else process(values[name])
                for name, process in binds
            ]
        else:
            parameters = {
                name: values[name] if process is None else process(values[name])
                for name, process in binds
            }
        return connection.connection.dbapi_connection.execute(sql, parameters)

    def first(self, connection: Connection, values: Mapping):
        """The first row, with named, processed columns like a Core row; or None."""
        raw = self.execute(connection, values).fetchone()
        if raw is None:
            return None
        _, _, _, row_type, processors = self._compiled[connection.dialect.name]
        return row_type._make(
            value if process is None else process(value)
            for value, process in zip(raw, processors, strict=True)
        )


def _tune_sqlite(engine: Engine) -> None:
    """WAL, foreign keys, a busy timeout, and BEGIN IMMEDIATE.

    Every grant writes (its audit event), so a transaction takes the write lock
    when it begins; a deferred BEGIN that later upgrades would fail at once
    under concurrency instead of waiting. A `READ_ONLY` connection is the
    exception: it begins deferred and must not write.
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
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")
            return
        dbapi_connection = connection.connection.dbapi_connection
        if isinstance(dbapi_connection, _LockedSQLiteConnection):
            dbapi_connection.begin_immediate()
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def engine_options(url: str) -> dict:
    """Engine options per backend.

    `hide_parameters`: a database error logged with its traceback names the
    statement but never the values bound to it.
    """
    if url.startswith("sqlite"):
        return {"connect_args": _sqlite_connect_args(url), "hide_parameters": True}
    return {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 5, "hide_parameters": True}


def commit_request(response: Response) -> Response:
    """The request wrapper commits once; a view or service never does.

    The one exception is a grant, which commits as soon as it is recorded (see
    `AuthServer._save_grant`).
    """
    if response.status_code >= 500:
        db.session.rollback()
        return response
    if not db.session().in_transaction():
        return response  # nothing was read or written, or it is committed already (a grant)
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
    with app.app_context():
        engine = db.engine
    if url.startswith("sqlite"):
        _tune_sqlite(engine)
    # An app that goes away (several are made in one process by the tests and the
    # CLI) closes its pooled connections instead of leaving them to the collector.
    weakref.finalize(app, engine.dispose)
    app.after_request(commit_request)
