"""Fixtures: `app`, `client`, `runner`, entity factories, and a live server.

The suite runs on SQLite by default and on PostgreSQL when
AUTHSERVER_TEST_DATABASE_URL is set (e.g. postgresql+psycopg://postgres@127.0.0.1/authserver_test).
The schema is built once per session through the Alembic migrations; each
test starts from empty tables.

On SQLite every transaction takes the write lock when it begins (BEGIN
IMMEDIATE), so a test that reads through `db.session` while a live server runs
must end its transaction (`db.session.rollback()` or `commit()`) before it
makes HTTP calls, or the server waits on the lock.
"""

import base64
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from authserver import create_app
from authserver.extensions import db
from authserver.keys import ensure_active_key
from authserver.models import Role
from authserver.services import api_tokens, technical_users, workspaces
from authserver.services.audit import CLI_ACTOR, NO_ORIGIN

ISSUER = "http://127.0.0.1:8080"
TOKEN_URL = "/services/mtm/v1/oauth2/token"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    """The test database: PostgreSQL if configured, else a SQLite file."""
    url = os.environ.get("AUTHSERVER_TEST_DATABASE_URL")
    if url:
        return url
    return "sqlite:///" + str(tmp_path_factory.mktemp("db") / "authserver.db")


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory) -> Path:
    """One signing key for the whole session."""
    path = tmp_path_factory.mktemp("keys")
    ensure_active_key(path, "ES256")
    return path


@pytest.fixture(scope="session")
def test_config(database_url, keys_dir) -> dict:
    """The configuration every test app starts from."""
    return {"DATABASE_URL": database_url, "KEYS_DIR": str(keys_dir), "ISSUER": ISSUER}


@pytest.fixture(scope="session")
def _schema(test_config):
    """Build the schema once, through the migrations."""
    from flask_migrate import downgrade, upgrade

    from authserver import MIGRATIONS_DIR

    app = create_app(test_config)
    with app.app_context():
        downgrade(directory=MIGRATIONS_DIR, revision="base")
        upgrade(directory=MIGRATIONS_DIR)
        db.engine.dispose()


def _empty_tables() -> None:
    for table in reversed(db.metadata.sorted_tables):
        db.session.execute(table.delete())
    db.session.commit()


@pytest.fixture
def app(test_config, _schema):
    """A fresh app over empty tables."""
    app = create_app({**test_config, "TESTING": True})
    with app.app_context():
        _empty_tables()
        yield app
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app):
    """The Flask test client."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """The Flask CLI runner."""
    return app.test_cli_runner()


def in_days(days: float) -> datetime:
    """A UTC time `days` from now."""
    return datetime.now(UTC) + timedelta(days=days)


class Factory:
    """Builds workspaces, users and credentials through the real services."""

    def __init__(self, app):
        self.app = app
        self._count = 0

    def _next(self) -> int:
        self._count += 1
        return self._count

    def workspace(self, name: str | None = None):
        """A new ACTIVE workspace with its account."""
        workspace, _ = workspaces.get_or_create_workspace(name or f"ws-{self._next()}")
        db.session.commit()
        return workspace

    def user(self, workspace, role: Role = Role.ADMIN, email: str | None = None):
        """A human user with `role` in the workspace."""
        user, _ = workspaces.get_or_create_user(
            email or f"user{self._next()}@example.com", workspace.account_id
        )
        workspaces.grant_permission(user, workspace, role)
        db.session.commit()
        return user

    def personal_token(self, workspace, user, expires_at=None, description="test"):
        """A personal API token; returns (ApiToken, secret)."""
        token, secret = api_tokens.create_personal_token(
            workspace,
            user,
            expires_at=expires_at or in_days(30),
            description=description,
            actor=CLI_ACTOR,
            origin=NO_ORIGIN,
        )
        db.session.commit()
        return token, secret

    def admin_token(self, workspace=None):
        """A workspace, an ADMIN in it and their personal token: (workspace, user, secret)."""
        workspace = workspace or self.workspace()
        user = self.user(workspace, Role.ADMIN)
        _, secret = self.personal_token(workspace, user)
        return workspace, user, secret

    def technical_user(self, workspace, role: Role = Role.MEMBER, name=None, expires_at=None):
        """A technical user; returns (TechnicalUser, ApiToken, secret)."""
        result = technical_users.create_technical_user(
            workspace,
            user_name=name or f"tech-{self._next()}",
            role=role,
            description="",
            expires_at=expires_at or in_days(30),
            token_description="",
            actor=CLI_ACTOR,
            origin=NO_ORIGIN,
        )
        db.session.commit()
        return result


@pytest.fixture
def factory(app) -> Factory:
    """Entity factory bound to the test app."""
    return Factory(app)


def basic(secret: str, user: str = "apitoken") -> dict:
    """An HTTP Basic Authorization header."""
    raw = base64.b64encode(f"{user}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def exchange(client, secret: str, **form):
    """POST the client-credentials grant with Basic apitoken:<secret>."""
    data = {"grant_type": "client_credentials", **form}
    return client.post(TOKEN_URL, data=data, headers=basic(secret))


# --- a real server process -------------------------------------------------------------


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """`authserver serve` in a subprocess, on loopback."""

    def __init__(self, env: dict, port: int, workers: int = 1, log_path: Path | None = None):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "authserver.cli",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            try:
                requests.get(self.url + "/.well-known/jwks.json", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        """Terminate and wait."""
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.log_path:
            self._log.close()


def server_env(test_config: dict, **extra) -> dict:
    """The environment for a server process sharing the test database and keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    env.update(
        AUTHSERVER_DATABASE_URL=test_config["DATABASE_URL"],
        AUTHSERVER_KEYS_DIR=test_config["KEYS_DIR"],
        **{f"AUTHSERVER_{k}": str(v) for k, v in extra.items()},
    )
    return env


@pytest.fixture
def live_server(app, test_config, tmp_path):
    """A running `authserver serve` over the test database (tables emptied by `app`)."""
    port = free_port()
    server = LiveServer(
        server_env(test_config, ISSUER=f"http://127.0.0.1:{port}"),
        port,
        log_path=tmp_path / "server.log",
    )
    yield server
    server.stop()


# --- the management API ------------------------------------------------------------------

MTM = "/services/mtm/v1"


def bearer(access_token: str) -> dict:
    """An `Authorization: Bearer` header."""
    return {"Authorization": f"Bearer {access_token}"}


def access_token_of(client, secret: str, **form) -> str:
    """Exchange an API token for an access token; fail the test if refused."""
    response = exchange(client, secret, **form)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["access_token"]


def iso_in_days(days: float) -> str:
    """An ISO 8601 UTC time `days` from now, ending in Z."""
    return in_days(days).isoformat().replace("+00:00", "Z")


class Mgmt:
    """The management API as one caller: a bearer access token (or none) and who it is."""

    def __init__(self, client, access_token: str | None = None, **identity):
        self.client = client
        self.access_token = access_token
        self.workspace = identity.get("workspace")
        self.user = identity.get("user")
        self.secret = identity.get("secret")

    def call(self, method: str, path: str, **kwargs):
        """One request to MTM + path with this caller's bearer token."""
        headers = bearer(self.access_token) if self.access_token else {}
        headers.update(kwargs.pop("headers", {}))
        return self.client.open(MTM + path, method=method, headers=headers, **kwargs)

    def get(self, path: str, **kwargs):
        """GET."""
        return self.call("GET", path, **kwargs)

    def post(self, path: str, **kwargs):
        """POST."""
        return self.call("POST", path, **kwargs)

    def put(self, path: str, **kwargs):
        """PUT."""
        return self.call("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs):
        """DELETE."""
        return self.call("DELETE", path, **kwargs)

    def create_technical_user(self, user_name: str, role: str = "MEMBER", **extra):
        """POST /technicalusers and return the created object (asserting 201)."""
        body = {
            "userName": user_name,
            "permissionRole": role,
            "apiTokenData": {"expiry": iso_in_days(30)},
            **extra,
        }
        response = self.post("/technicalusers", json=body)
        assert response.status_code == 201, response.get_json()
        return response.get_json()["data"]


def admin_mgmt(client, factory, workspace=None) -> Mgmt:
    """A new ADMIN (of `workspace`, or of a new one) calling the management API."""
    workspace, user, secret = factory.admin_token(workspace)
    token = access_token_of(client, secret)
    return Mgmt(client, token, workspace=workspace, user=user, secret=secret)


@pytest.fixture
def admin(client, factory) -> Mgmt:
    """A workspace ADMIN calling the management API."""
    return admin_mgmt(client, factory)
