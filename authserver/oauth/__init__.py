"""The OAuth layer: Authlib's server, our grant, client auth, token signing, revoke, introspect."""

from .introspection import TokenIntrospection
from .revocation import TokenRevocation
from .server import AuthServer

server = AuthServer()


def init_app(app) -> None:
    """Bind the authorization server to the app."""
    server.init_app(app)
    server.register_endpoint_once(TokenRevocation)
    server.register_endpoint_once(TokenIntrospection)
