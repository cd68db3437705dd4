from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

from lsr.errors import InvalidInputError
from lsr.types import Hits, SparseBatch


def test_sparse_batch_round_trips_through_scipy_and_dicts():
    batch = SparseBatch.from_dicts([{3: 1.5, 1: 0.5}, {}, {0: 2.0}], dim=4)
    assert batch.n == 3 and batch.nnz == 3
    assert batch.to_dicts() == [{1: 0.5, 3: 1.5}, {}, {0: 2.0}]
    again = SparseBatch.from_scipy(batch.to_scipy())
    assert again.to_dicts() == batch.to_dicts()
    assert batch.indices.dtype == np.int32 and batch.indptr.dtype == np.int64 and batch.values.dtype == np.float32


@pytest.mark.parametrize(
    ("indptr", "indices", "values", "dim", "message"),
    [
        ([0, 1], [5], [1.0], 4, "outside the vocabulary"),
        ([0, 1], [-1], [1.0], 4, "outside the vocabulary"),
        ([0, 2], [2, 1], [1.0, 1.0], 4, "strictly increasing"),
        ([0, 2], [1, 1], [1.0, 1.0], 4, "strictly increasing"),
        ([0, 1], [1], [0.0], 4, "> 0"),
        ([0, 1], [1], [-2.0], 4, "> 0"),
        ([0, 1], [1], [np.nan], 4, "finite"),
        ([0, 2, 1, 2], [0, 1], [1.0, 1.0], 4, "non-decreasing"),
    ],
)
def test_validate_names_the_problem(indptr, indices, values, dim, message):
    with pytest.raises(InvalidInputError, match=message):
        SparseBatch(np.array(indptr), np.array(indices), np.array(values), dim).validate()


@pytest.mark.parametrize(
    ("indptr", "indices", "values", "dim"),
    [([1, 2], [0], [1.0], 3), ([0, 3], [0], [1.0], 3), ([0, 1], [0], [1.0], 0)],
)
def test_construction_rejects_inconsistent_shapes(indptr, indices, values, dim):
    with pytest.raises(InvalidInputError):
        SparseBatch(np.array(indptr), np.array(indices), np.array(values), dim)


def test_rows_may_restart_term_ids():
    SparseBatch.from_dicts([{2: 1.0, 3: 1.0}, {0: 1.0, 3: 1.0}, {}, {1: 1.0}], 4).validate()


@given(st.lists(st.dictionaries(st.integers(0, 19), st.floats(0.01, 10), max_size=6), max_size=8),
       st.data())
def test_take_and_slice_match_dense_rows(rows, data):
    batch = SparseBatch.from_dicts(rows, 20)
    dense = batch.to_scipy().toarray()
    if rows:
        order = data.draw(st.lists(st.integers(0, len(rows) - 1), max_size=10))
        np.testing.assert_array_equal(batch.take(order).to_scipy().toarray(), dense[order].reshape(-1, 20))
        lo = data.draw(st.integers(0, len(rows)))
        hi = data.draw(st.integers(lo, len(rows)))
        np.testing.assert_array_equal(batch.slice(lo, hi).to_scipy().toarray(), dense[lo:hi])
    halves = [batch.slice(0, len(rows) // 2), batch.slice(len(rows) // 2, len(rows))]
    np.testing.assert_array_equal(SparseBatch.concat(halves).to_scipy().toarray(), dense)


def test_from_dense_and_from_scipy_drop_zeros():
    dense = np.array([[0, 1.5, 0], [0, 0, 0]], np.float32)
    assert SparseBatch.from_dense(dense).to_dicts() == [{1: 1.5}, {}]
    m = sp.csr_matrix(([0.0, 2.0], ([0, 0], [0, 2])), shape=(1, 3))
    assert SparseBatch.from_scipy(m).to_dicts() == [{2: 2.0}]
    with pytest.raises(InvalidInputError, match=">= 0"):
        SparseBatch.from_dense(-dense - 1)


def test_hits_padding_and_validation():
    hits = Hits.empty(2, 3)
    assert hits.ids.shape == (2, 3) and (hits.ids == -1).all() and np.isneginf(hits.scores).all()
    hits.validate()
    bad = Hits(np.array([[1, 2]]), np.array([[1.0, 2.0]]))
    with pytest.raises(InvalidInputError, match="sorted"):
        bad.validate()
    with pytest.raises(InvalidInputError, match="padding"):
        Hits(np.array([[-1, 2]]), np.array([[-np.inf, 2.0]])).validate()


@given(st.lists(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 5)), max_size=8), min_size=1, max_size=4),
       st.integers(1, 10))
def test_merge_equals_sorting_the_union(parts_spec, k):
    """Hits.merge == sort all (score desc, id asc), keep each id once with its best score, cut at k."""
    parts = []
    best: dict[int, float] = {}
    for spec in parts_spec:
        scores = {}
        for doc, score in spec:
            scores[doc] = max(scores.get(doc, 0), float(score))
        ranked = sorted(scores.items(), key=lambda x: (-x[1], x[0]))[:k]
        part = Hits.empty(1, k)
        for j, (doc, score) in enumerate(ranked):
            part.ids[0, j], part.scores[0, j] = doc, score
            best[doc] = max(best.get(doc, 0), score)
        parts.append(part)
    merged = Hits.merge(parts, k).validate()
    expected = sorted(best.items(), key=lambda x: (-x[1], x[0]))[:k]
    assert list(zip(*merged.row(0), strict=True)) == [(d, np.float32(s)) for d, s in expected]
