"""Segment merging: the policy, merged segments equal freshly built ones, rankings unchanged bit for bit,
deletions made during a merge are kept, `lsr optimize`."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsr.errors import InvalidInputError
from lsr.index import IndexWriter, Searcher, Vocabulary, open_index
from lsr.index import format as fmt
from lsr.index.check import check_index
from lsr.index.merge import (
    MergePolicy,
    SegmentState,
    _commit_merge,
    balanced_runs,
    find_merges,
    maybe_merge,
    optimize,
    settle,
    settle_runs,
    write_merged_segment,
)
from lsr.kernels import available_backends
from lsr.types import SparseBatch

DIM = 24
VOCAB = Vocabulary.from_tokens([f"t{i}" for i in range(DIM)], source="merge-test")
TINY = MergePolicy(merge_factor=2, floor_postings=1, chunk_postings=7)  # merges at every chance, many chunks


def random_docs(rng: np.random.Generator, n: int) -> SparseBatch:
    """Dyadic weights: every sum is exact, so equal rankings must be equal bit for bit."""
    rows = [{int(t): float(rng.integers(1, 64)) / 8 for t in rng.choice(DIM, rng.integers(1, 8), replace=False)}
            for _ in range(n)]
    return SparseBatch.from_dicts(rows, DIM)


def answers(path, queries: SparseBatch, k: int) -> list:
    """External ids and scores of every query, every exact algorithm and backend (all must agree)."""
    index = open_index(path)
    seen = set()
    for backend in available_backends():
        for algorithm in ("exhaustive", "blockmax", "auto") if backend != "numpy" else ("exhaustive",):
            hits = Searcher(index, backend).search(queries, k, algorithm=algorithm).validate()
            seen.add(tuple((tuple(index.external_ids(hits.row(i)[0])), tuple(hits.row(i)[1].tolist()))
                           for i in range(hits.n)))
    assert len(seen) == 1, "backends or algorithms disagree"
    return seen.pop()


def grow(path, rng, batches, n_deletes, n_replaced, **storage):
    """An index of several segments with deletions and replacements, never merged."""
    with IndexWriter.create(path, VOCAB, None, segment_docs=7, merge_policy=None, **storage) as writer:
        start = 0
        for size in batches:
            writer.add([f"d{i}" for i in range(start, start + size)], random_docs(rng, size))
            start += size
    with IndexWriter.open(path, segment_docs=7, merge_policy=None) as writer:
        writer.delete([f"d{i}" for i in rng.choice(start, min(n_deletes, start), replace=False)])
        replaced = [f"d{i}" for i in rng.choice(start, min(n_replaced, start), replace=False)]
        if replaced:
            writer.add(replaced, random_docs(rng, len(replaced)))
    return start


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), batches=st.lists(st.integers(1, 20), min_size=1, max_size=5),
       n_deletes=st.integers(0, 10), n_replaced=st.integers(0, 5), k=st.integers(1, 12),
       max_segments=st.integers(1, 4), weights=st.sampled_from(["float32", "uint8", "uint16"]),
       block_size=st.sampled_from([1, 4, 8]), reorder=st.sampled_from([None, "bp"]))
def test_merged_index_ranks_exactly_as_the_unmerged_one(tmp_path_factory, seed, batches, n_deletes, n_replaced,
                                                        k, max_segments, weights, block_size, reorder):
    rng = np.random.default_rng(seed)
    root = tmp_path_factory.mktemp("merge")
    storage = {"weight_dtype": weights, "block_size": block_size, "reorder": reorder}
    if weights != "float32":
        storage["scale"] = 8.0  # dyadic weights stay exact once quantised
    grow(root / "idx", rng, batches, n_deletes, n_replaced, **storage)
    queries = random_docs(rng, 6)
    before = answers(root / "idx", queries, k)
    live_before = open_index(root / "idx").n_live
    manifest = optimize(root / "idx", max_segments=max_segments, policy=TINY)
    index = open_index(root / "idx")
    assert len(index.segments) <= max_segments and len(index.deleted_ids) == 0 and index.n_live == live_before
    assert answers(root / "idx", queries, k) == before
    assert check_index(root / "idx").ok
    assert manifest.generation == index.manifest.generation
    # the policy's own merges (every chance taken) rank the same too
    grow(root / "idx2", np.random.default_rng(seed), batches, n_deletes, n_replaced, **storage)
    maybe_merge(root / "idx2", TINY)
    assert answers(root / "idx2", queries, k) == before
    assert sorted(p.name for p in (root / "idx").iterdir() if not p.name.startswith("seg-")) == sorted(
        [fmt.MANIFEST, fmt.VOCAB] + ([manifest.tombstones["file"]] if manifest.tombstones else []))


def test_merged_segment_equals_a_freshly_built_one(tmp_path):
    """The streamed merge (term ranges of 7 postings) writes the very arrays a one-shot build writes."""
    rng = np.random.default_rng(3)
    grow(tmp_path / "idx", rng, [20, 15, 9], n_deletes=6, n_replaced=3, weight_dtype="uint8", scale=8.0)
    index = open_index(tmp_path / "idx")
    live = [(seg, local) for seg in index.segments for local in range(seg.info.n_docs)
            if seg.info.doc_base + local not in set(index.deleted_ids.tolist())]
    ids = [seg.external_id(local) for seg, local in live]
    vectors = SparseBatch.concat([seg.vectors(local, local + 1) for seg, local in live])
    with IndexWriter.create(tmp_path / "fresh", VOCAB, None, weight_dtype="uint8", scale=8.0,
                            merge_policy=None) as writer:
        writer.add(ids, vectors)
    optimize(tmp_path / "idx", 1, policy=TINY)
    merged, fresh = open_index(tmp_path / "idx"), open_index(tmp_path / "fresh")
    assert merged.segments[0].info.files.keys() == fresh.segments[0].info.files.keys()
    for name in fresh.segments[0].info.files:
        a = (merged.segments[0].seg_dir / name).read_bytes()
        b = (fresh.segments[0].seg_dir / name).read_bytes()
        if name.endswith(".npy"):
            np.testing.assert_array_equal(np.load(merged.segments[0].seg_dir / name),
                                          np.load(fresh.segments[0].seg_dir / name), err_msg=name)
        else:
            assert a == b, name


def test_deletes_and_adds_during_a_merge_are_kept(tmp_path):
    rng = np.random.default_rng(5)
    n = grow(tmp_path / "idx", rng, [10, 10, 10, 10], n_deletes=4, n_replaced=0)
    snapshot = open_index(tmp_path / "idx")
    run = range(0, 3)
    out = tmp_path / "idx" / f".merging-{os.getpid()}-test"
    out.mkdir()
    n_out, nnz, files = write_merged_segment(snapshot, run, out, 5)
    # while the merge ran: deletes inside and after the run, a replacement, new documents
    live = [ext for ext in (f"d{i}" for i in range(n)) if snapshot.internal_id(ext) is not None]
    gone = [live[1], live[12], live[-1]]
    with IndexWriter.open(tmp_path / "idx", merge_policy=None) as writer:
        writer.delete(gone)
        writer.add(["d5", "new1", "new2"], random_docs(rng, 3))
    expected_live = (set(live) - set(gone)) | {"d5", "new1", "new2"}
    queries = random_docs(rng, 5)
    before = answers(tmp_path / "idx", queries, 50)
    _commit_merge(tmp_path / "idx", snapshot, run, out, n_out, nnz, files, hold_lock=False, lock_wait_s=1)
    index = open_index(tmp_path / "idx")
    assert {ext for ext in index._id_lookup} == expected_live and index.n_live == len(expected_live)
    assert answers(tmp_path / "idx", queries, 50) == before
    assert check_index(tmp_path / "idx").ok


def test_policy_keeps_segments_logarithmic_and_runs_adjacent():
    policy = MergePolicy(merge_factor=10, floor_postings=1000)
    segments: list[SegmentState] = []
    most = 0
    for _ in range(3000):
        segments.append(SegmentState(250, 1, 0))
        while runs := find_merges(segments, policy):
            for a, b in zip(runs, runs[1:], strict=False):
                assert a.stop <= b.start  # never overlapping
            run = runs[-1]
            segments[run.start:run.stop] = [SegmentState(sum(s.nnz for s in segments[run.start:run.stop]),
                                                         sum(s.n_docs for s in segments[run.start:run.stop]), 0)]
        most = max(most, len(segments))
    assert sum(s.n_docs for s in segments) == 3000
    assert most <= 9 * 4 + 1  # at most merge_factor - 1 per level, log10(750k / 1k) + 1 levels
    sizes = [s.nnz for s in segments]
    assert sizes == sorted(sizes, reverse=True)  # older segments are the bigger ones
    # settling when writes pause leaves one segment
    while runs := settle_runs(segments, policy):
        run = runs[-1]
        segments[run.start:run.stop] = [SegmentState(sum(s.nnz for s in segments[run.start:run.stop]),
                                                     sum(s.n_docs for s in segments[run.start:run.stop]), 0)]
    assert len(segments) == 1


def test_policy_rewrites_segments_with_many_deletions_and_leaves_huge_ones():
    policy = MergePolicy(merge_factor=3, floor_postings=10, max_segment_postings=1000, max_deleted_ratio=0.3)
    assert find_merges([SegmentState(5000, 50, 0), SegmentState(50, 5, 0), SegmentState(50, 5, 0)], policy) == []
    assert find_merges([SegmentState(100, 10, 4), SegmentState(5000, 50, 0)], policy) == [range(0, 1)]
    assert find_merges([SegmentState(100, 10, 3)], policy) == []


def test_balanced_runs(tmp_path):
    rng = np.random.default_rng(1)
    grow(tmp_path / "idx", rng, [7, 7, 7, 7, 7, 7], n_deletes=0, n_replaced=0)
    index = open_index(tmp_path / "idx")
    assert balanced_runs(index, 3) == [range(0, 2), range(2, 4), range(4, 6)]
    assert balanced_runs(index, 6) == []
    with pytest.raises(InvalidInputError, match="max_segments"):
        balanced_runs(index, 0)


def test_writer_merges_after_its_commit_and_keeps_writing(tmp_path):
    rng = np.random.default_rng(2)
    with IndexWriter.create(tmp_path / "idx", VOCAB, None, merge_policy=TINY) as writer:
        writer.add([f"a{i}" for i in range(5)], random_docs(rng, 5))
    for round_ in range(6):
        with IndexWriter.open(tmp_path / "idx", merge_policy=TINY) as writer:
            writer.add([f"r{round_}"], random_docs(rng, 1))
            writer.delete([f"a{round_ % 5}"])
            writer.commit()
            writer.add([f"s{round_}"], random_docs(rng, 1))  # the writer goes on after its own merge
    index = open_index(tmp_path / "idx")
    assert len(index.segments) <= 3
    assert set(index._id_lookup) == {f"r{i}" for i in range(6)} | {f"s{i}" for i in range(6)}
    assert check_index(tmp_path / "idx").ok


def test_settle_and_a_second_merger_skips(tmp_path):
    rng = np.random.default_rng(4)
    grow(tmp_path / "idx", rng, [7] * 5, n_deletes=0, n_replaced=0)
    lock = fmt.WriterLock(tmp_path / "idx", name="merge.lock")
    try:
        assert settle(tmp_path / "idx") == 0  # another merger holds the lock: nothing done, no wait
    finally:
        lock.release()
    assert settle(tmp_path / "idx") >= 1 and len(open_index(tmp_path / "idx").segments) == 1


def test_cli_optimize(tmp_path, capsys):
    from lsr.cli import main

    grow(tmp_path / "idx", np.random.default_rng(6), [7, 7, 7], n_deletes=3, n_replaced=0)
    assert main(["-q", "optimize", str(tmp_path / "idx")]) == 0
    out = capsys.readouterr().out
    assert "-> 1 segments" in out and "3 -> 0 deleted" in out
    assert main(["-q", "optimize", str(tmp_path / "idx"), "--max-segments", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "max_segments" in err[0]


def test_optimize_upgrades_an_older_format_and_a_writer_refuses_it_before(tmp_path):
    import shutil
    from pathlib import Path

    from lsr.errors import IndexFormatError

    golden = Path(__file__).resolve().parent.parent / "data" / "golden-v2"
    shutil.copytree(golden, tmp_path / "idx")
    queries = SparseBatch.from_dicts([{0: 1.0, 3: 0.5}, {7: 2.0}, {1: 1.0, 2: 1.0, 15: 0.25}], 16)
    before = answers(tmp_path / "idx", queries, 10)
    with pytest.raises(IndexFormatError, match="lsr optimize"):
        IndexWriter.open(tmp_path / "idx")
    assert maybe_merge(tmp_path / "idx", TINY) == 0  # the policy never mixes versions in one manifest
    manifest = optimize(tmp_path / "idx", max_segments=3)
    assert manifest.format_version == fmt.FORMAT_VERSION and len(manifest.segments) == 1
    assert manifest.n_deleted == 0 and manifest.n_docs == 38
    assert answers(tmp_path / "idx", queries, 10) == before
    assert check_index(tmp_path / "idx").ok
    with IndexWriter.open(tmp_path / "idx") as writer:  # the upgraded index takes documents again
        writer.delete(["nothing"])
