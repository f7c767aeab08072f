"""The admin console in a real browser: Debian's Chromium driven by Playwright (sync API).

Chromium is the system one (/usr/bin/chromium, `apt-get install chromium`);
Playwright never downloads a browser here. Playwright starts it with a fresh,
temporary user-data-dir of its own. Each test runs against a live
`authserver serve` over the test database and saves screenshots into
test-artifacts/screenshots/. With AUTHSERVER_UPDATE_DOC_SCREENSHOTS=1 the
screenshots of each page are also written to docs/screenshots/ for the README.

On SQLite the test's own database reads end their transaction before the next
HTTP call (see tests/conftest.py and `db_read`), so the server never waits on our lock.
"""

import os
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
import requests
from sqlalchemy import select

from authserver import passwords
from authserver.extensions import db
from authserver.models import AuditEvent, Role, TechnicalUser

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
DOCS = ROOT / "docs" / "screenshots"
UPDATE_DOCS = os.environ.get("AUTHSERVER_UPDATE_DOC_SCREENSHOTS") == "1"
PASSWORD = "browser test password"
TOKEN_PATH = "/services/mtm/v1/oauth2/token"
LAPTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's Chromium is not installed at /usr/bin/chromium (apt-get install chromium)",
    ),
]


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-quic",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield chromium
        chromium.close()


class Console:
    """A browser tab on the live server's console, with screenshots."""

    def __init__(self, browser, server, test_name: str, viewport=LAPTOP):
        self.server = server
        self.test_name = test_name
        self.context = browser.new_context(viewport=viewport, base_url=server.url)
        self.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
        self.page = self.context.new_page()
        self.page.set_default_timeout(10_000)
        self.shots = 0

    def close(self) -> None:
        """Close the tab's context."""
        self.context.close()

    def shot(self, name: str, doc: str | None = None) -> None:
        """Save a screenshot (and, when asked, the README's copy of this page)."""
        self.shots += 1
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.test_name}-{self.shots:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        if doc and UPDATE_DOCS:
            DOCS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS / f"{doc}.png")

    def sign_in(self, email: str, password: str = PASSWORD):
        """Open the sign-in page and submit it; returns the response of the POST."""
        self.page.goto("/admin/login")
        self.page.get_by_label("Email").fill(email)
        self.page.get_by_label("Password").fill(password)
        with self.page.expect_navigation() as navigation:
            self.page.get_by_role("button", name="Sign in").click()
        return navigation.value

    def click(self, name: str, role: str = "link"):
        """Click a link or button by its accessible name and wait for the next page."""
        with self.page.expect_navigation() as navigation:
            self.page.get_by_role(role, name=name, exact=True).first.click()
        return navigation.value

    def text(self) -> str:
        """The visible text of the page."""
        return self.page.inner_text("body")


@pytest.fixture
def console(browser, live_server, request):
    """A fresh browser context on the live server."""
    tab = Console(browser, live_server, request.node.name.replace("[", "-").strip("]"))
    yield tab
    tab.close()


@pytest.fixture
def people(factory):
    """Make users with the test password, committed before the browser talks to the server."""
    password_hash = passwords.hash_password(PASSWORD)

    def make(workspace, role=Role.ADMIN, email=None):
        user = factory.user(workspace, role, email=email)
        user.password_hash = password_hash
        db.session.commit()
        return user

    return make


def db_read(query):
    """Read fresh rows, then end the transaction (SQLite: never hold the lock during HTTP calls).

    It ends with a commit, not a rollback: a rollback would expire every loaded
    object, and touching one later would quietly begin a new transaction.
    """
    try:
        return list(db.session.execute(query.execution_options(populate_existing=True)).scalars())
    finally:
        db.session.commit()


def exchange(server, secret: str) -> requests.Response:
    """The client-credentials grant with Basic apitoken:<secret>, over HTTP."""
    return requests.post(
        server.url + TOKEN_PATH,
        auth=("apitoken", secret),
        data={"grant_type": "client_credentials"},
        timeout=10,
    )


def role_in(response: requests.Response) -> str:
    """The workspace role in a granted access token."""
    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    return claims["principal"]["permission"]["role"]


def read_token(console: Console) -> str:
    """Copy the token shown once: click Copy, read it back from the clipboard and the page."""
    page = console.page
    shown = page.locator("#new-token").input_value()
    page.get_by_role("button", name="Copy").click()
    page.get_by_text("Copied to the clipboard.").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == shown
    assert re.fullmatch(r"lxt_[0-9A-Za-z]{49}", shown)
    return shown


def mask_token_for_docs(console: Console) -> None:
    """The README's screenshot shows a placeholder, not a real (if throwaway) token."""
    console.page.locator("#new-token").evaluate(
        "field => { field.value = 'lxt_' + '•'.repeat(49); }"
    )


def day(days: int) -> str:
    """A date `days` from today (UTC) as the date field takes it."""
    return (datetime.now(UTC) + timedelta(days=days)).date().isoformat()


# --- the seed's workflow ----------------------------------------------------------------------


def test_seed_workflow_for_each_permission(console, factory, people, live_server):
    """Sign in, Administration, Technical Users, create, copy, exchange, history, edit, replace,
    delete: once for each permission."""
    workspace = factory.workspace("acme")
    admin = people(workspace, email="ada@acme.example")
    page = console.page

    response = console.sign_in(admin.user_name)
    assert response.url.endswith("/admin/")
    console.click("Administration")
    console.shot("administration", doc="administration")
    console.click("Technical Users")
    assert page.get_by_role("heading", name="Technical Users").is_visible()

    for index, role in enumerate(("ADMIN", "MEMBER", "VIEWER")):
        first = index == 0
        name = f"crm-sync-{role.lower()}"
        console.click("Create Technical User")
        page.get_by_label("Name").fill(name)
        page.get_by_label("Description").fill(f"The CRM integration ({role})")
        page.get_by_label(re.compile(f"^{role}")).check()
        page.get_by_label("Expiration date").fill(day(30))
        if first:
            console.shot("create-form", doc="technical-user-create")
        response = console.click("Save", role="button")
        assert response.status == 200 and response.headers["cache-control"] == "no-store"
        assert "It will not be shown again" in console.text()
        secret = read_token(console)
        assert secret not in page.url
        console.shot(f"token-once-{role}")
        if first:
            mask_token_for_docs(console)
            console.shot("token-once-masked", doc="technical-user-token-once")

        assert role_in(exchange(live_server, secret)) == role

        console.click("Done")  # the technical user's page, with its history
        assert name in page.locator("h1").inner_text()
        history = page.get_by_role("region", name="History").inner_text()
        assert "TECHNICAL_USER_CREATE" in history and "APITOKEN_CREATE" in history

        console.click("Edit")
        page.get_by_label("Expiration date").fill(day(90))
        if first:
            console.shot("edit-form", doc="technical-user-edit")
        console.click("Save", role="button")
        assert "Saved." in console.text()
        history = page.get_by_role("region", name="History").inner_text()
        assert f"Expiration: {day(30)} → {day(90)}" in history
        assert day(90) in page.locator(".properties").inner_text()

        console.click("Replace token")
        page.get_by_label("Grace period for the old token").select_option("0")
        if first:
            console.shot("replace-form", doc="technical-user-replace-token")
        console.click("Replace token", role="button")
        new_secret = read_token(console)
        assert new_secret != secret
        assert exchange(live_server, secret).status_code == 401
        assert role_in(exchange(live_server, new_secret)) == role
        console.click("Done")
        if first:
            console.shot("detail", doc="technical-user-detail")

        console.click("Delete")
        assert "stops working at once" in console.text()
        if first:
            console.shot("delete-confirm", doc="technical-user-delete")
        console.click("Delete technical user", role="button")
        assert f"Technical user {name} was deleted" in console.text()
        assert exchange(live_server, new_secret).status_code == 401

    rows = db_read(select(TechnicalUser).where(TechnicalUser.workspace_id == workspace.id))
    assert sorted(row.permission_role for row in rows) == ["ADMIN", "MEMBER", "VIEWER"]
    assert all(row.deleted_at is not None for row in rows)
    updates = db_read(select(AuditEvent).where(AuditEvent.type == "TECHNICAL_USER_UPDATE"))
    assert len(updates) == 3 and {event.actor_id for event in updates} == {admin.id}
    assert all(event.user_agent and "Chrome" in event.user_agent for event in updates)


def test_the_list_marks_expiry_and_reads_on_a_phone(browser, live_server, factory, people):
    workspace = factory.workspace("acme")
    admin = people(workspace, email="ada@acme.example")
    now = datetime.now(UTC)
    factory.technical_user(workspace, Role.ADMIN, "billing-export", now + timedelta(days=200))
    factory.technical_user(workspace, Role.MEMBER, "crm-sync", now + timedelta(days=5))
    _, old, _ = factory.technical_user(workspace, Role.VIEWER, "legacy-report")
    old.expires_at = now - timedelta(days=2)
    db.session.commit()
    for name, viewport, doc in (
        ("laptop", LAPTOP, "technical-users"),
        ("phone", PHONE, "technical-users-phone"),
    ):
        console = Console(browser, live_server, f"test_list_{name}", viewport)
        try:
            console.sign_in(admin.user_name)
            console.page.goto("/admin/technical-users")
            text = console.text()
            assert "Expired" in text and "Expires in 4 days" in text and "Active" in text
            console.shot("list", doc=doc)
        finally:
            console.close()


def test_personal_api_tokens(console, factory, people, live_server):
    workspace = factory.workspace("acme")
    admin = people(workspace, email="ada@acme.example")
    factory.personal_token(workspace, admin, description="laptop scripts")
    page = console.page
    console.sign_in(admin.user_name)
    console.click("API Tokens")
    console.click("Create API Token")
    page.get_by_label("Name").fill("deployment pipeline")
    page.get_by_label("Expiration date").fill(day(14))
    console.shot("create-form", doc="api-token-create")
    console.click("Save", role="button")
    secret = read_token(console)
    assert role_in(exchange(live_server, secret)) == "ADMIN"
    console.click("Done")
    assert "deployment pipeline" in console.text() and "laptop scripts" in console.text()
    console.shot("list", doc="api-tokens")
    page.get_by_role("link", name="Delete deployment pipeline").click()
    page.wait_for_load_state()
    console.click("Delete API token", role="button")
    assert exchange(live_server, secret).status_code == 401


def test_the_audit_log_filters(console, factory, people):
    workspace = factory.workspace("acme")
    admin = people(workspace, email="ada@acme.example")
    factory.technical_user(workspace, Role.MEMBER, "crm-sync")
    console.sign_in(admin.user_name)
    console.click("Audit log")
    text = console.text()
    assert "CONSOLE_LOGIN" in text and "TECHNICAL_USER_CREATE" in text
    console.page.get_by_label("Type").select_option("CONSOLE_LOGIN")
    console.click("Filter", role="button")
    rows = console.page.locator("table.events tbody tr")
    assert rows.count() == 1 and "ada@acme.example" in rows.first.inner_text()
    console.click("Clear")
    console.shot("audit-log", doc="audit-log")


# --- refusals -----------------------------------------------------------------------------------


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(console, factory, people):
    workspace = factory.workspace("acme")
    admin = people(workspace, email="ada@acme.example")
    page = console.page
    console.sign_in(admin.user_name)
    page.goto("/admin/technical-users/new")
    page.get_by_label("Name").fill("sneaky")
    page.get_by_label(re.compile("^ADMIN")).check()
    page.locator("#main input[name=csrf_token]").evaluate("field => field.remove()")
    response = console.click("Save", role="button")
    assert response.status == 400
    assert "nothing was changed" in console.text()
    console.shot("csrf-refused", doc="csrf-refused")
    page.goto("/admin/technical-users/new")
    page.get_by_label("Name").fill("sneaky")
    page.get_by_label(re.compile("^ADMIN")).check()
    page.locator("#main input[name=csrf_token]").evaluate("field => { field.value = 'forged'; }")
    assert console.click("Save", role="button").status == 400
    assert db_read(select(TechnicalUser)) == []


def test_form_errors_are_shown_next_to_the_fields(console, factory, people):
    workspace = factory.workspace("acme")
    admin = people(workspace, email="ada@acme.example")
    console.sign_in(admin.user_name)
    console.page.goto("/admin/technical-users/new")
    console.page.get_by_label("Expiration date").fill(day(-3))
    response = console.click("Save", role="button")
    assert response.status == 400
    text = console.text()
    assert "Name must not be empty." in text
    assert "Permission is required: choose ADMIN, MEMBER or VIEWER." in text
    assert "Expiration date must be in the future." in text
    focused = console.page.evaluate("document.activeElement.className")
    assert "error-summary" in focused
    console.shot("form-errors", doc="technical-user-form-errors")
    assert db_read(select(TechnicalUser)) == []


def test_a_member_cannot_enter(console, factory, people):
    workspace = factory.workspace("acme")
    member = people(workspace, Role.MEMBER, email="max@acme.example")
    response = console.sign_in(member.user_name)
    assert response.status == 403
    text = console.text()
    assert "You cannot enter the administration" in text and "MEMBER of workspace acme" in text
    console.shot("member-refused", doc="member-refused")
    console.page.goto("/admin/technical-users")
    assert "/admin/login" in console.page.url
    [event] = db_read(select(AuditEvent).where(AuditEvent.type == "CONSOLE_LOGIN_DENY"))
    assert event.payload["reason"] == "not_admin" and event.actor_id == member.id


def test_a_wrong_password_is_refused_and_audited(console, factory, people):
    workspace = factory.workspace("acme")
    admin = people(workspace, email="ada@acme.example")
    response = console.sign_in(admin.user_name, "not my password")
    assert response.status == 400
    assert "The email or password is wrong." in console.text()
    console.shot("wrong-password", doc="login-wrong-password")
    [event] = db_read(select(AuditEvent).where(AuditEvent.type == "CONSOLE_LOGIN_DENY"))
    assert event.payload == {"reason": "wrong_password", "method": "password"}
    assert event.actor_id == admin.id and event.ip == "127.0.0.1"
    assert "Chrome" in event.user_agent
    console.page.goto("/admin/login")
    console.shot("login", doc="login")
    assert console.sign_in(admin.user_name).url.endswith("/admin/")
