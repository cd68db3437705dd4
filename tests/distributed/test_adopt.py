"""``IndexWriter.adopt``: the commit step of a distributed build (no Ray needed). Parts written elsewhere
become segments of one index with the same ids, vectors, deletions and search results as adding the same
documents in order; parts with other settings are refused; an adopted part is moved, not copied."""

from __future__ import annotations

import numpy as np
import pytest

from lsr.errors import InvalidInputError, VocabularyMismatchError
from lsr.index import IndexWriter, Searcher, Vocabulary, open_index
from lsr.index.check import check_index
from lsr.types import SparseBatch

DIM = 50
VOCAB = Vocabulary.from_tokens([f"t{i}" for i in range(DIM)], source="test")


def _batch(seed: int, n: int) -> SparseBatch:
    rng = np.random.default_rng(seed)
    dense = np.where(rng.random((n, DIM)) < 0.2, rng.random((n, DIM)).astype(np.float32) + 0.1, 0)
    dense[:, 0] += 0.5  # no empty document
    return SparseBatch.from_dense(dense.astype(np.float32))


PARTS = [  # (ids, seed): "b3" appears in parts 0 and 2, "c1" twice inside part 1
    ([f"a{i}" for i in range(30)], 1),
    ([f"b{i}" for i in range(20)] + ["c1", "c1"], 2),
    (["b3", "d0", "d1"], 3),
]


def _part(path, ids, seed, **storage):
    with IndexWriter.create(path, VOCAB, {"type": "test"}, **storage) as writer:
        writer.add(ids, _batch(seed, len(ids)))
    return path


@pytest.mark.parametrize("storage", [{}, {"weight_dtype": "uint16", "scale": 1000.0, "block_size": 4}])
def test_adopted_parts_equal_adding_in_order(tmp_path, storage):
    parts = [_part(tmp_path / f"part{i}", ids, seed, **storage) for i, (ids, seed) in enumerate(PARTS)]
    with IndexWriter.create(tmp_path / "adopted", VOCAB, {"type": "test"}, **storage) as writer:
        assert [writer.adopt(p) for p in parts] == [30, 22, 3]
    with IndexWriter.create(tmp_path / "added", VOCAB, {"type": "test"}, **storage) as writer:
        for ids, seed in PARTS:
            writer.add(ids, _batch(seed, len(ids)))
    a, b = open_index(tmp_path / "adopted"), open_index(tmp_path / "added")
    assert len(a.segments) == 3 and [s.info.doc_base for s in a.segments] == [0, 30, 52]
    assert a.external_ids(np.arange(55)) == b.external_ids(np.arange(55))
    assert a.deleted_ids.tolist() == b.deleted_ids.tolist() == [33, 50]  # b3 replaced, first c1 replaced
    assert a.internal_id("b3") == 52 and a.internal_id("c1") == 51
    queries = _batch(9, 6)
    for k in (1, 5, 100):
        ha, hb = Searcher(a).search(queries, k), Searcher(b).search(queries, k)
        np.testing.assert_array_equal(ha.ids, hb.ids)
        np.testing.assert_array_equal(ha.scores, hb.scores)
    assert check_index(tmp_path / "adopted").ok
    assert not any((p / "seg-000001").exists() for p in parts)  # moved, not copied


def test_adopt_after_add_and_into_an_existing_index(tmp_path):
    part = _part(tmp_path / "part", ["x", "y"], 5)
    with IndexWriter.create(tmp_path / "idx", VOCAB, {"type": "test"}) as writer:
        writer.add(["w"], _batch(4, 1))
        writer.adopt(part)
    with IndexWriter.open(tmp_path / "idx", merge_policy=None) as writer:  # keep the replaced "x" to look at
        writer.adopt(_part(tmp_path / "part2", ["x", "z"], 6))
    index = open_index(tmp_path / "idx")
    assert index.external_ids(np.arange(index.n_docs)) == ["w", "x", "y", "x", "z"]
    assert index.deleted_ids.tolist() == [1] and index.manifest.generation == 2


@pytest.mark.parametrize("other, error", [
    ({"weight_dtype": "uint8", "scale": 10.0}, InvalidInputError),
    ({"block_size": 16}, InvalidInputError),
    ({"reorder": "bp"}, InvalidInputError),
])
def test_parts_with_other_settings_are_refused(tmp_path, other, error):
    part = _part(tmp_path / "part", ["a", "b"], 1, **other)
    with IndexWriter.create(tmp_path / "idx", VOCAB, None) as writer:
        writer.add(["w"], _batch(4, 1))
        with pytest.raises(error, match="same settings"):
            writer.adopt(part)
    assert (part / "seg-000001").exists()  # a refused part is left as it was


def test_a_part_over_another_vocabulary_is_refused(tmp_path):
    other = Vocabulary.from_tokens([f"u{i}" for i in range(DIM)], source="other")
    with IndexWriter.create(tmp_path / "part", other, None) as writer:
        writer.add(["a"], _batch(1, 1))
    with IndexWriter.create(tmp_path / "idx", VOCAB, None) as writer:
        writer.add(["w"], _batch(4, 1))
        with pytest.raises(VocabularyMismatchError):
            writer.adopt(tmp_path / "part")
