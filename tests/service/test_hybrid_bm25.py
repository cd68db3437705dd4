"""The default pipeline's index kind (splade+bm25) through the REST API and the search page: search with
explanations over both parts, documents added by the API get BM25 vectors from the fitted statistics."""

from __future__ import annotations

import pytest

from lsr.cli import main
from lsr.index import open_index
from lsr.search import SparseRetriever
from tests.conftest import write_corpus
from tests.service.conftest import API_KEY, make_app

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture()
def hybrid_index(tmp_path, tiny_model):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 40)
    assert main(["-q", "index", str(corpus), str(tmp_path / "index"), "--model", str(tiny_model),
                 "--encoder", "splade+bm25"]) == 0
    return tmp_path / "index"


def test_search_explains_both_parts_and_adds_get_bm25_vectors(hybrid_index):
    client = make_app(hybrid_index).test_client()
    body = client.post("/v1/search", json={"query": "virus disease", "k": 3, "explain": True}).json
    hits = body["results"][0]["hits"]
    tokens = {t["token"] for hit in hits for t in hit["explanation"]}
    assert any(t.startswith("bm25:") for t in tokens) and any(not t.startswith("bm25:") for t in tokens)
    for hit in hits:
        assert sum(t["contribution"] for t in hit["explanation"]) == pytest.approx(hit["score"], rel=1e-5)

    added = client.post("/v1/documents", headers=AUTH, json={"documents": [
        {"id": "fresh", "title": "sleep", "text": "sleep sleep sleep diet vitamin"}]})
    assert added.status_code == 201
    index = open_index(hybrid_index)
    vector = index.document_vector(index.internal_id("fresh"))
    terms = {index.vocabulary[int(t)] for t in vector.indices}
    assert {"bm25:sleep", "bm25:diet", "bm25:vitamin"} <= terms
    bm25_only = SparseRetriever(index, query_weights=[0, 1]).search(["sleep sleep sleep diet vitamin"], 1)
    assert index.external_ids(bm25_only.ids[0]) == ["fresh"]

    page = client.get("/?q=virus+disease")
    assert page.status_code == 200 and b"bm25:" in page.data
