"""Who may call the management API: the role matrix, token checks, and the denial audit."""

import time

import jwt
import pytest
from sqlalchemy import func, select

from authserver.extensions import db
from authserver.models import AuditEvent, Role, TechnicalUser
from authserver.services import api_tokens
from authserver.services.audit import CLI_ACTOR, NO_ORIGIN
from authserver.services.revocation import deny_access_token
from authserver.services.workspaces import grant_permission

from .conftest import (
    Mgmt,
    access_token_of,
    admin_mgmt,
    iso_in_days,
)

CALLERS = (
    "admin",
    "co_admin",
    "member",
    "viewer",
    "tech_admin",
    "tech_member",
    "tech_viewer",
    "other_admin",
    "expired",
    "revoked",
    "none",
)

# (name, method, path, body); {tu} is a technical user of the workspace, {pt} the admin's
# own personal token.
ROUTES = (
    ("list_tu", "GET", "/technicalusers", None),
    ("create_tu", "POST", "/technicalusers", "new_technical_user"),
    ("get_tu", "GET", "/technicalusers/{tu}", None),
    ("update_tu", "PUT", "/technicalusers/{tu}", {"description": "edited"}),
    ("replace_tu", "PUT", "/technicalusers/{tu}/replaceToken", None),
    ("delete_tu", "DELETE", "/technicalusers/{tu}", None),
    ("changelog_tu", "GET", "/technicalusers/{tu}/changelog", None),
    ("list_pt", "GET", "/apiTokens", None),
    ("create_pt", "POST", "/apiTokens", "new_personal_token"),
    ("get_pt", "GET", "/apiTokens/{pt}", None),
    ("update_pt", "PUT", "/apiTokens/{pt}", {"description": "edited"}),
    ("delete_pt", "DELETE", "/apiTokens/{pt}", None),
    ("events", "GET", "/events", None),
)

SUCCESS = {"GET": 200, "POST": 201, "PUT": 200, "DELETE": 204}
OBJECT_ROUTES = {"get_tu", "update_tu", "replace_tu", "delete_tu", "changelog_tu"}
PERSONAL_ROUTES = {"get_pt", "update_pt", "delete_pt"}


def expected_status(caller: str, route: str, method: str) -> int:
    """The status each caller must get from each route."""
    if caller == "admin":
        return SUCCESS[method]
    if caller == "co_admin":  # every admin manages every technical user, but not others' tokens
        return 404 if route in PERSONAL_ROUTES else SUCCESS[method]
    if caller == "other_admin":  # its own workspace: the objects of this one do not exist
        return 404 if route in OBJECT_ROUTES | PERSONAL_ROUTES else SUCCESS[method]
    if caller in ("member", "viewer", "tech_admin", "tech_member", "tech_viewer"):
        return 403
    return 401  # expired, revoked, none


def forge(app, real_token: str, claims: dict | None = None, header: dict | None = None, key=None):
    """Re-sign a real access token's claims (changed as given) with the server's key or `key`."""
    payload = {**jwt.decode(real_token, options={"verify_signature": False}), **(claims or {})}
    signing = app.extensions["authserver.keys"].active()
    headers = {"typ": "at+jwt", "kid": signing.kid, **(header or {})}
    algorithm = headers.pop("alg", signing.alg)
    return jwt.encode(payload, key or signing.private_key, algorithm=algorithm, headers=headers)


def denials() -> list[AuditEvent]:
    """MANAGEMENT_ACCESS_DENY events, oldest first."""
    query = select(AuditEvent).where(AuditEvent.type == "MANAGEMENT_ACCESS_DENY")
    return list(db.session.execute(query.order_by(AuditEvent.id)).scalars())


def demoted(client, factory, workspace, role: Role) -> Mgmt:
    """An admin who got an access token, then lost ADMIN."""
    caller = admin_mgmt(client, factory, workspace)
    grant_permission(caller.user, workspace, role)
    db.session.commit()
    return caller


def technical(client, factory, workspace, role: Role) -> Mgmt:
    """A technical user of `role` with an access token from its own API token."""
    _, _, secret = factory.technical_user(workspace, role)
    return Mgmt(client, access_token_of(client, secret))


def revoked_admin(client, factory, workspace) -> Mgmt:
    """An admin whose personal token was deleted after it got an access token."""
    caller = admin_mgmt(client, factory, workspace)
    token = api_tokens.get_personal_token(workspace.id, caller.user.id, _token_id(caller))
    api_tokens.delete_personal_token(workspace, token, actor=CLI_ACTOR, origin=NO_ORIGIN)
    db.session.commit()
    return caller


def expired_admin(app, admin: Mgmt) -> Mgmt:
    """The admin's access token, re-signed with a lifetime that ended an hour ago."""
    now = int(time.time())
    lifetime = {"iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}
    return Mgmt(admin.client, forge(app, admin.access_token, lifetime))


CALLER_BUILDERS = {
    "admin": lambda app, client, factory, admin: admin,
    "co_admin": lambda app, client, factory, admin: admin_mgmt(client, factory, admin.workspace),
    "member": lambda app, client, factory, admin: demoted(
        client, factory, admin.workspace, Role.MEMBER
    ),
    "viewer": lambda app, client, factory, admin: demoted(
        client, factory, admin.workspace, Role.VIEWER
    ),
    "tech_admin": lambda app, client, factory, admin: technical(
        client, factory, admin.workspace, Role.ADMIN
    ),
    "tech_member": lambda app, client, factory, admin: technical(
        client, factory, admin.workspace, Role.MEMBER
    ),
    "tech_viewer": lambda app, client, factory, admin: technical(
        client, factory, admin.workspace, Role.VIEWER
    ),
    "other_admin": lambda app, client, factory, admin: admin_mgmt(client, factory),
    "expired": lambda app, client, factory, admin: expired_admin(app, admin),
    "revoked": lambda app, client, factory, admin: revoked_admin(client, factory, admin.workspace),
    "none": lambda app, client, factory, admin: Mgmt(client),
}


@pytest.fixture
def world(app, client, factory, admin):
    """A workspace with an admin and a technical user; callers are built on demand."""
    technical_user, _, _ = factory.technical_user(admin.workspace, Role.MEMBER, name="existing")
    return {
        "caller": lambda name: CALLER_BUILDERS[name](app, client, factory, admin),
        "tu": technical_user.id,
        "pt": _token_id(admin),
    }


def _token_id(caller: Mgmt) -> str:
    return jwt.decode(caller.access_token, options={"verify_signature": False})["client_id"]


def _body(kind, counter=[0]):  # noqa: B006 - a counter shared by the matrix on purpose
    counter[0] += 1
    if kind == "new_technical_user":
        return {
            "userName": f"matrix-{counter[0]}",
            "permissionRole": "VIEWER",
            "apiTokenData": {"expiry": iso_in_days(10)},
        }
    if kind == "new_personal_token":
        return {"expiry": iso_in_days(10), "description": "matrix"}
    return kind


@pytest.mark.parametrize("caller_name", CALLERS)
@pytest.mark.parametrize(("route", "method", "path", "body"), ROUTES, ids=[r[0] for r in ROUTES])
def test_role_matrix(world, caller_name, route, method, path, body):
    """Every route answers each kind of caller as DESIGN section 2 says, and denials are audited."""
    caller = world["caller"](caller_name)
    url = path.format(tu=world["tu"], pt=world["pt"])
    before = len(denials())
    body = _body(body)
    response = caller.call(method, url, **({"json": body} if body is not None else {}))
    expected = expected_status(caller_name, route, method)
    assert response.status_code == expected, response.get_json()
    if expected == 204:
        assert response.data == b""
        return
    envelope = response.get_json()
    assert envelope["status"] == ("OK" if expected < 400 else "ERROR")
    assert response.headers["Cache-Control"] == "no-store"
    if expected == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    if expected in (401, 403):
        assert envelope["type"] == {401: "Unauthorized", 403: "Forbidden"}[expected]
        events = denials()
        assert len(events) == before + 1
        assert events[-1].payload["status"] == expected
        assert events[-1].payload["method"] == method
        assert events[-1].payload["path"] == "/services/mtm/v1" + url
    else:
        assert len(denials()) == before
    if expected >= 400:
        # A refused change changed nothing: the technical user is there, unedited.
        technical_user = db.session.get(TechnicalUser, world["tu"])
        db.session.refresh(technical_user)
        assert technical_user.deleted_at is None
        assert technical_user.description == ""


# --- the token checks one by one --------------------------------------------------------


def _deny_reason() -> str:
    return denials()[-1].payload["reason"]


def test_missing_and_malformed_authorization(client, admin):
    """No header, another scheme, an empty or two-part bearer: 401 with the challenge."""
    for header in (
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer a b"},
    ):
        response = client.get("/services/mtm/v1/technicalusers", headers=header)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == (
            'Bearer realm="authserver", error="invalid_token"'
        )
        assert response.get_json() == {
            "status": "ERROR",
            "type": "Unauthorized",
            "message": "A bearer access token is required",
            "errors": [],
            "total": None,
            "data": None,
        }
        assert _deny_reason() == "missing_token"


@pytest.mark.parametrize(
    ("claims", "header", "message"),
    [
        ({"iss": "https://evil.example.com"}, None, "issuer"),
        ({"exp": int(time.time()) - 3600}, None, "expired"),
        ({"nbf": int(time.time()) + 3600}, None, "not yet valid"),
        (None, {"typ": "JWT"}, "at+jwt"),
        (None, {"kid": "unknown"}, "key id"),
        ({"client_id": None}, None, "client_id"),
    ],
    ids=["issuer", "expired", "not-yet-valid", "typ", "kid", "claim-shape"],
)
def test_bad_tokens_are_401(app, admin, claims, header, message):
    """Every verification failure is a 401 naming the reason, audited as invalid_token."""
    token = forge(app, admin.access_token, claims, header)
    response = Mgmt(admin.client, token).get("/technicalusers")
    assert response.status_code == 401
    assert response.get_json()["message"].startswith("Invalid access token: ")
    assert message in response.get_json()["message"]
    assert _deny_reason() == "invalid_token"


def test_foreign_signature_is_401(app, admin):
    """A token signed by a key that is not ours (same kid claimed) is refused."""
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1())
    token = forge(app, admin.access_token, key=other)
    response = Mgmt(admin.client, token).get("/technicalusers")
    assert response.status_code == 401
    assert "signature" in response.get_json()["message"]


def test_hs256_and_none_are_refused(app, admin):
    """Algorithm confusion: an HMAC token keyed with the public key, or alg none, is refused."""
    public = app.extensions["authserver.keys"].jwks()["keys"][0]
    payload = jwt.decode(admin.access_token, options={"verify_signature": False})
    hs = jwt.encode(
        payload, str(public), algorithm="HS256", headers={"typ": "at+jwt", "kid": public["kid"]}
    )
    unsigned = jwt.encode(
        payload, None, algorithm="none", headers={"typ": "at+jwt", "kid": public["kid"]}
    )
    for token in (hs, unsigned):
        response = Mgmt(admin.client, token).get("/technicalusers")
        assert response.status_code == 401
        assert "algorithm" in response.get_json()["message"]


def test_token_for_other_apis_is_403(client, factory):
    """A human admin's token narrowed to another API lacks `mtm` in aud: 403, audited."""
    workspace, user, secret = factory.admin_token()
    token = access_token_of(client, secret, resource="pathfinder")
    response = Mgmt(client, token).get("/technicalusers")
    assert response.status_code == 403
    assert response.get_json()["message"] == (
        "This access token is not valid for the management API"
    )
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="authserver", error="insufficient_scope"'
    )
    event = denials()[-1]
    assert event.payload["reason"] == "wrong_audience"
    assert event.actor_id == user.id
    assert event.workspace_id == workspace.id


def test_technical_user_is_403_and_audited_with_actor(client, factory):
    """A technical user (whose token has no mtm audience) is refused; the log says who."""
    workspace = factory.workspace()
    technical_user, token, secret = factory.technical_user(workspace, Role.ADMIN)
    response = Mgmt(client, access_token_of(client, secret)).get("/technicalusers")
    assert response.status_code == 403
    event = denials()[-1]
    assert (event.actor_id, event.actor_technical) == (technical_user.id, True)
    assert event.target_id == token.id
    assert event.workspace_id == workspace.id


def test_technical_user_claim_with_mtm_audience_is_403(app, admin):
    """Even a technical user's token that somehow names mtm is refused."""
    payload = jwt.decode(admin.access_token, options={"verify_signature": False})
    principal = {**payload["principal"], "technicalUser": True}
    response = Mgmt(admin.client, forge(app, admin.access_token, {"principal": principal})).get(
        "/technicalusers"
    )
    assert response.status_code == 403
    assert _deny_reason() == "technical_user"


def test_non_admin_role_claim_is_403(app, admin):
    """A token whose permission role is not ADMIN is refused before any lookup."""
    payload = jwt.decode(admin.access_token, options={"verify_signature": False})
    principal = payload["principal"]
    principal["permission"]["role"] = "MEMBER"
    response = Mgmt(admin.client, forge(app, admin.access_token, {"principal": principal})).get(
        "/events"
    )
    assert response.status_code == 403
    assert _deny_reason() == "not_admin"


def test_denylisted_access_token_is_401(admin):
    """An access token revoked through RFC 7009 stops at once."""
    payload = jwt.decode(admin.access_token, options={"verify_signature": False})
    from datetime import UTC, datetime

    deny_access_token(
        payload["jti"], admin.workspace.id, datetime.fromtimestamp(payload["exp"], UTC)
    )
    db.session.commit()
    response = admin.get("/technicalusers")
    assert response.status_code == 401
    assert response.get_json()["message"] == "This access token was revoked"
    assert _deny_reason() == "access_token_revoked"


@pytest.mark.parametrize(
    ("change", "status", "reason"),
    [
        ("delete_token", 401, "token_revoked"),
        ("demote", 403, "owner_not_admin"),
        ("archive_permission", 403, "owner_not_admin"),
        ("archive_user", 401, "owner_not_active"),
        ("block_workspace", 401, "workspace_blocked"),
    ],
)
def test_live_recheck_stops_a_dead_credential_at_once(admin, change, status, reason):
    """The API token behind the access token is checked on every call, not at exp."""
    assert admin.get("/technicalusers").status_code == 200
    if change == "delete_token":
        token = api_tokens.get_personal_token(admin.workspace.id, admin.user.id, _token_id(admin))
        api_tokens.delete_personal_token(admin.workspace, token, actor=CLI_ACTOR, origin=NO_ORIGIN)
    elif change == "demote":
        grant_permission(admin.user, admin.workspace, Role.MEMBER)
    elif change == "archive_permission":
        permission = grant_permission(admin.user, admin.workspace, Role.ADMIN)
        permission.status = "ARCHIVED"
    elif change == "archive_user":
        admin.user.status = "ARCHIVED"
    else:
        admin.workspace.status = "BLOCKED"
    db.session.commit()
    response = admin.get("/technicalusers")
    assert response.status_code == status
    assert _deny_reason() == reason
    if status == 401:
        assert response.get_json()["message"] == (
            "The API token behind this access token is no longer valid"
        )


def test_read_scope_may_read_not_write(client, factory):
    """An admin token narrowed to `read` lists but may not create: 403 insufficient_scope."""
    _, _, secret = factory.admin_token()
    reader = Mgmt(client, access_token_of(client, secret, scope="read"))
    assert reader.get("/technicalusers").status_code == 200
    response = reader.post("/apiTokens", json={"expiry": iso_in_days(5)})
    assert response.status_code == 403
    assert response.get_json()["message"] == "This needs the write scope"
    assert _deny_reason() == "insufficient_scope"
    assert db.session.execute(select(func.count()).select_from(api_tokens.ApiToken)).scalar() == 1


def test_denial_commits_even_though_the_change_did_not(client, factory):
    """A refused write leaves no row, but its denial event is committed."""
    workspace = factory.workspace()
    _, _, secret = factory.technical_user(workspace, Role.ADMIN)
    caller = Mgmt(client, access_token_of(client, secret))
    body = {"userName": "x", "permissionRole": "ADMIN", "apiTokenData": {"expiry": iso_in_days(1)}}
    assert caller.post("/technicalusers", json=body).status_code == 403
    db.session.rollback()
    assert db.session.execute(select(func.count()).select_from(TechnicalUser)).scalar() == 1
    assert len(denials()) == 1


def test_openapi_is_public(client):
    """The OpenAPI document needs no token, and reading it is not a denial."""
    response = client.get("/services/mtm/v1/openapi.json")
    assert response.status_code == 200
    assert denials() == []


def test_key_rotation_is_seen_without_restart(app, test_config, tmp_path):
    """After a rotation, tokens of the new key and of the retiring one are both accepted."""
    from authserver import create_app
    from authserver.keys import ensure_active_key, rotate

    from .conftest import Factory

    ensure_active_key(tmp_path, "ES256")
    own_keys = create_app({**test_config, "KEYS_DIR": str(tmp_path), "TESTING": True})
    with own_keys.app_context():
        try:
            client = own_keys.test_client()
            _, _, secret = Factory(own_keys).admin_token()
            before = access_token_of(client, secret)
            assert Mgmt(client, before).get("/technicalusers").status_code == 200
            rotate(tmp_path, "ES256")
            own_keys.extensions["authserver.keys"].reload()
            after = access_token_of(client, secret)
            kids = {jwt.get_unverified_header(t)["kid"] for t in (before, after)}
            assert len(kids) == 2
            # The verifier built before the rotation is rebuilt for the new key set.
            for token in (after, before):
                assert Mgmt(client, token).get("/technicalusers").status_code == 200
        finally:
            db.session.remove()
            db.engine.dispose()
