"""The OAuth layer: Authlib's server, our grant, client authentication and token signing."""

from .server import AuthServer

server = AuthServer()


def init_app(app) -> None:
    """Bind the authorization server to the app."""
    server.init_app(app)
