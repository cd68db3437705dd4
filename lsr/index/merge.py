"""Segment merging: which segments to merge (the policy), how (streamed), and how a merge is published.

Every commit adds segments and nothing else shrinks their number, so an index that takes one document at a
time would otherwise be searched over thousands of tiny segments. Merging rewrites a run of segments as one,
dropping deleted documents.

**Policy** (:class:`MergePolicy`, Lucene's ``LogByteSizeMergePolicy`` in spirit): a segment's size is its live
postings; sizes fall into levels a factor ``merge_factor`` apart (everything under ``floor_postings`` is one
level), and ``merge_factor`` *adjacent* segments of one level are merged into one of the next. The segment
count stays logarithmic in the index size and each posting is rewritten about log(N) times. Segments over
``max_segment_postings`` are not merged further (bounding a merge's time); a segment whose deleted fraction
exceeds ``max_deleted_ratio`` is rewritten on its own to reclaim the space.

Why adjacent runs only (Lucene's tiered policy merges any segments): global ids are ``doc_base + local`` and
ties in a ranking go to the lower id. Merging neighbours keeps every live document's id order, so a merged
index ranks *exactly* as the unmerged one, ties included, and the build's corpus documents stay a prefix of
the id space (the search page relies on it). For the same reason a merge never re-orders documents, even in
a ``reorder="bp"`` index: each source segment's BP order is kept as a run inside the merged segment.

**Streaming**: the merged segment is written term range by term range from the sources' memory maps through
:class:`~lsr.index.segment_files.SegmentBuilder`, so a merge's memory is one term range (``chunk_postings``),
whatever the size of the segments -- this is also what keeps ``lsr index`` of N documents in bounded memory
(the writer flushes small segments, the sorted runs, and merges them).

**Publishing**: a merge works from one snapshot without the writer lock (readers and writers go on), holding
only ``merge.lock`` (one merger per index). Its output is a hidden ``.merging-<pid>-<n>`` directory, which
writers leave alone while that process lives. Then, under the writer lock, it re-reads the manifest, maps
deletions that landed during the merge onto the merged ids, shifts the ids after the run by the number of
dropped documents, renames the directory to a new segment name and commits a new manifest -- the same atomic
commit as every write. A crash anywhere leaves the old manifest (the merge never happened) or the new one.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lsr.errors import IndexFormatError, IndexLockedError, InvalidInputError
from lsr.index import format as fmt
from lsr.index.merge_policy import DEFAULT_POLICY, MergePolicy, SegmentState, find_merges, settle_runs
from lsr.index.reader import Index, Segment, open_index
from lsr.index.segment_files import SegmentBuilder, save_array

__all__ = ["MergePolicy", "DEFAULT_POLICY", "find_merges", "optimize", "maybe_merge", "MERGE_LOCK",
           "MERGING_PREFIX", "compact", "settle", "settle_runs", "balanced_runs"]

log = logging.getLogger(__name__)

MERGE_LOCK, MERGING_PREFIX = fmt.MERGE_LOCK, fmt.MERGING_PREFIX


def plan_for(index: Index, policy: MergePolicy = DEFAULT_POLICY) -> list[range]:
    return find_merges([_state(index, seg) for seg in index.segments], policy)


def _state(index: Index, seg: Segment) -> SegmentState:
    dead = index.deleted_mask(seg)
    return SegmentState(seg.info.nnz, seg.info.n_docs, 0 if dead is None else int(dead.sum()))


def balanced_runs(index: Index, max_segments: int) -> list[range]:
    """``lsr optimize``: at most ``max_segments`` runs of adjacent segments balanced by live postings; every
    run of two or more segments, and every segment with deleted documents, is (re)written."""
    if not isinstance(max_segments, int) or max_segments < 1:
        raise InvalidInputError(f"max_segments must be a positive integer, got {max_segments!r}.")
    states = [_state(index, seg) for seg in index.segments]
    sizes = np.array([max(s.live_postings, 1) for s in states], dtype=np.float64)
    if len(sizes) <= max_segments:
        runs = [range(i, i + 1) for i in range(len(sizes))]
    else:
        # cut the cumulative size into max_segments equal shares; each segment goes with the share its middle
        # falls in (so runs are contiguous and none is empty)
        middle = np.cumsum(sizes) - sizes / 2
        share = np.minimum((middle / sizes.sum() * max_segments).astype(np.int64), max_segments - 1)
        runs = [range(int(np.searchsorted(share, g)), int(np.searchsorted(share, g, side="right")))
                for g in np.unique(share)]
    return [r for r in runs if len(r) > 1 or states[r.start].n_deleted > 0]


# ---------------------------------------------------------------------------------------------- merging
def write_merged_segment(index: Index, run: range, out_dir: Path,
                         chunk_postings: int) -> tuple[int, int, dict[str, Any]]:
    """Write the live documents of ``index.segments[run]``, in id order, as one segment in ``out_dir``.
    Returns (documents, postings, file records)."""
    manifest = index.manifest
    sources = index.segments[run.start:run.stop]
    remaps, live_masks = [], []
    base = 0
    for seg in sources:
        dead = index.deleted_mask(seg)
        live = np.ones(seg.info.n_docs, bool) if dead is None else dead == 0
        remap = np.full(seg.info.n_docs, -1, np.int32)
        remap[live] = base + np.arange(int(live.sum()), dtype=np.int32)
        base += int(live.sum())
        remaps.append(remap)
        live_masks.append(live)
    n_out = base
    builder = SegmentBuilder(out_dir, manifest.dim, n_out, manifest.weights["dtype"], manifest.codec_block_size,
                             None if manifest.dense is None else int(manifest.dense["dim"]))
    try:
        dense_rows = []
        for seg, live in zip(sources, live_masks, strict=True):
            for lo in range(0, seg.info.n_docs, 65_536):  # documents in bounded chunks
                hi = min(lo + 65_536, seg.info.n_docs)
                keep = np.flatnonzero(live[lo:hi]) + lo
                if not len(keep):
                    continue
                indptr = np.asarray(seg.fwd_indptr[lo : hi + 1])
                lengths = np.diff(indptr)[keep - lo]
                take = _rows_positions(indptr, keep - lo) if len(keep) < hi - lo else slice(indptr[0], indptr[-1])
                ids = [bytes(seg.docid_bytes[seg.docid_offsets[i] : seg.docid_offsets[i + 1]]) for i in keep]
                dense = None if seg.dense_vectors is None else np.asarray(seg.dense_vectors[keep])
                if dense is not None:
                    dense_rows.append(dense)
                builder.add_documents(ids, lengths, np.asarray(seg.fwd_indices[take]),
                                      np.asarray(seg.fwd_values[take]), dense)
        for lo, hi in _term_ranges([seg.postings.offsets for seg in sources], chunk_postings):
            counts, docs, weights = _postings_of_range(sources, remaps, lo, hi)
            builder.add_postings(lo, hi, counts, docs, weights)
        dense_index = None
        if manifest.dense is not None:
            from lsr.dense import faiss_builder

            empty = np.zeros((0, int(manifest.dense["dim"])), np.float32)
            vectors = np.concatenate(dense_rows) if dense_rows else empty
            dense_index = faiss_builder(manifest.dense.get("factory", "Flat"))(vectors)
        files, nnz = builder.finish(dense_index)
    except BaseException:
        builder.abandon()
        raise
    return n_out, nnz, files


def _rows_positions(indptr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Positions of the entries of CSR ``rows`` (vectorised: no Python loop per document)."""
    lengths = indptr[rows + 1] - indptr[rows]
    starts = np.repeat(indptr[rows] - np.cumsum(lengths) + lengths, lengths)
    return starts + np.arange(int(lengths.sum()))


def _term_ranges(offsets: list[np.ndarray], budget: int) -> list[tuple[int, int]]:
    """Consecutive term ranges holding about ``budget`` postings over all sources (a term never split)."""
    total = np.zeros(len(offsets[0]), np.int64)
    for off in offsets:
        total += np.asarray(off)
    dim = len(total) - 1
    ranges, lo = [], 0
    while lo < dim:
        hi = int(np.searchsorted(total, total[lo] + budget, side="right")) - 1
        hi = min(max(hi, lo + 1), dim)
        ranges.append((lo, hi))
        lo = hi
    return ranges


def _postings_of_range(sources: list[Segment], remaps: list[np.ndarray], lo: int,
                       hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Live postings of terms [lo, hi) over the sources, renumbered, sorted by term then new doc id."""
    terms, docs, weights = [], [], []
    for seg, remap in zip(sources, remaps, strict=True):
        off = np.asarray(seg.postings.offsets[lo : hi + 1])
        d = remap[seg.postings.doc_ids(lo, hi)]
        keep = d >= 0
        terms.append(np.repeat(np.arange(lo, hi, dtype=np.int32), np.diff(off))[keep])
        docs.append(d[keep])
        weights.append(np.asarray(seg.postings.weights[off[0] : off[-1]])[keep])
    term_of = np.concatenate(terms)
    # sources hold ascending new ids and each is sorted by (term, doc): a stable sort by term is the merge
    order = np.argsort(term_of, kind="stable")
    counts = np.bincount(term_of - lo, minlength=hi - lo)
    return counts, np.concatenate(docs)[order], np.concatenate(weights)[order]


# --------------------------------------------------------------------------------------------- publishing
def _commit_merge(path: Path, snapshot: Index, run: range, merged_dir: Path, n_out: int, nnz: int,
                  files: dict[str, Any], hold_lock: bool, lock_wait_s: float) -> fmt.Manifest:
    """Swap ``snapshot.segments[run]`` for the merged segment in the current manifest (under the writer lock
    unless the caller holds it)."""
    lock = None if hold_lock else fmt.WriterLock(path, lock_wait_s)
    try:
        manifest = fmt.read_manifest(path)
        names = [s.info.name for s in snapshot.segments[run.start:run.stop]]
        current = [s.name for s in manifest.segments]
        if current[run.start:run.stop] != names:
            raise RuntimeError(f"segments {names} changed while they were being merged")  # one merger per index
        if manifest.format_version != fmt.FORMAT_VERSION:
            if len(current) != len(run):  # segments of two versions never share a manifest
                raise IndexFormatError(f"{path} is being written to; upgrade it from format version "
                                       f"{manifest.format_version} when no writer is adding documents.")
            manifest.format_version = fmt.FORMAT_VERSION  # every segment is rewritten: an upgrade
            manifest.block_size = manifest.codec_block_size  # a version-1 index had no blocks
        first = manifest.segments[run.start]
        old_lo = first.doc_base
        old_hi = old_lo + sum(s.n_docs for s in manifest.segments[run.start:run.stop])
        # old global id -> new global id, for the run (-1: dropped, deleted before the merge started)
        remap = np.full(old_hi - old_lo, -1, np.int64)
        dropped_before = snapshot.deleted_ids[(snapshot.deleted_ids >= old_lo) & (snapshot.deleted_ids < old_hi)]
        alive = np.ones(old_hi - old_lo, bool)
        alive[dropped_before - old_lo] = False
        remap[alive] = old_lo + np.arange(int(alive.sum()))
        dropped = (old_hi - old_lo) - n_out
        deleted = _read_tombstones(path, manifest)
        inside = (deleted >= old_lo) & (deleted < old_hi)
        newly = remap[deleted[inside] - old_lo]  # deleted while the merge ran: tombstones on the merged ids
        after = deleted[deleted >= old_hi] - dropped
        tombstones = np.unique(np.concatenate([deleted[deleted < old_lo], newly[newly >= 0], after]))
        name = fmt.segment_dir_name(manifest.next_segment)
        manifest.next_segment += 1
        merged = fmt.SegmentInfo(name=name, n_docs=n_out, nnz=nnz, doc_base=old_lo, files=files)
        # a run whose documents were all deleted leaves no segment (unless it would leave the index none)
        keep_merged = n_out > 0 or len(manifest.segments) == len(run)
        segments = manifest.segments[: run.start] + [merged] * keep_merged + manifest.segments[run.stop :]
        base = 0
        for seg in segments:
            seg.doc_base = base
            base += seg.n_docs
        manifest.segments = segments
        manifest.generation += 1
        if manifest.provenance and "corpus_id_bound" in manifest.provenance:
            bound = manifest.provenance["corpus_id_bound"]
            manifest.provenance["corpus_id_bound"] = bound - int(np.count_nonzero(dropped_before < bound))
        if len(tombstones) or manifest.tombstones is not None:
            file_name = fmt.tombstone_file_name(manifest.generation)
            record = save_array(path / file_name, tombstones.astype(np.int64))
            manifest.tombstones = {"file": file_name, "count": len(tombstones), **record}
        if keep_merged:
            os.replace(merged_dir, path / name)
            fmt.fsync_dir(path)
        fmt.write_manifest(path, manifest)
        if not keep_merged:
            shutil.rmtree(merged_dir, ignore_errors=True)
        return manifest
    finally:
        if lock is not None:
            lock.release()


def _read_tombstones(path: Path, manifest: fmt.Manifest) -> np.ndarray:
    if manifest.tombstones is None:
        return np.zeros(0, np.int64)
    return np.load(path / manifest.tombstones["file"], allow_pickle=False)


def run_merges(path: str | os.PathLike[str], next_run: Callable[[Index], range | None],
               policy: MergePolicy = DEFAULT_POLICY, hold_lock: bool = False, lock_wait_s: float = 60.0) -> int:
    """Merge ``next_run(snapshot)`` until it returns None; returns the number of merges committed. Another
    process merging the same index makes this return 0 at once."""
    path = Path(path)
    try:
        merge_lock = fmt.WriterLock(path, name=MERGE_LOCK)
    except IndexLockedError:
        log.info("another process is merging %s", path)
        return 0
    done = 0
    try:
        while (run := next_run(snapshot := open_index(path))) is not None:
            if snapshot.manifest.format_version != fmt.FORMAT_VERSION and len(run) != len(snapshot.segments):
                log.info("%s has format version %d: only lsr optimize (an upgrade) merges it", path,
                         snapshot.manifest.format_version)
                return done
            out = path / f"{MERGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
            out.mkdir()
            try:
                n_out, nnz, files = write_merged_segment(snapshot, run, out, policy.chunk_postings)
                manifest = _commit_merge(path, snapshot, run, out, n_out, nnz, files, hold_lock, lock_wait_s)
            except BaseException:
                shutil.rmtree(out, ignore_errors=True)
                raise
            done += 1
            log.info("merged %d segments (%d documents) of %s: generation %d, %d segments", len(run), n_out,
                     path, manifest.generation, len(manifest.segments))
            if hold_lock:
                _remove_unreferenced(path, manifest)
        return done
    finally:
        merge_lock.release()
        if done and not hold_lock:
            _collect_garbage(path, lock_wait_s)


def _collect_garbage(path: Path, lock_wait_s: float) -> None:
    """The merged-away segments' files, once nothing refers to them (under the writer lock, so that a
    writer's segment in progress is never taken for garbage; open memory maps of readers stay valid)."""
    try:
        lock = fmt.WriterLock(path, lock_wait_s)
    except IndexLockedError:
        return  # the writer holding it removes them when it closes
    try:
        _remove_unreferenced(path, fmt.read_manifest(path))
    finally:
        lock.release()


def _remove_unreferenced(path: Path, manifest: fmt.Manifest) -> None:
    try:
        fmt.remove_garbage(path, manifest)
    except OSError as exc:
        log.warning("could not remove merged segments from %s: %s", path, exc)


def maybe_merge(path: str | os.PathLike[str], policy: MergePolicy = DEFAULT_POLICY, hold_lock: bool = False,
                lock_wait_s: float = 60.0) -> int:
    """Merge what ``policy`` asks for (after a commit; the service runs it in a background thread). The last
    run goes first: merging it leaves the positions of the runs before it unchanged."""
    return run_merges(path, lambda index: (plan_for(index, policy) or [None])[-1], policy, hold_lock,
                      lock_wait_s)


def settle(path: str | os.PathLike[str], policy: MergePolicy = DEFAULT_POLICY, lock_wait_s: float = 60.0) -> int:
    """The idle merge (see :func:`settle_runs`); the service calls it when writes pause."""
    return run_merges(path, lambda index: (settle_runs([_state(index, s) for s in index.segments], policy)
                                           or [None])[-1], policy, lock_wait_s=lock_wait_s)


def optimize(path: str | os.PathLike[str], max_segments: int = 1, policy: MergePolicy = DEFAULT_POLICY,
             lock_wait_s: float = 60.0) -> fmt.Manifest:
    """Merge into at most ``max_segments`` segments and drop every deleted document (``lsr optimize``). An
    index of an older format version is rewritten into one segment of the current version."""
    if isinstance(max_segments, bool) or not isinstance(max_segments, int) or max_segments < 1:
        raise InvalidInputError(f"max_segments must be a positive integer, got {max_segments!r}.")
    queue: list[range] | None = None

    def next_run(index: Index) -> range | None:
        nonlocal queue
        if queue is None:  # planned once, from the first snapshot taken under the merge lock
            old = index.manifest.format_version != fmt.FORMAT_VERSION
            # an older format is upgraded by rewriting every segment in one merge
            queue = [range(0, len(index.segments))] if old else balanced_runs(index, max_segments)
        return queue.pop() if queue else None

    run_merges(path, next_run, policy, lock_wait_s=lock_wait_s)  # which also removes the merged-away files
    return fmt.read_manifest(path)


def compact(path: str | os.PathLike[str], max_segment_docs: int | None = None,
            policy: MergePolicy = DEFAULT_POLICY) -> fmt.Manifest:
    """After a batch build: its flushed runs merged (streamed) into as few segments as allowed by the
    policy's largest segment (``max_segment_postings``) and ``max_segment_docs`` (``--segment-docs``)."""
    manifest = fmt.read_manifest(path)
    postings = sum(s.nnz for s in manifest.segments)
    target = max(1, -(-postings // policy.max_segment_postings),
                 -(-(manifest.n_docs - manifest.n_deleted) // (max_segment_docs or manifest.n_docs or 1)))
    if len(manifest.segments) <= target:
        return manifest  # deleted documents alone are the merge policy's business (max_deleted_ratio)
    return optimize(path, target, policy)
