"""Scoring kernels: the top-k of sparse queries against one segment's postings.

``topk(postings, queries, k, ...)`` is the single entry point.

Backends (``auto`` picks the fastest installed): ``c`` (the compiled extension ``_csparse``), ``numba``,
and ``numpy`` (the scipy oracle in :mod:`lsr.kernels.reference`, exhaustive only).
Algorithms: ``exhaustive`` (term-at-a-time over every posting of the query's terms), ``blockmax``
(per-block upper bounds, blocks visited by decreasing bound until none can beat the k-th score; exact;
guarded: it goes exhaustive up front where the cost model (lsr/kernels/cost_model.py) predicts it to cost
over 1.5x exhaustive scoring, after its seed blocks where the rest is predicted to cost more than starting
over, and once its work reaches half of exhaustive's predicted cost unless the blocks left cost less than that),
and ``auto``: the same, but block-max only where it is predicted cheaper than exhaustive scoring.
Approximation knobs, all off by default: ``query_mass < 1`` is two-step search (lsr/kernels/two_step.py:
the exact top candidates of the query's heaviest terms holding that share of its weight, rescored exactly
with the whole query; the knob with the recall-latency curve in benchmarks/README.md); ``alpha < 1`` skips a
block unless ``alpha x bound`` reaches the k-th score (BMP's factor), and ``query_cut`` keeps each query's
heaviest terms (Seismic's query cut).
Every exact configuration returns exactly the oracle's result (tests/kernels); callers never depend on
which one ran.
"""

from __future__ import annotations

import functools
import importlib.util
import logging

import numpy as np

from lsr.errors import InvalidQueryError, MissingDependencyError
from lsr.kernels._arrays import WEIGHT_DTYPES, BlockMaxima, PostingArrays, quantize
from lsr.kernels.cost_model import FITTED, MODES, CostModel
from lsr.kernels.reference import scaled_query_values
from lsr.kernels.two_step import ForwardArrays, candidate_depth, check_query_mass, mass_queries, rescore_topk
from lsr.types import Hits, SparseBatch

__all__ = ["PostingArrays", "BlockMaxima", "ForwardArrays", "quantize", "WEIGHT_DTYPES", "topk",
           "available_backends", "resolve_backend", "set_threads", "resolve_algorithm", "check_k", "check_queries",
           "cut_queries", "MAX_K", "ALGORITHMS"]

log = logging.getLogger(__name__)

MAX_K = 10_000
_BACKENDS = ("c", "numba", "numpy")  # fastest first
ALGORITHMS = ("exhaustive", "blockmax", "auto")
_INSTALL_HINT = {
    "c": "the C extension was not built: reinstall lsr with a C compiler present (pip install -e .)",
    "numba": "numba is not installed: pip install numba",
}


@functools.cache
def _has_cext() -> bool:
    return importlib.util.find_spec("lsr.kernels._csparse") is not None


@functools.cache
def _available() -> tuple[str, ...]:
    found = []
    for name in _BACKENDS:
        if name == "c" and not _has_cext():
            continue
        if name == "numba" and importlib.util.find_spec("numba") is None:
            continue
        found.append(name)
    return tuple(found)


def available_backends() -> list[str]:
    """Backends installed here, fastest first (looked up once per process)."""
    return list(_available())


def _forget_backends() -> None:
    """For tests that hide a backend: look the installed ones up again."""
    _has_cext.cache_clear()
    _available.cache_clear()


def resolve_backend(backend: str) -> str:
    if backend == "auto":
        return available_backends()[0]
    if backend not in _BACKENDS:
        raise InvalidQueryError(f"unknown kernel backend {backend!r}; choose one of auto, {', '.join(_BACKENDS)}.")
    if backend not in available_backends():
        raise MissingDependencyError(f"kernel backend {backend!r} is unavailable: {_INSTALL_HINT[backend]}")
    return backend


def resolve_algorithm(algorithm: str, postings: PostingArrays, backend: str) -> str:
    if algorithm not in ALGORITHMS:
        raise InvalidQueryError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}.")
    if algorithm == "auto":
        return "auto" if backend != "numpy" else "exhaustive"
    return algorithm


def set_threads(n: int) -> None:
    """Threads a batch of queries is spread over, for every backend (default: all CPUs)."""
    if not isinstance(n, int) or n < 1:
        raise InvalidQueryError(f"threads must be a positive integer, got {n!r}.")
    if "numba" in available_backends():
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    if _has_cext():
        from lsr.kernels import _cbackend

        _cbackend.set_threads(n)


def check_queries(queries: SparseBatch) -> SparseBatch:
    """``queries.validate()``, in one C pass where the extension is built (numpy's checks took ~35 µs of a
    single-query search); a batch that fails is validated by numpy again, which words the error."""
    if _has_cext() and queries.n:
        from lsr.kernels import _csparse

        indptr, indices, values = queries.indptr, queries.indices, queries.values
        if indptr.dtype == np.int64 and indices.dtype == np.int32 and values.dtype == np.float32 and \
                _csparse.check_sparse(np.ascontiguousarray(indptr), np.ascontiguousarray(indices),
                                      np.ascontiguousarray(values), queries.dim):
            return queries
    return queries.validate()


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= MAX_K:
        raise InvalidQueryError(f"k must be an integer in [1, {MAX_K}], got {k!r}.")
    return int(k)


def check_alpha(alpha: float) -> float:
    if not isinstance(alpha, int | float | np.floating) or not 0 < alpha <= 1:
        raise InvalidQueryError(f"alpha must be in (0, 1] (1 = exact), got {alpha!r}.")
    return float(alpha)


def cut_queries(queries: SparseBatch, query_cut: int | None) -> SparseBatch:
    """Keep each query's ``query_cut`` heaviest terms (ties: lower term id first)."""
    if query_cut is None:
        return queries
    if isinstance(query_cut, bool) or not isinstance(query_cut, int | np.integer) or query_cut < 1:
        raise InvalidQueryError(f"query_cut must be a positive integer, got {query_cut!r}.")
    lengths = queries.row_nnz()
    if lengths.max(initial=0) <= query_cut:
        return queries
    keep = np.zeros(queries.nnz, bool)
    for i in np.flatnonzero(lengths > 0):
        lo, hi = queries.indptr[i], queries.indptr[i + 1]
        heaviest = np.argsort(-queries.values[lo:hi], kind="stable")[:query_cut]
        keep[lo + heaviest] = True
    indptr = np.zeros(queries.n + 1, np.int64)
    np.cumsum(np.minimum(lengths, query_cut), out=indptr[1:])
    return SparseBatch(indptr, queries.indices[keep], queries.values[keep], queries.dim)


def topk(
    postings: PostingArrays,
    queries: SparseBatch,
    k: int,
    deleted: np.ndarray | None = None,
    backend: str = "auto",
    id_base: int = 0,
    algorithm: str = "auto",
    alpha: float = 1.0,
    query_cut: int | None = None,
    cost_model: CostModel = FITTED,
    stats: np.ndarray | None = None,
    query_mass: float = 1.0,
    forward: ForwardArrays | None = None,
) -> Hits:
    """Top-``k`` documents of one segment for each query (exact unless ``query_mass`` or ``alpha`` < 1, or
    ``query_cut``).

    ``deleted`` is an optional uint8/bool mask over the segment's documents (non-zero = skip).
    ``id_base`` is added to every returned id (the segment's first global id).
    ``cost_model`` decides the route of ``auto`` and when ``blockmax`` gives up (lsr/kernels/cost_model.py);
    ``stats``, an int64 array of n_queries x 4, receives per query (block-max algorithms only): the route
    taken (0 block-max, 1 exhaustive from the start, 2 handed over to exhaustive), the seed blocks scored,
    the candidate blocks after the seeds and the candidates scored.
    ``query_mass`` < 1 needs the segment's ``forward`` arrays (two-step search, lsr/kernels/two_step.py).
    """
    k = check_k(k)
    alpha = check_alpha(alpha)
    query_mass = check_query_mass(query_mass)
    if queries.dim != postings.dim:
        raise InvalidQueryError(f"queries have dimension {queries.dim} but the index has {postings.dim}.")
    backend = resolve_backend(backend)
    algorithm = resolve_algorithm(algorithm, postings, backend)
    if deleted is not None and len(deleted) not in (0, postings.n_docs):
        raise InvalidQueryError(f"deleted mask has length {len(deleted)}, expected {postings.n_docs}.")
    queries = cut_queries(queries, query_cut)
    if query_mass < 1:
        if forward is None:
            raise InvalidQueryError("query_mass < 1 rescores on the forward index: pass the segment's forward arrays.")
        pruned = mass_queries(queries, query_mass, backend)
        if pruned.nnz < queries.nnz:
            depth = max(k, min(candidate_depth(k), MAX_K))
            candidates = _search(postings, pruned, depth, deleted, backend, 0, algorithm, alpha, cost_model, None).ids
            return rescore_topk(forward, queries, scaled_query_values(postings, queries), candidates, k, backend,
                                id_base)
    return _search(postings, queries, k, deleted, backend, id_base, algorithm, alpha, cost_model, stats)


def _search(postings: PostingArrays, queries: SparseBatch, k: int, deleted: np.ndarray | None, backend: str,
            id_base: int, algorithm: str, alpha: float, cost_model: CostModel, stats: np.ndarray | None) -> Hits:
    """The exact (or alpha-pruned) top k on arguments ``topk`` has checked."""
    if backend == "numpy":
        if algorithm != "exhaustive" or alpha != 1.0:
            raise InvalidQueryError("the numpy backend scores exhaustively; use backend 'numba' or 'c' to prune.")
        from lsr.kernels import reference

        hits = reference.topk(postings, queries, k, deleted)
        if id_base:
            hits.ids[hits.ids >= 0] += id_base
        return hits
    hits = Hits.empty(queries.n, k)
    mask = np.zeros(0, np.uint8) if deleted is None else np.ascontiguousarray(deleted, dtype=np.uint8)
    q_values = scaled_query_values(postings, queries)
    if backend == "c":
        from lsr.kernels import _cbackend as impl
    else:
        from lsr.kernels import _numba as impl
    if algorithm == "exhaustive":
        impl.taat_topk(postings, queries.indptr, queries.indices, q_values, k, mask, hits.ids, hits.scores, id_base)
    else:
        # seed blocks must hold enough documents to fill the top k twice over
        n_seeds = max(16, -(-2 * k // postings.blocks.block_size))
        impl.blockmax_topk(postings, queries.indptr, queries.indices, q_values, k, mask, hits.ids, hits.scores,
                           id_base, alpha, mode=MODES[algorithm], cost=cost_model, n_seeds=n_seeds, stats=stats)
    return hits
