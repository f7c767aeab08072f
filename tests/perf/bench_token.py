"""Benchmark the token endpoint: grants/s, p50, p99 and worker RSS, against the bare cost.

Starts `authserver serve --workers 2` on loopback over a fresh database with
many distinct API tokens, drives the token endpoint for a bounded time (wrk,
or a Python generator), counts the grant events, then measures in the same
run what the same work costs in process without HTTP: checksum, SHA-256, the
indexed lookup, building and signing the JWT, and writing the audit event.

    .venv/bin/python tests/perf/bench_token.py [--seconds 10] [--tokens 500]
        [--connections 4] [--workers 2] [--python-load]
        [--database-url postgresql+psycopg://postgres@127.0.0.1/authserver_bench]

Not a test: it prints figures; it never asserts a speed.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import harness  # beside this script, so on sys.path when it runs


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp folder")
    parser.add_argument("--python-load", action="store_true", help="use the Python generator")
    return parser.parse_args()


_BARE = """
import json, sys, time
from datetime import UTC, datetime
from authserver import create_app, tokens
from authserver.extensions import db
from authserver.services.audit import EventType, Origin, record_event
from authserver.services.credentials import confirm_principal, resolve_principal
secrets, seconds = json.loads(sys.stdin.read()), float(sys.argv[1])
app = create_app()
with app.app_context():
    issuer = app.extensions["authserver.issuer"]
    prefix = app.config["TOKEN_PREFIX"]
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        secret = secrets[n % len(secrets)]
        assert tokens.is_well_formed(secret, prefix)
        principal = resolve_principal(tokens.digest(secret), datetime.now(UTC), lock=True)
        issued = issuer.issue(principal, principal.scopes, ("graphql",))
        principal = confirm_principal(principal)
        record_event(EventType.ACCESS_TOKEN_GRANT, workspace=principal.workspace,
                     actor=principal.actor, target=principal.token_target,
                     origin=Origin("127.0.0.1", "bench"), payload={"jti": issued.jti})
        db.session.commit()
        n += 1
    print(n / (time.perf_counter() - start))
"""

_COUNT_GRANTS = """
from sqlalchemy import func, select
from authserver import create_app
from authserver.extensions import db
from authserver.models import AuditEvent
app = create_app()
with app.app_context():
    print(db.session.execute(select(func.count()).select_from(AuditEvent)
          .where(AuditEvent.type == "ACCESS_TOKEN_GRANT")).scalar())
"""


def in_process(env: dict, script: str, *args: str, stdin: str = "") -> str:
    """Run a snippet against the benchmark's database; its last line of output."""
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return out.stdout.strip().splitlines()[-1]


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="authserver-bench-"))
    port = harness.free_port()
    env = harness.bench_env(workdir, args.database_url, port)
    try:
        secrets = harness.make_technical_users(
            env, "bench", args.tokens, ["ADMIN", "MEMBER", "VIEWER"]
        )
        requests = [(harness.basic(s), "grant_type=client_credentials") for s in secrets]
        server = harness.start_server(env, port, args.workers, workdir / "server.log")
        try:
            result = harness.run_load(
                port,
                harness.TOKEN_PATH,
                requests,
                args.seconds,
                args.connections,
                workdir,
                python_load=args.python_load,
            )
            rss = harness.worker_rss_mib(server.pid)
        finally:
            harness.stop_server(server)
        grants_in_db = int(in_process(env, _COUNT_GRANTS))
        bare = float(in_process(env, _BARE, "3", stdin=json.dumps(secrets)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    database = "PostgreSQL" if args.database_url else "SQLite"
    per_worker = result["rate"] / max(1, min(args.workers, os.cpu_count() or 1))
    print(
        f"token endpoint, {args.workers} sync workers, {database}, {len(secrets)} distinct "
        f"tokens, {args.connections} connections, {args.seconds} s, load by {result['tool']}"
    )
    print(f"  grants/s          {result['rate']:8.0f}")
    print(f"  p50 latency       {result['p50_ms']:8.2f} ms")
    print(f"  p99 latency       {result['p99_ms']:8.2f} ms")
    print(f"  failed requests   {result['failures']:8d}")
    print(f"  grant events      {grants_in_db:8d} (successful requests: {result['requests']})")
    print(f"  worker RSS        {', '.join(f'{r:.0f}' for r in rss)} MiB")
    print(f"  in-process bare   {bare:8.0f} grants/s on one core (checksum, SHA-256, lookup,")
    print("                    signing, confirmation, audit insert, commit; no HTTP, no Flask,")
    print("                    no Authlib)")
    print(
        f"  per worker        {per_worker:8.0f} grants/s = {per_worker / bare:.0%} of the bare rate"
    )


if __name__ == "__main__":
    main()
