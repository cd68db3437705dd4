"""Two-step search, the approximate route: one knob, ``query_mass``, trades recall for time.

Step 1 keeps the heaviest terms of each query that hold ``query_mass`` of its weight (a query's many light
terms cost as many posting lists as its heavy ones but add little to any score) and takes the exact top
``depth(k)`` of that pruned query; step 2 scores those candidates exactly with the whole query on the
segment's forward index (each document's own terms) and keeps the top k. It is Lassance et al.'s two-step
SPLADE ("Two-Step SPLADE", ECIR 2024) with the pruning on the query side only, so the index is unchanged.

What it guarantees: every returned score is the document's exact score, bit for bit what exhaustive scoring
gives (the forward row and the query both list term ids ascending, so the row's products come in query
order); what it may lose is a document the pruned query ranked below ``depth(k)``. ``query_mass = 1`` is the
exact search itself. The recall-latency curve against Seismic is in benchmarks/README.md ("Approximate
search"). Where it pays: queries whose exact route is exhaustive scoring (long queries, small and medium
collections), whose time is their postings; on short queries over a large collection the exact block-max
route already scores a few blocks, and a top-50 of the pruned query costs more than the exact top 10.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lsr.errors import InvalidQueryError
from lsr.types import Hits, SparseBatch

__all__ = ["ForwardArrays", "check_query_mass", "mass_queries", "candidate_depth", "rescore_topk"]

# candidates step 1 hands to step 2, as a multiple of k (measured on long and short queries: benchmarks/pareto.py)
DEPTH_FACTOR = 5
DEPTH_MIN = 50


class ForwardArrays(NamedTuple):
    """One segment's documents as CSR rows over term ids (ascending within a row), weights as stored."""

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray

    @classmethod
    def from_postings(cls, postings) -> ForwardArrays:  # noqa: ANN001 - a PostingArrays (import cycle)
        """The transpose of a segment's postings (an index stores it; this is for segments built in memory)."""
        import scipy.sparse as sp

        by_term = sp.csc_matrix((np.asarray(postings.weights), postings.doc_ids(), postings.offsets),
                                shape=(postings.n_docs, postings.dim))
        by_doc = by_term.tocsr()
        by_doc.sort_indices()
        return cls(by_doc.indptr.astype(np.int64), by_doc.indices.astype(np.int32), by_doc.data)


def check_query_mass(query_mass: float) -> float:
    if isinstance(query_mass, bool) or not isinstance(query_mass, int | float | np.floating) or \
            not 0 < query_mass <= 1:
        raise InvalidQueryError(f"query_mass must be in (0, 1] (1 = exact), got {query_mass!r}.")
    return float(query_mass)


def candidate_depth(k: int) -> int:
    return max(DEPTH_FACTOR * k, DEPTH_MIN)


def mass_queries(queries: SparseBatch, query_mass: float, backend: str = "numpy") -> SparseBatch:
    """Each query's heaviest terms whose weights sum to at least ``query_mass`` of the query's (ties: the earlier
    term first; at least one term), in their original order. The C backend prunes in C, others here."""
    if query_mass >= 1 or queries.nnz == 0:
        return queries
    if backend == "c":
        from lsr.kernels import _csparse

        indptr = np.empty(queries.n + 1, np.int64)
        indices = np.empty(queries.nnz, np.int32)
        values = np.empty(queries.nnz, np.float32)
        as_c = np.ascontiguousarray
        _csparse.mass_prune(as_c(queries.indptr, np.int64), as_c(queries.indices, np.int32),
                            as_c(queries.values, np.float32), float(query_mass), indptr, indices, values)
        return SparseBatch(indptr, indices[: indptr[-1]], values[: indptr[-1]], queries.dim)
    keep = np.zeros(queries.nnz, bool)
    kept = np.zeros(queries.n, np.int64)
    for i in range(queries.n):
        lo, hi = int(queries.indptr[i]), int(queries.indptr[i + 1])
        if hi == lo:
            continue
        values = np.asarray(queries.values[lo:hi], np.float32)
        order = np.argsort(-values, kind="stable")
        cumulative = np.cumsum(values[order].astype(np.float64))
        n_keep = min(int(np.searchsorted(cumulative, query_mass * cumulative[-1] * (1 - 1e-9))) + 1, hi - lo)
        keep[lo + order[:n_keep]] = True
        kept[i] = n_keep
    indptr = np.zeros(queries.n + 1, np.int64)
    np.cumsum(kept, out=indptr[1:])
    return SparseBatch(indptr, queries.indices[keep], queries.values[keep], queries.dim)


def rescore_reference(forward: ForwardArrays, queries: SparseBatch, q_values: np.ndarray, candidates: np.ndarray,
                      k: int, id_base: int = 0) -> Hits:
    """The plain version of the C kernel's step 2: each candidate's score summed in float32 in query order."""
    out = Hits.empty(queries.n, k)
    for i in range(queries.n):
        lo, hi = int(queries.indptr[i]), int(queries.indptr[i + 1])
        terms, weights = queries.indices[lo:hi], q_values[lo:hi]
        found = []
        for d in candidates[i][candidates[i] >= 0]:
            a, b = int(forward.indptr[d]), int(forward.indptr[d + 1])
            doc_terms = np.asarray(forward.indices[a:b], np.int64)
            _, in_query, in_doc = np.intersect1d(terms, doc_terms, assume_unique=True, return_indices=True)
            order = np.argsort(in_query)
            products = weights[in_query[order]] * np.asarray(forward.values[a:b], np.float32)[in_doc[order]]
            score = np.cumsum(products, dtype=np.float32)[-1] if len(products) else np.float32(0)
            if score > 0:
                found.append((-float(score), int(d)))
        found.sort()
        for j, (neg, d) in enumerate(found[:k]):
            out.ids[i, j], out.scores[i, j] = d + id_base, -neg
    return out


def rescore_topk(forward: ForwardArrays, queries: SparseBatch, q_values: np.ndarray, candidates: np.ndarray, k: int,
                 backend: str, id_base: int = 0) -> Hits:
    """Top k of each query's candidate documents (local ids, -1 = none), scored exactly on the forward index."""
    if backend == "numpy":
        return rescore_reference(forward, queries, q_values, candidates, k, id_base)
    if backend == "c":
        from lsr.kernels import _cbackend as impl
    else:
        from lsr.kernels import _numba as impl
    out = Hits.empty(queries.n, k)
    impl.rescore_topk(forward, queries.dim, queries.indptr, queries.indices, q_values, candidates, k, out.ids,
                      out.scores, id_base)
    return out
