"""The key that signs console session cookies.

It is AUTHSERVER_SECRET_KEY when set. Otherwise it is generated once into
`KEYS_DIR/session-secret` (mode 0600) and read from there: the keys folder is
already shared by every worker and mounted on every instance (DESIGN section
7), so a session cookie made by one instance is accepted by all of them, and a
restart does not sign everyone out. `authserver init` and `authserver serve`
create the file before any worker starts; a worker that still finds none
creates it itself, and concurrent creators agree on one file (link, not rename).
"""

import os
import secrets
from pathlib import Path

from flask import Flask

SECRET_FILE = "session-secret"  # noqa: S105 (a file name, not a secret)
MIN_LENGTH = 32


class SecretKeyError(RuntimeError):
    """The session secret file is missing and cannot be made, or is unusable."""


def _read(path: Path) -> str:
    value = path.read_text().strip()
    if len(value) < MIN_LENGTH:
        raise SecretKeyError(f"{path} holds fewer than {MIN_LENGTH} characters")
    return value


def load_or_create(keys_dir: str | Path) -> str:
    """The secret in keys_dir/session-secret, generated (0600) if the file does not exist."""
    path = Path(keys_dir) / SECRET_FILE
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48) + "\n")
        try:
            os.link(tmp, path)  # atomic, and fails if another process got there first
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    except OSError as error:
        raise SecretKeyError(
            f"cannot create {path} ({error.strerror}); set AUTHSERVER_SECRET_KEY "
            "or make the keys folder writable for `authserver init`"
        ) from None
    return _read(path)


def ensure(app: Flask) -> None:
    """Give the app its secret key now (from configuration or the keys folder)."""
    if not app.secret_key:
        app.secret_key = load_or_create(app.config["KEYS_DIR"])


def init_app(app: Flask) -> None:
    """Use AUTHSERVER_SECRET_KEY if configured; otherwise the file is read on first use."""
    app.secret_key = app.config.get("SECRET_KEY")
