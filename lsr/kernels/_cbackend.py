"""Python side of the C backend: splits a query batch over threads (the C loops release the GIL)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from lsr.kernels import _csparse
from lsr.kernels.cost_model import FITTED, MODES

__all__ = ["taat_topk", "blockmax_topk", "rescore_topk", "set_threads"]

_threads = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
_pool: ThreadPoolExecutor | None = None


def set_threads(n: int) -> None:
    """Threads used for a batch of queries (default: the CPUs this process may run on)."""
    global _threads, _pool
    _threads = max(1, int(n))
    _pool = None


def _ranges(n_queries: int) -> list[tuple[int, int]]:
    n_chunks = max(1, min(n_queries, _threads))
    bounds = [n_queries * i // n_chunks for i in range(n_chunks + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(n_chunks) if bounds[i] < bounds[i + 1]]


def _run(fn, args_before_range: tuple, id_base: int, n_queries: int, args_after_range: tuple = ()) -> None:
    global _pool
    ranges = _ranges(n_queries)
    if len(ranges) <= 1:
        fn(*args_before_range, 0, n_queries, id_base, *args_after_range)
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=_threads, thread_name_prefix="lsr-kernel")
    for future in [_pool.submit(fn, *args_before_range, lo, hi, id_base, *args_after_range) for lo, hi in ranges]:
        future.result()


def taat_topk(postings, q_indptr, q_indices, q_values, k, deleted, out_ids, out_scores, id_base=0):
    b = postings.blocks
    _run(_csparse.taat_topk, (postings.offsets, postings.weights, b.offsets, b.ids, b.masks, b.block_size,
                              q_indptr, q_indices, q_values, postings.n_docs, k, deleted, out_ids, out_scores),
         id_base, len(q_indptr) - 1)


def blockmax_topk(postings, q_indptr, q_indices, q_values, k, deleted, out_ids, out_scores, id_base=0, alpha=1.0,
                  mode=MODES["pure"], cost=FITTED, n_seeds=16, stats=None):
    b = postings.blocks
    _run(_csparse.blockmax_topk, (postings.offsets, postings.weights, b.offsets, b.ids, b.masks, b.block_size,
                                  b.maxima, b.anchors, b.dense_rows, b.dense, b.dense_scale, b.dense_prefix,
                                  q_indptr, q_indices, q_values, postings.n_docs, k, deleted, float(alpha), n_seeds,
                                  int(mode), cost.as_array(), out_ids, out_scores),
         id_base, len(q_indptr) - 1, (stats,))


def rescore_topk(forward, dim, q_indptr, q_indices, q_values, candidates, k, out_ids, out_scores, id_base=0):
    _run(_csparse.rescore_topk, (forward.indptr, forward.indices, forward.values, dim, q_indptr, q_indices, q_values,
                                 candidates, k, out_ids, out_scores), id_base, len(q_indptr) - 1)
