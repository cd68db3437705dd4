"""lsr.pyterrier: lsr's indexer, retriever and encoder as PyTerrier transformers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import SCIFACT, one_line, write_corpus
from tests.integrations.conftest import require_pyterrier


def test_missing_extra_is_one_line_error_naming_the_install():
    # a fresh interpreter in which pyterrier cannot be imported, whether or not it is installed here
    code = ("import sys; sys.modules['pyterrier'] = None\n"
            "try:\n    import lsr.pyterrier\nexcept ImportError as exc:\n"
            "    print(type(exc).__name__); print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    kind, message = out.split("\n", 1)
    assert kind == "MissingDependencyError"
    assert one_line(message) and "pip install 'lsr-search[pyterrier]'" in message


@pytest.fixture(scope="module")
def pt_mod():
    require_pyterrier()
    import pyterrier as pt

    return pt


@pytest.fixture(scope="module")
def tiny_docs(tmp_path_factory):
    import orjson

    path = write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", 120, seed=3)
    docs = []
    for line in path.read_bytes().splitlines():
        obj = orjson.loads(line)
        docs.append({"docno": obj["_id"], "title": obj["title"], "text": obj["text"]})
    return docs


@pytest.fixture(scope="module")
def tiny_index(pt_mod, tiny_docs, tiny_model, tmp_path_factory):
    from lsr.pyterrier import LsrIndexer

    path = tmp_path_factory.mktemp("pt") / "index"
    assert LsrIndexer(path, model=str(tiny_model), batch_size=50).index(iter(tiny_docs)) == path
    return path


TOPICS = {"q1": "cancer cells protein", "q2": "climate water river", "q3": "sleep diet vitamin heart"}


def topics_frame():
    import pandas as pd

    return pd.DataFrame({"qid": list(TOPICS), "query": list(TOPICS.values())})


def test_retriever_frame_matches_lsr_search(pt_mod, tiny_index):
    from lsr.pyterrier import LsrRetriever
    from lsr.search import SparseRetriever

    retriever = LsrRetriever(tiny_index, k=20)
    assert isinstance(retriever, pt_mod.Transformer)
    res = retriever(topics_frame())
    assert {"qid", "query", "docno", "docid", "score", "rank"} <= set(res.columns)
    hits = SparseRetriever(tiny_index).search(list(TOPICS.values()), 20)
    for i, qid in enumerate(TOPICS):
        mine = res[res.qid == qid]
        ids, scores = hits.row(i)
        assert list(mine.docno) == SparseRetriever(tiny_index).index.external_ids(ids)
        assert np.array_equal(mine.score.to_numpy(np.float32), scores)
        assert list(mine["rank"]) == list(range(pt_mod.model.FIRST_RANK, pt_mod.model.FIRST_RANK + len(ids)))
        assert (mine["query"] == TOPICS[qid]).all()


def test_composition_cutoff_and_then(pt_mod, tiny_index):
    from lsr.pyterrier import LsrRetriever

    retriever = LsrRetriever(tiny_index, k=50)
    full = retriever(topics_frame())
    cut = (retriever % 3)(topics_frame())
    assert cut.groupby("qid").size().to_dict() == {q: 3 for q in TOPICS}
    for qid in TOPICS:
        assert list(cut[cut.qid == qid].docno) == list(full[full.qid == qid].docno[:3])
    # >> into any transformer: negate the scores and re-rank, so the order reverses within the top 5
    flip = pt_mod.apply.doc_score(lambda row: -row["score"])
    reranked = (retriever % 5 >> flip)(topics_frame())
    for qid in TOPICS:
        got = reranked[reranked.qid == qid].sort_values("rank")
        assert list(got.docno) == list(full[full.qid == qid].docno[:5])[::-1]


def test_encoder_columns_feed_indexer_and_retriever(pt_mod, tiny_index, tiny_docs, tiny_model, tmp_path):
    import pandas as pd

    from lsr.index import open_index
    from lsr.pyterrier import LsrEncoder, LsrIndexer, LsrRetriever

    encoder = LsrEncoder.from_index(tiny_index)
    with_toks = encoder.query_encoder()(topics_frame())
    assert all(isinstance(v, dict) and v for v in with_toks.query_toks)
    # query vectors made upstream give the same ranking as letting the retriever encode the text
    by_text = LsrRetriever(tiny_index, k=10)(topics_frame())
    by_vectors = (encoder.query_encoder() >> LsrRetriever(tiny_index, k=10))(topics_frame())
    assert list(by_text.docno) == list(by_vectors.docno)
    assert np.allclose(by_text.score, by_vectors.score, rtol=1e-6)
    # documents encoded in the pipeline (toks, the pyt_splade column) index to the same index as texts do
    docs = encoder.doc_encoder()(pd.DataFrame(tiny_docs))
    pipeline = encoder.doc_encoder() >> LsrIndexer(tmp_path / "from_toks", model=str(tiny_model))
    pipeline.index(tiny_docs)
    from_toks = LsrRetriever(tmp_path / "from_toks", k=10)(topics_frame())
    assert list(from_toks.docno) == list(by_text.docno)
    assert np.allclose(from_toks.score, by_text.score, rtol=1e-6)
    # and with no model at all: the vocabulary is the collection's tokens, queries come as vectors. With no
    # encoder there is no proven weight bound, so the default is float32: store the text index's impacts
    weights = open_index(tiny_index).manifest.weights  # (uint8 at the model's bound) to rank alike
    assert weights["dtype"] == "uint8"
    storage = {"weight_dtype": weights["dtype"], "scale": weights["scale"]}
    LsrIndexer(tmp_path / "vocab_free", model=None, storage=storage).index(docs[["docno", "toks"]].to_dict("records"))
    assert open_index(tmp_path / "vocab_free").manifest.weights["dtype"] == "uint8"
    LsrIndexer(tmp_path / "vocab_free32", model=None).index(docs[["docno", "toks"]].to_dict("records"))
    assert open_index(tmp_path / "vocab_free32").manifest.weights["dtype"] == "float32"
    free = (encoder.query_encoder() >> LsrRetriever(tmp_path / "vocab_free", k=10))(topics_frame())
    assert list(free.docno) == list(by_text.docno)


def test_empty_and_invalid_frames(pt_mod, tiny_index):
    import pandas as pd

    from lsr.pyterrier import LsrIndexer, LsrRetriever

    retriever = LsrRetriever(tiny_index, k=5)
    empty = retriever(pd.DataFrame({"qid": [], "query": []}))
    assert len(empty) == 0 and {"docno", "score", "rank"} <= set(empty.columns)
    with pytest.raises(pt_mod.validate.InputValidationError):
        retriever(pd.DataFrame({"qid": ["1"]}))
    with pytest.raises(ValueError, match="docno"):
        LsrIndexer(tiny_index.parent / "bad", model=None).index([{"text": "x", "toks": {"a": 1.0}}])


@pytest.mark.slow
def test_pt_experiment_on_scifact_equals_lsr_eval(pt_mod, scifact_eval):
    from lsr.eval.metrics import parse_measures
    from lsr.pyterrier import LsrRetriever, beir_topics_qrels

    topics, qrels = beir_topics_qrels(SCIFACT, "test")
    assert len(topics) == scifact_eval["n_queries"]
    measures = list(scifact_eval["metrics"])  # ir_measures strings, as lsr eval takes them
    # PyTerrier reads plain strings as trec_eval names; ir_measures objects (what lsr parses) go as they are
    table = pt_mod.Experiment([LsrRetriever(scifact_eval["index"], k=1000)], topics, qrels,
                              eval_metrics=parse_measures(measures), names=["lsr"])
    row = table.set_index("name").loc["lsr"]
    print({m: (float(row[m]), scifact_eval["metrics"][m]) for m in measures})
    for m in measures:
        assert float(row[m]) == pytest.approx(scifact_eval["metrics"][m], abs=1e-9), m
    assert 0.55 < scifact_eval["metrics"]["nDCG@10"] < 0.75
