"""Running under gunicorn: sync workers, each building its own app after the fork."""

import gc

from gunicorn.app.base import BaseApplication


class _Server(BaseApplication):
    def __init__(self, options: dict):
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from . import create_app

        app = create_app()
        # Everything made at startup lives as long as the worker: keep it out of the
        # collector's way, so a full collection scans only what requests left behind.
        gc.collect()
        gc.freeze()
        return app


def run(host: str, port: int, workers: int) -> None:
    """Serve the app on host:port with `workers` sync workers (blocks)."""
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
        }
    ).run()
