"""Benchmark the introspection endpoint: requests/s, p50 and p99 against a running server.

Starts `authserver serve` on loopback over a fresh database (SQLite in a temp
folder unless --database-url is given), creates a workspace with a checker
technical user and N others, exchanges their API tokens for access tokens,
then introspects for a bounded time: first the access tokens (the online-mode
verification of a resource API), then the API tokens. Every answer must be
200 with `active: true`; anything else is counted as a failure.

    .venv/bin/python tests/perf/bench_introspect.py [--seconds 5] [--tokens 50]
        [--connections 4] [--workers 2] [--python-load]
        [--database-url postgresql+psycopg://postgres@127.0.0.1/authserver_bench]

wrk drives the load when installed (a Lua script rotates through the tokens),
a Python generator otherwise. Not a test: it prints figures, never asserts.
"""

import argparse
import base64
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

INTROSPECT_PATH = "/services/mtm/v1/oauth2/introspect"
TOKEN_PATH = "/services/mtm/v1/oauth2/token"
MAX_SECONDS = 60  # whatever is asked, a phase never runs longer


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp folder")
    parser.add_argument("--python-load", action="store_true", help="use the Python generator")
    args = parser.parse_args()
    args.seconds = max(1, min(args.seconds, MAX_SECONDS))
    return args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


SETUP = """
import json, sys
from datetime import UTC, datetime, timedelta
from authserver import create_app
from authserver.cli import _ensure_keys, _upgrade_schema
from authserver.extensions import db
from authserver.models import Role
from authserver.services import technical_users, workspaces
from authserver.services.audit import CLI_ACTOR, NO_ORIGIN
app = create_app()
with app.app_context():
    _upgrade_schema()
    _ensure_keys()
    workspace, _ = workspaces.get_or_create_workspace("bench-introspect")
    secrets = []
    for i in range(int(sys.argv[1]) + 1):
        _, _, secret = technical_users.create_technical_user(
            workspace, user_name=f"bench-{i}", role=Role.VIEWER if i == 0 else Role.MEMBER,
            description="", expires_at=datetime.now(UTC) + timedelta(days=1),
            token_description="", actor=CLI_ACTOR, origin=NO_ORIGIN)
        secrets.append(secret)
    db.session.commit()
    json.dump(secrets, sys.stdout)
"""


def make_api_tokens(env: dict, count: int) -> list[str]:
    """Migrate, make keys, and create count + 1 technical users; the first is the checker."""
    out = subprocess.run(
        [sys.executable, "-c", SETUP, str(count)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(out.stdout)


def start_server(env: dict, port: int, workers: int, log: Path) -> subprocess.Popen:
    handle = open(log, "wb")  # noqa: SIM115 - the process holds it until it stops
    command = [sys.executable, "-m", "authserver.cli", "serve", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--workers", str(workers)], env=env, stdout=handle, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/.well-known/jwks.json", timeout=1)
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"server did not start; see {log}")


def basic(secret: str) -> str:
    return "Basic " + base64.b64encode(f"apitoken:{secret}".encode()).decode()


def post(port: int, path: str, body: str, authorization: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {
            "Authorization": authorization,
            "Content-Type": "application/x-www-form-urlencoded",
        }
        conn.request("POST", path, body, headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def access_tokens(port: int, secrets: list[str]) -> list[str]:
    tokens = []
    for secret in secrets:
        status, body = post(port, TOKEN_PATH, "grant_type=client_credentials", basic(secret))
        if status != 200:
            raise SystemExit(f"token endpoint answered {status}: {body[:200]!r}")
        tokens.append(json.loads(body)["access_token"])
    return tokens


LUA = """
local bodies = {}
local f = io.open("%s")
for line in f:lines() do bodies[#bodies + 1] = line end
f:close()
local i = 0
request = function()
  i = (i %% #bodies) + 1
  return wrk.format("POST", "%s", {
    ["Authorization"] = "%s",
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }, bodies[i])
end
done = function(summary, latency, requests)
  io.write(string.format("JSON{\\"requests\\":%%d,\\"seconds\\":%%f,\\"p50\\":%%f," ..
    "\\"p99\\":%%f,\\"errors\\":%%d,\\"non200\\":%%d}\\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(99) / 1e3,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""


def load_with_wrk(port, checker, bodies, seconds, connections, workdir: Path) -> dict:
    """wrk cannot share a counter across its threads, so answers are checked afterwards."""
    bodies_file = workdir / "bodies.txt"
    bodies_file.write_text("\n".join(bodies) + "\n")
    script = workdir / "introspect.lua"
    script.write_text(LUA % (bodies_file, INTROSPECT_PATH, basic(checker)))
    threads = min(2, connections)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "-s", str(script)]
        + [f"http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    result = json.loads(next(line for line in out.splitlines() if line.startswith("JSON"))[4:])
    ok = result["requests"] - result["non200"]
    return {
        "requests": ok,
        "rate": ok / result["seconds"],
        "p50_ms": result["p50"],
        "p99_ms": result["p99"],
        "failures": result["non200"] + result["errors"],
        "tool": "wrk",
    }


def load_with_python(port, checker, bodies, seconds, connections) -> dict:
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    authorization = basic(checker)

    def worker(offset: int):
        mine, bad, index = [], 0, offset
        while time.monotonic() < stop_at:
            body = bodies[index % len(bodies)]
            index += 1
            started = time.perf_counter()
            status, answer = post(port, INTROSPECT_PATH, body, authorization)
            mine.append(time.perf_counter() - started)
            if status != 200 or not json.loads(answer).get("active"):
                bad += 1
        with lock:
            latencies.extend(mine)
            failures[0] += bad

    threads = [threading.Thread(target=worker, args=(i * 7,)) for i in range(connections)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    quantiles = statistics.quantiles(sorted(latencies), n=100)
    return {
        "requests": len(latencies) - failures[0],
        "rate": (len(latencies) - failures[0]) / elapsed,
        "p50_ms": quantiles[49] * 1000,
        "p99_ms": quantiles[98] * 1000,
        "failures": failures[0],
        "tool": "python",
    }


def spot_check(port: int, checker: str, bodies: list[str]) -> int:
    """How many of the bodies do not introspect as active (wrk only counts statuses)."""
    inactive = 0
    for body in bodies:
        status, answer = post(port, INTROSPECT_PATH, body, basic(checker))
        inactive += status != 200 or not json.loads(answer).get("active")
    return inactive


def report(label: str, result: dict) -> None:
    print(
        f"{label:<30} {result['rate']:8.1f} requests/s   p50 {result['p50_ms']:6.2f} ms   "
        f"p99 {result['p99_ms']:6.2f} ms   failures {result['failures']}   ({result['tool']})"
    )


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="authserver-bench-introspect-"))
    port = free_port()
    env = bench_env(workdir, args.database_url, port)
    try:
        checker, *secrets = make_api_tokens(env, args.tokens)
        server = start_server(env, port, args.workers, workdir / "server.log")
        try:
            phases = {
                "introspect access tokens": access_tokens(port, secrets),
                "introspect API tokens": secrets,
            }
            print(
                f"authserver serve --workers {args.workers} on 127.0.0.1:{port}, "
                f"{'PostgreSQL' if args.database_url else 'SQLite'}, "
                f"{args.connections} connections, {args.seconds} s per phase, "
                f"{len(secrets)} tokens"
            )
            use_wrk = shutil.which("wrk") and not args.python_load
            for label, values in phases.items():
                bodies = [urllib.parse.urlencode({"token": value}) for value in values]
                if spot_check(port, checker, bodies):
                    raise SystemExit(f"{label}: some tokens are not active before the run")
                if use_wrk:
                    result = load_with_wrk(
                        port, checker, bodies, args.seconds, args.connections, workdir
                    )
                else:
                    result = load_with_python(port, checker, bodies, args.seconds, args.connections)
                report(label, result)
        finally:
            server.terminate()
            server.wait(timeout=15)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
