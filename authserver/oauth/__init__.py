"""The OAuth layer: Authlib's server, our grant, client auth, token signing, revoke, introspect."""

import logging

from .introspection import TokenIntrospection
from .revocation import TokenRevocation
from .server import AuthServer

server = AuthServer()


def init_app(app) -> None:
    """Bind the authorization server to the app."""
    quiet_authlib()
    server.init_app(app)
    server.register_endpoint_once(TokenRevocation)
    server.register_endpoint_once(TokenIntrospection)


def quiet_authlib() -> None:
    """Keep Authlib's DEBUG records out of every log: they hold secrets.

    Authlib logs each token it issues, access token included ("Issue token
    {...} to ..."), at DEBUG on its own loggers. authserver never logs a token,
    but an operator's logging configuration that turns the root logger to
    DEBUG would pass those records on. INFO and above are kept.
    """
    authlib = logging.getLogger("authlib")
    if authlib.level < logging.INFO:  # NOTSET (0) would defer to the root logger
        authlib.setLevel(logging.INFO)
