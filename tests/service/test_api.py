"""Every endpoint and its errors, through the Flask test client."""

from __future__ import annotations

import numpy as np
import pytest

from lsr.index import open_index
from lsr.search import SparseRetriever
from tests.service.conftest import API_KEY, make_app

AUTH = {"X-API-Key": API_KEY}


def error_of(response, status):
    assert response.status_code == status, response.json
    body = response.json
    assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"]
    return body["error"]


def test_search_texts_matches_the_library(client, served_index):
    r = client.post("/v1/search", json={"queries": ["cell protein", "virus disease"], "k": 5})
    assert r.status_code == 200
    body = r.json
    retriever = SparseRetriever(served_index)
    hits = retriever.search(["cell protein", "virus disease"], 5)
    for i, result in enumerate(body["results"]):
        ids, scores = hits.row(i)
        assert [h["id"] for h in result["hits"]] == retriever.index.external_ids(ids)
        np.testing.assert_allclose([h["score"] for h in result["hits"]], scores, rtol=1e-6)
        assert [h["rank"] for h in result["hits"]] == list(range(1, len(ids) + 1))
    assert {"encode_ms", "search_ms", "resolve_ms", "total_ms"} <= set(body["timings"])
    assert body["index"]["documents"] == 60
    # the named default pipeline: on an index without dense vectors, the same sparse ranking
    named = client.post("/v1/search", json={"queries": ["cell protein", "virus disease"], "k": 5,
                                            "retriever": "default"}).json
    assert [[h["id"] for h in r["hits"]] for r in named["results"]] == \
        [[h["id"] for h in r["hits"]] for r in body["results"]]


def test_two_step_search_returns_exact_scores(client):
    """query_mass < 1 may miss documents but every hit carries its exact score, and 1 is the exact search."""
    exact = client.post("/v1/search", json={"query": "cell protein gene", "k": 60}).json["results"][0]["hits"]
    score_of = {h["id"]: h["score"] for h in exact}
    approx = client.post("/v1/search", json={"query": "cell protein gene", "k": 5, "query_mass": 0.5}).json
    hits = approx["results"][0]["hits"]
    assert hits and all(h["score"] == score_of[h["id"]] for h in hits)
    same = client.post("/v1/search", json={"query": "cell protein gene", "k": 5, "query_mass": 1}).json
    assert same["results"][0]["hits"] == exact[:5]


def test_search_single_query_and_vectors(client):
    one = client.post("/v1/search", json={"query": "cell", "k": 3}).json
    encoded = client.post("/v1/encode", json={"texts": ["cell"]}).json["vectors"][0]
    by_vector = client.post("/v1/search", json={"vectors": [encoded], "k": 3}).json
    assert [h["id"] for h in by_vector["results"][0]["hits"]] == [h["id"] for h in one["results"][0]["hits"]]
    assert by_vector["results"][0]["query"] is None


def test_explanations_sum_to_the_score(client):
    body = client.post("/v1/search", json={"query": "cell protein gene", "k": 4, "explain": True}).json
    for hit in body["results"][0]["hits"]:
        contributions = [t["contribution"] for t in hit["explanation"]]
        assert contributions == sorted(contributions, reverse=True)
        total = np.float32(0)
        for c in sorted(hit["explanation"], key=lambda t: t["token"]):
            assert c["contribution"] == pytest.approx(c["query_weight"] * c["document_weight"], rel=1e-5)
        total = np.float32(sum(np.float32(c) for c in contributions))
        assert float(total) == pytest.approx(hit["score"], rel=1e-5)


def test_exact_options_agree(client):
    base = client.post("/v1/search", json={"query": "cell protein", "k": 5}).json["results"]
    for algorithm in ("exhaustive", "blockmax"):
        other = client.post("/v1/search", json={"query": "cell protein", "k": 5, "algorithm": algorithm}).json
        assert other["results"] == base


@pytest.mark.parametrize(("body", "fragment"), [
    ({"query": "cell", "k": 0}, "k must be"),
    ({"query": "cell", "k": 5000}, "k must be"),
    ({"query": "cell", "k": "ten"}, "k must be"),
    ({"query": ""}, "non-empty"),
    ({"queries": []}, "non-empty"),
    ({"queries": ["a"] * 65}, "at most 64"),
    ({"query": "x" * 10_001}, "limited to"),
    ({}, "either queries"),
    ({"query": "cell", "vectors": [{"cell": 1}]}, "either queries"),
    ({"vectors": [{"cell": -1}]}, "weight"),
    ({"vectors": [{}]}, "non-empty object"),
    ({"vectors": [{"notatoken": 1.0}]}, "not in the index vocabulary"),
    ({"query": "cell", "alpha": 0}, "alpha"),
    ({"query": "cell", "algorithm": "fast"}, "algorithm"),
    ({"query": "cell", "query_cut": 0}, "query_cut"),
    ({"query": "cell", "query_mass": 0}, "query_mass"),
    ({"query": "cell", "query_mass": 1.5}, "query_mass"),
    ({"query": "cell", "query_mass": "half"}, "query_mass"),
    ({"query": "cell", "explain": "yes"}, "explain"),
    ({"query": "cell", "hybrid": {"alpha": 0.5}}, "not available"),
])
def test_search_bad_requests(client, body, fragment):
    assert fragment in error_of(client.post("/v1/search", json=body), 400)["message"]


def test_not_json(client):
    error_of(client.post("/v1/search", data="query=cell"), 415)
    error_of(client.post("/v1/search", data="{not json", content_type="application/json"), 400)
    error_of(client.post("/v1/search", json=["a list"]), 400)


def test_too_large_and_unknown_routes(served_index):
    client = make_app(served_index, MAX_CONTENT_LENGTH=1000).test_client()
    error_of(client.post("/v1/search", json={"query": "x" * 2000}), 413)
    error_of(client.get("/v1/nothing"), 404)
    error_of(client.get("/v1/search"), 405)


def test_timeouts_are_408(served_index):
    client = make_app(served_index, LSR_REQUEST_TIMEOUT_S=0.0).test_client()
    assert "longer than" in error_of(client.post("/v1/search", json={"query": "cell"}), 408)["message"]


def test_encode(client):
    body = client.post("/v1/encode", json={"texts": ["cell protein"], "kind": "document", "top": 3}).json
    vector = body["vectors"][0]
    assert len(vector) <= 3 and list(vector.values()) == sorted(vector.values(), reverse=True)
    error_of(client.post("/v1/encode", json={"texts": ["x"], "kind": "poem"}), 400)
    error_of(client.post("/v1/encode", json={"texts": ["x"], "top": 0}), 400)


def test_get_document(client, served_index):
    body = client.get("/v1/documents/doc3").json
    index = open_index(served_index)
    expected = index.document_vector(index.internal_id("doc3"))
    assert body["id"] == "doc3" and body["nnz"] == expected.nnz
    error_of(client.get("/v1/documents/missing"), 404)


def test_writes_need_the_key(write_client):
    doc = {"documents": [{"id": "new", "text": "cell protein"}]}
    error_of(write_client.post("/v1/documents", json=doc), 401)
    error_of(write_client.post("/v1/documents", json=doc, headers={"X-API-Key": "wrong"}), 401)
    error_of(write_client.delete("/v1/documents/doc1"), 401)


def test_writes_disabled_without_a_configured_key(index_copy):
    client = make_app(index_copy, LSR_API_KEY=None).test_client()
    error_of(client.post("/v1/documents", json={"documents": [{"id": "a", "text": "b"}]}, headers=AUTH), 403)


def test_read_key_can_be_required(served_index):
    client = make_app(served_index, LSR_READ_KEY_REQUIRED=True).test_client()
    error_of(client.post("/v1/search", json={"query": "cell"}), 401)
    assert client.post("/v1/search", json={"query": "cell"}, headers=AUTH).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_add_replace_and_delete(write_client, index_copy):
    added = write_client.post("/v1/documents", headers=AUTH, json={"documents": [
        {"id": "fresh", "title": "virus", "text": "virus virus virus disease"},
        {"id": "doc0", "text": "music film history"},  # replaces an existing document
        {"id": "vec", "vector": {"sleep": 1.0, "diet": 0.5}},  # within the tiny model's weight bound
    ]})
    assert added.status_code == 201 and added.json["added"] == 3
    index = open_index(index_copy)
    assert index.n_live == 62 and index.manifest.generation == added.json["generation"]
    hits = write_client.post("/v1/search", json={"vectors": [{"sleep": 1.0}], "k": 1}).json["results"][0]["hits"]
    assert hits[0]["id"] == "vec"
    doc0 = write_client.get("/v1/documents/doc0").json["vector"]
    assert set(doc0) <= {"music", "film", "history"} | set(doc0)  # the new version is served
    deleted = write_client.delete("/v1/documents/fresh", headers=AUTH)
    assert deleted.status_code == 200 and deleted.json["generation"] > added.json["generation"]
    error_of(write_client.get("/v1/documents/fresh"), 404)
    error_of(write_client.delete("/v1/documents/fresh", headers=AUTH), 404)


@pytest.mark.parametrize(("docs", "fragment"), [
    ([], "non-empty"),
    ([{"text": "no id"}], "id"),
    ([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], "twice"),
    ([{"id": "a"}], "either text"),
    ([{"id": "a", "text": "x", "vector": {"cell": 1}}], "either text"),
    ([{"id": "a", "text": ""}], "not both empty"),
    ([{"id": "a", "vector": {"nope": 1.0}}], "not in the index vocabulary"),
    # a uint8 index (the default, at the model's bound) cannot hold it: an error, not a silently clipped weight
    ([{"id": "a", "vector": {"cell": 7.5}}], "largest this index stores"),
])
def test_add_bad_documents(write_client, index_copy, docs, fragment):
    generation = open_index(index_copy).manifest.generation
    assert fragment in error_of(write_client.post("/v1/documents", headers=AUTH, json={"documents": docs}),
                                400)["message"]
    assert open_index(index_copy).manifest.generation == generation  # nothing written


def test_ops_endpoints(client):
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz").json
    assert ready["status"] == "ready" and ready["documents"] == 60
    client.post("/v1/search", json={"query": "cell"})
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'lsr_requests_total{endpoint="/v1/search",status="200"}' in metrics
    assert "lsr_index_documents 60.0" in metrics
    spec = client.get("/openapi.json").json
    assert spec["openapi"].startswith("3.") and "/v1/search" in spec["paths"]


def test_a_new_commit_is_picked_up(write_client, index_copy):
    from lsr.index import IndexWriter
    from lsr.types import SparseBatch

    before = write_client.get("/readyz").json["generation"]
    index = open_index(index_copy)
    with IndexWriter.open(index_copy) as writer:  # another process would do the same
        writer.add(["outside"], SparseBatch.from_dicts([{index.token_ids["sleep"]: 5.0}], index.dim))
    assert write_client.get("/readyz").json["generation"] == before + 1
    assert write_client.get("/v1/documents/outside").status_code == 200
