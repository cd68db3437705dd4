"""The cost model that picks a query's exact route: exhaustive scoring or block-max, and when to give up.

Both kernels (C and numba) predict, from counts known before a query is scored, what each route costs:

    exhaustive = posting x P + scan_doc x D + term x T + heap x H + prefilter_scan x D'
    block-max  = entry x E + row_block x R x B + block x B            (the bounds, and the scans of B blocks)
               + (block_term + block_term_log x log2 B) x T x (seeds + scored)   (scoring blocks, every term)
               + heap x H(b x (seeds + scored))                       (their documents offered to the heap)
               + cand_sort x C log2 C                                 (ordering the candidates)

with T the query's terms, P their postings, D the accumulator entries exhaustive scoring scans (every
document when P >= n_docs / 4, else the documents touched), H = H(n) = k (1 + ln(n / k)) log2 k the
expected top-k heap insertions times their depth for n offered documents: n = min(P, n_docs), or 2k where
the kernels' prefilter offers only the documents past a threshold sampled from the scores (k >= 64 over
at least 3k documents; without it the heap was most of exhaustive scoring's time at k = 1000) and D' = D
where that prefilter runs (its own pass over the scores), else 0, E the block
entries of the terms without a dense bound row, R the terms with one, B the segment's blocks, b the
documents per block, H(b x ...) the same heap term over the documents of the scored blocks (the same
constant: at k = 1000 the seeds alone offer as many documents as a small collection holds, which made
block-max look cheap there before the term was added),
C the candidate blocks left after the seeds,
and ``scored`` the candidates scored before the k-th score stops the search, predicted after the seeds as
``scored_ratio x C ** scored_exponent`` (a power law: the larger k, the weaker the seeds' threshold and the
smaller the share of candidates that end up scored).

Routes (``MODE_*`` in the kernels): ``blockmax`` is *guarded*: it goes exhaustive up front when its bounds
and seeds alone would cost more than ``guard`` x exhaustive, and hands the query to exhaustive scoring once
its own work reaches that much -- unless the candidate blocks whose bound still reaches the k-th score (an
upper bound on what is left: that score only rises) cost less than exhaustive scoring, and then it
finishes -- so it costs at most about ``1 + guard`` times exhaustive (1.5x, plus the model's error); it
also goes exhaustive up front when block-max's whole predicted cost is above ``1 + guard`` times
exhaustive's -- the blocks it will score guessed before any bound is computed, as
a log-linear function of ln k, ln B, ln T, ln P and the products ln k ln B, ln k ln T (``blocks_*``; the
block-max work for a given k depends on the collection and the query length) -- and, after the seeds,
when the candidates it is predicted to score cost more than exhaustive scoring (without these two
predictions a long query spent its limit on bounds and seeds and then went exhaustive anyway).
``auto`` does the same with no tolerance up front: block-max only where it is predicted cheaper. Every route returns the
same exact result; the model only decides the time.

The constants are nanoseconds on the machine they were fitted on; only their ratios matter. They are fitted
by ``python benchmarks/routes.py``, which times every query of three collections (small: SciFact,
NFCorpus; large: enwiki-100k) with short, medium and long queries (long: another collection's documents)
at k = 10 and 1000, on each route: non-negative least squares of the times on the counts above (relative
error; the exhaustive model's median error is 7-13%, block-max's 5-9%), log-log least squares for the two
power laws. The same script checks ``auto`` against the fastest route per query class
(benchmarks/README.md, "Exact routes").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np

__all__ = ["CostModel", "FITTED", "PURE_BLOCKMAX", "MODES"]

# the kernels' modes: block-max to the end / guarded block-max / auto
MODES = {"pure": 0, "blockmax": 1, "auto": 2}


@dataclass(frozen=True)
class CostModel:
    posting: float
    scan_doc: float
    term: float
    entry: float
    row_block: float
    block: float
    block_term: float
    cand_sort: float
    scored_ratio: float
    scored_exponent: float
    guard: float = 0.5
    heap: float = 0.0
    # auto's up-front guess of the blocks block-max scores: exp(const + k ln k + blocks ln B + terms ln T
    # + postings ln P + k_blocks ln k ln B + k_terms ln k ln T) (-inf: none, so auto goes exhaustive up front
    # only when the bounds alone cost more)
    blocks_const: float = -math.inf
    blocks_k: float = 0.0
    blocks_blocks: float = 0.0
    blocks_terms: float = 0.0
    blocks_postings: float = 0.0
    blocks_k_blocks: float = 0.0
    blocks_k_terms: float = 0.0
    # the prefilter's pass over the scanned documents (exhaustive at k >= 64; appended: the kernels'
    # COST_* order)
    prefilter_scan: float = 0.0
    # scoring a block, per term and per log2 of the segment's blocks: the term's entry for the block is a
    # binary search over its entries (appended last: the kernels' COST_* order)
    block_term_log: float = 0.0

    def as_array(self) -> np.ndarray:
        """The kernels' argument: float64, in field order (the C kernel's COST_* enum); made once per model
        (every block-max call passes it: building it cost 4 µs of a ~20 µs single-query call)."""
        array = self.__dict__.get("_array")
        if array is None:
            array = np.array([getattr(self, f.name) for f in fields(self)], np.float64)
            array.flags.writeable = False
            object.__setattr__(self, "_array", array)
        return array


# fitted by `python benchmarks/routes.py --check-model fitted` (its first pass; the table in benchmarks/README.md
# "Exact routes" is its second pass, run with this model) on SciFact, NFCorpus and enwiki-100k, float32, own +
# long queries, k = 10 and 1000, 2-core AMD EPYC (AVX-512), 2026-12-07, after the vectorised dense scan (the
# per-document scan cost fits to zero: what is left of it is folded into the other terms) and with block
# scoring priced per term x log2 blocks (the fit puts all of it there, none on the flat per-term constant):
# exhaustive median error 10%, block-max 6%. The heap constant is shared: block-max offers its scored blocks'
# documents to the same top-k heap.
FITTED = CostModel(posting=1.17, scan_doc=0.0, term=64.03, entry=0.3773, row_block=0.0, block=3.054,
                   block_term=0.0, cand_sort=5.059, scored_ratio=1.806, scored_exponent=0.8449, guard=0.5,
                   heap=6.596, blocks_const=0.5822, blocks_k=0.07698, blocks_blocks=-0.3971, blocks_terms=1.286,
                   blocks_postings=0.1352, blocks_k_blocks=0.13, blocks_k_terms=-0.1653, prefilter_scan=0.5607,
                   block_term_log=4.289)

# block-max that never gives up (tests reach its code on collections where the guard would always fall back)
PURE_BLOCKMAX = replace(FITTED, guard=math.inf)
