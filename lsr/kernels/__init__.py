"""Scoring kernels: exact top-k of sparse queries against one segment's postings.

``topk(postings, queries, k, deleted, backend="auto")`` is the single entry point. Backends:
``numba`` (exhaustive term-at-a-time, parallel over queries) and ``numpy`` (the scipy oracle in
:mod:`lsr.kernels.reference`). ``auto`` picks the fastest one installed. Every backend returns exactly the
oracle's result (see tests/kernels); callers never depend on which one ran.
"""

from __future__ import annotations

import importlib.util
import logging

import numpy as np

from lsr.errors import InvalidQueryError, MissingDependencyError
from lsr.kernels._arrays import PostingArrays
from lsr.types import Hits, SparseBatch

__all__ = ["PostingArrays", "topk", "available_backends", "resolve_backend", "MAX_K"]

log = logging.getLogger(__name__)

MAX_K = 10_000
_BACKENDS = ("numba", "numpy")  # fastest first


def available_backends() -> list[str]:
    found = []
    for name in _BACKENDS:
        if name == "numba" and importlib.util.find_spec("numba") is None:
            continue
        found.append(name)
    return found


def resolve_backend(backend: str) -> str:
    if backend == "auto":
        return available_backends()[0]
    if backend not in _BACKENDS:
        raise InvalidQueryError(f"unknown kernel backend {backend!r}; choose one of auto, {', '.join(_BACKENDS)}.")
    if backend not in available_backends():
        raise MissingDependencyError(f"kernel backend {backend!r} needs numba: pip install numba")
    return backend


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= MAX_K:
        raise InvalidQueryError(f"k must be an integer in [1, {MAX_K}], got {k!r}.")
    return int(k)


def topk(
    postings: PostingArrays,
    queries: SparseBatch,
    k: int,
    deleted: np.ndarray | None = None,
    backend: str = "auto",
    id_base: int = 0,
) -> Hits:
    """Exact top-``k`` documents of one segment for each query.

    ``deleted`` is an optional uint8/bool mask over the segment's documents (non-zero = skip).
    ``id_base`` is added to every returned id (the segment's first global id).
    """
    k = check_k(k)
    if queries.dim != postings.dim:
        raise InvalidQueryError(f"queries have dimension {queries.dim} but the index has {postings.dim}.")
    backend = resolve_backend(backend)
    if deleted is not None and len(deleted) not in (0, postings.n_docs):
        raise InvalidQueryError(f"deleted mask has length {len(deleted)}, expected {postings.n_docs}.")
    if backend == "numpy":
        from lsr.kernels import reference

        hits = reference.topk(postings, queries, k, deleted)
        if id_base:
            hits.ids[hits.ids >= 0] += id_base
        return hits
    from lsr.kernels import _numba

    hits = Hits.empty(queries.n, k)
    mask = np.zeros(0, np.uint8) if deleted is None else np.ascontiguousarray(deleted, dtype=np.uint8)
    _numba.taat_topk(
        postings.offsets, postings.docs, postings.weights,
        queries.indptr, queries.indices, queries.values,
        postings.n_docs, k, mask, hits.ids, hits.scores, id_base,
    )
    return hits
