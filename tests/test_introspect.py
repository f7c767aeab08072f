"""RFC 7662 introspection: what is active, what each caller may see, and bad requests."""

import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from authserver.extensions import db
from authserver.models import ApiToken, Permission, Role, TechnicalUser, Workspace

from .conftest import ISSUER, basic
from .oauth_helpers import (
    INTROSPECT_URL,
    access_token,
    claims_of,
    events,
    forge_hs256,
    forge_unsigned,
    introspect,
    is_active,
    resign,
    revoke,
)

INACTIVE = {"active": False}


def answer(client, caller_secret, token, **form) -> dict:
    response = introspect(client, caller_secret, token, **form)
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Type"] == "application/json"
    return response.get_json()


# --- access tokens ---------------------------------------------------------------------------


def test_active_access_token_carries_the_standard_members(client, factory):
    workspace, admin, secret = factory.admin_token()
    _, _, tu_secret = factory.technical_user(workspace, Role.VIEWER, name="reader")
    token = access_token(client, tu_secret)
    claims = claims_of(token)

    body = answer(client, secret, token)

    assert body == {
        "active": True,
        "scope": "read",
        "client_id": claims["client_id"],
        "username": "reader",
        "token_type": "bearer",
        "exp": claims["exp"],
        "iat": claims["iat"],
        "nbf": claims["nbf"],
        "sub": claims["sub"],
        "aud": ["integration-api", "webhooks", "graphql"],
        "iss": ISSUER,
        "jti": claims["jti"],
        "instanceUrl": ISSUER,
        "region": "eu",
        "principal": claims["principal"],
    }
    assert body["principal"]["technicalUser"] is True
    assert body["principal"]["permission"]["workspaceName"] == workspace.name


def test_a_technical_user_may_introspect_any_token_of_its_workspace(client, factory):
    workspace, _, admin_secret = factory.admin_token()
    _, _, tu_secret = factory.technical_user(workspace, Role.VIEWER)
    assert is_active(client, tu_secret, access_token(client, admin_secret))


def test_client_credentials_in_the_body(client, factory):
    _, _, secret = factory.admin_token()
    token = access_token(client, secret)
    data = {"token": token, "client_id": "apitoken", "client_secret": secret}
    assert client.post(INTROSPECT_URL, data=data).get_json()["active"] is True


@pytest.mark.parametrize("hint", ["access_token", "refresh_token", "bogus"])
def test_the_hint_changes_nothing(client, factory, hint):
    _, _, secret = factory.admin_token()
    token = access_token(client, secret)
    assert answer(client, secret, token, token_type_hint=hint)["active"] is True
    assert answer(client, secret, secret, token_type_hint=hint)["active"] is True


def test_revoked_access_token_is_inactive_at_once(client, factory):
    _, _, secret = factory.admin_token()
    token = access_token(client, secret)
    assert is_active(client, secret, token)
    revoke(client, secret, token)
    assert answer(client, secret, token) == INACTIVE


def test_expired_access_token_is_inactive(app, client, factory):
    _, _, secret = factory.admin_token()
    token = access_token(client, secret)
    now = int(time.time())
    assert answer(client, secret, resign(app, token, exp=now - 1)) == INACTIVE
    assert is_active(client, secret, resign(app, token, exp=now + 60))


def test_not_yet_valid_access_token_is_inactive(app, client, factory):
    _, _, secret = factory.admin_token()
    token = access_token(client, secret)
    assert answer(client, secret, resign(app, token, nbf=int(time.time()) + 120)) == INACTIVE
    # A second or two of clock difference between instances is tolerated.
    assert is_active(client, secret, resign(app, token, nbf=int(time.time()) + 2))


def revoke_api_token_directly(token_id: str) -> None:
    row = db.session.get(ApiToken, token_id)
    row.revoked_at = datetime.now(UTC) - timedelta(seconds=1)
    db.session.commit()


def test_access_token_whose_api_token_was_revoked_is_inactive(client, factory):
    workspace, _, secret = factory.admin_token()
    _, api_token, tu_secret = factory.technical_user(workspace)
    token = access_token(client, tu_secret)
    revoke_api_token_directly(api_token.id)
    assert answer(client, secret, token) == INACTIVE


def test_access_token_whose_api_token_expired_is_inactive(client, factory):
    workspace, _, secret = factory.admin_token()
    _, api_token, tu_secret = factory.technical_user(workspace)
    token = access_token(client, tu_secret)
    db.session.get(ApiToken, api_token.id).expires_at = datetime.now(UTC) - timedelta(seconds=1)
    db.session.commit()
    assert answer(client, secret, token) == INACTIVE


def test_access_token_of_a_deleted_technical_user_is_inactive(client, factory):
    workspace, _, secret = factory.admin_token()
    technical_user, _, tu_secret = factory.technical_user(workspace)
    token = access_token(client, tu_secret)
    db.session.get(TechnicalUser, technical_user.id).deleted_at = datetime.now(UTC)
    db.session.commit()
    assert answer(client, secret, token) == INACTIVE


def test_access_token_of_a_demoted_admin_is_inactive(client, factory):
    workspace, _, secret = factory.admin_token()
    _, other, other_secret = factory.admin_token(workspace)
    token = access_token(client, other_secret)
    permission = db.session.query(Permission).filter_by(user_id=other.id).one()
    permission.role = Role.MEMBER.value
    db.session.commit()
    assert answer(client, secret, token) == INACTIVE


def test_access_token_of_a_blocked_workspace_is_inactive(client, factory):
    workspace, _, secret = factory.admin_token()
    _, _, tu_secret = factory.technical_user(workspace)
    token = access_token(client, tu_secret)
    db.session.get(Workspace, workspace.id).status = "BLOCKED"
    db.session.commit()
    # The caller's own token is refused as well, so the question is never answered.
    assert introspect(client, secret, token).status_code == 401


def test_another_workspaces_access_token_is_inactive(client, factory):
    _, _, secret = factory.admin_token()
    _, _, other_secret = factory.admin_token()
    assert answer(client, secret, access_token(client, other_secret)) == INACTIVE


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda app, t: t[:-10], id="truncated"),
        pytest.param(lambda app, t: t + "x", id="garbled"),
        pytest.param(
            lambda app, t: resign(app, t, key=ec.generate_private_key(ec.SECP256R1())),
            id="other-key",
        ),
        pytest.param(lambda app, t: forge_unsigned(t), id="alg-none"),
        pytest.param(
            lambda app, t: forge_hs256(
                t,
                app.extensions["authserver.keys"]
                .active()
                .private_key.public_key()
                .public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                ),
            ),
            id="hs256-public-key",
        ),
        pytest.param(lambda app, t: resign(app, t, header={"typ": "JWT"}), id="typ-jwt"),
        pytest.param(lambda app, t: resign(app, t, header={"kid": "unknown"}), id="unknown-kid"),
        pytest.param(lambda app, t: resign(app, t, iss="https://evil.example"), id="other-iss"),
        pytest.param(lambda app, t: resign(app, t, drop=("jti",)), id="no-jti"),
        pytest.param(lambda app, t: resign(app, t, drop=("principal",)), id="no-principal"),
        pytest.param(lambda app, t: resign(app, t, principal="x"), id="bad-principal"),
        pytest.param(lambda app, t: resign(app, t, exp="soon"), id="exp-not-a-number"),
    ],
)
def test_forged_or_broken_access_tokens_are_inactive(app, client, factory, forge):
    _, _, secret = factory.admin_token()
    token = access_token(client, secret)
    assert answer(client, secret, forge(app, token)) == INACTIVE


def test_jwt_from_another_issuer_with_our_claims_is_inactive(client, factory):
    _, _, secret = factory.admin_token()
    claims = claims_of(access_token(client, secret))
    key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(claims, key, algorithm="ES256", headers={"typ": "at+jwt", "kid": "x"})
    assert answer(client, secret, token) == INACTIVE


@pytest.mark.parametrize("token", ["nope", "a.b.c", "lxt_" + "A" * 49, "é" * 10])
def test_unknown_tokens_are_inactive(client, factory, token):
    _, _, secret = factory.admin_token()
    assert answer(client, secret, token) == INACTIVE


# --- API tokens ------------------------------------------------------------------------------


def test_live_api_token_of_the_workspace_is_active(client, factory):
    workspace, admin, secret = factory.admin_token()
    technical_user, api_token, tu_secret = factory.technical_user(workspace, name="sync")

    body = answer(client, secret, tu_secret)

    assert body["active"] is True
    assert body["token_type"] == "api_token"
    assert body["client_id"] == api_token.id
    assert body["sub"] == technical_user.id
    assert body["username"] == "sync"
    assert body["scope"] == "read write"
    assert body["iss"] == ISSUER
    assert body["exp"] == int(api_token.expires_at.timestamp())
    assert body["principal"]["technicalUser"] is True
    assert body["principal"]["permission"]["role"] == "MEMBER"
    assert body["principal"]["permission"]["workspaceId"] == workspace.id
    assert tu_secret not in str(body)


def test_api_token_in_grace_period_ends_at_its_cut_off(client, factory):
    workspace, _, secret = factory.admin_token()
    _, api_token, tu_secret = factory.technical_user(workspace)
    cut_off = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
    db.session.get(ApiToken, api_token.id).revoked_at = cut_off
    db.session.commit()
    assert answer(client, secret, tu_secret)["exp"] == int(cut_off.timestamp())


def test_revoked_or_expired_api_token_is_inactive(client, factory):
    workspace, _, secret = factory.admin_token()
    _, revoked, revoked_secret = factory.technical_user(workspace)
    _, expired, expired_secret = factory.technical_user(workspace)
    revoke_api_token_directly(revoked.id)
    db.session.get(ApiToken, expired.id).expires_at = datetime.now(UTC) - timedelta(seconds=1)
    db.session.commit()
    assert answer(client, secret, revoked_secret) == INACTIVE
    assert answer(client, secret, expired_secret) == INACTIVE


def test_another_workspaces_api_token_is_inactive(client, factory):
    _, _, secret = factory.admin_token()
    other_workspace, _, other_secret = factory.admin_token()
    _, _, other_tu_secret = factory.technical_user(other_workspace)
    assert answer(client, secret, other_secret) == INACTIVE
    assert answer(client, secret, other_tu_secret) == INACTIVE


def test_a_caller_may_introspect_itself(client, factory):
    _, admin, secret = factory.admin_token()
    body = answer(client, secret, secret)
    assert body["active"] is True and body["sub"] == admin.id
    assert body["principal"]["technicalUser"] is False
    assert body["principal"]["permission"]["role"] == "ADMIN"


def test_introspection_writes_no_audit_event(client, factory):
    _, _, secret = factory.admin_token()
    token = access_token(client, secret)
    before = len(events("ACCESS_TOKEN_GRANT"))
    answer(client, secret, token)
    answer(client, secret, "unknown")
    assert len(events("ACCESS_TOKEN_GRANT")) == before
    assert events("ACCESS_TOKEN_DENY") == []


# --- bad requests ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, basic("lxt_" + "A" * 49), {"Authorization": "Basic !!!"}, basic("secret", "someone")],
)
def test_bad_client_auth_is_401_invalid_client(client, factory, headers):
    _, _, secret = factory.admin_token()
    token = access_token(client, secret)
    response = client.post(INTROSPECT_URL, data={"token": token}, headers=headers)
    assert response.status_code == 401
    assert response.get_json() == {
        "error": "invalid_client",
        "error_description": "Client authentication failed",
    }
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_failed_client_auth_is_audited(client, factory):
    client.post(INTROSPECT_URL, data={"token": "x"}, headers=basic("lxt_" + "A" * 49))
    [event] = events("ACCESS_TOKEN_DENY")
    assert event.payload == {
        "reason": "malformed_token",
        "error": "invalid_client",
        "endpoint": "introspect",
    }


def test_missing_token_is_400_invalid_request(client, factory):
    _, _, secret = factory.admin_token()
    response = client.post(INTROSPECT_URL, data={}, headers=basic(secret))
    assert response.status_code == 400
    assert response.get_json() == {"error": "invalid_request", "error_description": "Missing token"}


def test_token_in_the_query_string_is_refused(client, factory):
    _, _, secret = factory.admin_token()
    response = client.post(INTROSPECT_URL + "?token=abc", headers=basic(secret))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"


def test_wrong_content_type_and_method(client, factory):
    _, _, secret = factory.admin_token()
    response = client.post(INTROSPECT_URL, json={"token": "x"}, headers=basic(secret))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    assert client.get(INTROSPECT_URL).status_code == 405
