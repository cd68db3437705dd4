"""The REST search service: a Flask ``create_app`` factory; ``lsr serve`` runs it on gunicorn.

State (the index snapshot holder, the encoder) is built once per process in ``create_app`` and kept in
``app.extensions["lsr"]``; requests take one snapshot each. Configuration comes from ``test_config`` or
``LSR_*`` environment variables (``LSR_INDEX``, ``LSR_API_KEY``, ...).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import Flask

from lsr.service.errors import register_error_handlers
from lsr.service.json_provider import OrjsonProvider
from lsr.service.requests import Limits

__all__ = ["create_app"]

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "LSR_INDEX": None,
    "LSR_API_KEY": None,
    "LSR_READ_KEY_REQUIRED": False,
    "LSR_BACKEND": "auto",
    "LSR_REQUEST_TIMEOUT_S": 10.0,
    "LSR_WRITE_LOCK_WAIT_S": 10.0,
    "LSR_RELOAD_CHECK_S": 0.5,
    "LSR_SHARDS": 0,  # > 0: search through that many Ray shard actors (lsr serve --shards N --ray ADDRESS)
    "LSR_RAY_ADDRESS": None,
    "LSR_MERGE": True,  # merge segments in a background thread after writes (lsr.service.merging)
    "LSR_MERGE_IDLE_S": 1.0,  # writes paused this long: settle the small trailing segments into one
    "MAX_CONTENT_LENGTH": 16 << 20,
}


def _from_environment() -> dict[str, Any]:
    env = {}
    for key, default in DEFAULTS.items():
        raw = os.environ.get(key)
        if raw is None:
            continue
        if isinstance(default, bool):
            env[key] = raw.lower() in ("1", "true", "yes")
        elif isinstance(default, float):
            env[key] = float(raw)
        elif isinstance(default, int):
            env[key] = int(raw)
        else:
            env[key] = raw
    key_file = os.environ.get("LSR_API_KEY_FILE")
    if key_file:
        with open(key_file, encoding="utf-8") as fh:
            env["LSR_API_KEY"] = fh.read().strip()
    return env


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    from lsr.service import api, ops, page
    threads = os.environ.get("LSR_TORCH_THREADS")
    if threads:  # gunicorn workers share the cores: one torch pool per worker must not take them all
        import torch

        torch.set_num_threads(int(threads))
    app = Flask(__name__, static_folder=None)  # the page blueprint serves its own files, with its headers
    app.json = OrjsonProvider(app)
    app.config.update(DEFAULTS)
    app.config.update(_from_environment())
    app.config.update(test_config or {})
    app.config.setdefault("LSR_LIMITS", Limits())
    if not app.config["LSR_INDEX"]:
        raise ValueError("create_app needs LSR_INDEX (the index folder to serve).")
    app.extensions["lsr"] = _index_holder(app.config)
    if app.config["LSR_MERGE"]:
        from lsr.service.merging import BackgroundMerger

        app.extensions["lsr_merger"] = BackgroundMerger(app.config["LSR_INDEX"], idle_s=app.config["LSR_MERGE_IDLE_S"],
                                                        lock_wait_s=app.config["LSR_WRITE_LOCK_WAIT_S"])
    register_error_handlers(app)
    ops.install_metrics(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(page.bp)
    return app


def _index_holder(config: dict[str, Any]):  # noqa: ANN202 - an IndexHolder
    """The local memory-mapped index, or shard actors on a Ray cluster when ``LSR_SHARDS`` says so (each
    worker process connects to the cluster as a driver of its own, and gets shard actors of its own)."""
    if config["LSR_SHARDS"]:
        from lsr.distributed._ray import require_ray
        from lsr.distributed.serving import ShardedIndexHolder

        ray = require_ray()
        if not ray.is_initialized():
            ray.init(address=config["LSR_RAY_ADDRESS"] or None, logging_level=logging.WARNING, log_to_driver=False)
        return ShardedIndexHolder(config["LSR_INDEX"], shards=config["LSR_SHARDS"], backend=config["LSR_BACKEND"],
                                  check_interval_s=config["LSR_RELOAD_CHECK_S"])
    from lsr.service.state import IndexHolder

    return IndexHolder(config["LSR_INDEX"], backend=config["LSR_BACKEND"],
                       check_interval_s=config["LSR_RELOAD_CHECK_S"])
