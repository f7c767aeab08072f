"""authserver: API tokens and technical users exchanged for signed JWT access tokens."""

import logging
import os
from pathlib import Path

from flask import Flask

from .config import ConfigError, from_environment

MIGRATIONS_DIR = str(Path(__file__).resolve().parent.parent / "migrations")

__all__ = ["ConfigError", "create_app"]


def create_app(test_config: dict | None = None) -> Flask:
    """The application factory: config -> extensions -> oauth -> blueprints -> errors -> cli."""
    app = Flask(__name__, instance_relative_config=True)
    settings = from_environment(test_config)
    app.config.update(settings)
    app.config["MAX_CONTENT_LENGTH"] = settings["MAX_CONTENT_LENGTH"]
    app.config["MAX_FORM_MEMORY_SIZE"] = settings["MAX_CONTENT_LENGTH"]
    app.json.sort_keys = False
    logging.getLogger("authserver").setLevel(settings["LOG_LEVEL"])

    from . import audit_sinks, database, errors, ratelimit, security
    from .extensions import db, migrate

    database.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR, render_as_batch=True)
    audit_sinks.init_app(app)
    ratelimit.init_app(app)
    security.init_app(app)
    _init_keys(app)

    from . import oauth

    oauth.init_app(app)

    from .api import management, well_known
    from .api import oauth as oauth_views

    app.register_blueprint(oauth_views.bp)
    app.register_blueprint(well_known.bp)
    app.register_blueprint(management.bp)

    from . import console

    console.init_app(app)
    errors.init_app(app)

    from . import cli

    cli.init_app(app)
    return app


def _init_keys(app: Flask) -> None:
    """The key ring and the token issuer, parsed once per process on first use."""
    from .keys import KeyRing
    from .oauth.jwt_tokens import AccessTokenIssuer

    keys_dir = os.path.abspath(app.config["KEYS_DIR"])
    app.config["KEYS_DIR"] = keys_dir
    app.extensions["authserver.keys"] = _LazyKeyRing(keys_dir, KeyRing)
    app.extensions["authserver.issuer"] = AccessTokenIssuer(
        app.extensions["authserver.keys"], app.config
    )


class _LazyKeyRing:
    """Loads the key ring on first use, so `authserver init` can create the keys first."""

    def __init__(self, keys_dir: str, factory):
        self.keys_dir = keys_dir
        self._factory = factory
        self._ring = None

    def __getattr__(self, name):
        if self._ring is None:
            self._ring = self._factory(self.keys_dir)
        return getattr(self._ring, name)
