"""`authserver keys ...` (signing key rotation) and `authserver tokens prune-denylist|expiring`.

A rotation makes a new active key; the old one stays published as retiring so
tokens it signed keep verifying. Every process sharing the keys folder sees
the change within a second (KeyRing watches keys.json). Once a retiring key is
older than every token it can have signed, `keys prune` retires it: it leaves
the JWKS and its private PEM is deleted. `keys rotate` prunes first, so with
regular rotations at most two keys are ever published.
"""

import json
from datetime import timedelta
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from . import keys
from .config import SIGNING_ALGORITHMS
from .errors import ApiError
from .extensions import db
from .keys import RELOAD_CHECK_SECONDS
from .models.types import utcnow
from .services import workspaces
from .services.api_tokens import expiring_tokens
from .services.audit import CLI_ACTOR, EventType, Target, record_event
from .services.revocation import prune_denylist
from .verify import LEEWAY_SECONDS

# A retiring key may be retired once every token it signed is past exp. Tokens
# are signed by it until each instance notices the rotation (RELOAD_CHECK_SECONDS)
# and are accepted until exp + the verifiers' leeway; one extra minute covers
# clock differences between hosts.
RETIRE_MARGIN_SECONDS = int(RELOAD_CHECK_SECONDS) + LEEWAY_SECONDS + 60


def retire_after_seconds() -> int:
    """How long a key stays retiring: the access token lifetime plus the margin."""
    return current_app.config["ACCESS_TOKEN_TTL"] + RETIRE_MARGIN_SECONDS


def _keys_dir() -> Path:
    return Path(current_app.config["KEYS_DIR"])


def _key_target(kid: str) -> Target:
    return Target(type="SIGNING_KEY", id=kid, name=None)


def prune_keys(older_than: int) -> list[str]:
    """Retire keys retiring for longer than `older_than` seconds; audit each retirement."""
    retired = keys.prune(_keys_dir(), older_than)
    for kid in retired:
        record_event(
            EventType.SIGNING_KEY_ROTATE,
            workspace=None,
            actor=CLI_ACTOR,
            target=_key_target(kid),
            payload={"action": "retire", "kid": kid, "retiringForSeconds": older_than},
        )
    return retired


def rotate_keys(alg: str) -> tuple[str | None, str, list[str]]:
    """Prune what is due, then make a new active key; audit it. (old kid, new kid, retired)."""
    retired = prune_keys(retire_after_seconds())
    old, new = keys.rotate(_keys_dir(), alg)
    record_event(
        EventType.SIGNING_KEY_ROTATE,
        workspace=None,
        actor=CLI_ACTOR,
        target=_key_target(new),
        payload={"action": "rotate", "alg": alg, "newKid": new, "oldKid": old},
    )
    return old, new, retired


@click.group("keys")
def keys_group():
    """Signing keys: list, rotate, prune."""


@keys_group.command("rotate")
@click.option(
    "--alg",
    type=click.Choice(SIGNING_ALGORITHMS),
    default=None,
    help="Algorithm of the new key (default: AUTHSERVER_SIGNING_ALG).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
def rotate_command(alg, as_json):
    """Make a new active key; the old one keeps verifying as retiring."""
    alg = alg or current_app.config["SIGNING_ALG"]
    old, new, retired = rotate_keys(alg)
    db.session.commit()
    data = {"oldKid": old, "newKid": new, "alg": alg, "retired": retired}
    _emit(
        as_json,
        data,
        [f"retired {kid}" for kid in retired]
        + [
            f"new active key {new} ({alg})",
            f"retiring key   {old}" if old else "no previous key",
        ],
    )


@keys_group.command("prune")
@click.option(
    "--older-than",
    type=click.IntRange(0),
    default=None,
    help="Seconds a key must have been retiring (default: ACCESS_TOKEN_TTL + margin).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
def prune_command(older_than, as_json):
    """Retire keys that no unexpired token can have been signed with."""
    older_than = retire_after_seconds() if older_than is None else older_than
    retired = prune_keys(older_than)
    db.session.commit()
    lines = [f"retired {kid}" for kid in retired] or ["nothing to retire"]
    _emit(as_json, {"retired": retired, "olderThanSeconds": older_than}, lines)


@keys_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
def list_command(as_json):
    """Every key with its algorithm and state (active, retiring, retired)."""
    entries = keys.list_keys(_keys_dir())
    lines = [
        f"{e['kid']}  {e['alg']:<6} {e['state']:<9} created {e['created_at']}"
        + (f", retiring since {e['retiring_since']}" if e.get("retiring_since") else "")
        for e in entries
    ]
    _emit(as_json, {"keys": entries}, lines or ["no keys"])


@click.group("tokens")
def tokens_group():
    """Access token housekeeping."""


@tokens_group.command("prune-denylist")
@with_appcontext
def prune_denylist_command():
    """Delete denylist entries of revoked access tokens that have expired anyway."""
    count = prune_denylist(utcnow())
    db.session.commit()
    click.echo(f"pruned {count} expired denylist {'entry' if count == 1 else 'entries'}")


@tokens_group.command("expiring")
@click.option("--days", default=14, show_default=True, type=click.IntRange(1, 3650))
@click.option("--workspace", "workspace_name", default=None, help="Only this workspace.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
def expiring_command(days, workspace_name, as_json):
    """List live API tokens that expire within the next DAYS days, soonest first."""
    workspace_id = None
    if workspace_name is not None:
        try:
            workspace_id = workspaces.find_workspace(workspace_name).id
        except ApiError as error:
            raise click.ClickException(error.message) from None
    found = expiring_tokens(utcnow(), timedelta(days=days), workspace_id)
    db.session.rollback()
    rows = [
        {
            "tokenId": token.id,
            "hint": token.hint,
            "expiry": token.expires_at.isoformat().replace("+00:00", "Z"),
            "workspaceName": token.workspace_name,
            "owner": token.owner,
            "technicalUser": token.technical_user,
        }
        for token in found
    ]
    lines = [
        f"{r['expiry']}  {r['workspaceName']}  {r['owner']}"
        f"{' (technical user)' if r['technicalUser'] else ''}  token {r['tokenId']} ...{r['hint']}"
        for r in rows
    ] or [f"no API token expires within {days} days"]
    _emit(as_json, {"days": days, "tokens": rows}, lines)


def _emit(as_json: bool, data: dict, lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(data))
    else:
        for line in lines:
            click.echo(line)


def init_app(app) -> None:
    """Register `keys` and `tokens` (joining a `tokens` group registered elsewhere)."""
    app.cli.add_command(keys_group)
    existing = app.cli.commands.get("tokens")
    if isinstance(existing, click.Group):
        existing.add_command(prune_denylist_command)
        existing.add_command(expiring_command)
    else:
        app.cli.add_command(tokens_group)
