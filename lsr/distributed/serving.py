"""The service over shard actors: an :class:`~lsr.service.state.IndexHolder` whose snapshots search with a
:class:`~lsr.distributed.sharded.ShardedRetriever`. Every request path of the service (``/v1/search``,
pipelines, the search page) goes through ``snapshot.retriever``, so nothing else changes; a new manifest
generation gets new shard actors, and the previous ones stop once the last request holding that snapshot
lets go of it (Ray ends an actor when its last handle is dropped)."""

from __future__ import annotations

import logging
import os
from typing import Any

from lsr.distributed.sharded import ShardedRetriever
from lsr.index import open_index
from lsr.service.state import IndexHolder, Snapshot, _stamp

__all__ = ["ShardedIndexHolder"]

log = logging.getLogger(__name__)


class ShardedIndexHolder(IndexHolder):
    """``app.extensions["lsr"] = ShardedIndexHolder(path, shards=4)`` after :func:`lsr.service.create_app`
    (a Ray runtime must be initialised in the serving process)."""

    def __init__(self, path: str | os.PathLike[str], shards: int, encoder: Any = None, backend: str = "auto",
                 check_interval_s: float = 0.5, num_cpus: float = 0):
        self.shards = shards
        self.num_cpus = num_cpus
        super().__init__(path, encoder=encoder, backend=backend, check_interval_s=check_interval_s)

    def _open(self) -> Snapshot:
        stamp = _stamp(self.path)
        index = open_index(self.path)
        retriever = ShardedRetriever(index, self.shards, encoder=self._encoder, backend=self.backend,
                                     num_cpus=self.num_cpus)
        if self._encoder is None and index.encoder_config is not None:
            self._encoder = retriever.encoder  # load once, share with later snapshots
        retriever.searcher.warm_up()
        log.info("serving %s generation %d (%d documents) from %d shards", self.path, index.manifest.generation,
                 index.n_live, retriever.searcher.n_shards)
        return Snapshot(index, retriever, stamp, None)
