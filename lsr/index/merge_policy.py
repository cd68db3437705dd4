"""The merge policy: which runs of adjacent segments to merge. Pure functions of segment sizes and deletion
counts (no files), so they are tested and tuned alone; :mod:`lsr.index.merge` carries the merges out.
Why adjacent runs and log levels: see that module's docstring and ARCHITECTURE.md ("Merging")."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lsr.errors import InvalidInputError

__all__ = ["MergePolicy", "DEFAULT_POLICY", "SegmentState", "find_merges", "settle_runs"]


@dataclass(frozen=True)
class MergePolicy:
    merge_factor: int = 10  # segments of one level merged at once; also the size ratio between levels
    floor_postings: int = 10_000  # segments smaller than this are all one level (tiny commits merge early)
    max_segment_postings: int = 500_000_000  # a segment this large is left alone (only deletions rewrite it)
    max_deleted_ratio: float = 0.3  # a segment with more deleted documents than this is rewritten
    chunk_postings: int = 4_000_000  # memory of a merge: postings read per term range
    settle_postings: int = 50_000_000  # when writes pause, trailing small segments up to this merge into one

    def __post_init__(self) -> None:
        if self.merge_factor < 2:
            raise InvalidInputError(f"merge_factor must be >= 2, got {self.merge_factor}.")
        if not 0 < self.max_deleted_ratio <= 1:
            raise InvalidInputError(f"max_deleted_ratio must be in (0, 1], got {self.max_deleted_ratio}.")


DEFAULT_POLICY = MergePolicy()


@dataclass(frozen=True)
class SegmentState:
    """What the policy looks at: a segment's postings and how many of its documents are deleted."""

    nnz: int
    n_docs: int
    n_deleted: int

    @property
    def live_postings(self) -> int:
        return 0 if self.n_docs == 0 else round(self.nnz * (self.n_docs - self.n_deleted) / self.n_docs)


def find_merges(segments: list[SegmentState], policy: MergePolicy = DEFAULT_POLICY) -> list[range]:
    """Runs of adjacent segments (index ranges) to merge, none overlapping. Pure: no files involved."""
    merges: list[range] = []
    n = len(segments)
    if n == 0:
        return merges
    levels = [math.log(max(s.live_postings, policy.floor_postings) / policy.floor_postings, policy.merge_factor)
              for s in segments]
    start = 0
    while start < n:
        # the largest level left marks a group: every later segment within 0.75 of a level below it
        top = max(levels[start:])
        floor = top - 0.75 if top > 0.75 else -1.0
        upto = max(i for i in range(start, n) if levels[i] >= floor)
        while start + policy.merge_factor <= upto + 1:
            run = range(start, start + policy.merge_factor)
            if all(segments[i].nnz <= policy.max_segment_postings for i in run):
                merges.append(run)
            start = run.stop
        start = upto + 1
    taken = {i for run in merges for i in run}
    for i, s in enumerate(segments):
        if i not in taken and s.n_docs and s.n_deleted / s.n_docs > policy.max_deleted_ratio:
            merges.append(range(i, i + 1))
    return sorted(merges, key=lambda r: r.start)


def settle_runs(segments: list[SegmentState], policy: MergePolicy = DEFAULT_POLICY) -> list[range]:
    """When writes pause (the service's idle merge): the longest suffix of segments, each and all together
    under ``settle_postings``, as one run. Log levels leave up to ``merge_factor - 1`` segments per level,
    fine while writes stream in but a per-query cost after they stop; settling merges them at a bounded
    cost (at most ``settle_postings`` rewritten per pause), so a small index ends as one segment and a large
    one as its big segments plus one tail."""
    total, start = 0, len(segments)
    while start > 0:
        size = segments[start - 1].live_postings
        if size >= policy.settle_postings or total + size > policy.settle_postings:
            break
        total += size
        start -= 1
    runs = find_merges(segments, policy)
    if len(segments) - start >= 2:
        runs = [r for r in runs if r.stop <= start] + [range(start, len(segments))]
    return runs
