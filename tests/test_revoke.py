"""RFC 7009 revocation: who may revoke what, the denylist, the audit trail, and bad requests."""

import base64
import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from authserver.extensions import db
from authserver.models import ApiToken, RevokedAccessToken, Role
from authserver.services.revocation import is_access_token_revoked

from .conftest import basic, exchange
from .oauth_helpers import (
    REVOKE_URL,
    access_token,
    claims_of,
    events,
    is_active,
    resign,
    revoke,
)

GENERIC = {"error": "invalid_client", "error_description": "Client authentication failed"}


def api_token_row(token_id: str) -> ApiToken:
    db.session.expire_all()
    return db.session.get(ApiToken, token_id)


def denylisted(jti: str) -> bool:
    db.session.expire_all()
    return is_access_token_revoked(jti)


def assert_ok(response):
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {}
    assert response.headers["Cache-Control"] == "no-store"


# --- access tokens ---------------------------------------------------------------------------


def test_admin_revokes_its_own_access_token(client, factory):
    workspace, admin, secret = factory.admin_token()
    token = access_token(client, secret)
    jti = claims_of(token)["jti"]

    assert_ok(revoke(client, secret, token))

    assert denylisted(jti)
    row = db.session.get(RevokedAccessToken, jti)
    assert row.workspace_id == workspace.id
    assert int(row.expires_at.timestamp()) == claims_of(token)["exp"]
    assert not is_active(client, secret, token)
    # The API token itself is untouched: a new exchange still works.
    assert exchange(client, secret).status_code == 200


def test_revocation_is_audited_without_the_token(client, factory):
    workspace, admin, secret = factory.admin_token()
    token = access_token(client, secret)
    claims = claims_of(token)

    revoke(client, secret, token)

    [event] = events("ACCESS_TOKEN_REVOKE")
    assert event.workspace_id == workspace.id
    assert (event.actor_id, event.actor_technical) == (admin.id, False)
    assert (event.target_type, event.target_id) == ("ACCESS_TOKEN", claims["jti"])
    assert event.payload == {
        "kind": "access_token",
        "jti": claims["jti"],
        "exp": claims["exp"],
        "outcome": "revoked",
        "clientId": claims["client_id"],
        "owner": {"id": admin.id, "technicalUser": False},
    }
    assert token not in str(event.payload) and secret not in str(event.payload)
    assert event.ip == "127.0.0.1"


def test_revoking_twice_records_one_event(client, factory):
    _, _, secret = factory.admin_token()
    token = access_token(client, secret)
    assert_ok(revoke(client, secret, token))
    assert_ok(revoke(client, secret, token))
    assert len(events("ACCESS_TOKEN_REVOKE")) == 1


def test_client_credentials_in_the_body(client, factory):
    _, _, secret = factory.admin_token()
    token = access_token(client, secret)
    data = {"token": token, "client_id": "apitoken", "client_secret": secret}
    assert_ok(client.post(REVOKE_URL, data=data))
    assert denylisted(claims_of(token)["jti"])


@pytest.mark.parametrize("hint", ["access_token", "refresh_token", "api_token", "something"])
def test_the_hint_is_optional_and_never_misleads(client, factory, hint):
    _, _, secret = factory.admin_token()
    token = access_token(client, secret)
    assert_ok(revoke(client, secret, token, token_type_hint=hint))
    assert denylisted(claims_of(token)["jti"])


def test_technical_user_revokes_its_own_access_token(client, factory):
    workspace = factory.workspace()
    _, _, tu_secret = factory.technical_user(workspace)
    token = access_token(client, tu_secret)
    assert_ok(revoke(client, tu_secret, token))
    assert denylisted(claims_of(token)["jti"])


def test_admin_revokes_a_technical_users_access_token(client, factory):
    workspace, _, admin_secret = factory.admin_token()
    _, _, tu_secret = factory.technical_user(workspace)
    token = access_token(client, tu_secret)
    assert_ok(revoke(client, admin_secret, token))
    assert denylisted(claims_of(token)["jti"])


def test_admin_cannot_revoke_another_admins_access_token(client, factory):
    workspace, _, secret = factory.admin_token()
    _, other, other_secret = factory.admin_token(workspace)
    token = access_token(client, other_secret)

    assert_ok(revoke(client, secret, token))

    assert not denylisted(claims_of(token)["jti"])
    assert is_active(client, other_secret, token)
    [event] = events("ACCESS_TOKEN_REVOKE")
    refused = {"kind": "access_token", "outcome": "refused", "reason": "not_permitted"}
    assert event.payload == refused
    assert (event.target_type, event.target_id) == ("ACCESS_TOKEN", claims_of(token)["jti"])


@pytest.mark.parametrize("victim", ["admin", "other_technical_user"])
def test_technical_user_cannot_revoke_others_access_tokens(client, factory, victim):
    workspace, _, admin_secret = factory.admin_token()
    _, _, tu_secret = factory.technical_user(workspace, Role.ADMIN)
    if victim == "admin":
        victim_secret = admin_secret
    else:
        victim_secret = factory.technical_user(workspace)[2]
    token = access_token(client, victim_secret)

    assert_ok(revoke(client, tu_secret, token))

    assert not denylisted(claims_of(token)["jti"])


def test_another_workspaces_access_token_is_ignored_silently(client, factory):
    _, _, secret = factory.admin_token()
    other_workspace, _, other_secret = factory.admin_token()
    _, _, other_tu_secret = factory.technical_user(other_workspace)
    for victim in (other_secret, other_tu_secret):
        token = access_token(client, victim)
        assert_ok(revoke(client, secret, token))
        assert not denylisted(claims_of(token)["jti"])
    assert events("ACCESS_TOKEN_REVOKE") == []


def test_expired_access_token_needs_no_denylist_row(app, client, factory):
    _, _, secret = factory.admin_token()
    past = int(time.time()) - 60
    token = resign(app, access_token(client, secret), exp=past, iat=past - 3600, nbf=past - 3600)
    assert_ok(revoke(client, secret, token))
    assert not denylisted(claims_of(token)["jti"])
    assert events("ACCESS_TOKEN_REVOKE") == []


@pytest.mark.parametrize(
    "token",
    [
        "not-a-token",
        "a.b.c",
        "lxt_" + "A" * 49,
        "x" * 4000,
    ],
)
def test_unknown_tokens_are_a_quiet_200(client, factory, token):
    _, _, secret = factory.admin_token()
    assert_ok(revoke(client, secret, token))
    assert events("ACCESS_TOKEN_REVOKE") == []


def test_access_token_signed_by_another_key_is_unknown(app, client, factory):
    _, _, secret = factory.admin_token()
    token = access_token(client, secret)
    forged = resign(app, token, key=ec.generate_private_key(ec.SECP256R1()))
    assert_ok(revoke(client, secret, forged))
    assert not denylisted(claims_of(token)["jti"])


# --- API tokens ------------------------------------------------------------------------------


def test_technical_user_revokes_its_own_api_token(client, factory):
    workspace = factory.workspace()
    technical_user, api_token, tu_secret = factory.technical_user(workspace)

    assert_ok(revoke(client, tu_secret, tu_secret))

    row = api_token_row(api_token.id)
    assert row.revoked_at is not None and row.revoke_reason == "revoked"
    assert exchange(client, tu_secret).status_code == 401
    [event] = events("ACCESS_TOKEN_REVOKE")
    assert (event.target_type, event.target_id, event.target_name) == (
        "API_TOKEN",
        api_token.id,
        technical_user.user_name,
    )
    assert event.payload == {
        "kind": "api_token",
        "tokenId": api_token.id,
        "hint": api_token.hint,
        "outcome": "revoked",
        "owner": {"id": technical_user.id, "technicalUser": True},
    }
    assert tu_secret not in str(event.payload)


def test_admin_revokes_a_technical_users_api_token(client, factory):
    workspace, _, admin_secret = factory.admin_token()
    _, api_token, tu_secret = factory.technical_user(workspace)
    issued = access_token(client, tu_secret)

    assert_ok(revoke(client, admin_secret, tu_secret))

    assert api_token_row(api_token.id).revoke_reason == "revoked"
    assert exchange(client, tu_secret).status_code == 401
    # Access tokens exchanged from it stop introspecting as active at once.
    assert not is_active(client, admin_secret, issued)


def test_admin_revokes_its_own_personal_token(client, factory):
    workspace, admin, secret = factory.admin_token()
    assert_ok(revoke(client, secret, secret))
    assert exchange(client, secret).status_code == 401


def test_admin_cannot_revoke_another_admins_personal_token(client, factory):
    workspace, _, secret = factory.admin_token()
    _, _, other_secret = factory.admin_token(workspace)
    assert_ok(revoke(client, secret, other_secret))
    assert exchange(client, other_secret).status_code == 200
    [event] = events("ACCESS_TOKEN_REVOKE")
    assert event.payload["outcome"] == "refused"


def test_technical_user_cannot_revoke_other_api_tokens(client, factory):
    workspace, _, admin_secret = factory.admin_token()
    _, _, tu_secret = factory.technical_user(workspace, Role.ADMIN)
    _, _, other_tu_secret = factory.technical_user(workspace)
    for victim in (admin_secret, other_tu_secret):
        assert_ok(revoke(client, tu_secret, victim))
        assert exchange(client, victim).status_code == 200


def test_another_workspaces_api_token_is_ignored_silently(client, factory):
    _, _, secret = factory.admin_token()
    other_workspace, _, other_secret = factory.admin_token()
    _, _, other_tu_secret = factory.technical_user(other_workspace)
    for victim in (other_secret, other_tu_secret):
        assert_ok(revoke(client, secret, victim))
        assert exchange(client, victim).status_code == 200
    assert events("ACCESS_TOKEN_REVOKE") == []


def test_a_token_in_its_grace_period_is_cut_off_now(client, factory):
    workspace, _, admin_secret = factory.admin_token()
    _, api_token, tu_secret = factory.technical_user(workspace)
    row = db.session.get(ApiToken, api_token.id)
    row.revoked_at = datetime.now(UTC) + timedelta(hours=1)
    row.revoke_reason = "replaced"
    db.session.commit()
    assert exchange(client, tu_secret).status_code == 200

    assert_ok(revoke(client, admin_secret, tu_secret))

    row = api_token_row(api_token.id)
    assert row.revoked_at <= datetime.now(UTC) and row.revoke_reason == "revoked"
    assert exchange(client, tu_secret).status_code == 401


def test_an_already_revoked_api_token_is_a_quiet_200(client, factory):
    workspace, _, admin_secret = factory.admin_token()
    _, _, tu_secret = factory.technical_user(workspace)
    assert_ok(revoke(client, admin_secret, tu_secret))
    assert_ok(revoke(client, admin_secret, tu_secret))
    assert len(events("ACCESS_TOKEN_REVOKE")) == 1


# --- the denylist is pruned ------------------------------------------------------------------


def add_expired_denylist_row(workspace_id: str) -> str:
    row = RevokedAccessToken(
        jti="expired-jti",
        workspace_id=workspace_id,
        expires_at=datetime.now(UTC) - timedelta(seconds=1),
    )
    db.session.add(row)
    db.session.commit()
    return row.jti


def test_each_revocation_prunes_expired_denylist_rows(client, factory):
    workspace, _, secret = factory.admin_token()
    add_expired_denylist_row(workspace.id)
    token = access_token(client, secret)

    revoke(client, secret, token)

    db.session.expire_all()
    jtis = db.session.execute(select(RevokedAccessToken.jti)).scalars().all()
    assert jtis == [claims_of(token)["jti"]]


def test_prune_denylist_command(runner, client, factory):
    workspace, _, secret = factory.admin_token()
    add_expired_denylist_row(workspace.id)
    live = access_token(client, secret)
    revoke(client, secret, live)
    add_expired_denylist_row(workspace.id)
    db.session.rollback()

    result = runner.invoke(args=["tokens", "prune-denylist"])

    assert result.exit_code == 0, result.output
    assert "pruned 1 expired denylist entry" in result.output
    db.session.expire_all()
    assert db.session.execute(select(RevokedAccessToken.jti)).scalars().all() == [
        claims_of(live)["jti"]
    ]


# --- bad requests ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("lxt_" + "A" * 49),
        {"Authorization": "Basic !!!"},
        {"Authorization": "Bearer abc"},
    ],
)
def test_bad_client_auth_is_401_invalid_client(client, factory, headers):
    _, _, secret = factory.admin_token()
    token = access_token(client, secret)
    response = client.post(REVOKE_URL, data={"token": token}, headers=headers)
    assert response.status_code == 401
    assert response.get_json() == GENERIC
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert not denylisted(claims_of(token)["jti"])


def test_wrong_client_id_and_revoked_caller_are_401(client, factory):
    workspace, _, secret = factory.admin_token()
    _, _, tu_secret = factory.technical_user(workspace)
    token = access_token(client, secret)
    wrong_id = client.post(REVOKE_URL, data={"token": token}, headers=basic(secret, "someone"))
    assert wrong_id.status_code == 401
    revoke(client, tu_secret, tu_secret)
    assert revoke(client, tu_secret, token).status_code == 401


def test_failed_client_auth_is_audited_as_a_denial(client, factory):
    workspace, _, admin_secret = factory.admin_token()
    _, _, tu_secret = factory.technical_user(workspace)
    revoke(client, admin_secret, tu_secret)
    assert revoke(client, tu_secret, "whatever").status_code == 401
    [event] = events("ACCESS_TOKEN_DENY")
    assert event.workspace_id == workspace.id
    assert event.payload == {
        "reason": "token_revoked",
        "error": "invalid_client",
        "endpoint": "revoke",
    }


def test_missing_token_is_400_invalid_request(client, factory):
    _, _, secret = factory.admin_token()
    for data in ({}, {"token": ""}, {"token_type_hint": "access_token"}):
        response = client.post(REVOKE_URL, data=data, headers=basic(secret))
        assert response.status_code == 400
        assert response.get_json() == {
            "error": "invalid_request",
            "error_description": "Missing token",
        }
    assert events("ACCESS_TOKEN_DENY") == []


def test_token_in_the_query_string_is_refused(client, factory):
    _, _, secret = factory.admin_token()
    token = access_token(client, secret)
    response = client.post(REVOKE_URL + "?token=" + token, headers=basic(secret))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    assert not denylisted(claims_of(token)["jti"])


def test_bad_client_auth_wins_over_a_missing_token(client):
    response = client.post(REVOKE_URL, data={}, headers=basic("lxt_nope"))
    assert response.status_code == 401
    assert response.get_json() == GENERIC


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": "token=a&token=b", "content_type": "application/x-www-form-urlencoded"},
        {"json": {"token": "a"}},
        {"data": b"token=\xff", "content_type": "application/x-www-form-urlencoded"},
    ],
)
def test_malformed_requests_are_400_in_the_oauth_shape(client, factory, kwargs):
    _, _, secret = factory.admin_token()
    response = client.post(REVOKE_URL, headers=basic(secret), **kwargs)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    assert response.headers["Cache-Control"] == "no-store"


def test_get_is_405_in_the_oauth_shape(client):
    response = client.get(REVOKE_URL)
    assert response.status_code == 405
    assert response.get_json()["error"] == "invalid_request"


# --- never a 500 -----------------------------------------------------------------------------


def _segments(*parts: bytes) -> str:
    return ".".join(base64.urlsafe_b64encode(p).rstrip(b"=").decode() for p in parts)


ODD_TOKENS = [
    "\x00",
    "lxt_\x00" + "A" * 48,
    "a" * 60_000,
    _segments(b"not json", b"{}", b"sig"),
    _segments(b'{"alg":"ES256","typ":"at+jwt","kid":["x"]}', b"[]", b"sig"),
    _segments(b'{"alg":"ES256","typ":"at+jwt","kid":{"a":1}}', b'{"exp":1e400}', b""),
    _segments(b'{"alg":["ES256"],"typ":7}', b"null", b"x"),
    "..",
    "é.é.é",
]


@pytest.mark.parametrize("url", [REVOKE_URL, "/services/mtm/v1/oauth2/introspect"])
@pytest.mark.parametrize("token", ODD_TOKENS, ids=range(len(ODD_TOKENS)))
def test_odd_tokens_never_cause_a_500(client, factory, url, token):
    _, _, secret = factory.admin_token()
    response = client.post(url, data={"token": token}, headers=basic(secret))
    assert response.status_code in (200, 413), response.get_data(as_text=True)[:200]
    if response.status_code == 200:
        assert response.get_json() in ({}, {"active": False})
