"""Two-step search (query_mass < 1, lsr/kernels/two_step.py) against a plain restatement of it, by property tests."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lsr.errors import InvalidQueryError
from lsr.kernels import ForwardArrays, PostingArrays, available_backends, reference, topk
from lsr.kernels.two_step import candidate_depth, mass_queries, rescore_topk
from lsr.types import Hits, SparseBatch
from tests.kernels.test_kernels import CONFIG_IDS, CONFIGS, assert_same_hits, collections, dyadic, search, wide

BACKENDS = available_backends()


def two_step_oracle(postings, queries, k, deleted, mass) -> Hits:
    """The definition: the oracle's top depth(k) of the pruned query, re-ranked by the oracle's full scores."""
    pruned = mass_queries(queries, mass)
    candidates = reference.topk(postings, pruned, candidate_depth(k), deleted).ids
    full = reference.score_all(postings, queries)
    out = Hits.empty(queries.n, k)
    for i in range(queries.n):
        found = sorted((-float(full[i, d]), int(d)) for d in candidates[i][candidates[i] >= 0] if full[i, d] > 0)
        for j, (neg, d) in enumerate(found[:k]):
            out.ids[i, j], out.scores[i, j] = d, -neg
    return out


@pytest.mark.parametrize(("backend", "algorithm"), CONFIGS, ids=CONFIG_IDS)
@given(case=collections(), mass=st.floats(0.05, 1.0))
def test_two_step_equals_its_definition(backend, algorithm, case, mass):
    """Dyadic weights: every sum is exact, so the result must be the oracle's two steps bit for bit."""
    postings, queries, k, deleted = case
    got = search(postings, queries, k, deleted, backend, algorithm=algorithm, query_mass=mass,
                 forward=ForwardArrays.from_postings(postings))
    want = two_step_oracle(postings, queries, k, deleted, mass) if mass < 1 else \
        reference.topk(postings, queries, k, deleted)
    assert_same_hits(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=collections(weights=wide, storage=st.just(("float32", 1.0))), mass=st.floats(0.05, 0.99))
def test_rescored_scores_are_exhaustive_scores_bit_for_bit(backend, case, mass):
    """Arbitrary floats: a returned score is exactly what exhaustive scoring gives the document (the same
    float32 sum in the same order), not merely close."""
    postings, queries, k, deleted = case
    got = topk(postings, queries, k, deleted, backend, query_mass=mass,
               forward=ForwardArrays.from_postings(postings)).validate()
    every = topk(postings, queries, max(postings.n_docs, 1), None, backend, algorithm="exhaustive")
    for i in range(got.n):
        exact = dict(zip(*(a.tolist() for a in every.row(i)), strict=True))
        for d, s in zip(*(a.tolist() for a in got.row(i)), strict=True):
            assert exact[d] == s
            assert deleted is None or not deleted[d]


@given(st.lists(st.dictionaries(st.integers(0, 11), st.one_of(dyadic, st.just(0.5)), max_size=10), min_size=1,
                max_size=6), st.floats(0.01, 1.0))
def test_mass_pruning_keeps_the_heaviest_terms_holding_the_mass(rows, mass):
    queries = SparseBatch.from_dicts(rows, 12)
    kept = mass_queries(queries, mass).validate()
    if "c" in BACKENDS:  # the C pruning is the same function
        c = mass_queries(queries, mass, "c")
        for a, b in ((kept.indptr, c.indptr), (kept.indices, c.indices), (kept.values, c.values)):
            np.testing.assert_array_equal(a, b)
    for original, pruned in zip(rows, kept.to_dicts(), strict=True):
        original = {t: w for t, w in original.items() if w}
        ranked = sorted((-w, t) for t, w in original.items())  # heaviest first, ties: lower term id
        total, need = sum(original.values()), 0
        while need < len(ranked) and sum(-w for w, _ in ranked[:need]) < mass * total * (1 - 1e-9):
            need += 1
        assert pruned == {t: original[t] for _, t in ranked[:max(need, 1 if original else 0)]}


@pytest.mark.parametrize("backend", BACKENDS)
def test_query_mass_one_is_the_exact_search(backend):
    docs = SparseBatch.from_dicts([{i % 5: 1.0 + i % 3, (i + 2) % 7: 0.25 * (i % 4 + 1)} for i in range(60)], 7)
    postings = PostingArrays.from_documents(docs, block_size=4)
    queries = SparseBatch.from_dicts([{0: 1.0, 2: 0.5, 6: 0.125}, {3: 2.0}], 7)
    exact = topk(postings, queries, 5, None, backend)
    assert_same_hits(topk(postings, queries, 5, None, backend, query_mass=1.0), exact)


def test_bad_query_mass_and_missing_forward_are_clear_errors():
    docs = SparseBatch.from_dicts([{0: 1.0}, {1: 2.0}], 2)
    postings = PostingArrays.from_documents(docs)
    queries = SparseBatch.from_dicts([{0: 1.0, 1: 0.5}], 2)
    for bad in (0, -0.5, 1.5, float("nan"), True, "0.5"):
        with pytest.raises(InvalidQueryError, match="query_mass"):
            topk(postings, queries, 1, query_mass=bad, forward=ForwardArrays.from_postings(postings))
    with pytest.raises(InvalidQueryError, match="forward"):
        topk(postings, queries, 1, query_mass=0.5)


@pytest.mark.skipif("c" not in BACKENDS, reason="the C extension is not built")
def test_rescoring_kernel_rejects_bad_input():
    docs = SparseBatch.from_dicts([{0: 1.0, 1: 1.0}, {1: 2.0}], 3)
    forward = ForwardArrays.from_postings(PostingArrays.from_documents(docs))
    q = SparseBatch(np.array([0, 2]), np.array([0, 1], np.int32), np.array([1.0, 1.0], np.float32), 3)
    ok = rescore_topk(forward, q, q.values, np.array([[0, 1, -1]]), 2, "c")
    assert ok.ids.tolist() == [[0, 1]] and ok.scores.tolist() == [[2.0, 2.0]]  # a tie: lower id first
    with pytest.raises(ValueError, match="outside its range"):  # a candidate past the segment
        rescore_topk(forward, q, q.values, np.array([[5]]), 1, "c")
    unsorted = SparseBatch(np.array([0, 2]), np.array([1, 0], np.int32), np.array([1.0, 1.0], np.float32), 3)
    with pytest.raises(ValueError, match="increasing"):
        rescore_topk(forward, unsorted, unsorted.values, np.array([[0]]), 1, "c")
    bad_term = forward._replace(indices=np.array([0, 9, 1], np.int32))
    with pytest.raises(ValueError, match="outside its range"):  # a corrupt forward term id
        rescore_topk(bad_term, q, q.values, np.array([[0]]), 1, "c")
