"""What the benchmark scripts share: a server on loopback, test credentials, a load generator.

Load comes from wrk (Debian's package) when installed, with a Lua script that
walks through a list of (Authorization, body) pairs, else from a Python
generator with the same request list. Every run is bounded in time.
"""

import base64
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

TOKEN_PATH = "/services/mtm/v1/oauth2/token"
MAX_SECONDS = 120  # whatever is asked, a load phase never runs longer


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_env(workdir: Path, database_url: str | None, port: int) -> dict:
    """The server's environment: its own database, keys and issuer; rate limits off.

    Any other AUTHSERVER_* variable set when the script starts passes through,
    so a configuration can be measured (e.g. AUTHSERVER_AUDIT_SEAL_INTERVAL=0).

    Logging stays at its default, so the audit log sink writes its JSON line for
    every grant, as in production (into the server's log file).
    """
    env = {"AUTHSERVER_RATELIMIT_ENABLED": "false", **os.environ}  # other AUTHSERVER_* pass
    env.update(
        AUTHSERVER_DATABASE_URL=database_url or f"sqlite:///{workdir}/bench.db",
        AUTHSERVER_KEYS_DIR=str(workdir / "keys"),
        AUTHSERVER_ISSUER=f"http://127.0.0.1:{port}",
    )
    return env


_SETUP = """
import json, sys
from datetime import UTC, datetime, timedelta
from authserver import create_app
from authserver.cli import _ensure_keys, _upgrade_schema
from authserver.extensions import db
from authserver.models import Role
from authserver.services import technical_users, workspaces
from authserver.services.audit import CLI_ACTOR, NO_ORIGIN
workspace_name, count, roles = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
app = create_app()
with app.app_context():
    _upgrade_schema()
    _ensure_keys()
    workspace, _ = workspaces.get_or_create_workspace(workspace_name)
    secrets = []
    for i in range(count):
        _, _, secret = technical_users.create_technical_user(
            workspace, user_name=f"bench-{i}", role=Role(roles[i % len(roles)]),
            description="", expires_at=datetime.now(UTC) + timedelta(days=1),
            token_description="", actor=CLI_ACTOR, origin=NO_ORIGIN)
        secrets.append(secret)
    db.session.commit()
    json.dump(secrets, sys.stdout)
"""


def make_technical_users(env: dict, workspace: str, count: int, roles: list[str]) -> list[str]:
    """Migrate, make keys, create `count` technical users (roles in turn); their API tokens."""
    out = subprocess.run(
        [sys.executable, "-c", _SETUP, workspace, str(count), ",".join(roles)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(out.stdout)


def start_server(env: dict, port: int, workers: int, log: Path) -> subprocess.Popen:
    """`authserver serve` on loopback; returns once it answers."""
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


def stop_server(process: subprocess.Popen) -> None:
    """Terminate and wait."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def worker_rss_mib(master_pid: int) -> list[float]:
    """RSS of each gunicorn worker (children of the master but the sealer), in MiB."""
    out = subprocess.run(
        ["ps", "-o", "rss=,args=", "--ppid", str(master_pid)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    rows = [line.split(None, 1) for line in out.strip().splitlines() if line.strip()]
    return [int(rss) / 1024 for rss, args in rows if "seal --follow" not in args]


def basic(secret: str) -> str:
    """An HTTP Basic value for `apitoken:<secret>`."""
    return "Basic " + base64.b64encode(f"apitoken:{secret}".encode()).decode()


def post(port: int, path: str, body: str, authorization: str) -> tuple[int, bytes]:
    """One form POST on a fresh connection (sync workers close after each answer)."""
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


_LUA = """
local auths, bodies = {}, {}
for line in io.lines("%s") do auths[#auths + 1] = line end
for line in io.lines("%s") do bodies[#bodies + 1] = line end
local i = 0
request = function()
  i = (i %% #auths) + 1
  return wrk.format("POST", "%s", {
    ["Authorization"] = auths[i],
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


def load_with_wrk(port, path, requests, seconds, connections, workdir: Path) -> dict:
    """Drive (authorization, body) pairs round-robin with wrk; non-200 answers are failures."""
    auths, bodies = workdir / "auths.txt", workdir / "bodies.txt"
    auths.write_text("\n".join(auth for auth, _ in requests) + "\n")
    bodies.write_text("\n".join(body for _, body in requests) + "\n")
    script = workdir / "load.lua"
    script.write_text(_LUA % (auths, bodies, path))
    seconds = max(1, min(seconds, MAX_SECONDS))
    out = subprocess.run(
        ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "-s", str(script)]
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


def load_with_python(
    port, path, requests, seconds, connections, accept: Callable[[int, bytes], bool]
) -> dict:
    """The same load from Python threads; `accept` decides which answers count as successes."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + max(1, min(seconds, MAX_SECONDS))

    def worker(offset: int):
        mine, bad, index = [], 0, offset
        while time.monotonic() < stop_at:
            authorization, body = requests[index % len(requests)]
            index += 1
            started = time.perf_counter()
            status, answer = post(port, path, body, authorization)
            mine.append(time.perf_counter() - started)
            bad += not accept(status, answer)
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


def run_load(
    port,
    path,
    requests,
    seconds,
    connections,
    workdir,
    *,
    python_load=False,
    accept=lambda status, _answer: status == 200,
) -> dict:
    """wrk when installed (unless python_load), else the Python generator."""
    if shutil.which("wrk") and not python_load:
        return load_with_wrk(port, path, requests, seconds, connections, workdir)
    return load_with_python(port, path, requests, seconds, connections, accept)
