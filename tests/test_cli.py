"""The `authserver` command line: init, create-user, create-technical-user."""

import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from .conftest import exchange


def run_json(runner, *args):
    result = runner.invoke(args=[*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def soon(days: int = 30) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).date().isoformat()


def claims_of(response) -> dict:
    return jwt.decode(response.get_json()["access_token"], options={"verify_signature": False})


def test_init_creates_workspace_admin_and_token_and_is_idempotent(runner, client):
    first = run_json(runner, "init", "--workspace", "acme", "--admin", "root@acme.example")
    assert set(first) >= {
        "workspaceId",
        "workspaceName",
        "userId",
        "userName",
        "tokenId",
        "apiToken",
    }
    assert first["workspaceName"] == "acme"
    assert first["userName"] == "root@acme.example"
    second = run_json(runner, "init", "--workspace", "acme", "--admin", "root@acme.example")
    assert second["workspaceId"] == first["workspaceId"]
    assert second["userId"] == first["userId"]
    assert second["apiToken"] != first["apiToken"]
    for token in (first["apiToken"], second["apiToken"]):
        response = exchange(client, token)
        assert response.status_code == 200
        assert claims_of(response)["principal"]["permission"]["role"] == "ADMIN"


def test_init_prints_the_token_once_in_text_mode(runner):
    result = runner.invoke(args=["init"])
    assert result.exit_code == 0, result.output
    assert "shown once" in result.output
    assert result.output.count("lxt_") == 1


@pytest.mark.parametrize(
    "role, scope",
    [("ADMIN", "read write"), ("MEMBER", "read write"), ("VIEWER", "read")],
)
def test_technical_user_made_with_the_cli_gets_role_scope_and_audience(runner, client, role, scope):
    run_json(runner, "init", "--workspace", "acme")
    made = run_json(
        runner,
        "create-technical-user",
        "--workspace",
        "acme",
        "--name",
        f"bot-{role}",
        "--role",
        role,
        "--expires",
        soon(),
    )
    response = exchange(client, made["apiToken"])
    assert response.status_code == 200
    claims = claims_of(response)
    assert claims["sub"] == made["id"]
    assert claims["scope"] == scope
    assert claims["aud"] == ["integration-api", "webhooks", "graphql"]
    assert claims["principal"]["technicalUser"] is True
    assert claims["principal"]["permission"]["role"] == role


def test_create_user_then_their_role_decides(runner, client):
    run_json(runner, "init", "--workspace", "acme")
    made = run_json(
        runner,
        "create-user",
        "--workspace",
        "acme",
        "--email",
        "m@acme.example",
        "--role",
        "MEMBER",
    )
    assert made["role"] == "MEMBER"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--expires", "2000-01-01"], "Expiry is in the past"),
        (["--expires", "not-a-date"], "ISO 8601"),
        (["--expires", "2999-01-01"], "Expiry is too far away"),
        (["--workspace", "nope"], "No workspace named 'nope'"),
        (["--name", "   "], "userName is required"),
    ],
)
def test_create_technical_user_refuses_bad_input(runner, args, message):
    run_json(runner, "init", "--workspace", "acme")
    base = {"--workspace": "acme", "--name": "bot", "--role": "MEMBER", "--expires": soon()}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    result = runner.invoke(args=["create-technical-user", *sum(base.items(), ())])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_duplicate_technical_user_name_is_refused(runner):
    run_json(runner, "init", "--workspace", "acme")
    args = [
        "create-technical-user",
        "--workspace",
        "acme",
        "--name",
        "bot",
        "--role",
        "MEMBER",
        "--expires",
        soon(),
    ]
    assert runner.invoke(args=args).exit_code == 0
    result = runner.invoke(args=args)
    assert result.exit_code != 0
    assert "userName exists" in result.output


def test_tokens_expiring_lists_live_tokens_soonest_first(runner, factory):
    from datetime import UTC, datetime, timedelta

    from authserver.extensions import db
    from authserver.models import Role, TechnicalUser

    workspace = factory.workspace("acme")
    soon_user, soon_token, _ = factory.technical_user(
        workspace, Role.VIEWER, name="soon", expires_at=datetime.now(UTC) + timedelta(days=3)
    )
    factory.technical_user(
        workspace, name="later", expires_at=datetime.now(UTC) + timedelta(days=60)
    )
    gone, _, _ = factory.technical_user(
        workspace, name="gone", expires_at=datetime.now(UTC) + timedelta(days=2)
    )
    db.session.get(TechnicalUser, gone.id).deleted_at = datetime.now(UTC)
    admin = factory.user(workspace)
    personal, _ = factory.personal_token(
        workspace, admin, expires_at=datetime.now(UTC) + timedelta(days=5)
    )
    other = factory.workspace("other")
    factory.technical_user(
        other, name="elsewhere", expires_at=datetime.now(UTC) + timedelta(days=1)
    )
    db.session.commit()

    listed = run_json(runner, "tokens", "expiring", "--days", "14", "--workspace", "acme")
    assert [t["tokenId"] for t in listed["tokens"]] == [soon_token.id, personal.id]
    assert listed["tokens"][0]["owner"] == "soon"
    assert listed["tokens"][0]["technicalUser"] is True
    assert listed["tokens"][1]["owner"] == admin.user_name
    assert not any("lxt_" in str(value) for t in listed["tokens"] for value in t.values())
    everywhere = run_json(runner, "tokens", "expiring", "--days", "14")
    assert len(everywhere["tokens"]) == 3
    unknown = runner.invoke(args=["tokens", "expiring", "--workspace", "nope"])
    assert unknown.exit_code != 0
    assert "No workspace named 'nope'" in unknown.output
