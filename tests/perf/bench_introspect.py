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

Not a test: it prints figures, never asserts.
"""

import argparse
import json
import shutil
import tempfile
import urllib.parse
from pathlib import Path

import harness  # beside this script, so on sys.path when it runs

INTROSPECT_PATH = "/services/mtm/v1/oauth2/introspect"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp folder")
    parser.add_argument("--python-load", action="store_true", help="use the Python generator")
    return parser.parse_args()


def access_tokens(port: int, secrets: list[str]) -> list[str]:
    """Exchange each API token once."""
    tokens = []
    for secret in secrets:
        status, body = harness.post(
            port, harness.TOKEN_PATH, "grant_type=client_credentials", harness.basic(secret)
        )
        if status != 200:
            raise SystemExit(f"token endpoint answered {status}: {body[:200]!r}")
        tokens.append(json.loads(body)["access_token"])
    return tokens


def is_active(status: int, answer: bytes) -> bool:
    """A success is a 200 saying active."""
    return status == 200 and bool(json.loads(answer).get("active"))


def spot_check(port: int, requests: list[tuple[str, str]]) -> int:
    """How many requests do not introspect as active (wrk only counts statuses)."""
    return sum(
        not is_active(*harness.post(port, INTROSPECT_PATH, body, authorization))
        for authorization, body in requests
    )


def report(label: str, result: dict) -> None:
    print(
        f"{label:<30} {result['rate']:8.1f} requests/s   p50 {result['p50_ms']:6.2f} ms   "
        f"p99 {result['p99_ms']:6.2f} ms   failures {result['failures']}   ({result['tool']})"
    )


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="authserver-bench-introspect-"))
    port = harness.free_port()
    env = harness.bench_env(workdir, args.database_url, port)
    try:
        checker, *secrets = harness.make_technical_users(
            env, "bench-introspect", args.tokens + 1, ["VIEWER"] + ["MEMBER"] * args.tokens
        )
        server = harness.start_server(env, port, args.workers, workdir / "server.log")
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
            for label, values in phases.items():
                auth = harness.basic(checker)
                requests = [(auth, urllib.parse.urlencode({"token": v})) for v in values]
                if spot_check(port, requests):
                    raise SystemExit(f"{label}: some tokens are not active before the run")
                result = harness.run_load(
                    port,
                    INTROSPECT_PATH,
                    requests,
                    args.seconds,
                    args.connections,
                    workdir,
                    python_load=args.python_load,
                    accept=is_active,
                )
                report(label, result)
        finally:
            harness.stop_server(server)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
