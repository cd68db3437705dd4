"""BM25 as sparse vectors and the splade+bm25 hybrid encoder: the analyzer's Lucene behaviours, document
weights against a plain re-statement of Lucene's BM25 formula, the joint vectors against their parts, and
the CLI end to end (fit on the corpus, search, BM25 alone through query weights, bad input)."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lsr.cli import main
from lsr.encoders import load_encoder
from lsr.encoders.bm25 import Bm25Encoder, analyze, fit_bm25, lucene_length
from lsr.errors import InvalidInputError, ModelNotFoundError
from lsr.search import SearchPipeline, SparseRetriever
from lsr.types import SparseBatch
from tests.conftest import SCIFACT, WORDS, one_line, write_corpus


@pytest.mark.parametrize(("text", "terms"), [
    ("The cells were running", ["cell", "were", "run"]),  # stop words out, Porter stems
    ("U.S. policy, e.g. taxes", ["u.", "polici", "e.g", "tax"]),
    ("John's dog's toys", ["john", "dog", "toi"]),  # possessive 's removed before stemming
    ("don't stop", ["don't", "stop"]),
    ("3.5mg of 1,000 COVID-19 doses", ["3.5mg", "1,000", "covid", "19", "dose"]),
    ("foo_bar a:b", ["foo_bar", "a:b"]),
    ("", []),
    ("the and of", []),
])
def test_analyzer_follows_lucene(text, terms):
    # "U.S." -> "u.s" in Lucene; Porter then strips the trailing "s" as it would in Lucene's PorterStemFilter
    assert analyze(text) == terms


def _lucene_length_reference(length: int) -> int:
    """SmallFloat.intToByte4 then byte4ToInt, restated from Lucene's definition: lengths below 24 are stored
    exactly, larger ones keep their 4 leading significant bits (of length - 24)."""
    if length < 24:
        return length
    rest = length - 24
    shift = max(rest.bit_length() - 4, 0)
    return 24 + ((rest >> shift) << shift)


@given(st.integers(0, 10**7))
def test_lucene_length(length):
    assert lucene_length(length) == _lucene_length_reference(length)
    assert lucene_length(length) <= length


def test_lucene_length_known_values():
    assert [lucene_length(n) for n in (0, 23, 24, 39, 40, 41, 100, 1000)] == [0, 23, 24, 39, 40, 40, 96, 984]


corpora = st.lists(st.lists(st.sampled_from(WORDS[20:60]), min_size=0, max_size=40).map(" ".join),
                   min_size=1, max_size=12)


@given(corpora, st.floats(0.1, 2.0), st.floats(0.0, 1.0))
def test_document_weights_are_lucene_bm25(tmp_path_factory, texts, k1, b):
    if not any(analyze(t) for t in texts):
        with pytest.raises(InvalidInputError):
            fit_bm25(texts)
        return
    encoder = Bm25Encoder.fit(texts, tmp_path_factory.mktemp("bm25"), k1=k1, b=b)
    docs = [analyze(t) for t in texts]
    n, avg = len(docs), sum(map(len, docs)) / len(docs)
    df = Counter(term for d in docs for term in set(d))
    vectors = encoder.encode_documents(texts)
    assert np.all(vectors.values <= encoder.weight_bound())  # what an index's uint8 scale relies on
    vocab = encoder.vocabulary.tokens
    for row, terms in enumerate(docs):
        ids, weights = vectors.row(row)
        expected = {}
        for term, tf in Counter(terms).items():
            idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
            expected[term] = idf * tf / (tf + k1 * (1 - b + b * lucene_length(len(terms)) / avg))
        assert {vocab[i] for i in ids} == set(expected)
        for i, w in zip(ids, weights, strict=True):
            assert w == pytest.approx(expected[vocab[i]], rel=1e-5)
    queries = encoder.encode_queries(texts)
    for row, terms in enumerate(docs):  # a query term weighs its count
        ids, weights = queries.row(row)
        assert dict(zip((vocab[i] for i in ids), weights.tolist(), strict=True)) == dict(Counter(terms))


def test_model_folder_round_trip_and_errors(tmp_path):
    encoder = Bm25Encoder.fit(["cells and genes", "a gene"], tmp_path / "m", k1=1.2, b=0.75)
    again = load_encoder(encoder.config())
    assert (again.k1, again.b, again.vocabulary.sha256) == (1.2, 0.75, encoder.vocabulary.sha256)
    unseen = again.encode_documents(["cells and unseen words"])
    assert [again.vocabulary.tokens[i] for i in unseen.indices] == ["cell"]  # terms outside the fit dropped
    with pytest.raises(ModelNotFoundError):
        Bm25Encoder(tmp_path / "nothing")
    with pytest.raises(InvalidInputError):
        Bm25Encoder(tmp_path / "m", b=2.0)
    with pytest.raises(InvalidInputError):
        load_encoder({"type": "bm25"})
    with pytest.raises(InvalidInputError):
        fit_bm25([])


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("hybrid")
    corpus = write_corpus(root / "corpus.jsonl", 60)
    assert main(["-q", "index", str(corpus), str(root / "idx"), "--model", str(tiny_model),
                 "--encoder", "splade+bm25"]) == 0
    assert main(["-q", "index", str(corpus), str(root / "bm25"), "--encoder", "bm25"]) == 0
    return root


def test_joint_vectors_are_the_parts_side_by_side(hybrid):
    retriever = SparseRetriever(hybrid / "idx")
    encoder = retriever.encoder
    assert encoder.kind == "splade+bm25" and encoder.query_weights == [1.0, 3.0]
    splade, bm25 = encoder.parts
    assert encoder.vocabulary.tokens[splade.dim:] == tuple(f"bm25:{t}" for t in bm25.vocabulary.tokens)
    texts = ["cell protein gene", "virus", "the of"]
    docs, queries = encoder.encode_documents(texts), encoder.encode_queries(texts)
    for joint, first, second in ((docs, splade.encode_documents(texts), bm25.encode_documents(texts)),
                                 (queries, splade.encode_queries(texts), 3 * bm25.encode_queries(texts).to_scipy())):
        joint.validate()
        matrix = joint.to_scipy().toarray()
        np.testing.assert_array_equal(matrix[:, :splade.dim], first.to_scipy().toarray())
        second = second if not isinstance(second, SparseBatch) else second.to_scipy()
        np.testing.assert_array_equal(matrix[:, splade.dim:], second.toarray())


@given(st.lists(st.integers(0, 4), min_size=1, max_size=6), st.integers(0, 2**31 - 1),
       st.one_of(st.just(0.0), st.floats(1e-6, 4.0)), st.one_of(st.just(0.0), st.floats(1e-6, 4.0)))
def test_join_matches_concatenation(hybrid, row_sizes, seed, w1, w2):
    """Property: join(parts) is each part's rows shifted into its range and scaled, parts of weight 0 left
    out, against a dense-matrix reference."""
    encoder = SparseRetriever(hybrid / "idx").encoder
    rng = np.random.default_rng(seed)
    parts = []
    for dim in (p.dim for p in encoder.parts):
        rows = [dict(zip(rng.choice(dim, size=k, replace=False).tolist(), rng.uniform(0.1, 2, k).tolist(),
                         strict=True)) for k in rng.permutation(row_sizes)]
        parts.append(SparseBatch.from_dicts(rows, dim))
    if w1 == 0 and w2 == 0:
        return
    joint = encoder.join(parts, len(row_sizes), [w1, w2]).validate()
    expected = np.hstack([np.float32(w) * p.to_scipy().toarray() for p, w in zip(parts, (w1, w2), strict=True)])
    np.testing.assert_array_equal(joint.to_scipy().toarray(), expected)


def test_fused_score_is_the_weighted_sum_and_weights_select_a_part(hybrid):
    queries = ["cell protein gene", "virus disease risk", "sleep diet vitamin water"]
    fused = SparseRetriever(hybrid / "idx").search(queries, 60)
    alone = {w: SparseRetriever(hybrid / "idx", query_weights=w).search(queries, 60)
             for w in ((1.0, 0.0), (0.0, 1.0))}
    for i in range(len(queries)):
        score = {}
        for weight, hits in ((1.0, alone[(1.0, 0.0)]), (3.0, alone[(0.0, 1.0)])):
            for doc, s in zip(*hits.row(i), strict=True):
                score[int(doc)] = score.get(int(doc), 0.0) + weight * float(s)
        ids, scores = fused.row(i)
        assert {int(d): float(s) for d, s in zip(ids, scores, strict=True)} == pytest.approx(score, rel=1e-5)
    # BM25 through the hybrid index ranks as the BM25-only index built from the same corpus
    pure = SparseRetriever(hybrid / "bm25").search(queries, 60)
    np.testing.assert_array_equal(pure.ids, alone[(0.0, 1.0)].ids)
    np.testing.assert_allclose(pure.scores, alone[(0.0, 1.0)].scores, rtol=1e-6)
    pipeline = SearchPipeline(hybrid / "idx", {"query_weights": [0, 1]})
    np.testing.assert_array_equal(pipeline.search(queries, 60).ids, pure.ids)


def test_cli_search_with_query_weights_and_bad_input(hybrid, capsys):
    assert main(["-q", "search", str(hybrid / "idx"), "cell protein", "--json", "--query-weights", "0,1"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["hits"]
    for argv, needle in (
        (["search", str(hybrid / "idx"), "cell", "--query-weights", "a,b"], "query-weights"),
        (["search", str(hybrid / "idx"), "cell", "--query-weights", "0,0"], "query_weights"),
        (["search", str(hybrid / "idx"), "cell", "--query-weights", "1,2,3"], "query_weights"),
        (["search", str(hybrid / "bm25"), "cell", "--query-weights", "1,1"], "hybrid"),
        (["index", str(hybrid / "corpus.jsonl"), str(hybrid / "x"), "--encoder", "splade+nope"], "nope"),
        (["index", str(hybrid / "corpus.jsonl"), str(hybrid / "y"), "--encoder", "bm25", "--max-length", "9"],
         "max_length"),
    ):
        assert main(["-q", *argv]) != 0
        err = capsys.readouterr().err
        assert one_line(err) and needle in err, (argv, err)


def test_page_tokenizer_marks_both_parts(hybrid):
    encoder = SparseRetriever(hybrid / "idx").encoder
    tokens = encoder.tokenizer.tokenize("cells protein")
    assert "bm25:cell" in tokens and "protein" in tokens


@pytest.mark.slow
def test_bm25_matches_pyserini_on_scifact(tmp_path, capsys):
    """lsr's BM25 vectors against Pyserini's Lucene BM25 (k1 0.9, b 0.4, title + text): nDCG@10 0.6789 and
    R@100 0.9253 on the SciFact test split (Pyserini 1.6.0, `lsr eval scifact --baseline bm25`)."""
    assert main(["-q", "eval", str(SCIFACT), "--encoder", "bm25", "--out", str(tmp_path / "run")]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert abs(report["metrics"]["nDCG@10"] - 0.6789) <= 0.005
    assert abs(report["metrics"]["R@100"] - 0.9253) <= 0.01


def test_analyzer_is_thread_safe():
    """Threaded service workers share one encoder: each thread stems with its own PyStemmer object."""
    from concurrent.futures import ThreadPoolExecutor

    texts = [" ".join(WORDS[i % 40:i % 40 + 12]) + " generalization running" for i in range(400)]
    expected = [analyze(t) for t in texts]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(analyze, texts)) == expected
