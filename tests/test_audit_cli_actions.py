"""Command-line actions that change credentials are audited with the CLI as the actor."""

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from authserver.extensions import db
from authserver.models import AuditEvent

CLI = {"id": "cli", "userName": "authserver-cli", "technicalUser": False}


def events(*types):
    """Events as plain rows, the transaction ended (the CLI opens its own connections)."""
    table = AuditEvent.__table__
    query = select(table).order_by(table.c.id)
    if types:
        query = query.where(table.c.type.in_(types))
    rows = db.session.execute(query).all()
    db.session.rollback()
    return rows


def run_json(runner, *args):
    result = runner.invoke(args=[*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def actor_of(event) -> dict:
    return {
        "id": event.actor_id,
        "userName": event.actor_user_name,
        "technicalUser": event.actor_technical,
    }


def test_init_audits_the_admin_permission_and_token_as_the_cli(runner):
    result = run_json(runner, "init", "--workspace", "acme", "--admin", "root@acme.example")
    permission, token = events("PERMISSION_UPDATE", "APITOKEN_CREATE")
    assert permission.type == "PERMISSION_UPDATE"
    assert actor_of(permission) == CLI
    assert (permission.workspace_id, permission.workspace_name) == (result["workspaceId"], "acme")
    assert (permission.target_type, permission.target_id, permission.target_name) == (
        "USER",
        result["userId"],
        "root@acme.example",
    )
    assert permission.payload["before"] is None
    assert permission.payload["after"] == {"role": "ADMIN", "status": "ACTIVE"}
    assert (permission.ip, permission.user_agent) == (None, None)
    assert token.type == "APITOKEN_CREATE"
    assert actor_of(token) == CLI
    assert token.target_id == result["tokenId"]
    assert result["apiToken"] not in json.dumps(token.payload)

    run_json(runner, "init", "--workspace", "acme", "--admin", "root@acme.example")
    # The admin already was ADMIN: no permission event; a new token is a new event.
    assert len(events("PERMISSION_UPDATE")) == 1
    assert len(events("APITOKEN_CREATE")) == 2


def test_create_technical_user_is_audited_as_the_cli(runner):
    run_json(runner, "init", "--workspace", "acme")
    expires = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    result = run_json(
        runner,
        "create-technical-user",
        "--workspace",
        "acme",
        "--name",
        "sync",
        "--role",
        "VIEWER",
        "--expires",
        expires,
    )
    create, token = events("TECHNICAL_USER_CREATE", "APITOKEN_CREATE")[-2:]
    assert create.type == "TECHNICAL_USER_CREATE"
    assert actor_of(create) == CLI
    assert (create.target_type, create.target_id, create.target_name) == (
        "TECHNICAL_USER",
        result["id"],
        "sync",
    )
    assert create.payload["permissionRole"] == "VIEWER"
    assert token.type == "APITOKEN_CREATE"
    assert actor_of(token) == CLI
    assert token.target_id == result["tokenId"]
    for event in (create, token):
        assert result["apiToken"] not in json.dumps(event.payload)


def test_create_user_audits_a_role_change_but_not_a_no_op(runner):
    run_json(runner, "init", "--workspace", "acme")
    created = run_json(
        runner,
        "create-user",
        "--workspace",
        "acme",
        "--email",
        "bob@example.com",
        "--role",
        "VIEWER",
    )
    run_json(
        runner,
        "create-user",
        "--workspace",
        "acme",
        "--email",
        "bob@example.com",
        "--role",
        "VIEWER",
    )
    run_json(
        runner,
        "create-user",
        "--workspace",
        "acme",
        "--email",
        "bob@example.com",
        "--role",
        "ADMIN",
    )
    changes = [e for e in events("PERMISSION_UPDATE") if e.target_id == created["userId"]]
    assert [(e.payload["before"], e.payload["after"]["role"]) for e in changes] == [
        (None, "VIEWER"),
        ({"role": "VIEWER", "status": "ACTIVE"}, "ADMIN"),
    ]
    assert all(actor_of(e) == CLI for e in changes)
    assert changes[1].payload["permissionId"] == created["permissionId"]


def test_cli_events_are_sealed_and_verified_like_any_other(runner):
    run_json(runner, "init", "--workspace", "acme")
    count = len(events())
    sealed = runner.invoke(args=["audit", "seal", "--settle-seconds", "0"])
    assert sealed.exit_code == 0, sealed.output
    assert sealed.output.startswith(f"sealed {count} event(s) in ")
    verified = runner.invoke(args=["audit", "verify"])
    assert verified.exit_code == 0, verified.output
    assert f"all intact; {count} sealed event(s) verified, 0 not sealed yet" in verified.output


def test_seal_follow_refuses_when_automatic_sealing_is_off(app, runner):
    app.config["AUDIT_SEAL_INTERVAL"] = 0
    result = runner.invoke(args=["audit", "seal", "--follow"])
    assert result.exit_code == 2
    assert "AUTHSERVER_AUDIT_SEAL_INTERVAL is 0" in result.output
