"""``lsr serve``: the Flask app on gunicorn, N worker processes sharing the memory-mapped index."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from lsr.errors import MissingDependencyError

__all__ = ["serve"]

log = logging.getLogger(__name__)


def serve(index: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8080, workers: int = 2,
          threads: int = 1, api_key_file: str | None = None, timeout_s: float = 10.0,
          read_key_required: bool = False, access_log: bool = False, shards: int = 0,
          ray_address: str | None = None) -> None:
    """Run until interrupted. Loopback only unless ``host`` says otherwise. ``shards > 0`` serves the index
    from that many shard actors on the Ray cluster at ``ray_address`` (or ``RAY_ADDRESS``)."""
    try:
        from gunicorn.app.base import BaseApplication
    except ImportError:
        raise MissingDependencyError("lsr serve needs the service extra: pip install 'lsr-search[service]'") from None
    from lsr.index import open_index

    open_index(index)  # fail here, with one line, rather than in every worker
    if shards:
        from lsr.distributed._ray import require_ray
        from lsr.errors import InvalidInputError

        require_ray()
        if not (ray_address or os.environ.get("RAY_ADDRESS")):
            raise InvalidInputError("--shards needs a running Ray cluster: pass --ray ADDRESS (its head) or set "
                                    "RAY_ADDRESS; start one with `ray start --head`.")
        os.environ.update({"LSR_SHARDS": str(shards), "LSR_RAY_ADDRESS": ray_address or ""})
    metrics_dir = tempfile.mkdtemp(prefix="lsr-metrics-")
    os.environ.update({"LSR_INDEX": str(Path(index).resolve()), "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
                       "LSR_REQUEST_TIMEOUT_S": str(timeout_s),
                       "LSR_READ_KEY_REQUIRED": "1" if read_key_required else "0"})
    if api_key_file:
        os.environ["LSR_API_KEY_FILE"] = str(api_key_file)
    os.environ.setdefault("LSR_TORCH_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, workers))))

    def child_exit(server, worker) -> None:  # noqa: ANN001 - gunicorn hook
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

    class Application(BaseApplication):
        def load_config(self) -> None:
            options = {
                "bind": f"{host}:{port}", "workers": workers, "threads": threads,
                "worker_class": "gthread" if threads > 1 else "sync",
                # a hung worker is replaced; the request itself gets a 408 from the app first
                "timeout": int(timeout_s) + 20, "graceful_timeout": 30,
                "accesslog": "-" if access_log else None, "child_exit": child_exit,
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):  # noqa: ANN202 - the WSGI app, built in each worker after the fork
            from lsr.service import create_app

            return create_app()

    log.info("serving %s on http://%s:%d with %d workers", index, host, port, workers)
    try:
        Application().run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
