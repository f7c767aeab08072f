"""Running under gunicorn: sync workers, each building its own app after the fork.

With automatic sealing on (`AUDIT_SEAL_INTERVAL` > 0) the audit chain is
sealed by one process of its own beside the workers, `authserver audit seal
--follow`, which the gunicorn master starts, restarts if it exits, and stops
with the server. The workers then never seal: a sealing thread in a worker
would share the interpreter lock with the requests, and measured, that costs
the grants more than the sealing itself (tests/perf/bench_audit.py).
"""

import gc
import logging
import subprocess
import sys

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

log = logging.getLogger(__name__)

SEALER_COMMAND = [sys.executable, "-m", "authserver.cli", "audit", "seal", "--follow"]
SEALER_STOP_SECONDS = 10


class SealerProcess:
    """The one sealing process of a server: started, watched and stopped by the master."""

    def __init__(self, command: list[str] = SEALER_COMMAND):
        self.command = command
        self.process: subprocess.Popen | None = None

    def ensure_running(self) -> None:
        """Start it, or start it again if it exited (gunicorn may have reaped it)."""
        if self.process is not None and self.process.poll() is None:
            return
        if self.process is not None:
            log.warning("audit sealer exited (%s); starting it again", self.process.returncode)
        self.process = subprocess.Popen(self.command)  # noqa: S603 - our own CLI

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not stopped in time."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(SEALER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class _Arbiter(Arbiter):
    """gunicorn's master, which also keeps the sealer process running."""

    def manage_workers(self):
        super().manage_workers()
        if self.app.sealer is not None:
            self.app.sealer.ensure_running()


class _Server(BaseApplication):
    def __init__(self, options: dict, sealer: SealerProcess | None):
        self.options = options
        self.sealer = sealer
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)
        if self.sealer is not None:
            self.cfg.set("on_exit", lambda _arbiter: self.sealer.stop())

    def load(self):
        from . import audit_sinks, create_app

        app = create_app()
        if self.sealer is not None:
            audit_sinks.stop_background_sealing(app)  # the sealer process does it
        # Everything made at startup lives as long as the worker: keep it out of the
        # collector's way, so a full collection scans only what requests left behind.
        gc.collect()
        gc.freeze()
        return app

    def run(self):
        try:
            _Arbiter(self).run()
        except RuntimeError as error:
            print(f"\nError: {error}\n", file=sys.stderr)
            sys.exit(1)


def run(host: str, port: int, workers: int, *, seal: bool = True) -> None:
    """Serve the app on host:port with `workers` sync workers (blocks).

    `seal`: run the sealer process (when automatic sealing is on).
    """
    _Server(
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "worker_class": "sync",
            # No access log by default: it would record query strings verbatim.
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "info",
            "timeout": 30,
            "graceful_timeout": 10,
            "preload_app": False,
            "control_socket_disable": True,
        },
        SealerProcess() if seal else None,
    ).run()
