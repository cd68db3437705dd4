"""Merging in the service: single-document writes are merged in the background, nothing is lost or
duplicated, and a concurrent writer is never blocked for longer than a merge's commit."""

from __future__ import annotations

import threading

import numpy as np

from lsr.index import Searcher, open_index
from lsr.types import SparseBatch
from tests.service.conftest import API_KEY, make_app

AUTH = {"X-API-Key": API_KEY}


def test_single_document_writes_are_merged_without_loss(index_copy):
    app = make_app(index_copy, LSR_MERGE=True, LSR_MERGE_IDLE_S=0.1)
    client = app.test_client()
    merger = app.extensions["lsr_merger"]
    expected = {f"doc{i}" for i in range(60)}
    tokens = ["cell", "protein", "gene", "virus", "sleep", "diet", "vitamin", "heart"]
    rng = np.random.default_rng(0)

    def write(first: int, count: int) -> None:
        for i in range(first, first + count):
            # dyadic, and within the tiny model's weight bound (~1.03) that the default uint8 index holds
            vector = {tok: float(rng.integers(1, 8)) / 8 for tok in rng.choice(tokens, 3, replace=False)}
            assert client.post("/v1/documents", headers=AUTH,
                               json={"documents": [{"id": f"api{i}", "vector": vector}]}).status_code == 201

    writers = [threading.Thread(target=write, args=(n * 40, 40)) for n in range(2)]  # two at once
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    expected |= {f"api{i}" for i in range(80)}
    for victim in ("doc3", "api7", "api41"):
        assert client.delete(f"/v1/documents/{victim}", headers=AUTH).status_code == 200
        expected.discard(victim)
    # one write after the deletes: however far the merger got meanwhile, its settle then merges a run that
    # holds every tombstone (a lone segment with a few deletes is left as it is, by design)
    write(80, 1)
    expected.add("api80")
    assert merger.wait_idle(60), "the background merger did not settle"
    index = open_index(index_copy)
    assert merger.merges > 0 and len(index.segments) == 1 and len(index.deleted_ids) == 0
    # the merged-away segments' files are gone too
    assert sorted(p.name for p in index_copy.iterdir() if p.name.startswith("seg-")) == [index.segments[0].info.name]
    ids = index.external_ids(np.arange(index.n_docs))
    assert sorted(ids) == sorted(expected)  # every document once: none lost, none duplicated
    for ext in ("api0", "api79", "doc59"):
        assert client.get(f"/v1/documents/{ext}").status_code == 200
    assert client.get("/v1/documents/api7").status_code == 404
    # the served snapshot is the merged one and searches as the index on disk does
    snap = app.extensions["lsr"].refresh()
    assert snap.generation == index.manifest.generation
    query = SparseBatch.from_dicts([{index.token_ids["cell"]: 1.0, index.token_ids["sleep"]: 0.5}], index.dim)
    hits = Searcher(index).search(query, 20)
    body = client.post("/v1/search", json={"vectors": [{"cell": 1.0, "sleep": 0.5}], "k": 20}).json
    assert [h["id"] for h in body["results"][0]["hits"]] == index.external_ids(hits.row(0)[0])


def test_merging_can_be_turned_off(index_copy):
    app = make_app(index_copy, LSR_MERGE=False)
    assert "lsr_merger" not in app.extensions
    client = app.test_client()
    for i in range(3):
        client.post("/v1/documents", headers=AUTH, json={"documents": [{"id": f"x{i}", "vector": {"cell": 1.0}}]})
    assert len(open_index(index_copy).segments) == 4
