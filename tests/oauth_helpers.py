"""Helpers shared by the revocation, introspection, key rotation and resource API tests."""

import base64
import hashlib
import hmac
import json

import jwt
from sqlalchemy import select

from authserver.extensions import db
from authserver.models import AuditEvent

from .conftest import basic, exchange

REVOKE_URL = "/services/mtm/v1/oauth2/revoke"
INTROSPECT_URL = "/services/mtm/v1/oauth2/introspect"


def access_token(client, secret: str, **form) -> str:
    """Exchange an API token for an access token; fail the test if refused."""
    response = exchange(client, secret, **form)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["access_token"]


def revoke(client, caller_secret: str, token: str, **form):
    """POST to the revocation endpoint as `caller_secret`."""
    return client.post(REVOKE_URL, data={"token": token, **form}, headers=basic(caller_secret))


def introspect(client, caller_secret: str, token: str, **form):
    """POST to the introspection endpoint as `caller_secret`."""
    return client.post(INTROSPECT_URL, data={"token": token, **form}, headers=basic(caller_secret))


def is_active(client, caller_secret: str, token: str) -> bool:
    """The `active` member of an introspection answer (which must be a 200)."""
    response = introspect(client, caller_secret, token)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["active"]


def events(event_type: str) -> list[AuditEvent]:
    """Audit events of one type, oldest first."""
    query = select(AuditEvent).where(AuditEvent.type == event_type).order_by(AuditEvent.id)
    return list(db.session.execute(query).scalars())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _segment(obj: dict) -> str:
    return _b64(json.dumps(obj, separators=(",", ":")).encode())


def claims_of(token: str) -> dict:
    """The claims of a JWT, unverified."""
    return jwt.decode(token, options={"verify_signature": False})


def resign(app, token: str, *, drop=(), header=None, key=None, **changes) -> str:
    """The token's claims with `changes` (and without `drop`), signed by the server's key."""
    claims = {k: v for k, v in {**claims_of(token), **changes}.items() if k not in drop}
    active = app.extensions["authserver.keys"].active()
    headers = {"typ": "at+jwt", "kid": active.kid, **(header or {})}
    return jwt.encode(claims, key or active.private_key, algorithm=active.alg, headers=headers)


def forge_unsigned(token: str) -> str:
    """The token with `alg: none` and no signature."""
    header = {**jwt.get_unverified_header(token), "alg": "none"}
    return f"{_segment(header)}.{_segment(claims_of(token))}."


def forge_hs256(token: str, secret: bytes) -> str:
    """The token re-signed with HS256 using `secret` (e.g. the public key PEM) as the HMAC key."""
    header = {**jwt.get_unverified_header(token), "alg": "HS256"}
    signing_input = f"{_segment(header)}.{_segment(claims_of(token))}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"
