"""numba backend: exhaustive term-at-a-time scoring, and rank-safe block-max pruning.

Parallel over queries (``prange`` over chunks of queries, one accumulator per chunk), never over the
postings of one query, so no two threads write to the same accumulator. The C extension implements the
same two algorithms line for line (``_csparse.c``); both are tested against the scipy oracle.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from numba import njit, prange

from lsr.kernels._arrays import ANCHOR_EVERY, POPCOUNT8
from lsr.kernels.cost_model import FITTED, MODES

__all__ = ["taat_topk", "blockmax_topk", "rescore_topk"]

_local = threading.local()

# the position of the lowest set bit of every non-zero byte value (a mask's next posting)
CTZ8 = np.array([0] + [(v & -v).bit_length() - 1 for v in range(1, 256)], np.int64)


def _scratch(n_chunks: int, n_docs: int, n_blocks: int, block_size: int):
    """Per-thread scratch kept between calls (a one-query call must not allocate and zero n_docs floats).
    Kernels hand back the zeroed arrays all zero, resetting exactly what they touched."""
    cache = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = {}
    key = (n_chunks, n_docs, n_blocks, block_size)
    if key not in cache:
        if len(cache) >= 8:  # a few segment shapes at most; forget the oldest
            cache.pop(next(iter(cache)))
        cache[key] = (np.zeros((n_chunks, n_docs), np.float32), np.zeros((n_chunks, n_docs), np.uint8),
                      np.zeros((n_chunks, n_docs), np.int32), np.zeros((n_chunks, n_blocks), np.float32),
                      np.zeros((n_chunks, block_size), np.float32))
    return cache[key]


@njit(inline="always")
def _worse(s_a, d_a, s_b, d_b):
    """True if hit (s_a, d_a) ranks below (s_b, d_b): lower score, or equal score and larger id."""
    return s_a < s_b or (s_a == s_b and d_a > d_b)


@njit(inline="always")
def _sift_down(heap_s, heap_d, size, pos):
    # min-heap on rank: the root is the worst hit kept so far
    while True:
        left = 2 * pos + 1
        if left >= size:
            return
        child = left
        right = left + 1
        if right < size and _worse(heap_s[right], heap_d[right], heap_s[left], heap_d[left]):
            child = right
        if _worse(heap_s[child], heap_d[child], heap_s[pos], heap_d[pos]):
            heap_s[pos], heap_s[child] = heap_s[child], heap_s[pos]
            heap_d[pos], heap_d[child] = heap_d[child], heap_d[pos]
            pos = child
        else:
            return


@njit(inline="always")
def _sift_up(heap_s, heap_d, pos):
    while pos > 0:
        parent = (pos - 1) // 2
        if _worse(heap_s[pos], heap_d[pos], heap_s[parent], heap_d[parent]):
            heap_s[pos], heap_s[parent] = heap_s[parent], heap_s[pos]
            heap_d[pos], heap_d[parent] = heap_d[parent], heap_d[pos]
            pos = parent
        else:
            return


@njit(nogil=True, cache=True)
def heap_offer(heap_s, heap_d, size, k, score, doc):
    """Offer a hit to a heap of capacity k holding ``size`` hits; returns the new size."""
    if size < k:
        heap_s[size] = score
        heap_d[size] = doc
        _sift_up(heap_s, heap_d, size)
        return size + 1
    if _worse(heap_s[0], heap_d[0], score, doc):
        heap_s[0] = score
        heap_d[0] = doc
        _sift_down(heap_s, heap_d, size, 0)
    return size


@njit(nogil=True, cache=True)
def heap_drain(heap_s, heap_d, size, out_ids, out_scores, row, id_base):
    """Write the heap's hits best-first into row ``row`` of the outputs (the rest stays padded)."""
    while size > 0:
        size -= 1
        out_scores[row, size] = heap_s[0]
        out_ids[row, size] = heap_d[0] + id_base
        heap_s[0] = heap_s[size]
        heap_d[0] = heap_d[size]
        _sift_down(heap_s, heap_d, size, 0)


# A query touching at least n_docs / DENSE_SCAN_RATIO postings accumulates without bookkeeping and then scans
# the whole accumulator (same rule as the C kernel).
DENSE_SCAN_RATIO = 4


@njit(inline="always")
def _offer(heap_s, heap_d, size, k, score, doc):
    """heap_offer behind the one comparison that rejects most hits without a call."""
    if size < k or _worse(heap_s[0], heap_d[0], score, doc):
        return heap_offer(heap_s, heap_d, size, k, score, doc)
    return size


# Large k: offer only the documents at or above a threshold sampled from the scores, and the rest only when
# fewer than k reach it (exact either way; the C kernel's prefilter, see sampled_threshold there).
PREFILTER_MIN_K = 64
PREFILTER_MIN_RATIO = 3
PREFILTER_RANK = 32
PREFILTER_SHARE = 2


@njit(inline="always")
def _sampled_threshold(acc, touched, dense, n, k):
    """The PREFILTER_RANK-th largest positive score of every stride-th scored document, or 0 (too few)."""
    top = np.empty(PREFILTER_RANK, np.float32)
    size = 0
    for i in range(0, n, k * PREFILTER_SHARE // PREFILTER_RANK):
        s = acc[i] if dense else acc[touched[i]]
        if not s > 0:
            continue
        if size < PREFILTER_RANK:  # a min-heap of the largest
            pos = size
            size += 1
            top[pos] = s
            while pos > 0 and top[(pos - 1) // 2] > top[pos]:
                parent = (pos - 1) // 2
                top[pos], top[parent] = top[parent], top[pos]
                pos = parent
        elif s > top[0]:
            top[0] = s
            pos = 0
            while True:
                c = 2 * pos + 1
                if c >= PREFILTER_RANK:
                    break
                if c + 1 < PREFILTER_RANK and top[c + 1] < top[c]:
                    c += 1
                if top[c] >= top[pos]:
                    break
                top[pos], top[c] = top[c], top[pos]
                pos = c
    return top[0] if size == PREFILTER_RANK else np.float32(0.0)


@njit(inline="always")
def _prefilters(k, n):
    """Whether the prefilter runs for top k over n scored documents (the one place that says so)."""
    return k >= PREFILTER_MIN_K and n >= PREFILTER_MIN_RATIO * k


@njit(inline="always")
def offered_docs(k, scored):
    """The documents exhaustive scoring offers to the heap: all, or about PREFILTER_SHARE x k past the threshold."""
    return float(PREFILTER_SHARE * k) if _prefilters(k, scored) else float(scored)


@njit(inline="always")
def prefilter_scan(k, scanned):
    """The documents the prefilter's own pass reads: the scanned ones where it applies (as the C kernel's)."""
    return float(scanned) if _prefilters(k, scanned) else 0.0


# The dense scans test SCAN_LANES scores at a time against the least score that can enter the full heap and
# look at the scores one by one only in the rare groups that pass (the C kernel's offer_dense).
SCAN_LANES = 16


@njit(nogil=True)
def _any_reaching(acc, d0, t):
    """Some acc[d0 + r] >= t, r < SCAN_LANES."""
    any_ = False
    for r in range(SCAN_LANES):
        any_ |= acc[d0 + r] >= t
    return any_


@njit(nogil=True)
def _offer_dense(acc, lo, deleted, has_deleted, heap_s, heap_d, size, k):
    """Offer every score of acc that is positive, at least lo (0: no bound) and not deleted; the heap size."""
    n_docs = len(acc)
    for d0 in range(0, n_docs, SCAN_LANES):
        d1 = min(d0 + SCAN_LANES, n_docs)
        least = lo if size < k else max(lo, heap_s[0])
        if d1 - d0 == SCAN_LANES and least > 0 and not _any_reaching(acc, d0, least):
            continue
        for d in range(d0, d1):
            s = acc[d]
            if s >= least and s > 0 and not (has_deleted and deleted[d] != 0):
                size = _offer(heap_s, heap_d, size, k, s, d)
                least = lo if size < k else max(lo, heap_s[0])
    return size


@njit(inline="always")
def _offer_range(acc, touched, dense, n, lo, hi, deleted, has_deleted, heap_s, heap_d, size, k):
    for i in range(n):
        d = i if dense else touched[i]
        s = acc[d]
        if s >= lo and s < hi and s > 0 and not (has_deleted and deleted[d] != 0):
            size = _offer(heap_s, heap_d, size, k, s, d)
    return size


# _taat_query and _score_block are compiled as functions of their own, not inline="always": inlined at
# numba's IR level into the parallel kernels (several call sites each) they made numba's parfor passes take
# 4x as long (float32 exhaustive + auto: 73 s to compile, 20 s now; every weight type and CI's clean
# checkout pay it), with no measured difference in speed (LLVM still sees the calls).
@njit(nogil=True)
def _taat_query(q, offsets, weights, b_offsets, b_ids, masks, block_size, q_indptr, q_indices, q_values, k, deleted,
                has_deleted, acc, seen, touched, heap_s, heap_d):
    """Exact top-k of query ``q`` by exhaustive accumulation; returns the heap size. Scratch is left zeroed.

    A term's postings are decoded entry by entry: the entry's block gives the base doc id, each set bit of
    its mask one posting, whose weight is the next one of the term's weights."""
    n_terms = len(offsets) - 1
    n_docs = len(acc)
    mb = (block_size + 7) >> 3
    postings = 0
    for j in range(q_indptr[q], q_indptr[q + 1]):
        postings += offsets[q_indices[j] + 1] - offsets[q_indices[j]]
    dense = postings * DENSE_SCAN_RATIO >= n_docs
    n_touched = 0
    for j in range(q_indptr[q], q_indptr[q + 1]):
        term = q_indices[j]
        if term >= n_terms:
            continue
        w = q_values[j]
        p = offsets[term]
        for e in range(b_offsets[term], b_offsets[term + 1]):
            base = np.int64(b_ids[e]) * block_size
            for i in range(mb):
                m = np.int64(masks[e * mb + i])
                while m != 0:
                    d = base + 8 * i + CTZ8[m]
                    m &= m - 1
                    if not dense and seen[d] == 0:
                        seen[d] = 1
                        touched[n_touched] = d
                        n_touched += 1
                    acc[d] += w * np.float32(weights[p])
                    p += 1
    size = 0
    n_scan = n_docs if dense else n_touched
    tau = np.float32(0.0)
    if _prefilters(k, n_scan):
        tau = _sampled_threshold(acc, touched, dense, n_scan, k)
    if tau > 0:
        if dense:
            size = _offer_dense(acc, tau, deleted, has_deleted, heap_s, heap_d, size, k)
        else:
            size = _offer_range(acc, touched, dense, n_scan, tau, np.inf, deleted, has_deleted, heap_s, heap_d,
                                size, k)
        if size < k:
            size = _offer_range(acc, touched, dense, n_scan, np.float32(0.0), tau, deleted, has_deleted, heap_s,
                                heap_d, size, k)
        if dense:
            acc[:] = 0.0
        else:
            for i in range(n_touched):
                acc[touched[i]] = 0.0
                seen[touched[i]] = 0
    elif dense:
        # only the test of what can enter the heap, clearing afterwards (as the C kernel)
        size = _offer_dense(acc, np.float32(0.0), deleted, has_deleted, heap_s, heap_d, size, k)
        acc[:] = 0.0
    else:
        for i in range(n_touched):
            d = touched[i]
            s = acc[d]
            acc[d] = 0.0
            seen[d] = 0
            if s > 0 and not (has_deleted and deleted[d] != 0):
                size = _offer(heap_s, heap_d, size, k, s, d)
    return size


@njit(parallel=True, nogil=True, cache=True)
def _taat(offsets, weights, b_offsets, b_ids, masks, block_size, q_indptr, q_indices, q_values, n_docs, k, deleted,
          n_chunks, id_base, out_ids, out_scores, acc_all, seen_all, touched_all):
    n_queries = len(q_indptr) - 1
    has_deleted = len(deleted) > 0
    for chunk in prange(n_chunks):
        acc = acc_all[chunk]
        seen = seen_all[chunk]
        touched = touched_all[chunk]
        heap_s = np.empty(k, np.float32)
        heap_d = np.empty(k, np.int64)
        for q in range(chunk, n_queries, n_chunks):
            size = _taat_query(q, offsets, weights, b_offsets, b_ids, masks, block_size, q_indptr, q_indices,
                               q_values, k, deleted, has_deleted, acc, seen, touched, heap_s, heap_d)
            heap_drain(heap_s, heap_d, size, out_ids, out_scores, q, id_base)


def taat_topk(postings, q_indptr, q_indices, q_values, k, deleted, out_ids, out_scores, id_base=0):
    """Fill ``out_ids``/``out_scores`` (preset to -1/-inf) with each query's exact top-k."""
    n_queries = len(q_indptr) - 1
    n_chunks = max(1, min(n_queries, numba.get_num_threads()))
    acc, seen, touched, _, _ = _scratch(n_chunks, postings.n_docs, 0, 1)
    b = postings.blocks
    _taat(postings.offsets, postings.weights, b.offsets, b.ids, b.masks, b.block_size, q_indptr, q_indices,
          q_values, postings.n_docs, k, deleted, n_chunks, id_base, out_ids, out_scores, acc, seen, touched)


@njit(inline="always")
def _find_block(block_ids, lo, hi, block):
    """Position of ``block`` in the sorted ``block_ids[lo:hi]``, or -1."""
    end = hi
    while lo < hi:
        mid = (lo + hi) >> 1
        if block_ids[mid] < block:
            lo = mid + 1
        else:
            hi = mid
    return -1 if lo >= end or block_ids[lo] != block else lo


@njit(nogil=True)
def _score_block(b, block_size, q_lo, q_hi, q_indices, q_values, offsets, weights, b_offsets, b_ids, masks,
                 anchors, dense_rows, dense, dense_prefix, n_blocks, n_chunks64, local, n_docs, deleted,
                 has_deleted, heap_s, heap_d, size, k):
    """Score every document of block ``b`` exactly and offer each to the heap; returns the heap size."""
    base = b * block_size
    mb = (block_size + 7) >> 3
    for j in range(q_lo, q_hi):
        term = q_indices[j]
        row = dense_rows[term] if len(dense_rows) else -1
        if row >= 0:
            # the entry's rank among the term's blocks: a prefix count plus the non-zero bytes since
            first = row * n_blocks
            if dense[first + b] == 0:
                continue
            e = b_offsets[term] + dense_prefix[row * n_chunks64 + (b >> 6)]
            for c in range(b & ~63, b):
                if dense[first + c] != 0:
                    e += 1
        else:
            e = _find_block(b_ids, b_offsets[term], b_offsets[term + 1], b)
            if e < 0:
                continue
        # the entry's first posting: its anchor plus the postings of the entries since the anchor
        p = np.int64(anchors[e // ANCHOR_EVERY])
        for i in range((e - e % ANCHOR_EVERY) * mb, e * mb):
            p += POPCOUNT8[masks[i]]
        w = q_values[j]
        for i in range(mb):
            m = np.int64(masks[e * mb + i])
            while m != 0:
                local[8 * i + CTZ8[m]] += w * np.float32(weights[p])
                m &= m - 1
                p += 1
    for r in range(block_size):
        s = local[r]
        if s > 0:
            local[r] = 0.0
            d = base + r
            if not (has_deleted and deleted[d] != 0):
                size = _offer(heap_s, heap_d, size, k, s, d)
    return size


# The cost model's fields, in CostModel order (lsr/kernels/cost_model.py; the C kernel's COST_* enum), and
# the modes (MODES there): block-max to the end, guarded block-max, auto.
(C_POSTING, C_SCAN_DOC, C_TERM, C_ENTRY, C_ROW_BLOCK, C_BLOCK, C_BLOCK_TERM, C_CAND_SORT, C_SCORED_RATIO,
 C_SCORED_EXPONENT, C_GUARD, C_HEAP, C_BLOCKS_CONST, C_BLOCKS_K, C_BLOCKS_BLOCKS, C_BLOCKS_TERMS,
 C_BLOCKS_POSTINGS, C_BLOCKS_K_BLOCKS, C_BLOCKS_K_TERMS, C_PREFILTER_SCAN, C_BLOCK_TERM_LOG) = range(21)
MODE_PURE, MODE_GUARDED, MODE_AUTO = range(3)
ROUTE_BLOCKMAX, ROUTE_EXHAUSTIVE, ROUTE_FALLBACK = range(3)


@njit(inline="always")
def _reaching(cand_s, order, start, n, threshold, alpha):
    """How many of the candidates order[start:n] (by decreasing bound) have alpha x bound >= threshold."""
    lo, hi = start, n
    while lo < hi:
        mid = (lo + hi) >> 1
        if cand_s[order[mid]] * alpha < threshold:
            hi = mid
        else:
            lo = mid + 1
    return lo - start


@njit(cache=True, inline="always")
def heap_work(k, docs):
    """Expected top-k heap insertions x sift depth for ``docs`` scored documents (as the C kernel's)."""
    depth = np.log2(max(k, 2))
    if docs <= k:
        return docs * depth
    return k * (1.0 + np.log(docs / k)) * depth


@njit(cache=True, inline="always")
def scoring_cost(cm, per_block, k, block_size, n_from, n_to):
    """Block-max's cost of scoring blocks n_from .. n_to: the terms looked up in each, and the documents offered
    to the top-k heap (as the C kernel's)."""
    return per_block * (n_to - n_from) + cm[C_HEAP] * (heap_work(k, block_size * n_to)
                                                       - heap_work(k, block_size * n_from))


# A dense row's bound is float(row[b]) * scale, multiplied by the query weight in another order than the
# exact weight * value; inflating it by 2^-20 (16 float32 ulps) keeps it an upper bound. (Same as the C kernel.)
DENSE_MARGIN = np.float32(1.0 + 2.0**-20)


@njit(parallel=True, nogil=True, cache=True)
def _blockmax(offsets, weights, b_offsets, b_ids, b_max, masks, anchors, dense_rows, dense, dense_scale,
              dense_prefix, block_size, q_indptr, q_indices, q_values, n_docs, k, deleted, alpha, n_seeds, mode, cm,
              n_chunks, id_base, out_ids, out_scores, acc_all, seen_all, touched_all, ub_all, local_all, stats):
    n_queries = len(q_indptr) - 1
    n_blocks = (n_docs + block_size - 1) // block_size
    n_chunks64 = (n_blocks + 63) // 64
    has_deleted = len(deleted) > 0
    for chunk in prange(n_chunks):
        ub = ub_all[chunk]
        seed_s = np.empty(n_seeds, np.float32)
        seed_b = np.empty(n_seeds, np.int64)
        cand_s = np.empty(n_blocks, np.float32)
        cand_b = np.empty(n_blocks, np.int64)
        local = local_all[chunk]
        heap_s = np.empty(k, np.float32)
        heap_d = np.empty(k, np.int64)
        acc = acc_all[chunk]
        seen = seen_all[chunk]
        touched = touched_all[chunk]
        for q in range(chunk, n_queries, n_chunks):
            q_lo, q_hi = q_indptr[q], q_indptr[q + 1]
            if q_hi == q_lo:
                continue  # no terms: no hits (the outputs stay padded)
            # the cost model's inputs: postings, sparse entries and dense rows of the query's terms
            postings = 0
            entries = 0
            rows = 0
            n_terms = q_hi - q_lo
            for j in range(q_lo, q_hi):
                t = q_indices[j]
                postings += offsets[t + 1] - offsets[t]
                if len(dense_rows) and dense_rows[t] >= 0:
                    rows += 1
                else:
                    entries += b_offsets[t + 1] - b_offsets[t]
            scanned = n_docs if postings * DENSE_SCAN_RATIO >= n_docs else min(postings, n_docs)
            t_exhaustive = (cm[C_POSTING] * postings + cm[C_SCAN_DOC] * scanned + cm[C_TERM] * n_terms
                            + cm[C_HEAP] * heap_work(k, offered_docs(k, min(postings, n_docs)))
                            + cm[C_PREFILTER_SCAN] * prefilter_scan(k, scanned))
            t_bounds = cm[C_ENTRY] * entries + cm[C_ROW_BLOCK] * rows * n_blocks + cm[C_BLOCK] * n_blocks
            # each term's entry of a block is a binary search whose depth grows with the collection
            per_block = max(n_terms * (cm[C_BLOCK_TERM] + cm[C_BLOCK_TERM_LOG] * np.log2(max(n_blocks, 2))), 1e-9)
            limit = np.inf if mode == MODE_PURE or np.isinf(cm[C_GUARD]) else cm[C_GUARD] * t_exhaustive
            # whether the route follows the cost model's predictions (not block-max that never gives up)
            predicts = mode == MODE_AUTO or (mode == MODE_GUARDED and not np.isinf(limit))
            # exhaustive from the start: block-max's bounds and seeds alone pass its limit, or its predicted
            # whole cost (blocks to score: a fitted power law) is above exhaustive scoring's (auto) or
            # 1 + guard times it (guarded)
            lk, lb = np.log(k), np.log(max(n_blocks, 1))
            lt, lp = np.log(max(n_terms, 1)), np.log(max(postings, 1))
            blocks_guess = np.exp(cm[C_BLOCKS_CONST] + cm[C_BLOCKS_K] * lk + cm[C_BLOCKS_BLOCKS] * lb
                                  + cm[C_BLOCKS_TERMS] * lt + cm[C_BLOCKS_POSTINGS] * lp
                                  + cm[C_BLOCKS_K_BLOCKS] * lk * lb + cm[C_BLOCKS_K_TERMS] * lk * lt)
            if t_bounds + scoring_cost(cm, per_block, k, block_size, 0.0, np.float64(min(n_seeds, n_blocks))) > limit \
                    or (predicts
                        and t_bounds + scoring_cost(cm, per_block, k, block_size, 0.0, blocks_guess)
                        > (1.0 if mode == MODE_AUTO else 1.0 + cm[C_GUARD]) * t_exhaustive):
                size = _taat_query(q, offsets, weights, b_offsets, b_ids, masks, block_size, q_indptr, q_indices,
                                   q_values, k, deleted, has_deleted, acc, seen, touched, heap_s, heap_d)
                heap_drain(heap_s, heap_d, size, out_ids, out_scores, q, id_base)
                if len(stats):
                    stats[q, 0] = ROUTE_EXHAUSTIVE
                continue
            # 1. a bound per block: sum over query terms of weight x the term's block maximum, in query-term
            #    order -- the order exact scores are summed in, so (float addition being monotone) no document
            #    scores above its block's bound
            for j in range(q_lo, q_hi):
                term = q_indices[j]
                w = q_values[j]
                row = dense_rows[term] if len(dense_rows) else -1
                if row >= 0:
                    c = w * dense_scale[row] * DENSE_MARGIN
                    first = row * n_blocks
                    for b in range(n_blocks):
                        ub[b] += c * np.float32(dense[first + b])
                    continue
                for e in range(b_offsets[term], b_offsets[term + 1]):
                    ub[b_ids[e]] += w * np.float32(b_max[e])
            # 2. seed the top k with the blocks of the highest bounds (one linear scan keeps the best n_seeds)
            n_seed = 0
            for b in range(n_blocks):
                if ub[b] > 0:
                    n_seed = _offer(seed_s, seed_b, n_seed, n_seeds, ub[b], b)
            size = 0
            for i in range(n_seed):
                b = seed_b[i]
                size = _score_block(b, block_size, q_lo, q_hi, q_indices, q_values, offsets, weights, b_offsets,
                                    b_ids, masks, anchors, dense_rows, dense, dense_prefix, n_blocks, n_chunks64, local,
                                    n_docs, deleted, has_deleted, heap_s, heap_d, size, k)
                ub[b] = 0.0  # scored
            # 3. every other block that could still beat the k-th score, by decreasing bound
            threshold = heap_s[0] if size == k else np.float32(0.0)
            n_cand = 0
            for b in range(n_blocks):
                bound = ub[b]
                if bound > 0:
                    ub[b] = 0.0
                    if bound * alpha >= threshold:
                        cand_s[n_cand] = bound
                        cand_b[n_cand] = b
                        n_cand += 1
            # the candidates block-max may still score within its limit; auto also predicts how many it will
            # score (a fitted share of the candidates) and goes exhaustive now if that costs more
            t_sort = cm[C_CAND_SORT] * n_cand * np.log2(max(n_cand, 2))
            left = limit - t_bounds - scoring_cost(cm, per_block, k, block_size, 0.0, np.float64(n_seed)) - t_sort
            # each further block at the cost of the next one (the heap's share only shrinks as it fills)
            marginal = scoring_cost(cm, per_block, k, block_size, np.float64(n_seed), n_seed + 1.0)
            if np.isinf(limit) or left / marginal >= n_cand:
                budget = n_cand
            else:
                budget = np.int64(left / marginal) if left > 0 else 0
            # every candidate scored costs less than exhaustive scoring: handing over could only cost more
            if budget < n_cand and t_sort + scoring_cost(cm, per_block, k, block_size, np.float64(n_seed),
                                                         np.float64(n_seed + n_cand)) < t_exhaustive:
                budget = n_cand
            fallback = n_cand > 4 * budget
            predicted = scoring_cost(cm, per_block, k, block_size, np.float64(n_seed),
                                     n_seed + cm[C_SCORED_RATIO] * np.float64(n_cand) ** cm[C_SCORED_EXPONENT])
            if predicts and t_sort + predicted > t_exhaustive:
                fallback = True
            n_scored = 0
            if not fallback:
                order = np.argsort(-cand_s[:n_cand])
                for i in range(n_cand):
                    bound = cand_s[order[i]]
                    if size == k and bound * alpha < heap_s[0]:
                        break
                    if i >= budget:
                        # out of budget: finish when the candidates whose bound still reaches the k-th score
                        # (all that may be left: it only rises) cost less than exhaustive scoring (the C kernel's)
                        still = n_cand - i
                        if size == k:
                            still = _reaching(cand_s, order, i, n_cand, heap_s[0], alpha)
                        if scoring_cost(cm, per_block, k, block_size, np.float64(n_seed + i),
                                        np.float64(n_seed + i + still)) >= t_exhaustive:
                            fallback = True
                            break
                        budget = i + still
                    size = _score_block(cand_b[order[i]], block_size, q_lo, q_hi, q_indices, q_values, offsets,
                                        weights, b_offsets, b_ids, masks, anchors, dense_rows, dense, dense_prefix,
                                        n_blocks, n_chunks64, local, n_docs, deleted, has_deleted, heap_s, heap_d,
                                        size, k)
                    n_scored += 1
            if len(stats):
                stats[q, 0] = ROUTE_FALLBACK if fallback else ROUTE_BLOCKMAX
                stats[q, 1] = n_seed
                stats[q, 2] = n_cand
                stats[q, 3] = n_scored
            if fallback:
                size = _taat_query(q, offsets, weights, b_offsets, b_ids, masks, block_size, q_indptr, q_indices,
                                   q_values, k, deleted, has_deleted, acc, seen, touched, heap_s, heap_d)
            heap_drain(heap_s, heap_d, size, out_ids, out_scores, q, id_base)


def blockmax_topk(postings, q_indptr, q_indices, q_values, k, deleted, out_ids, out_scores, id_base=0, alpha=1.0,
                  mode=MODES["pure"], cost=FITTED, n_seeds=16, stats=None):
    """Block-max pruned top-k; exact (the oracle's result) when ``alpha`` is 1. ``mode`` and ``cost`` decide
    when a query is scored exhaustively instead (lsr/kernels/cost_model.py); ``stats`` (int64, n_queries x 4)
    receives what happened to each query, as the C kernel's."""
    n_queries = len(q_indptr) - 1
    n_chunks = max(1, min(n_queries, numba.get_num_threads()))
    blocks = postings.blocks
    n_docs = postings.n_docs
    n_blocks = (n_docs + blocks.block_size - 1) // blocks.block_size
    acc, seen, touched, ub, local = _scratch(n_chunks, n_docs, n_blocks, blocks.block_size)
    _blockmax(postings.offsets, postings.weights, blocks.offsets, blocks.ids, blocks.maxima, blocks.masks,
              blocks.anchors, blocks.dense_rows, blocks.dense, blocks.dense_scale, blocks.dense_prefix,
              blocks.block_size, q_indptr, q_indices, q_values, n_docs, k, deleted, np.float32(alpha), n_seeds,
              int(mode), cost.as_array(), n_chunks, id_base, out_ids, out_scores, acc, seen, touched, ub, local,
              np.zeros((0, 4), np.int64) if stats is None else stats.reshape(-1, 4))


@njit(parallel=True, nogil=True, cache=True)
def _rescore(indptr, indices, values, dim, q_indptr, q_indices, q_values, cand, k, id_base, out_ids, out_scores,
             n_chunks):
    """The C kernel's rescore_topk: each candidate's forward row summed against a dim-sized table of the
    query's weights (zero elsewhere: +0.0 leaves a float sum unchanged), in ascending term = query order."""
    n_queries = len(q_indptr) - 1
    n_docs = len(indptr) - 1
    for chunk in prange(n_chunks):
        table = np.zeros(dim, np.float32)
        heap_s = np.empty(k, np.float32)
        heap_d = np.empty(k, np.int64)
        for q in range(chunk, n_queries, n_chunks):
            for i in range(q_indptr[q], q_indptr[q + 1]):
                table[q_indices[i]] = q_values[i]
            size = 0
            for c in range(cand.shape[1]):
                d = cand[q, c]
                if d < 0 or d >= n_docs:
                    continue
                s = np.float32(0.0)
                for p in range(indptr[d], indptr[d + 1]):
                    s += table[indices[p]] * np.float32(values[p])
                if s > 0:
                    size = _offer(heap_s, heap_d, size, k, s, d)
            for i in range(q_indptr[q], q_indptr[q + 1]):
                table[q_indices[i]] = np.float32(0.0)
            heap_drain(heap_s, heap_d, size, out_ids, out_scores, q, id_base)


def rescore_topk(forward, dim, q_indptr, q_indices, q_values, candidates, k, out_ids, out_scores, id_base=0):
    """Two-step search's step 2 (lsr/kernels/two_step.py); candidate ids out of range are skipped (the C kernel
    raises: the caller hands only the first step's hits)."""
    n_queries = len(q_indptr) - 1
    n_chunks = max(1, min(n_queries, numba.get_num_threads()))
    _rescore(forward.indptr, forward.indices, forward.values, dim, q_indptr, q_indices, q_values,
             candidates.reshape(n_queries, -1), k, id_base, out_ids.reshape(n_queries, -1),
             out_scores.reshape(n_queries, -1), n_chunks)
