"""The admin console under /admin, through the Flask test client."""

import re
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from sqlalchemy import func, select

from authserver import passwords
from authserver.extensions import db
from authserver.models import ApiToken, AuditEvent, Permission, Role, Status, TechnicalUser
from authserver.services.api_tokens import token_status

from .conftest import admin_mgmt, exchange

PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
TOKEN = re.compile(r'id="new-token"[^>]*value="([^"]+)"')
COOKIE = "authserver_console"


@pytest.fixture(scope="module")
def password_hash() -> str:
    """One argon2id hash for every test user (hashing is deliberately slow)."""
    return passwords.hash_password(PASSWORD)


@pytest.fixture
def people(factory, password_hash):
    """Make users with the shared password: people(workspace, role) -> user."""

    def make(workspace=None, role=Role.ADMIN, email=None):
        workspace = workspace or factory.workspace()
        user = factory.user(workspace, role, email=email)
        user.password_hash = password_hash
        db.session.commit()
        return user

    return make


def csrf_token(client, path="/admin/login") -> str:
    """The CSRF token in the form of a console page."""
    response = client.get(path)
    match = CSRF.search(response.get_data(as_text=True))
    assert match, response.get_data(as_text=True)[:500]
    return match.group(1)


def sign_in(client, email, password=PASSWORD, **extra):
    """POST the sign-in form with the session's CSRF token."""
    data = {"email": email, "password": password, "csrf_token": csrf_token(client), **extra}
    return client.post("/admin/login", data=data, headers={"User-Agent": "console-test/1"})


def post(client, path, data=None, csrf_from=None):
    """POST a console form with a CSRF token taken from `csrf_from` (or `path`)."""
    token = csrf_token(client, csrf_from or path)
    return client.post(path, data={**(data or {}), "csrf_token": token})


@pytest.fixture
def signed_in(client, people):
    """A client signed in as the ADMIN of a workspace: (client, user, workspace)."""
    user = people()
    response = sign_in(client, user.user_name)
    assert response.status_code == 302, response.get_data(as_text=True)
    workspace = db.session.execute(
        select(Permission).where(Permission.user_id == user.id)
    ).scalar_one()
    from authserver.models import Workspace

    return client, user, db.session.get(Workspace, workspace.workspace_id)


def events(type_: str) -> list[AuditEvent]:
    """Every audit event of a type, oldest first."""
    db.session.expire_all()
    query = select(AuditEvent).where(AuditEvent.type == type_).order_by(AuditEvent.id)
    return list(db.session.execute(query).scalars())


def count(model) -> int:
    """Rows of a table."""
    return db.session.execute(select(func.count()).select_from(model)).scalar_one()


def in_days_date(days: int) -> str:
    """A date `days` from today (UTC), as <input type=date> sends it."""
    return (datetime.now(UTC) + timedelta(days=days)).date().isoformat()


def create_technical_user(client, name="crm-sync", role="MEMBER", days=30, **extra):
    """Submit Create Technical User; returns the response."""
    data = {"name": name, "role": role, "expiry": in_days_date(days), **extra}
    return post(client, "/admin/technical-users/new", data)


def shown_token(response) -> str:
    """The token shown once on the page."""
    match = TOKEN.search(response.get_data(as_text=True))
    assert match, response.get_data(as_text=True)[:2000]
    return match.group(1)


def text(response) -> str:
    """The page's text with HTML entities of quotes decoded."""
    return response.get_data(as_text=True).replace("&#34;", '"').replace("&#39;", "'")


# --- signing in -----------------------------------------------------------------------------


def test_login_page_has_security_headers_and_a_scoped_httponly_lax_cookie(client):
    response = client.get("/admin/login")
    assert response.status_code == 200
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(COOKIE + "=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/admin" in cookie
    assert "Secure" not in cookie


def test_the_cookie_is_secure_on_https(client):
    response = client.get("/admin/login", base_url="https://localhost")
    assert "Secure" in response.headers["Set-Cookie"]


def test_other_paths_get_no_session_cookie(client):
    response = client.get("/.well-known/jwks.json")
    assert "Set-Cookie" not in response.headers


def test_an_admin_signs_in_and_the_sign_in_is_audited(client, people):
    user = people()
    response = sign_in(client, user.user_name.upper())
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/"
    page = client.get("/admin/")
    assert page.status_code == 200
    assert "Administration" in text(page) and user.user_name in text(page)
    [event] = events("CONSOLE_LOGIN")
    assert event.actor_id == user.id and event.actor_user_name == user.user_name
    assert event.workspace_id is not None
    assert event.ip == "127.0.0.1" and event.user_agent == "console-test/1"


def test_a_wrong_password_is_refused_and_audited(client, people):
    user = people()
    response = sign_in(client, user.user_name, "not the password at all")
    assert response.status_code == 400
    assert "The email or password is wrong." in text(response)
    assert client.get("/admin/").status_code == 302  # still signed out
    [event] = events("CONSOLE_LOGIN_DENY")
    assert event.payload == {"reason": "wrong_password", "method": "password"}
    assert event.actor_id == user.id and event.ip == "127.0.0.1"
    assert "not the password" not in str(event.payload) + str(event.actor_user_name)
    assert events("CONSOLE_LOGIN") == []


def test_an_unknown_email_gets_the_same_answer_and_a_typed_password_is_not_logged(client):
    response = sign_in(client, "nobody@example.com", "whatever-password")
    assert response.status_code == 400
    assert "The email or password is wrong." in text(response)
    sign_in(client, "my-secret-password", "whatever-password")
    first, second = events("CONSOLE_LOGIN_DENY")
    assert first.payload["reason"] == "unknown_user"
    assert first.actor_user_name == "nobody@example.com"
    assert second.actor_user_name is None  # not an email: it may be a password typed too early


def test_empty_fields_are_reported_next_to_them(client):
    response = post(client, "/admin/login", {"email": "", "password": ""})
    assert response.status_code == 400
    page = text(response)
    assert 'id="email-error"' in page and "Email is required." in page
    assert "Password is required." in page
    assert events("CONSOLE_LOGIN_DENY") == []


def test_sign_ins_are_rate_limited_per_email(app, client, people):
    app.config["CONSOLE_LOGIN_ATTEMPTS"] = 3
    user = people()
    for _ in range(3):
        assert sign_in(client, user.user_name, "wrong password here").status_code == 400
    response = sign_in(client, user.user_name)  # even the right password, for now
    assert response.status_code == 429
    assert response.headers["Retry-After"] == str(app.config["CONSOLE_LOGIN_WINDOW"])
    assert "Too many failed sign-ins" in text(response)
    assert client.get("/admin/").status_code == 302
    reasons = [event.payload["reason"] for event in events("CONSOLE_LOGIN_DENY")]
    assert reasons == ["wrong_password"] * 3 + ["rate_limited"]
    # Another person signing in from elsewhere is not affected.
    other = people()
    app.config["CONSOLE_LOGIN_ATTEMPTS_PER_IP"] = 100
    assert sign_in(client, other.user_name).status_code == 302


def test_sign_ins_are_rate_limited_per_address(app, client, people):
    app.config["CONSOLE_LOGIN_ATTEMPTS_PER_IP"] = 2
    for n in range(2):
        sign_in(client, f"guess{n}@example.com", "wrong password here")
    user = people()
    assert sign_in(client, user.user_name).status_code == 429


def test_a_member_cannot_enter_and_is_told_why(client, people):
    member = people(role=Role.MEMBER)
    response = sign_in(client, member.user_name)
    assert response.status_code == 403
    page = text(response)
    assert "You cannot enter the administration" in page
    assert "only <strong>active admins</strong>" in page and "MEMBER of workspace" in page
    assert client.get("/admin/technical-users").status_code == 302
    [event] = events("CONSOLE_LOGIN_DENY")
    assert event.payload["reason"] == "not_admin"


def test_an_archived_admin_permission_does_not_enter(client, people):
    user = people()
    permission = db.session.execute(
        select(Permission).where(Permission.user_id == user.id)
    ).scalar_one()
    permission.status = Status.ARCHIVED.value
    db.session.commit()
    response = sign_in(client, user.user_name)
    assert response.status_code == 403
    assert "(archived)" in text(response)


def test_an_admin_demoted_while_signed_in_is_out_at_the_next_click(signed_in):
    client, user, workspace = signed_in
    permission = db.session.execute(
        select(Permission).where(Permission.user_id == user.id)
    ).scalar_one()
    permission.role = Role.VIEWER.value
    db.session.commit()
    response = client.get("/admin/technical-users")
    assert response.status_code == 302 and response.headers["Location"] == "/admin/workspace"
    denied = client.get("/admin/workspace")
    assert denied.status_code == 403
    assert client.get("/admin/").status_code == 302


def test_a_new_password_signs_out_existing_sessions(signed_in):
    client, user, _ = signed_in
    user.password_hash = passwords.hash_password("a completely new password")
    db.session.commit()
    response = client.get("/admin/technical-users")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/admin/login")


def test_sign_out_is_audited_and_ends_the_session(signed_in):
    client, user, _ = signed_in
    response = post(client, "/admin/logout", csrf_from="/admin/")
    assert response.status_code == 302 and response.headers["Location"] == "/admin/login"
    assert "You are signed out." in text(client.get("/admin/login"))
    assert client.get("/admin/").status_code == 302
    [event] = events("CONSOLE_LOGOUT")
    assert event.actor_id == user.id


def test_an_admin_of_several_workspaces_picks_one(client, factory, people):
    first, second = factory.workspace("alpha"), factory.workspace("beta")
    user = people(first)
    factory.user(second, Role.ADMIN, email=user.user_name)
    response = sign_in(client, user.user_name)
    assert response.headers["Location"] == "/admin/workspace"
    chooser = client.get("/admin/workspace")
    assert "alpha" in text(chooser) and "beta" in text(chooser)
    response = post(client, "/admin/workspace", {"workspace": second.id})
    assert response.status_code == 302
    assert "Workspace <strong>beta</strong>" in text(client.get("/admin/"))
    [event] = events("CONSOLE_LOGIN")
    assert event.workspace_id == second.id
    refused = post(client, "/admin/workspace", {"workspace": "not-mine"})
    assert refused.status_code == 400


def test_next_only_returns_inside_the_console(client, people):
    user = people()
    response = sign_in(client, user.user_name, next="https://evil.example/")
    assert response.headers["Location"] == "/admin/"
    client.post("/admin/logout", data={"csrf_token": csrf_token(client, "/admin/")})
    response = sign_in(client, user.user_name, next="/admin/audit-log")
    assert response.headers["Location"] == "/admin/audit-log"


# --- CSRF -----------------------------------------------------------------------------------


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(signed_in):
    client, _, _ = signed_in
    before = count(AuditEvent)
    data = {"name": "sneaky", "role": "ADMIN", "expiry": in_days_date(30)}
    for sent in ({}, {"csrf_token": "wrong"}, {"csrf_token": "é" * 43}):
        response = client.post("/admin/technical-users/new", data={**data, **sent})
        assert response.status_code == 400
        assert "nothing was changed" in text(response)
    assert count(TechnicalUser) == 0 and count(AuditEvent) == before


def test_sign_in_without_a_csrf_token_is_refused(client, people):
    user = people()
    response = client.post("/admin/login", data={"email": user.user_name, "password": PASSWORD})
    assert response.status_code == 400
    assert events("CONSOLE_LOGIN") == [] and events("CONSOLE_LOGIN_DENY") == []


def test_the_csrf_token_changes_at_sign_in(client, people):
    before = csrf_token(client)
    sign_in(client, people().user_name)
    assert csrf_token(client, "/admin/") != before


def test_sign_out_needs_the_csrf_token(signed_in):
    client, _, _ = signed_in
    assert client.post("/admin/logout").status_code == 400
    assert client.get("/admin/").status_code == 200


# --- the pages ------------------------------------------------------------------------------


def test_every_page_renders(signed_in, factory):
    client, user, workspace = signed_in
    technical_user, _, _ = factory.technical_user(workspace, Role.VIEWER, name="reporting")
    token, _ = factory.personal_token(workspace, user, description="laptop")
    pages = [
        "/admin/",
        "/admin/technical-users",
        "/admin/technical-users?q=rep&page=1",
        "/admin/technical-users/new",
        f"/admin/technical-users/{technical_user.id}",
        f"/admin/technical-users/{technical_user.id}/edit",
        f"/admin/technical-users/{technical_user.id}/replace-token",
        f"/admin/technical-users/{technical_user.id}/delete",
        "/admin/api-tokens",
        "/admin/api-tokens/new",
        f"/admin/api-tokens/{token.id}/edit",
        f"/admin/api-tokens/{token.id}/delete",
        "/admin/audit-log",
        "/admin/audit-log?type=TECHNICAL_USER_CREATE&from=2020-01-01&to=2099-12-31",
        "/admin/workspace",
        "/admin/static/console.css",
    ]
    for path in pages:
        with client.get(path, follow_redirects=True) as response:
            assert response.status_code == 200, (path, text(response)[:1000])
            assert response.headers["X-Frame-Options"] == "DENY", path
    assert "reporting" in text(client.get("/admin/technical-users"))
    assert "laptop" in text(client.get("/admin/api-tokens"))
    assert len(events("CONSOLE_LOGIN")) == 1  # revisiting the only workspace records nothing


def test_unknown_pages_are_console_404_pages(signed_in):
    client, _, _ = signed_in
    for path in (
        "/admin/nothing-here",
        "/admin/technical-users/00000000-0000-4000-8000-000000000000",
        "/admin/technical-users/not-a-uuid/edit",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.mimetype == "text/html" and "Not found" in text(response)


def test_signed_out_visitors_are_sent_to_sign_in_and_back(client, people):
    response = client.get("/admin/audit-log?type=APITOKEN_CREATE")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/admin/login?next=")
    user = people()
    token = csrf_token(client, response.headers["Location"])
    back = client.post(
        "/admin/login",
        data={
            "email": user.user_name,
            "password": PASSWORD,
            "next": "/admin/audit-log?type=APITOKEN_CREATE",
            "csrf_token": token,
        },
    )
    assert back.headers["Location"] == "/admin/audit-log?type=APITOKEN_CREATE"


# --- technical users ------------------------------------------------------------------------


@pytest.mark.parametrize("role, scope", [("ADMIN", "read write"), ("VIEWER", "read")])
def test_create_shows_the_token_once_and_it_exchanges_for_the_role(signed_in, role, scope):
    client, user, _ = signed_in
    response = create_technical_user(client, name=f"sync-{role}", role=role)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    page = text(response)
    assert "It will not be shown again" in page and 'data-copy="new-token"' in page
    secret = shown_token(response)
    assert secret.startswith("lxt_")
    # Not in a URL, not in the session.
    assert secret not in response.headers.get("Location", "")
    cookie = client.get_cookie(COOKIE, path="/admin")
    assert secret not in cookie.value
    granted = exchange(client, secret)
    assert granted.status_code == 200
    claims = jwt.decode(granted.get_json()["access_token"], options={"verify_signature": False})
    assert claims["principal"]["permission"]["role"] == role
    assert claims["principal"]["technicalUser"] is True
    assert claims["scope"] == scope
    # The detail page never shows it again.
    technical_user = db.session.execute(select(TechnicalUser)).scalar_one()
    detail = text(client.get(f"/admin/technical-users/{technical_user.id}"))
    assert secret not in detail and secret[-4:] in detail
    [event] = events("TECHNICAL_USER_CREATE")
    assert event.actor_id == user.id and event.actor_technical is False
    assert event.ip == "127.0.0.1"


def test_create_form_errors_are_next_to_the_fields_and_nothing_is_saved(signed_in):
    client, _, _ = signed_in
    before = count(AuditEvent)
    response = post(
        client,
        "/admin/technical-users/new",
        {"name": "  ", "role": "", "expiry": in_days_date(-1), "description": "x" * 501},
    )
    assert response.status_code == 400
    page = text(response)
    assert "Nothing was saved" in page
    assert '<p class="field-error" id="name-error">' in page
    assert "Name must not be empty." in page
    assert "Permission is required: choose ADMIN, MEMBER or VIEWER." in page
    assert "Expiration date must be in the future." in page
    assert "Description must be at most 500 characters." in page
    assert count(TechnicalUser) == 0 and count(ApiToken) == 0 and count(AuditEvent) == before
    too_far = post(
        client,
        "/admin/technical-users/new",
        {"name": "far", "role": "ADMIN", "expiry": in_days_date(4000)},
    )
    assert "Expiration date must be at most 365 days from now." in text(too_far)
    bad_date = post(
        client,
        "/admin/technical-users/new",
        {"name": "x", "role": "ROOT", "expiry": "31.01.2027"},
    )
    assert "Expiration date must be a date such as 2027-01-31." in text(bad_date)
    assert "Permission must be ADMIN, MEMBER or VIEWER." in text(bad_date)
    assert count(TechnicalUser) == 0


def test_a_taken_name_is_reported_on_the_name_field(signed_in, factory):
    client, _, workspace = signed_in
    factory.technical_user(workspace, name="crm-sync")
    before = count(AuditEvent)
    response = create_technical_user(client, name="crm-sync")
    assert response.status_code == 409
    assert "Name is already taken in this workspace." in text(response)
    assert count(TechnicalUser) == 1 and count(AuditEvent) == before


def test_the_list_searches_pages_and_marks_expiry(signed_in, factory):
    client, _, workspace = signed_in
    now = datetime.now(UTC)
    factory.technical_user(workspace, name="alpha-soon", expires_at=now + timedelta(days=3))
    factory.technical_user(workspace, name="alpha-later", expires_at=now + timedelta(days=200))
    expired, token, _ = factory.technical_user(workspace, name="beta-old")
    token.expires_at = now - timedelta(days=1)
    db.session.commit()
    page = text(client.get("/admin/technical-users"))
    assert "3 technical users" in page
    assert "Expired" in page and "Expires in 2 days" in page and "Active" in page
    assert "Never" in page
    found = text(client.get("/admin/technical-users?q=ALPHA"))
    assert "2 technical users" in found and "beta-old" not in found
    for n in range(22):
        factory.technical_user(workspace, name=f"gamma-{n:02d}")
    first = text(client.get("/admin/technical-users"))
    assert "Page 1 of 2" in first and "gamma-19" not in first
    second = text(client.get("/admin/technical-users?page=2"))
    assert "gamma-19" in second and "gamma-21" in second


def test_edit_changes_expiry_and_permission_with_one_audited_update(signed_in, factory):
    client, user, workspace = signed_in
    technical_user, token, secret = factory.technical_user(workspace, Role.MEMBER)
    path = f"/admin/technical-users/{technical_user.id}/edit"
    new_day = in_days_date(60)
    response = post(client, path, {"description": "nightly", "role": "VIEWER", "expiry": new_day})
    assert response.status_code == 302
    assert "Saved." in text(client.get(response.headers["Location"]))
    db.session.expire_all()
    assert db.session.get(ApiToken, token.id).expires_at.date().isoformat() == new_day
    [event] = events("TECHNICAL_USER_UPDATE")
    assert event.actor_id == user.id
    assert event.payload["before"]["permissionRole"] == "MEMBER"
    assert event.payload["after"]["permissionRole"] == "VIEWER"
    assert event.payload["after"]["apiTokenData"]["expiry"].startswith(new_day)
    claims = jwt.decode(
        exchange(client, secret).get_json()["access_token"], options={"verify_signature": False}
    )
    assert claims["principal"]["permission"]["role"] == "VIEWER"
    # Saving the form unchanged changes nothing and records nothing.
    unchanged = post(client, path, {"description": "nightly", "role": "VIEWER", "expiry": new_day})
    assert "Nothing changed." in text(client.get(unchanged.headers["Location"]))
    assert len(events("TECHNICAL_USER_UPDATE")) == 1


def test_edit_errors_change_nothing(signed_in, factory):
    client, _, workspace = signed_in
    technical_user, token, _ = factory.technical_user(workspace, Role.MEMBER)
    response = post(
        client,
        f"/admin/technical-users/{technical_user.id}/edit",
        {"description": "changed", "role": "ADMIN", "expiry": "2001-01-01"},
    )
    assert response.status_code == 400
    assert "Expiration date must be in the future." in text(response)
    db.session.expire_all()
    assert db.session.get(TechnicalUser, technical_user.id).permission_role == "MEMBER"
    assert events("TECHNICAL_USER_UPDATE") == []


def test_replace_token_shows_the_new_one_once_and_the_old_one_stops(signed_in, factory):
    client, user, workspace = signed_in
    technical_user, _, old_secret = factory.technical_user(workspace, Role.ADMIN)
    response = post(
        client, f"/admin/technical-users/{technical_user.id}/replace-token", {"grace": "0"}
    )
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    new_secret = shown_token(response)
    assert new_secret != old_secret and "stopped working" in text(response)
    assert exchange(client, old_secret).status_code == 401
    assert exchange(client, new_secret).status_code == 200
    [event] = events("APITOKEN_REPLACE")
    assert event.actor_id == user.id and event.payload["gracePeriodSeconds"] == 0


def test_replace_token_with_a_grace_period_keeps_the_old_one_for_a_while(signed_in, factory):
    client, _, workspace = signed_in
    technical_user, _, old_secret = factory.technical_user(workspace)
    response = post(
        client, f"/admin/technical-users/{technical_user.id}/replace-token", {"grace": "3600"}
    )
    assert "keeps working until" in text(response)
    assert exchange(client, old_secret).status_code == 200
    assert exchange(client, shown_token(response)).status_code == 200
    too_long = post(
        client, f"/admin/technical-users/{technical_user.id}/replace-token", {"grace": "999999"}
    )
    assert too_long.status_code == 400
    assert "Grace period must be between 0 and 86400." in text(too_long)


def test_replacing_an_expired_token_asks_for_a_new_date(signed_in, factory):
    client, _, workspace = signed_in
    technical_user, token, _ = factory.technical_user(workspace)
    token.expires_at = datetime.now(UTC) - timedelta(hours=1)
    db.session.commit()
    path = f"/admin/technical-users/{technical_user.id}/replace-token"
    response = post(client, path, {"grace": "0"})
    assert response.status_code == 400
    assert "is required: the current token has expired" in text(response)
    assert events("APITOKEN_REPLACE") == []
    renewed = post(client, path, {"grace": "0", "expiry": in_days_date(10)})
    assert exchange(client, shown_token(renewed)).status_code == 200


def test_delete_asks_first_then_the_token_dies_and_the_history_stays(signed_in, factory):
    client, user, workspace = signed_in
    technical_user, _, secret = factory.technical_user(workspace, name="old-etl")
    path = f"/admin/technical-users/{technical_user.id}/delete"
    confirm = client.get(path)
    assert "Delete old-etl?" in text(confirm) and "stops working at once" in text(confirm)
    assert exchange(client, secret).status_code == 200  # a GET changes nothing
    response = post(client, path)
    assert response.status_code == 302
    assert "was deleted" in text(client.get(response.headers["Location"]))
    assert exchange(client, secret).status_code == 401
    detail = text(client.get(f"/admin/technical-users/{technical_user.id}"))
    assert "was deleted on" in detail
    assert "TECHNICAL_USER_CREATE" in detail and "TECHNICAL_USER_DELETE" in detail
    assert client.get(f"/admin/technical-users/{technical_user.id}/edit").status_code == 404
    [event] = events("TECHNICAL_USER_DELETE")
    assert event.actor_id == user.id


def test_the_history_lists_every_change_newest_first(signed_in, factory):
    client, _, workspace = signed_in
    technical_user, _, _ = factory.technical_user(workspace, Role.MEMBER)
    base = f"/admin/technical-users/{technical_user.id}"
    post(client, base + "/edit", {"role": "ADMIN", "expiry": in_days_date(45)}, base + "/edit")
    post(client, base + "/replace-token", {"grace": "300"})
    page = text(client.get(base))
    order = [page.index(kind) for kind in ("APITOKEN_REPLACE", "TECHNICAL_USER_UPDATE")]
    assert order == sorted(order)
    assert "Permission: MEMBER → ADMIN" in page
    assert "4 changes" in page  # create, its token, the update, the replacement


def test_another_workspaces_technical_user_is_not_found(signed_in, factory):
    client, _, _ = signed_in
    elsewhere, _, _ = factory.technical_user(factory.workspace())
    for suffix in ("", "/edit", "/replace-token", "/delete"):
        assert client.get(f"/admin/technical-users/{elsewhere.id}{suffix}").status_code == 404
    refused = post(client, f"/admin/technical-users/{elsewhere.id}/delete", csrf_from="/admin/")
    assert refused.status_code == 404
    assert db.session.get(TechnicalUser, elsewhere.id).deleted_at is None


def test_console_and_api_record_the_same_events(signed_in, factory):
    client, user, workspace = signed_in
    create_technical_user(client, name="from-console", role="VIEWER")
    api = admin_mgmt(client, factory, workspace)
    api.create_technical_user("from-api", "VIEWER")
    by_actor = {}
    for event in events("TECHNICAL_USER_CREATE"):
        by_actor[event.actor_id] = event
    console_event, api_event = by_actor[user.id], by_actor[api.user.id]
    assert set(console_event.payload) == set(api_event.payload)
    assert console_event.target_type == api_event.target_type == "TECHNICAL_USER"
    assert console_event.actor_technical is api_event.actor_technical is False
    assert len(events("APITOKEN_CREATE")) == 2 + 1  # + the API admin's personal token


# --- personal API tokens --------------------------------------------------------------------


def test_personal_tokens_create_edit_delete(signed_in):
    client, user, _ = signed_in
    response = post(client, "/admin/api-tokens/new", {"name": "deploy", "expiry": in_days_date(7)})
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    secret = shown_token(response)
    claims = jwt.decode(
        exchange(client, secret).get_json()["access_token"], options={"verify_signature": False}
    )
    assert claims["sub"] == user.id and claims["principal"]["technicalUser"] is False
    token = db.session.execute(select(ApiToken).where(ApiToken.user_id == user.id)).scalar_one()
    listing = text(client.get("/admin/api-tokens"))
    assert "deploy" in listing and "Expires in 7 days" in listing and secret not in listing
    edited = post(
        client,
        f"/admin/api-tokens/{token.id}/edit",
        {"name": "deploy-prod", "expiry": in_days_date(20)},
    )
    assert edited.status_code == 302
    [update] = events("APITOKEN_UPDATE")
    assert update.payload["after"]["description"] == "deploy-prod"
    deleted = post(client, f"/admin/api-tokens/{token.id}/delete")
    assert deleted.status_code == 302
    assert exchange(client, secret).status_code == 401
    after = text(client.get("/admin/api-tokens"))
    assert "API token deploy-prod was deleted" in after and "0 tokens" in after
    assert [e.actor_id for e in events("APITOKEN_DELETE")] == [user.id]


def test_personal_token_form_errors(signed_in):
    client, _, _ = signed_in
    response = post(client, "/admin/api-tokens/new", {"name": "", "expiry": ""})
    assert response.status_code == 400
    page = text(response)
    assert "Name is required, so you can tell your tokens apart." in page
    assert "Expiration date is required." in page
    assert count(ApiToken) == 0


def test_personal_tokens_are_visible_only_to_their_owner(signed_in, factory, people):
    client, _, workspace = signed_in
    other = people(workspace)
    theirs, their_secret = factory.personal_token(workspace, other, description="theirs")
    assert "theirs" not in text(client.get("/admin/api-tokens"))
    for suffix in ("/edit", "/delete"):
        assert client.get(f"/admin/api-tokens/{theirs.id}{suffix}").status_code == 404
    response = post(client, f"/admin/api-tokens/{theirs.id}/delete", csrf_from="/admin/api-tokens")
    assert response.status_code == 404
    db.session.expire_all()
    assert token_status(db.session.get(ApiToken, theirs.id), datetime.now(UTC)) == "ACTIVE"
    assert exchange(client, their_secret).status_code == 200


# --- the audit log --------------------------------------------------------------------------


def test_the_audit_log_filters_by_type_actor_and_time(signed_in, factory):
    client, user, workspace = signed_in
    create_technical_user(client, name="one")
    factory.technical_user(workspace, name="two")  # by the command line
    page = text(client.get("/admin/audit-log"))
    assert "TECHNICAL_USER_CREATE" in page and "CONSOLE_LOGIN" in page
    by_type = text(client.get("/admin/audit-log?type=CONSOLE_LOGIN"))
    assert "1 event" in by_type
    by_actor = text(client.get(f"/admin/audit-log?actor={user.id}&type=TECHNICAL_USER_CREATE"))
    assert "1 event" in by_actor and "one" in by_actor
    by_cli = text(client.get("/admin/audit-log?actor=cli&type=TECHNICAL_USER_CREATE"))
    assert "1 event" in by_cli and "two" in by_cli
    today = datetime.now(UTC).date().isoformat()
    assert "0 events" in text(client.get("/admin/audit-log?to=2001-01-01"))
    assert "0 events" not in text(client.get(f"/admin/audit-log?from={today}&to={today}"))
    bad = client.get("/admin/audit-log?type=NOPE&from=tomorrow")
    assert bad.status_code == 400
    assert "Type must be one of the listed event types." in text(bad)
    assert "From must be a date such as 2027-01-31." in text(bad)
    backwards = client.get("/admin/audit-log?from=2030-01-02&to=2030-01-01")
    assert "From must not be after To." in text(backwards)


def test_the_audit_log_shows_only_this_workspace(signed_in, factory):
    client, _, _ = signed_in
    factory.technical_user(factory.workspace(), name="elsewhere-user")
    assert "elsewhere-user" not in text(client.get("/admin/audit-log"))


# --- passwords and the command line ---------------------------------------------------------


def test_set_password_reads_standard_input_and_is_audited(runner, client, factory):
    workspace = factory.workspace()
    user = factory.user(workspace, Role.ADMIN, email="ops@example.com")
    result = runner.invoke(args=["set-password", "OPS@example.com"], input="s3cret-enough-now\n")
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output
    assert sign_in(client, user.user_name, "s3cret-enough-now").status_code == 302
    [event] = events("USER_PASSWORD_SET")
    assert event.target_id == user.id and event.payload == {}
    short = runner.invoke(args=["set-password", "ops@example.com"], input="short\n")
    assert short.exit_code != 0 and "at least 12 characters" in short.output
    unknown = runner.invoke(args=["set-password", "who@example.com"], input="long enough pw\n")
    assert unknown.exit_code != 0 and "no user" in unknown.output


def test_init_prints_a_console_password_once(runner, client):
    first = runner.invoke(args=["init"])
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("console password"))
    generated = lines[index + 1].strip()
    assert first.output.count(generated) == 1 and "lxt_" not in generated
    again = runner.invoke(args=["init"])
    assert "console password" not in again.output
    assert sign_in(client, "admin@example.com", generated).status_code == 302


def test_passwords_are_argon2id():
    hashed = passwords.hash_password("a fine long password")
    assert hashed.startswith("$argon2id$")
    assert passwords.verify_password(hashed, "a fine long password")
    assert not passwords.verify_password(hashed, "another password")
    assert not passwords.verify_password(None, "a fine long password")
    assert not passwords.verify_password("not a hash", "a fine long password")
    assert len(passwords.generate_password()) == 23


def test_the_session_secret_is_generated_once_with_mode_0600(app, tmp_path):
    from authserver.console import secret

    first = secret.load_or_create(tmp_path / "keys")
    assert secret.load_or_create(tmp_path / "keys") == first
    path = tmp_path / "keys" / secret.SECRET_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == [secret.SECRET_FILE]


def test_a_configured_secret_key_is_used(test_config, _schema):
    from authserver import create_app

    key = "k" * 40
    app = create_app({**test_config, "TESTING": True, "SECRET_KEY": key})
    assert app.secret_key == key
    with app.app_context():
        db.engine.dispose()
