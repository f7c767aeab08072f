"""The token endpoint: the exchange, the JWT it returns, and every refusal."""

import base64
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from sqlalchemy import event, select

from authserver.extensions import db
from authserver.models import ApiToken, AuditEvent, Permission, Role, TechnicalUser, Workspace

from .conftest import ISSUER, TOKEN_URL, basic, exchange, in_days

ALL_APIS = [
    "mtm",
    "pathfinder",
    "integration-api",
    "webhooks",
    "graphql",
    "poll",
    "synclog",
    "storage",
    "metrics",
]
TECH_APIS = ["integration-api", "webhooks", "graphql"]
GENERIC = {"error": "invalid_client", "error_description": "Client authentication failed"}


def decode(client, access_token: str, audience: str = "mtm") -> dict:
    """Verify an access token against the served JWKS, every claim checked."""
    jwks = client.get("/.well-known/jwks.json").get_json()
    header = jwt.get_unverified_header(access_token)
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    return jwt.decode(
        access_token,
        key.key,
        algorithms=[key.algorithm_name],
        audience=audience,
        issuer=ISSUER,
        options={"require": ["exp", "iat", "nbf", "jti", "sub", "aud", "iss"]},
    )


def events(event_type: str) -> list[AuditEvent]:
    return list(
        db.session.execute(
            select(AuditEvent).where(AuditEvent.type == event_type).order_by(AuditEvent.id)
        ).scalars()
    )


# --- success -----------------------------------------------------------------------------


def test_personal_token_exchange_returns_the_leanix_response(client, factory):
    workspace, admin, secret = factory.admin_token()
    response = exchange(client, secret)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope", "expired"}
    assert body["token_type"] == "bearer"
    assert body["scope"] == "read write"
    assert body["expired"] is False
    assert 3590 <= body["expires_in"] <= 3600


def test_jwt_has_exactly_the_contract_header_and_claims(client, factory):
    workspace, admin, secret = factory.admin_token()
    token = exchange(client, secret).get_json()["access_token"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["typ"] == "at+jwt"
    jwks = client.get("/.well-known/jwks.json").get_json()
    assert header["kid"] in [k["kid"] for k in jwks["keys"]]

    claims = decode(client, token)
    token_row = db.session.execute(select(ApiToken).where(ApiToken.user_id == admin.id)).scalar()
    permission = db.session.execute(
        select(Permission).where(Permission.user_id == admin.id)
    ).scalar()
    assert set(claims) == {
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "nbf",
        "jti",
        "client_id",
        "scope",
        "instanceUrl",
        "region",
        "principal",
    }
    assert claims["iss"] == ISSUER
    assert claims["sub"] == admin.id
    assert claims["aud"] == ALL_APIS
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["nbf"] == claims["iat"]
    assert claims["client_id"] == token_row.id
    assert claims["scope"] == "read write"
    assert claims["instanceUrl"] == ISSUER
    assert claims["region"] == "eu"
    assert claims["principal"] == {
        "id": admin.id,
        "username": admin.user_name,
        "role": "ACCOUNTUSER",
        "status": "ACTIVE",
        "technicalUser": False,
        "account": {"id": workspace.account_id, "name": workspace.account.name},
        "permission": {
            "id": permission.id,
            "workspaceId": workspace.id,
            "workspaceName": workspace.name,
            "role": "ADMIN",
            "status": "ACTIVE",
        },
    }


def test_each_grant_has_a_fresh_jti(client, factory):
    _, _, secret = factory.admin_token()
    jtis = {
        decode(client, exchange(client, secret).get_json()["access_token"])["jti"] for _ in range(3)
    }
    assert len(jtis) == 3


@pytest.mark.parametrize(
    "role, scope", [(Role.ADMIN, "read write"), (Role.MEMBER, "read write"), (Role.VIEWER, "read")]
)
def test_technical_user_gets_its_role_scope_and_limited_audience(client, factory, role, scope):
    workspace = factory.workspace()
    technical_user, _, secret = factory.technical_user(workspace, role)
    body = exchange(client, secret).get_json()
    assert body["scope"] == scope
    claims = decode(client, body["access_token"], audience="graphql")
    assert claims["aud"] == TECH_APIS
    assert claims["sub"] == technical_user.id
    assert claims["principal"]["technicalUser"] is True
    assert claims["principal"]["username"] == technical_user.user_name
    assert claims["principal"]["permission"]["role"] == role.value
    assert claims["principal"]["permission"]["workspaceName"] == workspace.name


def test_client_credentials_in_the_form_body(client, factory):
    _, _, secret = factory.admin_token()
    response = client.post(
        TOKEN_URL,
        data={"grant_type": "client_credentials", "client_id": "apitoken", "client_secret": secret},
    )
    assert response.status_code == 200, response.get_json()


def test_grant_type_in_the_query_string_with_an_empty_body(client, factory):
    _, _, secret = factory.admin_token()
    response = client.post(TOKEN_URL + "?grant_type=client_credentials", headers=basic(secret))
    assert response.status_code == 200, response.get_json()


def test_scope_narrows_to_read(client, factory):
    _, _, secret = factory.admin_token()
    body = exchange(client, secret, scope="read").get_json()
    assert body["scope"] == "read"
    assert decode(client, body["access_token"])["scope"] == "read"


def test_resource_narrows_the_audience(client, factory):
    _, _, secret = factory.admin_token()
    body = exchange(client, secret, resource="pathfinder").get_json()
    assert decode(client, body["access_token"], audience="pathfinder")["aud"] == ["pathfinder"]


def test_resource_may_be_an_absolute_uri_and_repeat(client, factory):
    _, _, secret = factory.admin_token()
    response = client.post(
        TOKEN_URL,
        data={
            "grant_type": "client_credentials",
            "resource": [ISSUER + "/services/graphql/v1", "webhooks"],
        },
        headers=basic(secret),
    )
    assert response.status_code == 200, response.get_json()
    claims = decode(client, response.get_json()["access_token"], audience="graphql")
    assert claims["aud"] == ["graphql", "webhooks"]


# --- refusals by policy ----------------------------------------------------------------


def test_viewer_cannot_ask_for_write(client, factory):
    workspace = factory.workspace()
    _, _, secret = factory.technical_user(workspace, Role.VIEWER)
    response = exchange(client, secret, scope="read write")
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_scope"
    assert events("ACCESS_TOKEN_DENY")[-1].payload["reason"] == "invalid_scope"


@pytest.mark.parametrize("scope", ["admin", "read admin", "", "  "])
def test_unknown_or_empty_scope_is_invalid_scope(client, factory, scope):
    _, _, secret = factory.admin_token()
    response = exchange(client, secret, scope=scope)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_scope"


@pytest.mark.parametrize("resource", ["nope", "https://elsewhere.example/services/mtm"])
def test_unknown_resource_is_invalid_target(client, factory, resource):
    _, _, secret = factory.admin_token()
    response = exchange(client, secret, resource=resource)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_target"


def test_technical_user_cannot_target_the_management_api(client, factory):
    workspace = factory.workspace()
    _, _, secret = factory.technical_user(workspace, Role.ADMIN)
    response = exchange(client, secret, resource="mtm")
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_target"


def assert_refused(response, reason: str):
    assert response.status_code == 401
    assert response.get_json() == GENERIC
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert events("ACCESS_TOKEN_DENY")[-1].payload["reason"] == reason


def test_unknown_token_is_refused(client, factory):
    from authserver import tokens

    assert_refused(exchange(client, tokens.generate("lxt_").secret), "unknown_token")


def test_expired_token_is_refused(client, factory):
    workspace, admin, _ = factory.admin_token()
    token, secret = factory.personal_token(workspace, admin)
    token.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    db.session.commit()
    assert_refused(exchange(client, secret), "token_expired")
    denial = events("ACCESS_TOKEN_DENY")[-1]
    assert denial.workspace_id == workspace.id
    assert denial.target_id == token.id


def test_revoked_token_is_refused(client, factory):
    workspace, admin, _ = factory.admin_token()
    token, secret = factory.personal_token(workspace, admin)
    token.revoked_at = datetime.now(UTC)
    db.session.commit()
    assert_refused(exchange(client, secret), "token_revoked")


def test_token_in_grace_period_still_works(client, factory):
    workspace, admin, _ = factory.admin_token()
    token, secret = factory.personal_token(workspace, admin)
    token.revoked_at = datetime.now(UTC) + timedelta(minutes=5)
    db.session.commit()
    assert exchange(client, secret).status_code == 200


def test_deleted_technical_user_is_refused(client, factory):
    workspace = factory.workspace()
    technical_user, _, secret = factory.technical_user(workspace)
    db.session.get(TechnicalUser, technical_user.id).deleted_at = datetime.now(UTC)
    db.session.commit()
    assert_refused(exchange(client, secret), "technical_user_deleted")


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"role": "MEMBER"}, "owner_not_admin"),
        ({"role": "VIEWER"}, "owner_not_admin"),
        ({"status": "ARCHIVED"}, "owner_not_admin"),
    ],
)
def test_personal_token_of_an_owner_who_lost_admin_is_refused(client, factory, change, reason):
    workspace, admin, secret = factory.admin_token()
    permission = db.session.execute(
        select(Permission).where(Permission.user_id == admin.id)
    ).scalar()
    for name, value in change.items():
        setattr(permission, name, value)
    db.session.commit()
    assert_refused(exchange(client, secret), reason)


def test_personal_token_of_an_archived_user_is_refused(client, factory):
    workspace, admin, secret = factory.admin_token()
    admin.status = "ARCHIVED"
    db.session.commit()
    assert_refused(exchange(client, secret), "owner_not_active")


def test_blocked_workspace_is_refused(client, factory):
    workspace, admin, secret = factory.admin_token()
    db.session.get(Workspace, workspace.id).status = "BLOCKED"
    db.session.commit()
    assert_refused(exchange(client, secret), "workspace_blocked")


# --- malformed requests ------------------------------------------------------------------


def count_token_lookups(app):
    """Count SELECTs that touch api_tokens while the block runs."""
    seen = []

    def before(conn, cursor, statement, *args):
        if "api_tokens" in statement and statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    return seen, before


def test_bad_checksum_is_refused_without_a_lookup(app, client, factory):
    _, _, secret = factory.admin_token()
    damaged = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    seen, listener = count_token_lookups(app)
    event.listen(db.engine, "before_cursor_execute", listener)
    try:
        response = exchange(client, damaged)
    finally:
        event.remove(db.engine, "before_cursor_execute", listener)
    assert_refused(response, "malformed_token")
    assert seen == []


@pytest.mark.parametrize(
    "headers, reason",
    [
        ({}, "missing_credentials"),
        ({"Authorization": "Basic !!!not-base64!!!"}, "malformed_authorization_header"),
        (
            {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
            "malformed_authorization_header",
        ),
        (
            {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode()},
            "malformed_authorization_header",
        ),
        ({"Authorization": "Bearer something"}, "missing_credentials"),
        ({"Authorization": "Basic"}, "malformed_authorization_header"),
    ],
)
def test_missing_or_garbled_authorization(client, headers, reason):
    response = client.post(TOKEN_URL, data={"grant_type": "client_credentials"}, headers=headers)
    assert_refused(response, reason)


def test_wrong_client_id_is_refused(client, factory):
    _, _, secret = factory.admin_token()
    response = client.post(
        TOKEN_URL, data={"grant_type": "client_credentials"}, headers=basic(secret, user="admin")
    )
    assert_refused(response, "wrong_client_id")


def assert_bad_request(response, error="invalid_request", status=400):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"] == error
    assert body["error_description"]
    return body


def test_missing_grant_type(client, factory):
    _, _, secret = factory.admin_token()
    assert_bad_request(client.post(TOKEN_URL, data={}, headers=basic(secret)))


@pytest.mark.parametrize("grant_type", ["password", "authorization_code", "refresh_token", "x"])
def test_unknown_grant_type(client, factory, grant_type):
    _, _, secret = factory.admin_token()
    response = client.post(TOKEN_URL, data={"grant_type": grant_type}, headers=basic(secret))
    assert_bad_request(response, "unsupported_grant_type")
    assert events("ACCESS_TOKEN_DENY")[-1].payload["reason"] == "unsupported_grant_type"


def test_repeated_parameters(client, factory):
    _, _, secret = factory.admin_token()
    response = client.post(
        TOKEN_URL,
        data="grant_type=client_credentials&scope=read&scope=write",
        content_type="application/x-www-form-urlencoded",
        headers=basic(secret),
    )
    assert "repeated" in assert_bad_request(response)["error_description"]


def test_grant_type_in_query_and_body_counts_as_repeated(client, factory):
    _, _, secret = factory.admin_token()
    response = client.post(
        TOKEN_URL + "?grant_type=client_credentials",
        data={"grant_type": "client_credentials"},
        headers=basic(secret),
    )
    assert_bad_request(response)


def test_wrong_content_type(client, factory):
    _, _, secret = factory.admin_token()
    response = client.post(
        TOKEN_URL, json={"grant_type": "client_credentials"}, headers=basic(secret)
    )
    assert "Content-Type" in assert_bad_request(response)["error_description"]


def test_non_utf8_body(client, factory):
    _, _, secret = factory.admin_token()
    response = client.post(
        TOKEN_URL,
        data=b"grant_type=client_credentials&scope=\xff\xfe",
        content_type="application/x-www-form-urlencoded",
        headers=basic(secret),
    )
    assert_bad_request(response)


def test_huge_body_is_413_in_the_oauth_shape(client, factory):
    _, _, secret = factory.admin_token()
    response = client.post(
        TOKEN_URL,
        data="grant_type=client_credentials&x=" + "a" * 200_000,
        content_type="application/x-www-form-urlencoded",
        headers=basic(secret),
    )
    assert_bad_request(response, status=413)


def test_both_client_auth_methods_at_once(client, factory):
    _, _, secret = factory.admin_token()
    response = client.post(
        TOKEN_URL,
        data={"grant_type": "client_credentials", "client_id": "apitoken", "client_secret": secret},
        headers=basic(secret),
    )
    assert_bad_request(response)


def test_get_is_405_in_the_oauth_shape(client):
    response = client.get(TOKEN_URL)
    assert response.status_code == 405
    assert response.get_json()["error"] == "invalid_request"
    assert "POST" in response.headers["Allow"]


def test_unknown_path_is_json_404(client):
    response = client.get("/nothing-here")
    assert response.status_code == 404
    assert response.get_json()["error"] == "invalid_request"


# --- bookkeeping -------------------------------------------------------------------------


def test_grant_is_audited_without_the_secret(client, factory):
    workspace, admin, secret = factory.admin_token()
    response = exchange(client, secret, scope="read")
    access_token = response.get_json()["access_token"]
    grant = events("ACCESS_TOKEN_GRANT")[-1]
    assert grant.workspace_id == workspace.id
    assert grant.actor_id == admin.id
    assert grant.actor_technical is False
    assert grant.target_type == "API_TOKEN"
    assert grant.ip == "127.0.0.1"
    assert grant.payload["scope"] == "read"
    assert grant.payload["jti"] == decode(client, access_token)["jti"]
    flat = repr(grant.payload) + repr(grant.__dict__)
    assert secret not in flat
    assert access_token not in flat


def test_last_use_is_written_at_most_once_a_minute(client, factory):
    workspace, admin, _ = factory.admin_token()
    token, secret = factory.personal_token(workspace, admin)
    assert exchange(client, secret).status_code == 200
    db.session.expire_all()
    first = db.session.get(ApiToken, token.id).last_used_at
    assert first is not None
    assert db.session.get(ApiToken, token.id).last_used_ip == "127.0.0.1"
    db.session.rollback()
    assert exchange(client, secret).status_code == 200
    db.session.expire_all()
    assert db.session.get(ApiToken, token.id).last_used_at == first
    # Once the interval has passed, the next grant writes again.
    db.session.get(ApiToken, token.id).last_used_at = first - timedelta(minutes=2)
    db.session.commit()
    assert exchange(client, secret).status_code == 200
    db.session.expire_all()
    assert db.session.get(ApiToken, token.id).last_used_at > first - timedelta(minutes=1)


def test_expiry_is_required_by_the_schema(app, factory):
    workspace = factory.workspace()
    db.session.add(
        ApiToken(
            workspace_id=workspace.id,
            user_id=None,
            technical_user_id=None,
            secret_sha256="0" * 64,
            hint="abcd",
            expires_at=in_days(1),
        )
    )
    with pytest.raises(Exception, match="(?i)check|constraint"):
        db.session.flush()
    db.session.rollback()


def test_body_client_id_beside_basic_is_tolerated_when_it_matches(client, factory):
    _, _, secret = factory.admin_token()
    same = client.post(
        TOKEN_URL,
        data={"grant_type": "client_credentials", "client_id": "apitoken"},
        headers=basic(secret),
    )
    assert same.status_code == 200, same.get_json()
    other = client.post(
        TOKEN_URL,
        data={"grant_type": "client_credentials", "client_id": "someone"},
        headers=basic(secret),
    )
    assert_bad_request(other)


def test_non_ascii_parameter_names_are_quoted_safely(client, factory):
    _, _, secret = factory.admin_token()
    response = client.post(
        TOKEN_URL,
        data="%C2%B1=1&%C2%B1=2&grant_type=client_credentials",
        content_type="application/x-www-form-urlencoded",
        headers=basic(secret),
    )
    body = assert_bad_request(response)
    assert body["error_description"].isascii()
