"""The dense side (faiss over per-segment vectors), PRF and the SearchPipeline, on tiny in-process models."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsr.cli import main
from lsr.dense import DenseSearcher, faiss_builder
from lsr.errors import InvalidInputError, InvalidQueryError
from lsr.index import IndexWriter, Vocabulary, open_index
from lsr.search import DensePRF, HybridRetriever, SearchPipeline, SparsePRF, SparseRetriever
from lsr.search.dense import DenseRetriever
from lsr.types import SparseBatch
from tests.conftest import build_hybrid_index

DIM, DENSE = 10, 6
VOCAB = Vocabulary.from_tokens([f"t{i}" for i in range(DIM)], source="dense-tests")
SPEC = {"model": "none", "dim": DENSE, "factory": "Flat"}


def brute_force(vectors: np.ndarray, live: np.ndarray, queries: np.ndarray, k: int):
    scores = queries @ vectors.T
    out = []
    for row in scores:
        ids = np.flatnonzero(live)
        order = np.lexsort((ids, -row[ids]))[:k]
        out.append((ids[order].tolist(), row[ids][order]))
    return out


@settings(max_examples=25)
@given(seed=st.integers(0, 2**31), sizes=st.lists(st.integers(1, 30), min_size=1, max_size=3),
       k=st.integers(1, 20), n_deleted=st.integers(0, 10), reorder=st.booleans())
def test_dense_search_equals_brute_force(tmp_path_factory, seed, sizes, k, n_deleted, reorder):
    rng = np.random.default_rng(seed)
    path = tmp_path_factory.mktemp("dense") / "idx"
    all_vectors, ids = [], []
    with IndexWriter.create(path, VOCAB, None, segment_docs=20, dense=SPEC, dense_builder=faiss_builder(),
                            reorder="bp" if reorder else None) as writer:
        for size in sizes:
            batch_ids = [f"d{len(ids) + i}" for i in range(size)]
            dense = rng.integers(-8, 9, (size, DENSE)).astype(np.float32) / 8
            sparse = SparseBatch.from_dicts([{int(rng.integers(DIM)): 1.0} for _ in range(size)], DIM)
            writer.add(batch_ids, sparse, dense)
            all_vectors.append(dense)
            ids += batch_ids
    victims = [ids[i] for i in rng.choice(len(ids), min(n_deleted, len(ids)), replace=False)]
    with IndexWriter.open(path, dense_builder=faiss_builder()) as writer:
        writer.delete(victims)
    index = open_index(path)
    vectors = np.concatenate(all_vectors)
    queries = rng.integers(-8, 9, (3, DENSE)).astype(np.float32) / 8
    hits = DenseSearcher(index).search(queries, k).validate()
    live = np.array([ext not in victims for ext in ids])
    for q, (want_ids, want_scores) in enumerate(brute_force(vectors, live, queries, k)):
        got_ids, got_scores = hits.row(q)
        np.testing.assert_allclose(got_scores, want_scores, rtol=1e-6, atol=1e-6)
        got_ext = index.external_ids(got_ids)
        want_ext = [ids[i] for i in want_ids]
        kth = want_scores[-1] if len(want_scores) else None
        assert {e for e, s in zip(got_ext, got_scores, strict=True) if s > kth} == \
               {e for e, s in zip(want_ext, want_scores, strict=True) if s > kth}
    # every document's stored dense vector follows it (through reordering)
    for ext in ids[:: 7]:
        internal = index.internal_id(ext)
        if internal is not None:
            np.testing.assert_array_equal(DenseSearcher(index).vectors(np.array([internal]))[0],
                                          vectors[ids.index(ext)])


def test_dense_writer_errors(tmp_path):
    sparse = SparseBatch.from_dicts([{0: 1.0}], DIM)
    with pytest.raises(InvalidInputError, match="dense part"):
        with IndexWriter.create(tmp_path / "a", VOCAB, None, dense=SPEC, dense_builder=faiss_builder()) as writer:
            writer.add(["x"], sparse)
    with pytest.raises(InvalidInputError, match="shape"):
        with IndexWriter.create(tmp_path / "b", VOCAB, None, dense=SPEC, dense_builder=faiss_builder()) as writer:
            writer.add(["x"], sparse, np.zeros((1, DENSE + 1), np.float32))
    with pytest.raises(InvalidInputError, match="no dense part"):
        with IndexWriter.create(tmp_path / "c", VOCAB, None) as writer:
            writer.add(["x"], sparse, np.zeros((1, DENSE), np.float32))
    with pytest.raises(InvalidInputError, match="dense_builder"):
        IndexWriter.create(tmp_path / "d", VOCAB, None, dense=SPEC)
    with pytest.raises(InvalidQueryError, match="factory"):
        faiss_builder("NotAnIndex")(np.zeros((2, DENSE), np.float32))


def test_hnsw_factory_is_close_to_exact(tmp_path):
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(300, DENSE)).astype(np.float32)
    sparse = SparseBatch.from_dicts([{int(i % DIM): 1.0} for i in range(300)], DIM)
    for factory in ("Flat", "HNSW16"):
        with IndexWriter.create(tmp_path / factory, VOCAB, None, dense={**SPEC, "factory": factory},
                                dense_builder=faiss_builder(factory)) as writer:
            writer.add([f"d{i}" for i in range(300)], sparse, dense)
    queries = rng.normal(size=(20, DENSE)).astype(np.float32)
    exact = DenseSearcher(open_index(tmp_path / "Flat")).search(queries, 10)
    approx = DenseSearcher(open_index(tmp_path / "HNSW16")).search(queries, 10)
    overlap = np.mean([len(set(exact.row(i)[0]) & set(approx.row(i)[0])) / 10 for i in range(20)])
    assert overlap >= 0.9


# ----------------------------------------------------------------------------- real tiny models end to end
@pytest.fixture(scope="module")
def hybrid_index(tmp_path_factory, tiny_model, tiny_dense_model):
    return build_hybrid_index(tmp_path_factory.mktemp("hybrid"), 80, tiny_model, tiny_dense_model)


def test_sparse_prf_rocchio_is_the_formula(hybrid_index):
    base = SparseRetriever(hybrid_index)
    prf = SparsePRF(base, method="rocchio", fb_docs=3, fb_terms=4, alpha=1.0, beta=0.5)
    q = base.encode(["cell protein virus"])
    fb = base.search(["cell protein virus"], 3)
    index = base.index
    qv = np.zeros(index.dim)
    qv[q.row(0)[0]] = q.row(0)[1]
    docs = np.zeros((3, index.dim))
    for j, d in enumerate(fb.row(0)[0]):
        t, w = index.document_vector(int(d)).row(0)
        docs[j, t] = w
    feedback = 0.5 * (docs / np.linalg.norm(docs, axis=1, keepdims=True)).mean(0)
    expected = qv / np.linalg.norm(qv)
    top = np.argsort(-feedback, kind="stable")[:4]
    expected[top] += feedback[top]
    got = prf.expand(["cell protein virus"])
    np.testing.assert_allclose(got.to_scipy().toarray()[0], expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("method", ["average", "rocchio"])
def test_dense_prf_is_the_formula(hybrid_index, method):
    base = DenseRetriever(hybrid_index)
    prf = DensePRF(base, method=method, depth=3, alpha=0.4, beta=0.6)
    q = base.encode(["sleep diet"])[0]
    ids, _ = base.search(["sleep diet"], 3).row(0)
    docs = base.document_vectors(ids)
    expected = (q + docs.sum(0)) / 4 if method == "average" else 0.4 * q + 0.6 * docs.mean(0)
    np.testing.assert_allclose(prf.expand(["sleep diet"])[0], expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("config", [
    {"retriever": "sparse"}, {"retriever": "dense"},
    {"retriever": "hybrid", "fusion": {"method": "convex", "alpha": 0.3}},
    {"retriever": "hybrid", "fusion": {"method": "pyserini", "alpha": 0.1, "normalization": "midrange"}},
    {"retriever": "hybrid", "fusion": {"method": "rrf"}},
    {"retriever": "sparse", "prf": {"sparse": {"method": "rm3"}}}, {"retriever": "dense", "prf": {}},
    {"retriever": "hybrid", "prf": {"placement": "after"}}, {"retriever": "hybrid", "prf": {"placement": "both"}},
    {"retriever": "hybrid", "prf": {"placement": "before", "side": "dense"}},
])
def test_every_pipeline_runs(hybrid_index, config):
    pipeline = SearchPipeline(hybrid_index, config)
    hits = pipeline.search(["cell protein", "music film history"], 5).validate()
    assert hits.n == 2 and (hits.ids[:, 0] >= 0).all() and "total" in pipeline.timings


def test_pipeline_shapes(hybrid_index):
    both = SearchPipeline(hybrid_index, {"retriever": "hybrid", "prf": {"placement": "both"}}).retriever
    assert isinstance(both, HybridRetriever) and isinstance(both.sparse, SparsePRF)
    assert isinstance(both.sparse.feedback, HybridRetriever)  # fused feedback
    after = SearchPipeline(hybrid_index, {"retriever": "hybrid", "prf": {"placement": "after"}}).retriever
    assert after.sparse.feedback is after.sparse.base  # each side's own feedback
    before = SearchPipeline(hybrid_index, {"retriever": "hybrid", "prf": {"placement": "before"}}).retriever
    assert isinstance(before, SparsePRF) and isinstance(before.feedback, HybridRetriever)


@pytest.mark.parametrize(("config", "fragment"), [
    ({"retriever": "both"}, "retriever must be"), ({"retriever": "sparse", "extra": 1}, "unknown pipeline"),
    ({"retriever": "hybrid", "fusion": {"method": "max"}}, "fusion method"),
    ({"retriever": "hybrid", "fusion": {"alpha": "high"}}, "alpha"),
    ({"retriever": "hybrid", "fusion": {"colour": 1}}, "unknown fusion"),
    ({"retriever": "hybrid", "prf": {"placement": "during"}}, "placement"),
    ({"retriever": "sparse", "prf": {"sparse": {"fb_docs": 0}}}, "fb_docs"),
    ({"retriever": "dense", "prf": {"dense": {"method": "max"}}}, "dense PRF"),
    ({"retriever": "hybrid", "prf": "yes"}, "prf must be"),
])
def test_bad_pipelines(hybrid_index, config, fragment):
    with pytest.raises(InvalidQueryError, match=fragment):
        SearchPipeline(hybrid_index, config)


def test_cli_search_and_eval_with_a_pipeline(hybrid_index, tmp_path, capsys):
    assert main(["-q", "search", str(hybrid_index), "cell protein", "-k", "3", "--retriever", "hybrid",
                 "--prf", "after", "--json"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert len(out["results"][0]["hits"]) == 3
    (tmp_path / "q.tsv").write_text("q1\tcell protein\nq2\tvirus disease\n")
    (tmp_path / "qrels.tsv").write_text("q1 0 doc1 1\nq2 0 doc2 1\n")
    assert main(["-q", "eval", "--index", str(hybrid_index), "--queries", str(tmp_path / "q.tsv"), "--qrels",
                 str(tmp_path / "qrels.tsv"), "--out", str(tmp_path / "ev"), "--fusion", "rrf", "-k", "20"]) == 0
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["pipeline"] == {"retriever": "hybrid", "fusion": {"method": "rrf"}}
    assert "fusion_ms_per_query" in report["timings"]


def test_service_hybrid_search(hybrid_index):
    from tests.service.conftest import make_app

    client = make_app(hybrid_index).test_client()
    r = client.post("/v1/search", json={"query": "cell protein", "k": 4, "hybrid": {"method": "rrf"},
                                        "prf": {"placement": "after"}})
    assert r.status_code == 200, r.json
    assert len(r.json["results"][0]["hits"]) == 4 and "fusion_ms" in r.json["timings"]
    bad = client.post("/v1/search", json={"query": "cell", "hybrid": {"alpha": "x"}})
    assert bad.status_code == 400 and "alpha" in bad.json["error"]["message"]


def test_named_default_pipeline(hybrid_index, tmp_path, tiny_model):
    """"retriever": "default" is the tuned convex fusion where the index has dense vectors (fusion options may
    override it), and the sparse retriever alone where it has none."""
    from lsr.search.pipeline import DEFAULT_FUSION
    from tests.conftest import write_corpus

    queries = ["cell protein gene", "virus disease"]
    default = SearchPipeline(hybrid_index, {"retriever": "default"})
    tuned = SearchPipeline(hybrid_index, {"retriever": "hybrid", "fusion": DEFAULT_FUSION})
    assert default.kind == "hybrid"
    np.testing.assert_array_equal(default.search(queries, 10).ids, tuned.search(queries, 10).ids)
    rrf = SearchPipeline(hybrid_index, {"retriever": "default", "fusion": {"method": "rrf"}})
    assert rrf.config["fusion"]["method"] == "rrf"

    corpus = write_corpus(tmp_path / "corpus.jsonl", 30)
    assert main(["-q", "index", str(corpus), str(tmp_path / "sparse"), "--model", str(tiny_model)]) == 0
    sparse_only = SearchPipeline(tmp_path / "sparse", {"retriever": "default"})
    assert sparse_only.kind == "sparse"
    np.testing.assert_array_equal(sparse_only.search(queries, 10).ids,
                                  SparseRetriever(tmp_path / "sparse").search(queries, 10).ids)
