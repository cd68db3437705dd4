"""The cost model that picks a query's exact route: exhaustive scoring or block-max, and when to give up.

Both kernels (C and numba) predict, from counts known before a query is scored, what each route costs:

    exhaustive = posting x P + scan_doc x D + term x T + heap x H
    block-max  = entry x E + row_block x R x B + block x B            (the bounds, and the scans of B blocks)
               + block_term x T x (seeds + scored)                    (scoring blocks, every term each)
               + cand_sort x C log2 C                                 (ordering the candidates)

with T the query's terms, P their postings, D the accumulator entries exhaustive scoring scans (every
document when P >= n_docs / 4, else the documents touched), H = k (1 + ln(min(P, n_docs) / k)) log2 k the
expected top-k heap insertions times their depth (the heap is most of exhaustive scoring's time at k = 1000
on a small collection), E the block entries of the terms without a
dense bound row, R the terms with one, B the segment's blocks, C the candidate blocks left after the seeds,
and ``scored`` the candidates scored before the k-th score stops the search, predicted after the seeds as
``scored_ratio x C ** scored_exponent`` (a power law: the larger k, the weaker the seeds' threshold and the
smaller the share of candidates that end up scored).

Routes (``MODE_*`` in the kernels): ``blockmax`` is *guarded*: it goes exhaustive up front when its bounds
and seeds alone would cost more than ``guard`` x exhaustive, and hands the query to exhaustive scoring once
its own work reaches that much, so it costs at most about ``1 + guard`` times exhaustive (1.5x); ``auto``
does the same and, after the seeds, also goes exhaustive when the predicted rest costs more than
exhaustive scoring. Every route returns the same exact result; the model only decides the time.

The constants are nanoseconds on the machine they were fitted on (a 2-core Xeon); only their ratios
matter. PROVISIONAL: the timing constants come from one exploratory fit (per-query timings of forced
exhaustive and never-giving-up block-max on enwiki-100k, 200 short and 200 long queries, k = 10, 100,
1000, non-negative least squares on relative error: p50 error 10% exhaustive, 6% block-max); the
``scored`` power law is a first guess (the measured share scored/candidates ran from 0.03 to 0.8 by k and
query length), and with a share of 0.3 auto went exhaustive too often (synth-1m k=10 p50 0.93 -> 1.35 ms),
so it is 0 for now: auto behaves as guarded block-max. A fitting script in benchmarks/ and a check of
`auto` against the best route per query
class are the follow-up (issue 21).
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

    def as_array(self) -> np.ndarray:
        """The kernels' argument: float64, in field order (the C kernel's COST_* enum); made once per model
        (every block-max call passes it: building it cost 4 µs of a ~20 µs single-query call)."""
        array = self.__dict__.get("_array")
        if array is None:
            array = np.array([getattr(self, f.name) for f in fields(self)], np.float64)
            array.flags.writeable = False
            object.__setattr__(self, "_array", array)
        return array


# provisional (see above): enwiki-100k uint8, 2-core Xeon, 2026-12-05
FITTED = CostModel(posting=0.53, scan_doc=3.96, term=0.0, entry=1.41, row_block=0.047, block=2.46,
                   block_term=65.0, cand_sort=6.5, scored_ratio=0.0, scored_exponent=1.0)

# block-max that never gives up (tests reach its code on collections where the guard would always fall back)
PURE_BLOCKMAX = replace(FITTED, guard=math.inf)
