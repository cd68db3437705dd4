"""Document reordering by recursive graph bisection (BP; Dhulipala et al., KDD 2016), for block-max pruning.

Block-max bounds are tight only when the documents of a block share their terms. BP orders documents so
that neighbours do: it splits the collection in two, swaps documents between the halves while that lowers
the estimated cost of storing every term's postings as gaps (a term concentrated in one half is cheap),
then recurses into each half. The same order also compresses better; here it is used for tighter
block maxima. Term presence only (weights ignored), as in the paper.

Levels are processed one after another; the ranges of a level are independent and run in parallel.
"""

from __future__ import annotations

import logging
import time

import numba
import numpy as np
from numba import njit, prange

__all__ = ["bp_order"]

log = logging.getLogger(__name__)


@njit(inline="always")
def _cost(d, n):
    # log-gap cost of d postings spread over n documents
    return d * np.log2(n / (d + 1.0))


@njit(nogil=True, cache=True)
def _bisect(order, lo, hi, indptr, indices, deg_a, deg_b, gain_a_term, gain_b_term, gains, iterations):
    mid = (lo + hi) // 2
    n_a = float(mid - lo)
    n_b = float(hi - mid)
    for _ in range(iterations):
        for i in range(lo, hi):
            d = order[i]
            for p in range(indptr[d], indptr[d + 1]):
                if i < mid:
                    deg_a[indices[p]] += 1
                else:
                    deg_b[indices[p]] += 1
        # per-term change of cost when one document moves across (computed once per term, then summed)
        for i in range(lo, hi):
            d = order[i]
            for p in range(indptr[d], indptr[d + 1]):
                t = indices[p]
                if deg_a[t] < 0:  # already computed in this iteration (marked by negating)
                    continue
                a, b = float(deg_a[t]), float(deg_b[t])
                here = _cost(a, n_a) + _cost(b, n_b)
                gain_a_term[t] = here - (_cost(a - 1, n_a) + _cost(b + 1, n_b)) if a > 0 else 0.0
                gain_b_term[t] = here - (_cost(a + 1, n_a) + _cost(b - 1, n_b)) if b > 0 else 0.0
                deg_a[t] = -deg_a[t] - 1
        for i in range(lo, hi):
            d = order[i]
            g = 0.0
            for p in range(indptr[d], indptr[d + 1]):
                g += gain_a_term[indices[p]] if i < mid else gain_b_term[indices[p]]
            gains[i] = g
        # reset the term scratch
        for i in range(lo, hi):
            d = order[i]
            for p in range(indptr[d], indptr[d + 1]):
                deg_a[indices[p]] = 0
                deg_b[indices[p]] = 0
        left = np.argsort(-gains[lo:mid]) + lo
        right = np.argsort(-gains[mid:hi]) + mid
        new_left = order[left]
        new_right = order[right]
        swapped = 0
        for i in range(min(len(left), len(right))):
            if gains[left[i]] + gains[right[i]] <= 0:
                break
            new_left[i], new_right[i] = new_right[i], new_left[i]
            swapped += 1
        order[lo:mid] = new_left
        order[mid:hi] = new_right
        if swapped == 0:
            break


@njit(parallel=True, nogil=True, cache=True)
def _level(order, starts, ends, indptr, indices, dim, iterations, n_groups):
    n_ranges = len(starts)
    for g in prange(n_groups):
        deg_a = np.zeros(dim, np.int64)
        deg_b = np.zeros(dim, np.int64)
        gain_a_term = np.zeros(dim, np.float64)
        gain_b_term = np.zeros(dim, np.float64)
        gains = np.zeros(len(order), np.float64)
        for r in range(g, n_ranges, n_groups):
            _bisect(order, starts[r], ends[r], indptr, indices, deg_a, deg_b, gain_a_term, gain_b_term, gains,
                    iterations)


def bp_order(indptr: np.ndarray, indices: np.ndarray, dim: int, leaf_size: int = 16,
             iterations: int = 20) -> np.ndarray:
    """A permutation of the documents (CSR rows): ``order[new_position] = old_row``."""
    n = len(indptr) - 1
    order = np.arange(n, dtype=np.int64)
    if n <= leaf_size:
        return order
    started = time.perf_counter()
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = np.ascontiguousarray(indices, dtype=np.int32)
    ranges = [(0, n)]
    depth = 0
    while ranges:
        starts = np.array([lo for lo, _ in ranges], np.int64)
        ends = np.array([hi for _, hi in ranges], np.int64)
        n_groups = max(1, min(len(ranges), numba.get_num_threads()))
        _level(order, starts, ends, indptr, indices, dim, iterations, n_groups)
        ranges = [half for lo, hi in ranges for half in ((lo, (lo + hi) // 2), ((lo + hi) // 2, hi))
                  if half[1] - half[0] > leaf_size]
        depth += 1
    log.info("reordered %d documents by graph bisection (%d levels) in %.1fs", n, depth,
             time.perf_counter() - started)
    return order
