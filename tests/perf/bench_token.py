"""Benchmark the token endpoint: grants/s, p50, p99 and worker RSS, against the bare in-process cost.

Starts `authserver serve --workers 2` on loopback over a fresh database with
many distinct API tokens, drives the token endpoint for a bounded time (wrk
with a Lua script that rotates through the tokens when wrk is installed, a
Python load generator otherwise), then measures in the same run what the same
work costs in process without HTTP: checksum, SHA-256, the indexed lookup,
building and signing the JWT, and writing the audit event.

    .venv/bin/python tests/perf/bench_token.py [--seconds 10] [--tokens 500]
        [--connections 8] [--database-url postgresql+psycopg://postgres@127.0.0.1/authserver_bench]

Not a test: it prints figures; it never asserts a speed.
"""

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOKEN_PATH = "/services/mtm/v1/oauth2/token"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp folder")
    parser.add_argument("--python-load", action="store_true", help="use the Python generator")
    return parser.parse_args()


def bench_env(workdir: Path, database_url: str | None, port: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    env.update(
        AUTHSERVER_DATABASE_URL=database_url or f"sqlite:///{workdir}/bench.db",
        AUTHSERVER_KEYS_DIR=str(workdir / "keys"),
        AUTHSERVER_ISSUER=f"http://127.0.0.1:{port}",
        AUTHSERVER_RATELIMIT_ENABLED="false",
        AUTHSERVER_LOG_LEVEL="WARNING",
    )
    return env


def make_tokens(env: dict, count: int) -> list[str]:
    """Initialise the database and create `count` technical users with distinct tokens."""
    script = f"""
import json, sys
from datetime import UTC, datetime, timedelta
from authserver import create_app
from authserver.cli import _upgrade_schema, _ensure_keys
from authserver.extensions import db
from authserver.models import Role
from authserver.services import technical_users, workspaces
from authserver.services.audit import CLI_ACTOR, NO_ORIGIN
app = create_app()
with app.app_context():
    _upgrade_schema(); _ensure_keys()
    ws, _ = workspaces.get_or_create_workspace("bench")
    secrets = []
    roles = [Role.ADMIN, Role.MEMBER, Role.VIEWER]
    for i in range({count}):
        _, _, secret = technical_users.create_technical_user(
            ws, user_name=f"bench-{{i}}", role=roles[i % 3], description="",
            expires_at=datetime.now(UTC) + timedelta(days=30), token_description="",
            actor=CLI_ACTOR, origin=NO_ORIGIN)
        secrets.append(secret)
    db.session.commit()
    json.dump(secrets, sys.stdout)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def start_server(env: dict, port: int, workers: int, log: Path) -> subprocess.Popen:
    handle = open(log, "wb")  # noqa: SIM115 - closed when the process is stopped
    process = subprocess.Popen(
        [sys.executable, "-m", "authserver.cli", "serve", "--port", str(port),
         "--workers", str(workers)],
        env=env, stdout=handle, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/.well-known/jwks.json", timeout=1)
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("server did not start; see " + str(log))


def worker_rss_mib(master_pid: int) -> list[float]:
    """RSS of each gunicorn worker (children of the master), in MiB."""
    out = subprocess.run(["ps", "-o", "pid=,rss=", "--ppid", str(master_pid)],
                         capture_output=True, text=True, check=False).stdout
    return [int(line.split()[1]) / 1024 for line in out.strip().splitlines() if line.strip()]


def basic(secret: str) -> str:
    return "Basic " + base64.b64encode(f"apitoken:{secret}".encode()).decode()


LUA = """
local headers = {}
local i = 0
local f = io.open("%s")
for line in f:lines() do headers[#headers + 1] = line end
f:close()
request = function()
  i = (i %% #headers) + 1
  return wrk.format("POST", "%s", {
    ["Authorization"] = headers[i],
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }, "grant_type=client_credentials")
end
response = function(status, hdrs, body)
  if status ~= 200 then bad = (bad or 0) + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("JSON{\\"requests\\":%%d,\\"seconds\\":%%f,\\"p50\\":%%f,\\"p99\\":%%f," ..
    "\\"errors\\":%%d,\\"non200\\":%%d}\\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(99) / 1e3,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""


def load_with_wrk(url: str, secrets: list[str], seconds: int, connections: int, workdir: Path):
    headers_file = workdir / "headers.txt"
    headers_file.write_text("\n".join(basic(s) for s in secrets) + "\n")
    script = workdir / "token.lua"
    script.write_text(LUA % (headers_file, TOKEN_PATH))
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("JSON"))
    result = json.loads(line[4:])
    return {
        "grants": result["requests"] - result["non200"],
        "rate": (result["requests"] - result["non200"]) / result["seconds"],
        "p50_ms": result["p50"],
        "p99_ms": result["p99"],
        "failures": result["non200"] + result["errors"],
        "tool": "wrk",
    }


def load_with_python(url: str, secrets: list[str], seconds: int, connections: int):
    import http.client

    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    host, port = url.split("//")[1].split(":")

    def worker(offset: int):
        mine, count = [], offset
        while time.monotonic() < stop_at:
            secret = secrets[count % len(secrets)]
            count += 1
            start = time.perf_counter()
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("POST", TOKEN_PATH, "grant_type=client_credentials",
                         {"Authorization": basic(secret),
                          "Content-Type": "application/x-www-form-urlencoded"})
            response = conn.getresponse()
            response.read()
            conn.close()
            mine.append(time.perf_counter() - start)
            if response.status != 200:
                with lock:
                    failures[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i * 7,)) for i in range(connections)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    latencies.sort()
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "grants": len(latencies) - failures[0],
        "rate": (len(latencies) - failures[0]) / elapsed,
        "p50_ms": quantiles[49] * 1000,
        "p99_ms": quantiles[98] * 1000,
        "failures": failures[0],
        "tool": "python",
    }


def bare_cost(env: dict, secrets: list[str], seconds: float = 3.0) -> float:
    """In-process grants/s on one core: checksum, SHA-256, lookup, sign, audit insert + commit."""
    script = f"""
import json, sys, time
from datetime import UTC, datetime
from authserver import create_app, tokens
from authserver.extensions import db
from authserver.services.audit import EventType, Origin, record_event
from authserver.services.credentials import resolve_principal
secrets = json.loads(sys.stdin.read())
app = create_app()
with app.app_context():
    issuer = app.extensions["authserver.issuer"]
    prefix = app.config["TOKEN_PREFIX"]
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < {seconds}:
        secret = secrets[n % len(secrets)]
        assert tokens.is_well_formed(secret, prefix)
        principal = resolve_principal(tokens.digest(secret), datetime.now(UTC))
        issued = issuer.issue(principal, principal.scopes, ("graphql",))
        record_event(EventType.ACCESS_TOKEN_GRANT, workspace=principal.workspace,
                     actor=principal.actor, target=principal.token_target,
                     origin=Origin("127.0.0.1", "bench"), payload={{"jti": issued.jti}})
        db.session.commit()
        n += 1
    print(n / (time.perf_counter() - start))
"""
    env = {**env, "AUTHSERVER_LOG_LEVEL": "WARNING"}
    out = subprocess.run([sys.executable, "-c", script], env=env, input=json.dumps(secrets),
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def count_grants(env: dict) -> int:
    script = """
from sqlalchemy import func, select
from authserver import create_app
from authserver.extensions import db
from authserver.models import AuditEvent
app = create_app()
with app.app_context():
    print(db.session.execute(select(func.count()).select_from(AuditEvent)
          .where(AuditEvent.type == "ACCESS_TOKEN_GRANT")).scalar())
"""
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="authserver-bench-"))
    env = bench_env(workdir, args.database_url, args.port)
    try:
        secrets = make_tokens(env, args.tokens)
        server = start_server(env, args.port, args.workers, workdir / "server.log")
        url = f"http://127.0.0.1:{args.port}"
        try:
            use_wrk = shutil.which("wrk") and not args.python_load
            if use_wrk:
                result = load_with_wrk(url, secrets, args.seconds, args.connections, workdir)
            else:
                result = load_with_python(url, secrets, args.seconds, args.connections)
            rss = worker_rss_mib(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
        grants_in_db = count_grants(env)
        bare = bare_cost(env, secrets)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    database = "PostgreSQL" if args.database_url else "SQLite"
    print(f"token endpoint, {args.workers} sync workers, {database}, {len(secrets)} distinct "
          f"tokens, {args.connections} connections, {args.seconds} s, load by {result['tool']}")
    print(f"  grants/s          {result['rate']:8.0f}")
    print(f"  p50 latency       {result['p50_ms']:8.2f} ms")
    print(f"  p99 latency       {result['p99_ms']:8.2f} ms")
    print(f"  failed requests   {result['failures']:8d}")
    print(f"  grant events      {grants_in_db:8d} (successful requests: {result['grants']})")
    print(f"  worker RSS        {', '.join(f'{r:.0f}' for r in rss)} MiB")
    print(f"  in-process bare   {bare:8.0f} grants/s on one core "
          f"(checksum + SHA-256 + lookup + sign + audit insert + commit)")
    per_core = result["rate"] / max(1, min(args.workers, os.cpu_count() or 1))
    print(f"  HTTP/server overhead: {per_core:.0f} grants/s per worker vs {bare:.0f} bare "
          f"= {per_core / bare:.0%} of the bare rate")


if __name__ == "__main__":
    main()
