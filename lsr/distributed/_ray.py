"""Finding ray and connecting to a cluster (or starting a small local one)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lsr.errors import MissingDependencyError

__all__ = ["require_ray", "ray_session", "LOCAL_OBJECT_STORE_BYTES"]

log = logging.getLogger(__name__)

# A Ray started here for one job only moves corpus chunks and small results through its object store; the
# default (30% of RAM) would reserve gigabytes of shared memory on a laptop for nothing.
LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError(
            "distributed mode needs Ray, which is not installed: pip install 'lsr-search[ray]'."
        ) from None
    return ray


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Use the Ray runtime already initialised in this process, or connect to ``address`` (``auto``, or
    ``HOST:PORT`` of a cluster head), or — without an address and without ``RAY_ADDRESS`` — start a local
    one-machine cluster for the duration of the block. Only a runtime this call started or connected is
    shut down when the block ends."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    if address or os.environ.get("RAY_ADDRESS"):  # an existing cluster: its resources are its own business
        ray.init(address=address or None, logging_level=logging.WARNING, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus or len(os.sched_getaffinity(0)), include_dashboard=False,
                 object_store_memory=LOCAL_OBJECT_STORE_BYTES, logging_level=logging.WARNING,
                 log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
