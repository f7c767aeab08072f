"""The `authserver` command line (a Flask CLI group, so `authserver db upgrade` works too)."""

import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext

from . import cli_audit, cli_keys, demo_resources, passwords
from .console import secret as console_secret
from .errors import ApiError
from .extensions import db
from .keys import ensure_active_key
from .models import Role
from .services import api_tokens, technical_users, workspaces
from .services.audit import CLI_ACTOR, NO_ORIGIN

DEFAULT_WORKSPACE = "default"
DEFAULT_ADMIN = "admin@example.com"
DEFAULT_TOKEN_DAYS = 90


def _fail(error: ApiError) -> None:
    details = "; ".join(f"{e['value']} {', '.join(e['messages'])}" for e in error.errors)
    raise click.ClickException(f"{error.message}{': ' + details if details else ''}")


def _emit(as_json: bool, data: dict, lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(data))
    else:
        for line in lines:
            click.echo(line)


def _upgrade_schema() -> None:
    from flask_migrate import upgrade

    from . import MIGRATIONS_DIR

    upgrade(directory=MIGRATIONS_DIR)


def _ensure_keys() -> bool:
    made = ensure_active_key(
        Path(current_app.config["KEYS_DIR"]), current_app.config["SIGNING_ALG"]
    )
    console_secret.ensure(current_app)  # the console's session key, before any worker starts
    return made


def bootstrap(workspace_name: str, admin_email: str, token_days: int) -> dict:
    """Create the workspace and admin if missing, and issue the admin a new personal token."""
    workspace, _ = workspaces.get_or_create_workspace(workspace_name)
    admin, _ = workspaces.get_or_create_user(admin_email, workspace.account_id)
    workspaces.grant_permission(admin, workspace, Role.ADMIN, actor=CLI_ACTOR)
    console_password = None
    if admin.password_hash is None:  # a console password, printed once, only if none is set
        console_password = passwords.generate_password()
        passwords.set_password(admin, console_password, actor=CLI_ACTOR, origin=NO_ORIGIN)
    lifetime = min(
        timedelta(days=token_days), timedelta(seconds=current_app.config["MAX_TOKEN_LIFETIME"])
    )
    token, secret = api_tokens.create_personal_token(
        workspace,
        admin,
        expires_at=datetime.now(UTC) + lifetime,
        description="created by authserver init",
        actor=CLI_ACTOR,
        origin=NO_ORIGIN,
    )
    db.session.commit()
    return {
        "workspaceId": workspace.id,
        "workspaceName": workspace.name,
        "userId": admin.id,
        "userName": admin.user_name,
        "tokenId": token.id,
        "apiToken": secret,
        "expiry": token.expires_at.isoformat(),
        **({"consolePassword": console_password} if console_password else {}),
    }


def _print_bootstrap(result: dict, as_json: bool) -> None:
    _emit(
        as_json,
        result,
        [
            f"workspace {result['workspaceName']} ({result['workspaceId']})",
            f"admin     {result['userName']} ({result['userId']})",
            "API token (shown once, store it now):",
            f"  {result['apiToken']}",
            *(
                ["console password (shown once; sign in at /admin/login):"]
                + [f"  {result['consolePassword']}"]
                if "consolePassword" in result
                else []
            ),
        ],
    )


@click.command("init")
@click.option("--workspace", default=DEFAULT_WORKSPACE, show_default=True)
@click.option("--admin", "admin_email", default=DEFAULT_ADMIN, show_default=True)
@click.option("--token-days", default=DEFAULT_TOKEN_DAYS, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
def init_command(workspace, admin_email, token_days, as_json):
    """Migrate, make keys if missing, ensure a workspace and admin, print a new admin API token."""
    _upgrade_schema()
    _ensure_keys()
    try:
        result = bootstrap(workspace, admin_email, token_days)
    except ApiError as error:
        _fail(error)
    _print_bootstrap(result, as_json)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@with_appcontext
def serve_command(host, port, workers):
    """Run under gunicorn (sync workers); on a fresh install, run init first."""
    os.environ.setdefault("AUTHSERVER_ISSUER", f"http://{host}:{port}")
    _upgrade_schema()
    _ensure_keys()
    if workspaces.first_workspace() is None:
        _print_bootstrap(bootstrap(DEFAULT_WORKSPACE, DEFAULT_ADMIN, DEFAULT_TOKEN_DAYS), False)
    db.session.remove()
    db.engine.dispose()  # workers open their own connections after the fork
    from .serve import run

    run(host, port, workers, seal=current_app.config["AUDIT_SEAL_INTERVAL"] > 0)


def _parse_date(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("use an ISO 8601 date, e.g. 2027-06-30") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


@click.command("create-user")
@click.option("--workspace", "workspace_name", required=True)
@click.option("--email", required=True)
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def create_user_command(workspace_name, email, role, as_json):
    """Create a human user (or update their role) in a workspace."""
    try:
        workspace = workspaces.find_workspace(workspace_name)
        user, _ = workspaces.get_or_create_user(email, workspace.account_id)
        permission = workspaces.grant_permission(user, workspace, Role(role), actor=CLI_ACTOR)
    except ApiError as error:
        _fail(error)
    db.session.commit()
    data = {
        "userId": user.id,
        "userName": user.user_name,
        "workspaceId": workspace.id,
        "permissionId": permission.id,
        "role": role,
    }
    _emit(as_json, data, [f"user {user.user_name} ({user.id}) is {role} of {workspace.name}"])


@click.command("create-technical-user")
@click.option("--workspace", "workspace_name", required=True)
@click.option("--name", required=True)
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--expires", required=True, help="Token expiry, ISO 8601 date or time (UTC).")
@click.option("--description", default="")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def create_technical_user_command(workspace_name, name, role, expires, description, as_json):
    """Create a technical user and print its API token once."""
    try:
        workspace = workspaces.find_workspace(workspace_name)
        technical_user, token, secret = technical_users.create_technical_user(
            workspace,
            user_name=technical_users.check_user_name(name, "name"),
            role=Role(role),
            description=description,
            expires_at=api_tokens.check_expiry(_parse_date(expires), "expires"),
            token_description="",
            actor=CLI_ACTOR,
            origin=NO_ORIGIN,
        )
    except ApiError as error:
        _fail(error)
    db.session.commit()
    data = {
        "id": technical_user.id,
        "userName": technical_user.user_name,
        "role": role,
        "workspaceId": workspace.id,
        "tokenId": token.id,
        "apiToken": secret,
        "expiry": token.expires_at.isoformat(),
    }
    _emit(
        as_json,
        data,
        [
            f"technical user {technical_user.user_name} ({technical_user.id}), {role}",
            "API token (shown once, store it now):",
            f"  {secret}",
        ],
    )


@click.command("set-password")
@click.argument("email")
@with_appcontext
def set_password_command(email):
    """Set a user's console password, read from standard input (asked twice on a terminal)."""
    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    user = passwords.find_user(email)
    if user is None:
        raise click.ClickException(f"no user with email {email}")
    try:
        passwords.set_password(user, password, actor=CLI_ACTOR, origin=NO_ORIGIN)
    except ApiError as error:
        _fail(error)
    db.session.commit()
    click.echo(f"password set for {user.user_name}")


def init_app(app) -> None:
    """Register the commands."""
    for command in (
        init_command,
        serve_command,
        create_user_command,
        create_technical_user_command,
        set_password_command,
    ):
        app.cli.add_command(command)
    cli_keys.init_app(app)
    app.cli.add_command(demo_resources.demo_resources_command)
    cli_audit.init_app(app)


def main() -> None:
    """Entry point of the `authserver` script."""
    import sys

    from . import create_app
    from .config import ConfigError, from_environment

    try:
        from_environment()  # fail fast, with the message, before any command runs
    except ConfigError as error:
        click.echo(f"authserver: configuration error: {error}", err=True)
        sys.exit(2)
    FlaskGroup(
        create_app=create_app,
        name="authserver",
        add_version_option=False,
        load_dotenv=False,
        set_debug_flag=False,
    )(prog_name="authserver")


if __name__ == "__main__":
    main()
