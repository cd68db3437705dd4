"""Every kernel backend against the scipy oracle (lsr.kernels.reference), by property tests."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lsr.errors import InvalidInputError, InvalidQueryError, MissingDependencyError
from lsr.kernels import (
    ALGORITHMS,
    PostingArrays,
    available_backends,
    check_queries,
    cut_queries,
    reference,
    resolve_backend,
    topk,
)
from lsr.kernels.cost_model import FITTED, PURE_BLOCKMAX, CostModel
from lsr.types import Hits, SparseBatch

BACKENDS = available_backends()
# every (backend, algorithm) pair that exists; the numpy oracle only scores exhaustively. "blockmax-pure"
# is block-max that never hands a query over to exhaustive scoring: on these small collections the cost
# model would send nearly every query there, and the block-max code must be checked too
CONFIGS = [(b, a) for b in BACKENDS for a in (*ALGORITHMS, "blockmax-pure")
           if not (b == "numpy" and a.startswith("blockmax"))]
PRUNING_BACKENDS = [b for b in BACKENDS if b != "numpy"]
CONFIG_IDS = [f"{b}-{a}" for b, a in CONFIGS]

# Multiples of 1/8 up to 8: every product and every sum of a few of them is exact in float32, so backends
# must agree with the oracle bit for bit -- including how ties are broken -- whatever order they add in.
# Stored as uint8/uint16 with scale 8 they are exact integers, and dequantising by 1/8 is exact too.
dyadic = st.integers(1, 64).map(lambda i: i / 8)
wide = st.floats(0.0009765625, 1024.0, allow_nan=False, allow_infinity=False, width=32)
STORAGE = st.sampled_from([("float32", 1.0), ("uint8", 8.0), ("uint16", 8.0)])


@st.composite
def collections(draw, weights=dyadic, storage=STORAGE):
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
    weight_dtype, scale = draw(storage)
    # masks of one byte (block sizes up to 8) and of several (9-17: a mask spanning bytes, 64)
    block_size = draw(st.one_of(st.integers(1, 17), st.just(64)))
    postings = PostingArrays.from_documents(docs, block_size=block_size, weight_dtype=weight_dtype,
                                            scale=scale)
    if draw(st.booleans()):  # block ids as a segment of more than 65,536 blocks stores them
        postings = postings._replace(blocks=postings.blocks._replace(ids=postings.blocks.ids.astype(np.int32)))
    return postings, queries, k, deleted


def search(postings, queries, k, deleted=None, backend="auto", algorithm="auto", **options) -> Hits:
    """topk, with "blockmax-pure" standing for block-max under a cost model that never gives up."""
    algorithm, cost = ("blockmax", PURE_BLOCKMAX) if algorithm == "blockmax-pure" else (algorithm, FITTED)
    return topk(postings, queries, k, deleted, backend, algorithm=algorithm, cost_model=cost, **options)


def assert_same_hits(got: Hits, want: Hits) -> None:
    got.validate()
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_array_equal(got.scores, want.scores)


@pytest.mark.parametrize(("backend", "algorithm"), CONFIGS, ids=CONFIG_IDS)
@given(case=collections())
def test_equals_oracle_exactly(backend, algorithm, case):
    postings, queries, k, deleted = case
    got = search(postings, queries, k, deleted, backend, algorithm=algorithm)
    assert_same_hits(got, reference.topk(postings, queries, k, deleted))


@pytest.mark.parametrize(("backend", "algorithm"), CONFIGS, ids=CONFIG_IDS)
@given(case=collections(weights=wide, storage=st.just(("float32", 1.0))))
def test_equals_oracle_on_arbitrary_floats(backend, algorithm, case):
    """With arbitrary weights the summation order may change the last bits: scores must agree within
    float32 tolerance, and every returned document must truly have the score it is reported with."""
    postings, queries, k, deleted = case
    got = search(postings, queries, k, deleted, backend, algorithm=algorithm).validate()
    want = reference.topk(postings, queries, k, deleted)
    np.testing.assert_array_equal(got.ids >= 0, want.ids >= 0)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-4)
    full = reference.score_all(postings, queries)
    for i in range(got.n):
        ids, scores = got.row(i)
        np.testing.assert_allclose(full[i, ids], scores, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(("backend", "algorithm"), CONFIGS, ids=CONFIG_IDS)
@given(case=collections(), base=st.integers(0, 10_000))
def test_id_base_offsets_every_hit(backend, algorithm, case, base):
    postings, queries, k, deleted = case
    plain = search(postings, queries, k, deleted, backend, algorithm=algorithm)
    shifted = search(postings, queries, k, deleted, backend, id_base=base, algorithm=algorithm)
    np.testing.assert_array_equal(shifted.ids, np.where(plain.ids >= 0, plain.ids + base, -1))


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "numpy"])
@given(case=collections(), alpha=st.floats(0.05, 1.0), query_cut=st.one_of(st.none(), st.integers(1, 6)))
def test_approximate_hits_are_true_hits(backend, case, alpha, query_cut):
    """Approximate mode may miss documents, never invent them: each hit has its true score (for the cut
    query), rows are ordered, and alpha = 1 without a cut is exactly the oracle."""
    postings, queries, k, deleted = case
    got = search(postings, queries, k, deleted, backend, algorithm="blockmax-pure", alpha=alpha,
                 query_cut=query_cut).validate()
    full = reference.score_all(postings, cut_queries(queries, query_cut))
    for i in range(got.n):
        ids, scores = got.row(i)
        np.testing.assert_array_equal(full[i, ids], scores)
        if deleted is not None:
            assert not deleted[ids].any()
    if alpha == 1.0 and query_cut is None:
        assert_same_hits(got, reference.topk(postings, queries, k, deleted))


cost_models = st.builds(
    CostModel, *[st.floats(0.0, 100.0) for _ in range(8)], st.floats(0.0, 2.0), st.floats(0.0, 1.5),
    st.one_of(st.floats(0.0, 3.0), st.just(float("inf"))), st.floats(0.0, 20.0),
    st.one_of(st.just(float("-inf")), st.floats(-5.0, 5.0)), *[st.floats(-1.0, 1.0) for _ in range(6)],
    st.floats(0.0, 20.0), st.floats(0.0, 20.0))


@pytest.mark.parametrize("backend", PRUNING_BACKENDS)
@pytest.mark.parametrize("algorithm", ["blockmax", "auto"])
@given(case=collections(), cost=cost_models)
def test_every_route_the_cost_model_takes_is_exact(backend, algorithm, case, cost):
    """Whatever the cost model says -- block-max to the end, exhaustive from the start, or handed over
    midway -- the result is the oracle's, and the kernel reports the route it took."""
    postings, queries, k, deleted = case
    stats = np.full((queries.n, 4), -1, np.int64)
    got = topk(postings, queries, k, deleted, backend, algorithm=algorithm, cost_model=cost, stats=stats)
    assert_same_hits(got, reference.topk(postings, queries, k, deleted))
    has_terms = queries.row_nnz() > 0
    assert set(stats[has_terms, 0].tolist()) <= {0, 1, 2}
    went_blockmax = has_terms & (stats[:, 0] != 1)
    assert (stats[went_blockmax, 3] <= stats[went_blockmax, 2]).all()  # scored at most the candidates


@pytest.mark.parametrize("backend", PRUNING_BACKENDS)
def test_pure_blockmax_never_hands_over(backend):
    docs = SparseBatch.from_dicts([{0: 1.0 + i % 7, 1: 0.5 * (i % 3)} for i in range(200)], 2)
    postings = PostingArrays.from_documents(docs, block_size=4)
    queries = SparseBatch.from_dicts([{0: 1.0, 1: 2.0}, {1: 1.0}], 2)
    # a block-max predicted to cost far more than exhaustive scoring: guarded (a limit it cannot reach) and
    # auto go exhaustive up front on the prediction alone; with no guard block-max runs to the end
    hopeless = CostModel(*[1.0] * 10, guard=1e9, blocks_const=50.0)
    for algorithm, cost, routes in (("blockmax", PURE_BLOCKMAX, {0}),
                                    ("blockmax", CostModel(*[1.0] * 10, guard=0.0), {1}),
                                    ("blockmax", hopeless, {1}), ("auto", hopeless, {1}),
                                    ("blockmax", CostModel(*[1.0] * 10, guard=float("inf"), blocks_const=50.0), {0})):
        stats = np.zeros((2, 4), np.int64)
        got = topk(postings, queries, 5, None, backend, algorithm=algorithm, cost_model=cost, stats=stats)
        assert_same_hits(got, reference.topk(postings, queries, 5))
        assert set(stats[:, 0].tolist()) == routes


@given(st.lists(st.dictionaries(st.integers(0, 9), dyadic, max_size=8), min_size=1, max_size=5),
       st.integers(1, 8))
def test_query_cut_keeps_the_heaviest_terms(rows, cut):
    queries = SparseBatch.from_dicts(rows, 10)
    kept = cut_queries(queries, cut).validate().to_dicts()
    for original, pruned in zip(rows, kept, strict=True):
        heaviest = sorted(((-w, t) for t, w in original.items() if w))[:cut]
        assert pruned == {t: original[t] for _, t in heaviest}


# ----------------------------------------------------------------------------- named edge cases
def _postings(rows: list[dict[int, float]], dim: int) -> PostingArrays:
    return PostingArrays.from_documents(SparseBatch.from_dicts(rows, dim), block_size=2)


@pytest.mark.parametrize(("backend", "algorithm"), CONFIGS, ids=CONFIG_IDS)
def test_empty_query_returns_only_padding(backend, algorithm):
    postings = _postings([{0: 1.0}, {1: 2.0}], 3)
    hits = search(postings, SparseBatch.empty(2, 3), 5, backend=backend, algorithm=algorithm)
    assert (hits.ids == -1).all() and np.isneginf(hits.scores).all()


@pytest.mark.parametrize(("backend", "algorithm"), CONFIGS, ids=CONFIG_IDS)
def test_query_terms_absent_from_index(backend, algorithm):
    postings = _postings([{0: 1.0}, {0: 2.0}], 4)
    queries = SparseBatch.from_dicts([{2: 1.0, 3: 5.0}, {0: 1.0, 3: 1.0}], 4)
    hits = search(postings, queries, 3, backend=backend, algorithm=algorithm)
    assert hits.ids.tolist() == [[-1, -1, -1], [1, 0, -1]]


@pytest.mark.parametrize(("backend", "algorithm"), CONFIGS, ids=CONFIG_IDS)
def test_k_larger_than_matches_is_padded(backend, algorithm):
    postings = _postings([{0: 1.0}, {1: 1.0}, {0: 3.0}], 2)
    hits = search(postings, SparseBatch.from_dicts([{0: 1.0}], 2), 10, backend=backend, algorithm=algorithm)
    assert hits.ids[0, :3].tolist() == [2, 0, -1]
    assert hits.scores[0, :2].tolist() == [3.0, 1.0]
    assert np.isneginf(hits.scores[0, 2:]).all()


@pytest.mark.parametrize(("backend", "algorithm"), CONFIGS, ids=CONFIG_IDS)
def test_ties_are_broken_by_doc_id(backend, algorithm):
    postings = _postings([{0: 1.0}] * 6, 1)
    hits = search(postings, SparseBatch.from_dicts([{0: 2.0}], 1), 4, backend=backend, algorithm=algorithm)
    assert hits.ids[0].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(("backend", "algorithm"), CONFIGS, ids=CONFIG_IDS)
def test_deleted_documents_never_returned(backend, algorithm):
    postings = _postings([{0: 5.0}, {0: 4.0}, {0: 3.0}], 1)
    hits = search(postings, SparseBatch.from_dicts([{0: 1.0}], 1), 3, np.array([1, 0, 1], np.uint8), backend,
                  algorithm=algorithm)
    assert hits.ids[0].tolist() == [1, -1, -1]


@pytest.mark.parametrize(("backend", "algorithm"), CONFIGS, ids=CONFIG_IDS)
def test_index_without_documents(backend, algorithm):
    postings = _postings([], 3)
    hits = search(postings, SparseBatch.from_dicts([{1: 1.0}], 3), 2, backend=backend, algorithm=algorithm)
    assert (hits.ids == -1).all()


@pytest.mark.parametrize(("backend", "algorithm"), CONFIGS, ids=CONFIG_IDS)
def test_many_queries_are_independent(backend, algorithm):
    """More queries than threads: each chunk's accumulator must be fully reset between its queries."""
    rng = np.random.default_rng(7)
    rows = [{int(t): float(rng.integers(1, 9)) for t in rng.choice(20, 5, replace=False)} for _ in range(200)]
    postings = _postings(rows, 20)
    queries = SparseBatch.from_dicts(
        [{int(t): 1.0 for t in rng.choice(20, 3, replace=False)} for _ in range(37)], 20)
    got = search(postings, queries, 7, backend=backend, algorithm=algorithm)
    assert_same_hits(got, reference.topk(postings, queries, 7))


@pytest.mark.parametrize(("backend", "algorithm"), CONFIGS, ids=CONFIG_IDS)
def test_regression_block_lookup_must_not_run_into_the_next_term(backend, algorithm):
    """Pinned: looking up block 1 among term 0's blocks ([0]) ends one past them, on term 1's first entry,
    which is also block 1. An early blockmax took that entry for term 0's and scored doc 1 twice."""
    postings = PostingArrays.from_documents(SparseBatch.from_dicts([{0: 1.0}, {1: 2.0}], 2), block_size=1)
    hits = search(postings, SparseBatch.from_dicts([{0: 1.0, 1: 1.0}], 2), 2, backend=backend, algorithm=algorithm)
    assert hits.ids.tolist() == [[1, 0]] and hits.scores.tolist() == [[2.0, 1.0]]


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


@pytest.fixture()
def forget_backends():
    """Backends are looked up once per process; a test that hides one needs a fresh look-up, and so do the
    tests after it."""
    from lsr import kernels

    kernels._forget_backends()
    yield
    kernels._forget_backends()


@pytest.mark.parametrize("missing", [("numba",), ("lsr.kernels._csparse",), ("numba", "lsr.kernels._csparse")])
def test_fallback_when_backends_are_missing(monkeypatch, missing, forget_backends):
    """An install without the C extension and/or numba still searches with the next backend; asking for a
    missing one says how to get it."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a))
    expected = next(b for b, mod in (("c", "lsr.kernels._csparse"), ("numba", "numba"), ("numpy", None))
                    if mod not in missing)
    assert resolve_backend("auto") == expected
    for name, mod in (("c", "lsr.kernels._csparse"), ("numba", "numba")):
        if mod in missing:
            with pytest.raises(MissingDependencyError, match="pip install"):
                resolve_backend(name)
    postings = _postings([{0: 1.0}, {0: 2.0}], 1)
    assert topk(postings, SparseBatch.from_dicts([{0: 1.0}], 1), 1).ids.tolist() == [[1]]


@pytest.mark.parametrize("backend", PRUNING_BACKENDS)
@pytest.mark.parametrize("n_terms", [1, 40])
def test_auto_is_exact_on_both_of_its_paths(backend, n_terms):
    """auto keeps block-max for a one-term query over clustered blocks and falls back to exhaustive scoring
    for a long query whose blocks all stay in the running; both must equal the oracle."""
    rng = np.random.default_rng(n_terms)
    rows = [{int(t): float(rng.integers(1, 64)) / 8 for t in rng.choice(60, 12, replace=False)} for _ in range(3000)]
    postings = PostingArrays.from_documents(SparseBatch.from_dicts(rows, 60), block_size=8)
    queries = SparseBatch.from_dicts(
        [{int(t): float(rng.integers(1, 64)) / 8 for t in rng.choice(60, n_terms, replace=False)} for _ in range(5)],
        60)
    assert_same_hits(topk(postings, queries, 10, backend=backend, algorithm="auto"),
                     reference.topk(postings, queries, 10))


def test_numpy_backend_refuses_to_prune():
    with pytest.raises(InvalidQueryError, match="numpy backend"):
        topk(_postings([{0: 1.0}], 1), SparseBatch.from_dicts([{0: 1.0}], 1), 1, backend="numpy", algorithm="blockmax")


@pytest.mark.parametrize("alpha", [0, -0.5, 1.5, float("nan")])
def test_bad_alpha_is_rejected(alpha):
    with pytest.raises(InvalidQueryError, match="alpha"):
        topk(_postings([{0: 1.0}], 1), SparseBatch.from_dicts([{0: 1.0}], 1), 1, alpha=alpha)


@given(st.lists(st.lists(st.tuples(st.integers(-2, 12), st.sampled_from([0.5, 1.0, 0.0, -1.0, float("inf"),
                                                                           float("nan"), 2.0])), max_size=6),
                max_size=5), st.booleans())
def test_check_queries_accepts_exactly_what_validate_accepts(rows, shuffled):
    """The one-pass C check (when built) and SparseBatch.validate agree on every batch, valid or not, and
    the error is validate's own."""
    indptr = np.zeros(len(rows) + 1, np.int64)
    np.cumsum([len(r) for r in rows], out=indptr[1:])
    pairs = [p for r in rows for p in (r if shuffled else sorted(r))]
    batch = SparseBatch(indptr, np.array([t for t, _ in pairs], np.int32), np.array([v for _, v in pairs], np.float32),
                        10)
    try:
        batch.validate()
        expected = None
    except InvalidInputError as exc:
        expected = str(exc)
    if expected is None:
        assert check_queries(batch) is batch
    else:
        with pytest.raises(InvalidInputError) as err:
            check_queries(batch)
        assert str(err.value) == expected


# Large k over many scored documents: the C kernel's exhaustive top-k offers only the documents at or above a
# threshold sampled from the scores (and the rest when fewer than k reach it); dyadic weights make many ties
# at that threshold.
@st.composite
def large_k_collections(draw):
    n_docs = draw(st.integers(520, 2500))
    dim = draw(st.integers(2, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    density = draw(st.sampled_from([0.02, 0.3, 0.9]))  # few touched documents (sparse scan) to nearly all (dense)
    rows = [{int(t): float(rng.integers(1, 17)) / 8 for t in np.flatnonzero(rng.random(dim) < density)}
            for _ in range(n_docs)]
    queries = SparseBatch.from_dicts([{int(t): float(rng.integers(1, 9)) / 8 for t in
                                       rng.choice(dim, size=rng.integers(1, dim + 1), replace=False)}
                                      for _ in range(3)], dim)
    k = draw(st.integers(64, max(64, n_docs // 6)))
    deleted = (rng.random(n_docs) < 0.1).astype(np.uint8) if draw(st.booleans()) else None
    weight_dtype, scale = draw(STORAGE)
    postings = PostingArrays.from_documents(SparseBatch.from_dicts(rows, dim), weight_dtype=weight_dtype, scale=scale)
    return postings, queries, k, deleted


@pytest.mark.parametrize("backend", PRUNING_BACKENDS)
@pytest.mark.parametrize("algorithm", ["exhaustive", "auto"])
@given(case=large_k_collections())
def test_large_k_equals_oracle_exactly(backend, algorithm, case):
    postings, queries, k, deleted = case
    got = search(postings, queries, k, deleted, backend, algorithm=algorithm)
    assert_same_hits(got, reference.topk(postings, queries, k, deleted))


# Dense exhaustive scoring adds a mask byte's postings to its documents' scores in one vector step (AVX-512 or
# AVX2, the best the CPU has); with set_simd("none"), and on other CPUs, the scalar loop does. Every step must
# add the same products to the same scores: bit for bit equal hits on arbitrary float weights too.
SIMD_LEVELS = ["avx512", "avx2"]


def vector_and_scalar_steps(level, postings, queries, k, deleted) -> tuple[Hits, Hits]:
    from lsr.kernels import _csparse

    try:
        if _csparse.set_simd(level) != level:
            pytest.skip(f"this CPU has no {level}")
        fast = search(postings, queries, k, deleted, "c", algorithm="exhaustive")
        _csparse.set_simd("none")
        plain = search(postings, queries, k, deleted, "c", algorithm="exhaustive")
    finally:
        _csparse.set_simd("avx512")
    return fast, plain


@pytest.mark.skipif("c" not in BACKENDS, reason="the C extension is not built")
@pytest.mark.parametrize("level", SIMD_LEVELS)
@given(case=st.one_of(collections(), collections(weights=wide, storage=st.just(("float32", 1.0))),
                      large_k_collections()))
def test_vector_dense_step_equals_the_scalar_step(level, case):
    postings, queries, k, deleted = case
    fast, plain = vector_and_scalar_steps(level, postings, queries, k, deleted)
    assert_same_hits(fast, plain)


@pytest.mark.skipif("c" not in BACKENDS, reason="the C extension is not built")
@pytest.mark.parametrize("level", SIMD_LEVELS)
@given(case=collections())
def test_vector_dense_step_equals_oracle(level, case):
    postings, queries, k, deleted = case
    fast, _ = vector_and_scalar_steps(level, postings, queries, k, deleted)
    assert_same_hits(fast, reference.topk(postings, queries, k, deleted))


def test_set_simd_rejects_unknown_levels():
    _csparse = pytest.importorskip("lsr.kernels._csparse")
    with pytest.raises(ValueError, match="unknown SIMD level"):
        _csparse.set_simd("sse9")
    assert _csparse.set_simd("avx512") in ("avx512", "avx2", "none")


@pytest.mark.parametrize("backend", PRUNING_BACKENDS)
@pytest.mark.parametrize("n_docs", [1024, 8192])  # every document scored (dense scan) / 1,024 of 8,192 touched
def test_large_k_when_the_sample_overshoots(backend, n_docs):
    """Every 4th scored document (the sample's stride at k = 64) of the first 160 scores 2, every other one 1:
    the sampled threshold is 2, which only 40 documents reach, so the rest must be offered too."""
    weights = {d: (2.0 if d % 4 == 0 and d < 160 else 1.0) for d in range(1024)}
    rows = [{0: weights[d]} if d in weights else {1: 1.0} for d in range(n_docs)]
    postings = PostingArrays.from_documents(SparseBatch.from_dicts(rows, 2))
    queries = SparseBatch.from_dicts([{0: 1.0}], 2)
    got = search(postings, queries, 64, None, backend, algorithm="exhaustive")
    assert_same_hits(got, reference.topk(postings, queries, 64, None))
    assert list(got.ids[0, :40]) == list(range(0, 160, 4)) and list(got.ids[0, 40:]) == [1, 2, 3, 5, 6, 7, 9, 10,
        11, 13, 14, 15, 17, 18, 19, 21, 22, 23, 25, 26, 27, 29, 30, 31]
