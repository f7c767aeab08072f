"""What audit work costs the token endpoint: grants/s and worker CPU with and without it.

Three configurations of `authserver serve`, run in turn for several rounds (so
that drift on a shared machine hits all of them alike), over one database with
many distinct API tokens, log level at its default (INFO):

    no-audit   record_event patched to a no-op in the server: no INSERT, no sinks, no sealing
    no-seal    the audit INSERT and the log sink; automatic sealing off (AUDIT_SEAL_INTERVAL=0)
    full       the default: INSERT, log sink, and each worker sealing once a second

It reports grants/s and the workers' CPU time per grant (user + system, read
from /proc, including the sealing of the run's last events), which other load
on the machine disturbs far less than throughput.

    .venv/bin/python tests/perf/bench_audit.py [--seconds 6] [--rounds 3] [--tokens 300]
        [--database-url postgresql+psycopg://postgres@127.0.0.1/authserver_bench]

Not a test: it prints figures; it never asserts a speed.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import harness  # beside this script, so on sys.path when it runs

NO_AUDIT = (
    "import importlib, sys; server = importlib.import_module('authserver.oauth.server'); "
    "server.record_event = lambda *args, **kwargs: 0; "
    "from authserver.cli import main; sys.argv[0] = 'authserver'; main()"
)
CONFIGS = {
    "no-audit": ({}, True),
    "no-seal": ({"AUTHSERVER_AUDIT_SEAL_INTERVAL": "0"}, False),
    "full": ({}, False),
}
SEAL_CATCH_UP = 3.5  # seconds after the load: the sealing of the last events counts too


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp folder")
    parser.add_argument("--python-load", action="store_true", help="use the Python generator")
    return parser.parse_args()


def start(env: dict, patched: bool, port: int, workers: int, log: Path) -> subprocess.Popen:
    """Like harness.start_server, optionally with the audit INSERT patched out."""
    if not patched:
        return harness.start_server(env, port, workers, log)
    serve = ["serve", "--port", str(port), "--workers", str(workers)]
    handle = open(log, "wb")  # noqa: SIM115 - the process holds it until it stops
    process = subprocess.Popen(
        [sys.executable, "-c", NO_AUDIT, *serve], env=env, stdout=handle, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/.well-known/jwks.json", timeout=1)  # noqa: S310
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"server did not start; see {log}")


def workers_cpu_seconds(master_pid: int) -> tuple[float, float]:
    """CPU time (user + system) of the workers so far: (request threads, background threads).

    A sync worker serves on its main thread; the sealer (and the webhook sender,
    when configured) run on others. The master serves nothing.
    """
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(master_pid)], capture_output=True, text=True, check=False
    ).stdout
    main_ticks = background_ticks = 0
    for pid in out.split():
        for tid in os.listdir(f"/proc/{pid}/task"):
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks = int(stat[11]) + int(stat[12])  # utime, stime
            if tid == pid:
                main_ticks += ticks
            else:
                background_ticks += ticks
    clock = os.sysconf("SC_CLK_TCK")
    return main_ticks / clock, background_ticks / clock


def measure(env, patched, args, requests, workdir: Path, log: Path) -> tuple[float, float, float]:
    """One server run: grants/s, and worker CPU ms per grant on request and background threads."""
    port = harness.free_port()
    env = {**env, "AUTHSERVER_ISSUER": f"http://127.0.0.1:{port}"}
    server = start(env, patched, port, args.workers, log)
    try:
        main_before, background_before = workers_cpu_seconds(server.pid)
        result = harness.run_load(
            port,
            harness.TOKEN_PATH,
            requests,
            args.seconds,
            args.connections,
            workdir,
            python_load=args.python_load,
        )
        time.sleep(SEAL_CATCH_UP)
        main_after, background_after = workers_cpu_seconds(server.pid)
    finally:
        harness.stop_server(server)
    if result["failures"]:
        raise SystemExit(f"{result['failures']} failed requests; see {log}")
    per_grant = 1000 / result["requests"]
    return (
        result["rate"],
        (main_after - main_before) * per_grant,
        (background_after - background_before) * per_grant,
    )


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="authserver-bench-audit-"))
    env = harness.bench_env(workdir, args.database_url, harness.free_port())
    env["AUTHSERVER_LOG_LEVEL"] = "INFO"  # the default
    rates: dict[str, list[float]] = {name: [] for name in CONFIGS}
    cpu: dict[str, list[float]] = {name: [] for name in CONFIGS}
    background: dict[str, list[float]] = {name: [] for name in CONFIGS}
    try:
        secrets = harness.make_technical_users(env, "bench", args.tokens, ["MEMBER", "VIEWER"])
        requests = [(harness.basic(secret), "grant_type=client_credentials") for secret in secrets]
        for _ in range(args.rounds):
            for name, (extra, patched) in CONFIGS.items():
                log = workdir / f"{name}.log"
                rate, ms, threads = measure({**env, **extra}, patched, args, requests, workdir, log)
                rates[name].append(rate)
                cpu[name].append(ms + threads)
                background[name].append(threads)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    database = "PostgreSQL" if args.database_url else "SQLite"
    print(
        f"token endpoint, {args.workers} sync workers, {database}, {len(secrets)} tokens, "
        f"{args.connections} connections, {args.rounds} x {args.seconds} s per configuration"
    )
    rate = {name: statistics.median(values) for name, values in rates.items()}
    ms = {name: statistics.median(values) for name, values in cpu.items()}
    for name in CONFIGS:
        runs = ", ".join(f"{value:.0f}" for value in rates[name])
        print(
            f"  {name:9s} {rate[name]:6.0f} grants/s (runs: {runs}); worker CPU {ms[name]:.3f} "
            f"ms per grant, of which background threads {statistics.median(background[name]):.3f}"
        )
    for name in ("no-seal", "full"):
        slower = 1 - rate[name] / rate["no-audit"]
        costlier = ms[name] / ms["no-audit"] - 1
        print(
            f"  {name} vs no-audit: throughput {slower:+.1%} lower, "
            f"worker CPU per grant {costlier:+.1%}"
        )


if __name__ == "__main__":
    main()
