"""The on-disk index: round trips, segments + tombstones against the oracle, atomicity and bad files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsr.errors import IndexFormatError, IndexNotFoundError, InvalidInputError, VocabularyMismatchError
from lsr.index import IndexWriter, Searcher, Vocabulary, open_index
from lsr.index import format as fmt
from lsr.kernels import PostingArrays, available_backends, reference
from lsr.types import SparseBatch

DIM = 12
VOCAB = Vocabulary.from_tokens([f"t{i}" for i in range(DIM)], source="test")


def random_docs(rng: np.random.Generator, n: int) -> SparseBatch:
    rows = [{int(t): float(rng.integers(1, 20)) / 4 for t in rng.choice(DIM, rng.integers(1, 5), replace=False)}
            for _ in range(n)]
    return SparseBatch.from_dicts(rows, DIM)


def build(path, docs: SparseBatch, ids=None, **kw):
    ids = ids or [f"d{i}" for i in range(docs.n)]
    with IndexWriter.create(path, VOCAB, {"type": "test"}, **kw) as writer:
        writer.add(ids, docs)
    return open_index(path)


def test_round_trip(tmp_path):
    docs = random_docs(np.random.default_rng(0), 30)
    index = build(tmp_path / "idx", docs)
    assert index.n_docs == 30 and index.dim == DIM and index.vocabulary == list(VOCAB.tokens)
    assert index.external_ids(np.array([0, 29, -1])) == ["d0", "d29", None]
    assert index.internal_id("d7") == 7 and index.internal_id("nope") is None
    assert index.document_vector(3).to_dicts() == [docs.to_dicts()[3]]
    assert index.encoder_config == {"type": "test"}
    assert index.manifest.vocabulary["sha256"] == VOCAB.sha256
    assert sorted(os.listdir(tmp_path)) == ["idx"]  # no temporary directory left behind


# Several add() batches, small segments, deletions and replacements: the searcher over all segments must
# equal the oracle over one flat collection in the same internal id order with the same documents dead.
@settings(max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), batches=st.lists(st.integers(1, 15), min_size=1, max_size=4),
       segment_docs=st.integers(1, 20), k=st.integers(1, 15), n_deletes=st.integers(0, 8),
       n_replaced=st.integers(0, 4))
def test_segmented_index_with_deletes_equals_oracle(tmp_path_factory, seed, batches, segment_docs, k,
                                                    n_deletes, n_replaced):
    rng = np.random.default_rng(seed)
    path = tmp_path_factory.mktemp("idx") / "idx"
    all_docs: list[SparseBatch] = []  # in internal id order
    internal: dict[str, int] = {}
    dead: set[int] = set()

    def add(writer, ids, docs):
        for ext in ids:
            if ext in internal:
                dead.add(internal[ext])
            internal[ext] = sum(d.n for d in all_docs) + ids.index(ext)
        all_docs.append(docs)
        writer.add(ids, docs)

    with IndexWriter.create(path, VOCAB, None, segment_docs=segment_docs, merge_policy=None) as writer:
        start = 0
        for size in batches:
            add(writer, [f"d{i}" for i in range(start, start + size)], random_docs(rng, size))
            start += size
    writer = IndexWriter.open(path, segment_docs=segment_docs, merge_policy=None)
    victims = [f"d{i}" for i in rng.choice(start, min(n_deletes, start), replace=False)]
    assert writer.delete(victims) == len(victims)
    dead.update(internal.pop(v) for v in victims)
    replaced = [f"d{i}" for i in rng.choice(start, min(n_replaced, start), replace=False) if f"d{i}" in internal]
    if replaced:
        add(writer, replaced, random_docs(rng, len(replaced)))
    writer.close(commit=True)

    index = open_index(path)
    assert index.n_live == len(internal) and index.n_docs == sum(d.n for d in all_docs)
    assert {ext: index.internal_id(ext) for ext in internal} == internal
    queries = random_docs(rng, 5)
    mask = np.zeros(index.n_docs, np.uint8)
    mask[list(dead)] = 1
    oracle = reference.topk(PostingArrays.from_documents(SparseBatch.concat(all_docs)), queries, k, mask)
    for backend in available_backends():
        hits = Searcher(index, backend).search(queries, k).validate()
        np.testing.assert_array_equal(hits.ids, oracle.ids)
        np.testing.assert_array_equal(hits.scores, oracle.scores)


def test_replacing_a_document_hides_the_old_version(tmp_path):
    docs = SparseBatch.from_dicts([{0: 1.0}, {1: 1.0}], DIM)
    build(tmp_path / "idx", docs, ["a", "b"])
    with IndexWriter.open(tmp_path / "idx", merge_policy=None) as writer:  # ids as added (merging renumbers)
        writer.add(["a"], SparseBatch.from_dicts([{1: 5.0}], DIM))
    index = open_index(tmp_path / "idx")
    hits = Searcher(index).search(SparseBatch.from_dicts([{0: 1.0}, {1: 1.0}], DIM), 5)
    assert index.external_ids(hits.row(0)[0]) == []
    assert index.external_ids(hits.row(1)[0]) == ["a", "b"]
    assert index.n_live == 2 and index.internal_id("a") == 2


def test_failed_build_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with IndexWriter.create(tmp_path / "idx", VOCAB, None) as writer:
            writer.add(["a"], SparseBatch.from_dicts([{0: 1.0}], DIM))
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_empty_index_is_refused_and_leaves_nothing(tmp_path):
    with pytest.raises(InvalidInputError, match="no documents"):
        with IndexWriter.create(tmp_path / "idx", VOCAB, None):
            pass
    assert os.listdir(tmp_path) == []


def test_overwrite_is_required_and_atomic(tmp_path):
    build(tmp_path / "idx", SparseBatch.from_dicts([{0: 1.0}], DIM), ["old"])
    with pytest.raises(InvalidInputError, match="already exists"):
        IndexWriter.create(tmp_path / "idx", VOCAB, None)
    build(tmp_path / "idx", SparseBatch.from_dicts([{0: 1.0}], DIM), ["new"], overwrite=True)
    assert open_index(tmp_path / "idx").external_ids(np.array([0])) == ["new"]
    assert os.listdir(tmp_path) == ["idx"]


def test_uncommitted_segments_are_invisible_and_collected(tmp_path):
    build(tmp_path / "idx", SparseBatch.from_dicts([{0: 1.0}], DIM), ["a"])
    writer = IndexWriter.open(tmp_path / "idx", segment_docs=1)
    writer.add(["b"], SparseBatch.from_dicts([{0: 2.0}], DIM))  # flushed to a segment, not committed
    assert open_index(tmp_path / "idx").n_docs == 1
    writer.close(commit=False)
    assert sorted(os.listdir(tmp_path / "idx")) == ["manifest.json", "seg-000001", "vocab.json"]


def test_second_writer_is_refused(tmp_path):
    build(tmp_path / "idx", SparseBatch.from_dicts([{0: 1.0}], DIM), ["a"])
    with IndexWriter.open(tmp_path / "idx"):
        with pytest.raises(IndexFormatError, match="locked by another writer"):
            IndexWriter.open(tmp_path / "idx")
    (tmp_path / "idx" / fmt.LOCK).write_text("999999999")  # a dead writer's lock is stale
    IndexWriter.open(tmp_path / "idx").close()


def test_dimension_mismatch_is_refused(tmp_path):
    with pytest.raises(VocabularyMismatchError):
        with IndexWriter.create(tmp_path / "idx", VOCAB, None) as writer:
            writer.add(["a"], SparseBatch.from_dicts([{0: 1.0}], DIM + 1))


# ----------------------------------------------------------------------------- bad files
def test_missing_index(tmp_path):
    with pytest.raises(IndexNotFoundError, match="not a directory"):
        open_index(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexNotFoundError, match="manifest.json is missing"):
        open_index(tmp_path / "empty")


def _unsummed(manifest_path) -> dict:
    data = json.loads(manifest_path.read_text())
    data.pop("checksum")
    return data


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m.write_text("{not json"), "not valid JSON"),
        (lambda m: m.write_text(json.dumps({**json.loads(m.read_text()), "generation": 7})), "checksum"),
        # without a checksum (older manifests) the fields themselves are checked
        (lambda m: m.write_text(json.dumps({**_unsummed(m), "format_version": 99})), "version 99"),
        (lambda m: m.write_text(json.dumps({**_unsummed(m), "n_docs": 3})), "n_docs"),
        (lambda m: m.write_text(json.dumps({"format": "lsr-index", "format_version": 1})), "malformed"),
    ],
)
def test_corrupt_manifest(tmp_path, mutate, message):
    """(_unsummed: the manifest without its checksum field.)"""
    build(tmp_path / "idx", random_docs(np.random.default_rng(1), 5))
    mutate(tmp_path / "idx" / "manifest.json")
    with pytest.raises(IndexFormatError, match=message):
        open_index(tmp_path / "idx")


ALL_SEGMENT_FILES = [f for table in (fmt.SEGMENT_ARRAYS, fmt.BLOCK_ARRAYS, fmt.DENSE_ARRAYS) for f, _ in table.values()]


@pytest.mark.parametrize("file_name", [*ALL_SEGMENT_FILES, fmt.DOCIDS_BYTES])
@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_segment_file_is_detected(tmp_path, file_name, damage):
    build(tmp_path / "idx", random_docs(np.random.default_rng(2), 200))
    assert len(open_index(tmp_path / "idx").segments[0].postings.blocks.dense_scale) > 0
    path = tmp_path / "idx" / "seg-000001" / file_name
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path.unlink()
    with pytest.raises(IndexFormatError):
        open_index(tmp_path / "idx")


def test_damaged_vocabulary_is_detected(tmp_path):
    build(tmp_path / "idx", random_docs(np.random.default_rng(3), 5))
    (tmp_path / "idx" / "vocab.json").write_text('["x"]')
    with pytest.raises(IndexFormatError):
        open_index(tmp_path / "idx")


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1), sizes=st.lists(st.integers(1, 40), min_size=1, max_size=3),
       n_deletes=st.integers(0, 5), n_replaced=st.integers(0, 5), k=st.integers(1, 12))
def test_bp_reordering_changes_ids_not_results(tmp_path_factory, seed, sizes, n_deletes, n_replaced, k):
    """A reordered index returns the same (external id, score) rankings as one in insertion order, and its
    id lookups, deletions and replacements follow the documents to their new places."""
    rng = np.random.default_rng(seed)
    batches, start = [], 0
    for size in sizes:
        batches.append(([f"d{i}" for i in range(start, start + size)], random_docs(rng, size)))
        start += size
    victims = [f"d{i}" for i in rng.choice(start, min(n_deletes, start), replace=False)]
    replaced = [f"d{i}" for i in rng.choice(start, min(n_replaced, start), replace=False)]
    replacement = random_docs(rng, len(replaced)) if replaced else None
    indexes = {}
    for reorder in (None, "bp"):
        path = tmp_path_factory.mktemp("idx") / "idx"
        with IndexWriter.create(path, VOCAB, None, segment_docs=30, reorder=reorder) as writer:
            for ids, docs in batches:
                writer.add(ids, docs)
            if replaced:
                writer.add(replaced, replacement)  # replaced inside the same, not yet flushed, buffer
        with IndexWriter.open(path) as writer:
            writer.delete(victims)
        indexes[reorder] = open_index(path)
    plain, reordered = indexes[None], indexes["bp"]
    assert reordered.manifest.reorder == "bp" and reordered.n_live == plain.n_live
    for ext in {f"d{i}" for i in range(start)}:
        a, b = plain.internal_id(ext), reordered.internal_id(ext)
        assert (a is None) == (b is None)
        if b is not None:
            assert reordered.external_ids(np.array([b])) == [ext]
            assert reordered.document_vector(b).to_dicts() == plain.document_vector(a).to_dicts()
    queries = random_docs(rng, 4)
    full = {name: reference.score_all(PostingArrays.from_documents(
        SparseBatch.concat([seg.vectors(0, seg.info.n_docs) for seg in idx.segments])), queries)
        for name, idx in (("plain", plain), ("bp", reordered))}
    for backend in available_backends():
        h_plain = Searcher(plain, backend).search(queries, k)
        h_bp = Searcher(reordered, backend).search(queries, k)
        np.testing.assert_array_equal(h_plain.scores, h_bp.scores)
        for q in range(queries.n):
            # hits strictly above the k-th score are the same documents; ties at the k-th may differ
            kth = h_plain.scores[q, -1]
            above_plain = {e for e, s in zip(plain.external_ids(h_plain.ids[q]), h_plain.scores[q], strict=True)
                           if e is not None and s > kth}
            above_bp = {e for e, s in zip(reordered.external_ids(h_bp.ids[q]), h_bp.scores[q], strict=True)
                        if e is not None and s > kth}
            assert above_plain == above_bp
    assert full["plain"].shape == full["bp"].shape


def test_readers_keep_their_snapshot_while_a_writer_commits(tmp_path):
    """A reader never blocks the writer and keeps answering from the snapshot it opened."""
    path = tmp_path / "idx"
    build(path, random_docs(np.random.default_rng(5), 40))
    reader = open_index(path)
    queries = random_docs(np.random.default_rng(6), 4)
    before = Searcher(reader).search(queries, 10)
    with IndexWriter.open(path) as writer:  # no wait: readers hold no lock
        writer.add([f"new{i}" for i in range(40)], random_docs(np.random.default_rng(7), 40))
        writer.delete(["d0", "d1", "d2"])
    again = Searcher(reader).search(queries, 10)
    np.testing.assert_array_equal(again.ids, before.ids)
    np.testing.assert_array_equal(again.scores, before.scores)
    assert reader.n_live == 40 and open_index(path).n_live == 77
