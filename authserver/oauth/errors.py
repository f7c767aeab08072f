"""OAuth errors (RFC 6749 section 5.2 JSON) that render themselves, carrying the audit reason."""

import re

from authlib.oauth2.rfc6749 import errors as rfc6749

# RFC 6749 section 5.2: error_description is %x20-21 / %x23-5B / %x5D-7E.
_NOT_ALLOWED = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")


def echo(value, limit: int = 40) -> str:
    """A client-supplied value made safe to quote in an error_description."""
    return _NOT_ALLOWED.sub("?", str(value)[:limit])


# One description for every invalid_client cause: which one applied is for the audit log only.
GENERIC_CLIENT_ERROR = "Client authentication failed"


class InvalidClient(rfc6749.InvalidClientError):
    """401 invalid_client with `WWW-Authenticate: Basic`, whatever the cause."""

    status_code = 401

    def __init__(self, reason: str, principal=None):
        super().__init__(description=GENERIC_CLIENT_ERROR)
        self.audit_reason = reason
        self.principal = principal

    def get_headers(self):
        """Challenge with Basic, the scheme clients are expected to use."""
        headers = [(k, v) for k, v in super().get_headers() if k != "WWW-Authenticate"]
        headers.append(("WWW-Authenticate", 'Basic realm="authserver", charset="UTF-8"'))
        return headers


class InvalidTarget(rfc6749.OAuth2Error):
    """RFC 8707: the requested resource is unknown or not allowed."""

    error = "invalid_target"
    status_code = 400


class RequestTooLarge(rfc6749.OAuth2Error):
    """The request body is over the size limit."""

    error = "invalid_request"
    status_code = 413
    description = "The request body is too large"
