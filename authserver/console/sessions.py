"""Flask's signed-cookie sessions, for console paths only, Secure whenever the request is HTTPS."""

from flask import Flask, Request, request
from flask.sessions import SecureCookieSessionInterface

from . import secret


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """Sessions exist only under the console prefix; the API and token endpoints have none."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def _is_console(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")

    def open_session(self, app: Flask, request: Request):
        """A null session outside the console, so no other path reads or writes the cookie."""
        if not self._is_console(request.path):
            return None
        return super().open_session(app, request)

    def get_signing_serializer(self, app: Flask):
        """Load (or create) the secret key on first use."""
        secret.ensure(app)
        return super().get_signing_serializer(app)

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure when configured, and always on an HTTPS request."""
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure
