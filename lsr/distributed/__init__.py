"""Scale-out on Ray (the optional extra ``lsr-search[ray]``): distributed encoding and index building with
Ray Data (:mod:`lsr.distributed.encode`) and sharded search with an exact merge (:mod:`lsr.distributed.sharded`).

Importing this package does not import ray; the functions that need it do, and raise a one-line
:class:`~lsr.errors.MissingDependencyError` naming the extra when it is absent. Nothing in the
single-machine path imports this package.
"""

from __future__ import annotations

__all__ = ["ray_encode_corpus", "ray_build_index", "ShardedSearcher", "ShardedRetriever", "ShardedIndexHolder",
           "plan_shards", "ray_session"]


def __getattr__(name: str):  # lazy: the submodules import ray only when used, but keep imports cheap too
    if name in ("ray_encode_corpus", "ray_build_index"):
        from lsr.distributed import encode

        return getattr(encode, name)
    if name in ("ShardedSearcher", "ShardedRetriever", "plan_shards"):
        from lsr.distributed import sharded

        return getattr(sharded, name)
    if name == "ShardedIndexHolder":
        from lsr.distributed.serving import ShardedIndexHolder

        return ShardedIndexHolder
    if name == "ray_session":
        from lsr.distributed._ray import ray_session

        return ray_session
    raise AttributeError(f"module 'lsr.distributed' has no attribute {name!r}")
