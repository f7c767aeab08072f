"""`authserver audit ...`: seal, verify, export and prune the audit log."""

import json
import os
import signal
import threading
from datetime import UTC, datetime

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import select

from .audit_chain import (
    EVENTS,
    NO_WORKSPACE,
    BackgroundSealer,
    ChainReport,
    chain_keys,
    chain_name,
    prune_chain,
    seal_pending,
    verify_chain,
)
from .extensions import db
from .models import Workspace
from .services.audit import event_to_dict

EXPORT_PAGE = 1000


class Moment(click.ParamType):
    """An ISO 8601 date or date-time; without a zone it is UTC."""

    name = "DATE"

    def convert(self, value, param, ctx):
        """Parse to an aware UTC datetime."""
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            self.fail("use an ISO 8601 date or time, e.g. 2027-06-30 or 2027-06-30T12:00Z", param)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)


MOMENT = Moment()
WORKSPACE_HELP = 'A workspace name, or "-" for the events that belong to no workspace.'


def _chain_of(workspace_name: str) -> str:
    """The chain key of a workspace given by name ("-" is the chain without a workspace)."""
    if workspace_name == NO_WORKSPACE:
        return NO_WORKSPACE
    workspace_id = db.session.execute(
        select(Workspace.id).where(Workspace.name == workspace_name)
    ).scalar()
    if workspace_id is None:
        workspace_id = db.session.execute(
            select(EVENTS.c.workspace_id).where(EVENTS.c.workspace_name == workspace_name).limit(1)
        ).scalar()
    db.session.rollback()
    if workspace_id is None:
        raise click.BadParameter(f"no workspace named {workspace_name!r}", param_hint="--workspace")
    return workspace_id


def _chains(workspace_name: str | None) -> list[str]:
    return [_chain_of(workspace_name)] if workspace_name else chain_keys()


def _label(key: str, name: str | None = None) -> str:
    if key == NO_WORKSPACE:
        return "(no workspace)"
    name = name or chain_name(key)
    db.session.rollback()
    return f"{name} ({key})" if name else key


@click.group("audit")
def audit_group():
    """Seal, verify, export and prune the audit log."""


@audit_group.command("seal")
@click.option(
    "--settle-seconds",
    type=click.IntRange(0),
    default=None,
    help="Seal only events at least this old (default: AUDIT_SEAL_SETTLE).",
)
@click.option(
    "--follow",
    is_flag=True,
    help="Keep sealing every AUDIT_SEAL_INTERVAL seconds until stopped (SIGTERM or Ctrl-C) "
    "or until the process that started this one exits. `authserver serve` runs one.",
)
@with_appcontext
def seal_command(settle_seconds, follow):
    """Chain every committed event that is not sealed yet (the server also does this itself)."""
    if settle_seconds is None:
        settle_seconds = current_app.config["AUDIT_SEAL_SETTLE"]
    if follow:
        _follow(settle_seconds)
        return
    report = seal_pending(settle_seconds=settle_seconds)
    click.echo(f"sealed {report.total} event(s) in {len(report.sealed)} chain(s)")
    for key, (seq, event_id, digest) in sorted(report.heads.items()):
        click.echo(f"  {_label(key)}: through position {seq} (event {event_id}), head {digest}")


def _report_line(report: ChainReport) -> str:
    label = _label(report.key, report.name)
    unsealed = f"; {report.unsealed} not sealed yet" if report.unsealed else ""
    if report.broken is not None:
        return f"BROKEN  {label}: {report.broken.detail}"
    if report.verified == 0:
        return f"ok      {label}: nothing sealed yet{unsealed}"
    return (
        f"ok      {label}: {report.verified} event(s), positions {report.first_seq}-"
        f"{report.last_seq}, head {report.head}{unsealed}"
    )


def _report_json(report: ChainReport) -> dict:
    broken = report.broken
    return {
        "chain": report.key,
        "workspaceName": report.name,
        "ok": report.ok,
        "verified": report.verified,
        "firstPosition": report.first_seq,
        "lastPosition": report.last_seq,
        "lastEventId": report.last_event_id,
        "head": report.head,
        "unsealed": report.unsealed,
        "belowPrunePoint": report.below_prune_point,
        "broken": None
        if broken is None
        else {
            "kind": broken.kind,
            "eventId": broken.event_id,
            "position": broken.seq,
            "detail": broken.detail,
        },
    }


def _follow(settle_seconds: int) -> None:
    """Seal in rounds, as a worker's background sealer would, until told to stop.

    A failed round (the database down) is logged and retried later, with the
    sealer's backoff; the process itself never gives up.
    """
    interval = current_app.config["AUDIT_SEAL_INTERVAL"]
    if not interval:
        raise click.UsageError("AUTHSERVER_AUDIT_SEAL_INTERVAL is 0: automatic sealing is off")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    parent = os.getppid()
    app = current_app._get_current_object()
    sealer = BackgroundSealer(app, interval=interval, settle=settle_seconds)
    click.echo(f"sealing every {interval} s, events at least {settle_seconds} s old")
    while not stop.is_set() and os.getppid() == parent:
        come_back = sealer.seal_once()
        stop.wait(come_back if sealer.failures else interval)
    click.echo("sealer stopped")


@audit_group.command("verify")
@click.option("--workspace", "workspace_name", default=None, help=WORKSPACE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
@click.pass_context
def verify_command(ctx, workspace_name, as_json):
    """Recompute every chain; name the first event changed, removed or reordered (exit 1)."""
    reports = [verify_chain(key) for key in _chains(workspace_name)]
    broken = [report for report in reports if not report.ok]
    if as_json:
        click.echo(json.dumps({"ok": not broken, "chains": [_report_json(r) for r in reports]}))
    else:
        for report in reports:
            click.echo(_report_line(report))
        verified = sum(report.verified for report in reports)
        unsealed = sum(report.unsealed for report in reports)
        state = f"{len(broken)} BROKEN" if broken else "all intact"
        click.echo(
            f"{len(reports)} chain(s), {state}; {verified} sealed event(s) verified, "
            f"{unsealed} not sealed yet"
        )
    if broken:
        ctx.exit(1)


def _export_rows(since: datetime, until: datetime, chain: str | None):
    """The events in [since, until), by id, a page per short transaction."""
    after = 0
    while True:
        query = (
            select(EVENTS)
            .where(EVENTS.c.created_at >= since, EVENTS.c.created_at < until, EVENTS.c.id > after)
            .order_by(EVENTS.c.id)
            .limit(EXPORT_PAGE)
        )
        if chain == NO_WORKSPACE:
            query = query.where(EVENTS.c.workspace_id.is_(None))
        elif chain is not None:
            query = query.where(EVENTS.c.workspace_id == chain)
        rows = db.session.execute(query).all()
        db.session.rollback()
        if not rows:
            return
        yield from rows
        after = rows[-1].id


@audit_group.command("export")
@click.option("--since", required=True, type=MOMENT, help="From this time (inclusive).")
@click.option("--until", required=True, type=MOMENT, help="To this time (exclusive).")
@click.option("--workspace", "workspace_name", default=None, help=WORKSPACE_HELP)
@click.option(
    "--output",
    default="-",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="A file to write (default: standard output).",
)
@with_appcontext
def export_command(since, until, workspace_name, output):
    """Write the events of a time range as JSON lines, each with its chain position and hash."""
    if until <= since:
        raise click.BadParameter("must be after --since", param_hint="--until")
    chain = _chain_of(workspace_name) if workspace_name else None
    count = 0
    with click.open_file(output, "w", encoding="utf-8") as stream:
        for row in _export_rows(since, until, chain):
            line = {**event_to_dict(row), "chainSeq": row.chain_seq, "chainHash": row.chain_hash}
            stream.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
            count += 1
    click.echo(f"exported {count} event(s)", err=True)


@audit_group.command("prune")
@click.option("--before", required=True, type=MOMENT, help="Delete sealed events older than this.")
@click.option("--workspace", "workspace_name", default=None, help=WORKSPACE_HELP)
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@with_appcontext
@click.pass_context
def prune_command(ctx, before, workspace_name, dry_run):
    """Delete old sealed events, keeping a checkpoint so `verify` still proves the rest.

    Each chain is verified up to the cut first; a broken chain is not pruned.
    Events not sealed yet are never deleted. Export first if you must keep them.
    """
    if before > datetime.now(UTC):
        raise click.BadParameter("must not be in the future", param_hint="--before")
    refused = 0
    total = 0
    for key in _chains(workspace_name):
        result = prune_chain(key, before, dry_run=dry_run)
        if result.refused is not None:
            refused += 1
            click.echo(f"REFUSED {_label(key)}: chain broken: {result.refused.detail}")
        elif result.deleted:
            total += result.deleted
            verb = "would delete" if dry_run else "deleted"
            click.echo(
                f"{_label(key)}: {verb} {result.deleted} event(s) through position "
                f"{result.through_seq} (event {result.through_event_id})"
            )
    click.echo(f"{'would prune' if dry_run else 'pruned'} {total} event(s)")
    if refused:
        ctx.exit(1)


def init_app(app) -> None:
    """Register the `audit` command group."""
    app.cli.add_command(audit_group)
