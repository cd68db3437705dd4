"""Every kernel backend against the scipy oracle (lsr.kernels.reference), by property tests."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lsr.errors import InvalidQueryError, MissingDependencyError
from lsr.kernels import PostingArrays, available_backends, reference, resolve_backend, topk
from lsr.types import Hits, SparseBatch

BACKENDS = available_backends()

# Multiples of 1/8 up to 8: every product and every sum of a few of them is exact in float32, so backends
# must agree with the oracle bit for bit -- including how ties are broken -- whatever order they add in.
dyadic = st.integers(1, 64).map(lambda i: i / 8)
wide = st.floats(0.0009765625, 1024.0, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def collections(draw, weights=dyadic):
    dim = draw(st.integers(1, 30))
    n_docs = draw(st.integers(0, 50))
    n_queries = draw(st.integers(1, 6))

    def vectors(n: int, max_terms: int, term_range: int):
        rows = []
        for _ in range(n):
            terms = draw(st.lists(st.integers(0, term_range - 1), max_size=max_terms, unique=True))
            rows.append({t: draw(weights) for t in terms})
        return SparseBatch.from_dicts(rows, dim)

    # documents use only part of the vocabulary, so some query terms have no postings at all
    doc_terms = draw(st.integers(1, dim))
    docs = vectors(n_docs, 8, doc_terms)
    queries = vectors(n_queries, 6, dim)
    k = draw(st.integers(1, 12))
    deleted = None
    if n_docs and draw(st.booleans()):
        deleted = np.array(draw(st.lists(st.booleans(), min_size=n_docs, max_size=n_docs)), dtype=np.uint8)
    return docs, queries, k, deleted


def assert_same_hits(got: Hits, want: Hits) -> None:
    got.validate()
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_array_equal(got.scores, want.scores)


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=collections())
def test_backend_equals_oracle_exactly(backend, case):
    docs, queries, k, deleted = case
    postings = PostingArrays.from_documents(docs)
    assert_same_hits(topk(postings, queries, k, deleted, backend), reference.topk(postings, queries, k, deleted))


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=collections(weights=wide))
def test_backend_equals_oracle_on_arbitrary_floats(backend, case):
    """With arbitrary weights the summation order may change the last bits: scores must agree within
    float32 tolerance, and every returned document must truly have the score it is reported with."""
    docs, queries, k, deleted = case
    postings = PostingArrays.from_documents(docs)
    got = topk(postings, queries, k, deleted, backend).validate()
    want = reference.topk(postings, queries, k, deleted)
    np.testing.assert_array_equal(got.ids >= 0, want.ids >= 0)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-4)
    full = reference.score_all(postings, queries)
    for i in range(got.n):
        ids, scores = got.row(i)
        np.testing.assert_allclose(full[i, ids], scores, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=collections(), base=st.integers(0, 10_000))
def test_id_base_offsets_every_hit(backend, case, base):
    docs, queries, k, deleted = case
    postings = PostingArrays.from_documents(docs)
    plain = topk(postings, queries, k, deleted, backend)
    shifted = topk(postings, queries, k, deleted, backend, id_base=base)
    np.testing.assert_array_equal(shifted.ids, np.where(plain.ids >= 0, plain.ids + base, -1))


# ----------------------------------------------------------------------------- named edge cases
def _postings(rows: list[dict[int, float]], dim: int) -> PostingArrays:
    return PostingArrays.from_documents(SparseBatch.from_dicts(rows, dim))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_query_returns_only_padding(backend):
    postings = _postings([{0: 1.0}, {1: 2.0}], 3)
    hits = topk(postings, SparseBatch.empty(2, 3), 5, backend=backend)
    assert (hits.ids == -1).all() and np.isneginf(hits.scores).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_query_terms_absent_from_index(backend):
    postings = _postings([{0: 1.0}, {0: 2.0}], 4)
    queries = SparseBatch.from_dicts([{2: 1.0, 3: 5.0}, {0: 1.0, 3: 1.0}], 4)
    hits = topk(postings, queries, 3, backend=backend)
    assert hits.ids.tolist() == [[-1, -1, -1], [1, 0, -1]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_k_larger_than_matches_is_padded(backend):
    postings = _postings([{0: 1.0}, {1: 1.0}, {0: 3.0}], 2)
    hits = topk(postings, SparseBatch.from_dicts([{0: 1.0}], 2), 10, backend=backend)
    assert hits.ids[0, :3].tolist() == [2, 0, -1]
    assert hits.scores[0, :2].tolist() == [3.0, 1.0]
    assert np.isneginf(hits.scores[0, 2:]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_are_broken_by_doc_id(backend):
    postings = _postings([{0: 1.0}] * 6, 1)
    hits = topk(postings, SparseBatch.from_dicts([{0: 2.0}], 1), 4, backend=backend)
    assert hits.ids[0].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("backend", BACKENDS)
def test_deleted_documents_never_returned(backend):
    postings = _postings([{0: 5.0}, {0: 4.0}, {0: 3.0}], 1)
    hits = topk(postings, SparseBatch.from_dicts([{0: 1.0}], 1), 3, np.array([1, 0, 1], np.uint8), backend)
    assert hits.ids[0].tolist() == [1, -1, -1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_index_without_documents(backend):
    postings = _postings([], 3)
    hits = topk(postings, SparseBatch.from_dicts([{1: 1.0}], 3), 2, backend=backend)
    assert (hits.ids == -1).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_many_queries_are_independent(backend):
    """More queries than threads: each chunk's accumulator must be fully reset between its queries."""
    rng = np.random.default_rng(7)
    rows = [{int(t): float(rng.integers(1, 9)) for t in rng.choice(20, 5, replace=False)} for _ in range(200)]
    postings = _postings(rows, 20)
    queries = SparseBatch.from_dicts(
        [{int(t): 1.0 for t in rng.choice(20, 3, replace=False)} for _ in range(37)], 20)
    assert_same_hits(topk(postings, queries, 7, backend=backend), reference.topk(postings, queries, 7))


# ----------------------------------------------------------------------------- argument checks
@pytest.mark.parametrize("k", [0, -1, 10_001, 2.5, True])
def test_bad_k_is_rejected(k):
    postings = _postings([{0: 1.0}], 1)
    with pytest.raises(InvalidQueryError, match="k must be"):
        topk(postings, SparseBatch.from_dicts([{0: 1.0}], 1), k)


def test_dimension_mismatch_is_rejected():
    with pytest.raises(InvalidQueryError, match="dimension"):
        topk(_postings([{0: 1.0}], 2), SparseBatch.from_dicts([{0: 1.0}], 3), 1)


def test_unknown_backend_is_named():
    with pytest.raises(InvalidQueryError, match="unknown kernel backend 'gpu'"):
        resolve_backend("gpu")


def test_fallback_without_numba(monkeypatch):
    """An install without numba still searches: auto resolves to the numpy oracle; asking for numba says
    how to get it."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "numba" else real(name, *a))
    assert resolve_backend("auto") == "numpy"
    with pytest.raises(MissingDependencyError, match="pip install numba"):
        resolve_backend("numba")
    postings = _postings([{0: 1.0}, {0: 2.0}], 1)
    assert topk(postings, SparseBatch.from_dicts([{0: 1.0}], 1), 1).ids.tolist() == [[1]]
