"""Searching an index snapshot: the kernel per segment, then one merged top-k in global ids."""

from __future__ import annotations

import numpy as np

from lsr.errors import InvalidQueryError
from lsr.index.reader import Index
from lsr.kernels import check_k, check_queries, resolve_backend, topk
from lsr.types import Hits, SparseBatch

__all__ = ["Searcher"]


class Searcher:
    """Exact top-k over all segments of one :class:`Index` snapshot. A :class:`~lsr.search.Retriever`
    over pre-encoded vectors."""

    def __init__(self, index: Index, backend: str = "auto"):
        self.index = index
        self.backend = resolve_backend(backend)
        self._deleted = [index.deleted_mask(seg) for seg in index.segments]

    def search(self, queries: SparseBatch, k: int, algorithm: str = "auto", alpha: float = 1.0,
               query_cut: int | None = None, query_mass: float = 1.0) -> Hits:
        """Top-k over every segment. ``algorithm`` is ``auto``, ``exhaustive`` or ``blockmax``; ``query_mass``
        < 1 (two-step search, the approximate knob), ``alpha`` < 1 and ``query_cut`` turn on approximate search
        (see :mod:`lsr.kernels`)."""
        k = check_k(k)
        if not isinstance(queries, SparseBatch):
            raise InvalidQueryError(f"queries must be a SparseBatch, got {type(queries).__name__}.")
        if queries.dim != self.index.dim:
            raise InvalidQueryError(
                f"queries have dimension {queries.dim} but the index vocabulary has {self.index.dim} terms."
            )
        check_queries(queries)
        parts = [
            topk(seg.postings, queries, k, deleted, self.backend, id_base=seg.info.doc_base, algorithm=algorithm,
                 alpha=alpha, query_cut=query_cut, query_mass=query_mass,
                 forward=seg.forward)
            for seg, deleted in zip(self.index.segments, self._deleted, strict=True)
        ]
        if not parts:
            return Hits.empty(queries.n, k)
        return parts[0] if len(parts) == 1 else Hits.merge(parts, k)

    def warm_up(self) -> None:
        """Compile/load the kernel once (numba caches to disk, but the first call still loads it)."""
        if self.index.segments:
            one = SparseBatch(np.array([0, 1]), np.array([0]), np.array([1.0]), self.index.dim)
            for algorithm in ("exhaustive", "blockmax"):
                if algorithm == "exhaustive" or (self.backend != "numpy" and self.index.manifest.block_size):
                    self.search(one, 1, algorithm=algorithm)
