"""What audit work costs the token endpoint: grants/s and worker CPU with and without it.

Three servers run side by side, each over its own fresh database with the same
number of distinct API tokens, log level at its default (INFO):

    no-audit   record_event patched to a no-op: no INSERT, no sinks, no sealing
    no-seal    the audit INSERT and the log sink; automatic sealing off (AUDIT_SEAL_INTERVAL=0)
    full       the default: INSERT, log sink, and the sealer process beside the workers

Load goes to one server at a time in short segments, the three in turn, round
after round, with a pause after each segment (long enough for the sealer to
finish). On a shared machine the load from elsewhere changes from second to
second; comparing each configuration with the no-audit segment of the same
round, and taking the median over rounds, cancels most of that. Worker CPU per
grant (user + system, from /proc, of the workers' request and background
threads and of the sealer process) is summed over the whole run, so it
includes all the sealing.

    .venv/bin/python tests/perf/bench_audit.py [--seconds 2] [--rounds 10] [--tokens 200]
        [--database-url postgresql+psycopg://postgres@127.0.0.1/authserver_bench]

With PostgreSQL, databases named <name>_noaudit, <name>_noseal and <name>_full
are (re)created beside the one given. Not a test: it prints figures; it never
asserts a speed.
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
STARTUP_SETTLE = 3.0  # seconds after a server answers before its CPU time is counted
SEAL_CATCH_UP = 3.5  # seconds after each segment: the sealer finishes before the next one


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=200)
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
    """CPU time (user + system) of the master's children so far: (requests, background).

    A sync worker serves on its main thread; the webhook sender, when
    configured, runs on another. The sealer is a process of its own beside the
    workers (`audit seal --follow`): all of it is background. The master serves
    nothing.
    """
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(master_pid)], capture_output=True, text=True, check=False
    ).stdout
    main_ticks = background_ticks = 0
    for pid in out.split():
        sealer = b"--follow" in Path(f"/proc/{pid}/cmdline").read_bytes()
        for tid in os.listdir(f"/proc/{pid}/task"):
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks = int(stat[11]) + int(stat[12])  # utime, stime
            if tid == pid and not sealer:
                main_ticks += ticks
            else:
                background_ticks += ticks
    clock = os.sysconf("SC_CLK_TCK")
    return main_ticks / clock, background_ticks / clock


def database_for(base_url: str | None, workdir: Path, name: str) -> str:
    """A fresh database for one configuration: a SQLite file, or a new PostgreSQL database."""
    if not base_url:
        return f"sqlite:///{workdir}/{name}.db"
    from sqlalchemy import create_engine, make_url, text

    url = make_url(base_url)
    database = f"{url.database}_{name.replace('-', '')}"
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{database}"'))
        connection.execute(text(f'CREATE DATABASE "{database}"'))
    engine.dispose()
    return url.set(database=database).render_as_string(hide_password=False)


class Server:
    """One configuration's server, its requests and its running totals."""

    def __init__(self, name: str, args, workdir: Path):
        extra, patched = CONFIGS[name]
        self.name = name
        self.port = harness.free_port()
        folder = workdir / name
        folder.mkdir()
        env = harness.bench_env(folder, database_for(args.database_url, workdir, name), self.port)
        env.update(AUTHSERVER_LOG_LEVEL="INFO", **extra)  # INFO is the default
        secrets = harness.make_technical_users(env, "bench", args.tokens, ["MEMBER", "VIEWER"])
        self.requests = [(harness.basic(s), "grant_type=client_credentials") for s in secrets]
        self.folder = folder
        self.process = start(env, patched, self.port, args.workers, folder / "server.log")
        time.sleep(STARTUP_SETTLE)  # the sealer process's start is not counted
        self.cpu_start = workers_cpu_seconds(self.process.pid)
        self.rates: list[float] = []
        self.grants = 0

    def segment(self, args) -> float:
        """Load this server for one segment; its grants/s."""
        result = harness.run_load(
            self.port,
            harness.TOKEN_PATH,
            self.requests,
            args.seconds,
            args.connections,
            self.folder,
            python_load=args.python_load,
        )
        if result["failures"]:
            raise SystemExit(f"{self.name}: {result['failures']} failed requests")
        self.grants += result["requests"]
        self.rates.append(result["rate"])
        return result["rate"]

    def cpu_ms_per_grant(self) -> tuple[float, float]:
        """Worker CPU per grant over the whole run: (all threads, background threads)."""
        main, background = workers_cpu_seconds(self.process.pid)
        main -= self.cpu_start[0]
        background -= self.cpu_start[1]
        return (main + background) / self.grants * 1000, background / self.grants * 1000


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="authserver-bench-audit-"))
    servers: list[Server] = []
    try:
        servers = [Server(name, args, workdir) for name in CONFIGS]
        ratios: dict[str, list[float]] = {server.name: [] for server in servers[1:]}
        for round_number in range(args.rounds):
            order = servers[round_number % 3 :] + servers[: round_number % 3]
            rates = {}
            for server in order:
                rates[server.name] = server.segment(args)
                time.sleep(SEAL_CATCH_UP)
            for name in ratios:
                ratios[name].append(rates[name] / rates["no-audit"])
        cpu = {server.name: server.cpu_ms_per_grant() for server in servers}
    finally:
        for server in servers:
            harness.stop_server(server.process)
        shutil.rmtree(workdir, ignore_errors=True)
    database = "PostgreSQL" if args.database_url else "SQLite"
    print(
        f"token endpoint, {args.workers} sync workers, {database}, {args.tokens} tokens, "
        f"{args.connections} connections, {args.rounds} rounds of {args.seconds} s per server"
    )
    for server in servers:
        total, background = cpu[server.name]
        print(
            f"  {server.name:9s} {statistics.median(server.rates):6.0f} grants/s (median); "
            f"worker CPU {total:.3f} ms per grant, background (sealer) {background:.3f}"
        )
    base_cpu = cpu["no-audit"][0]
    for name, values in ratios.items():
        print(
            f"  {name} vs no-audit, same round: throughput {1 - statistics.median(values):+.1%} "
            f"lower (median of {len(values)}), worker CPU per grant "
            f"{cpu[name][0] / base_cpu - 1:+.1%}"
        )


if __name__ == "__main__":
    main()
