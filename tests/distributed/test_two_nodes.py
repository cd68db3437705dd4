"""End to end on a two-node Ray cluster (a head and a second node started with ``ray start`` on loopback):
``lsr index --ray ADDRESS`` on SciFact with SPLADE-tiny, then sharded search with one shard per node; the
index and every ranking equal the single-process path's. The drivers are real subprocesses."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys

import numpy as np
import pytest

from lsr.cli import main
from lsr.index import open_index
from lsr.io.beir import read_qrels, read_queries, split_queries
from lsr.search import SparseRetriever
from tests.conftest import REPO, SCIFACT

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

SUBSET = 400  # a seeded sample of SciFact keeps the two builds at well under a minute on 2 cores

# the sharded-search driver: connects to the cluster, searches, saves hits and where the shards ran
SEARCH = """
import json, sys
import numpy as np, ray
from lsr.distributed.sharded import ShardedRetriever
address, index, queries, out = sys.argv[1:]
ray.init(address=address, log_to_driver=False)
texts = json.load(open(queries))
sharded = ShardedRetriever(index, 2, strict_placement=True)  # soft affinity may stack them on a busy box
shards = sharded.searcher.describe()
arrays = {}
for k in (10, 100):
    hits = sharded.search(texts, k)
    arrays[f"ids{k}"], arrays[f"scores{k}"] = hits.ids, hits.scores
np.savez(out, nodes=np.array([s["node"] for s in shards]), alive=len([n for n in ray.nodes() if n["Alive"]]),
         **arrays)
sharded.close()
"""


def test_scifact_on_two_nodes_equals_single_process(ray_two_nodes, tmp_path, splade_tiny):
    address, env = ray_two_nodes
    with gzip.open(SCIFACT / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        lines = fh.readlines()
    keep = sorted(random.Random(8).sample(range(len(lines)), SUBSET))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(lines[i] for i in keep), encoding="utf-8")
    common = ["--model", splade_tiny, "--shard-size", "100"]

    # two encoder actors of one CPU each on nodes of one CPU each: one actor per node
    build = subprocess.run([sys.executable, "-m", "lsr.cli", "-q", "index", str(corpus), str(tmp_path / "ray"),
                            "--ray", address, "--workers", "2", *common], env=env, cwd=REPO, capture_output=True,
                           text=True, timeout=400)
    assert build.returncode == 0, build.stderr[-3000:]
    # the single-process index has one segment, the distributed one a segment per chunk: same ids and scores
    assert main(["-q", "index", str(corpus), str(tmp_path / "single"), *common]) == 0
    distributed, single = open_index(tmp_path / "ray"), open_index(tmp_path / "single")
    assert distributed.n_docs == single.n_docs == SUBSET and len(distributed.segments) == 4
    ids = np.arange(SUBSET)
    assert distributed.external_ids(ids) == single.external_ids(ids)

    queries = split_queries(read_queries(SCIFACT / "queries.jsonl.gz"), read_qrels(SCIFACT, "test"))
    texts = list(queries.values())
    assert len(texts) == 300
    (tmp_path / "queries.json").write_text(json.dumps(texts))
    search = subprocess.run([sys.executable, "-c", SEARCH, address, str(tmp_path / "ray"),
                             str(tmp_path / "queries.json"), str(tmp_path / "hits.npz")],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert search.returncode == 0, search.stderr[-3000:]
    got = np.load(tmp_path / "hits.npz")
    assert int(got["alive"]) == 2 and len(set(got["nodes"].tolist())) == 2  # shard i on node i mod 2
    plain = SparseRetriever(single)
    for k in (10, 100):
        expected = plain.search(texts, k)
        np.testing.assert_array_equal(got[f"ids{k}"], expected.ids)
        np.testing.assert_array_equal(got[f"scores{k}"], expected.scores)


def test_lsr_serve_with_shards_on_the_cluster_answers_as_the_local_index(ray_two_nodes, tmp_path, tiny_model):
    """`lsr serve INDEX --shards 2 --ray ADDRESS` (gunicorn, one worker) returns the single index's hits."""
    import os
    import signal
    import time

    from tests.conftest import write_corpus
    from tests.service.test_live import call, free_port

    address, env = ray_two_nodes
    corpus = write_corpus(tmp_path / "corpus.jsonl", 240, seed=5)
    assert main(["-q", "index", str(corpus), str(tmp_path / "index"), "--model", str(tiny_model),
                 "--shard-size", "60", "--max-length", "64"]) == 0
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "lsr.cli", "-q", "serve", str(tmp_path / "index"), "--port",
                               str(port), "--workers", "1", "--shards", "2", "--ray", address],
                              env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if call(port, "GET", "/readyz", timeout=2)[0] == 200:
                    break
            except OSError:
                time.sleep(0.5)
        assert server.poll() is None, "lsr serve --shards exited"
        queries = ["cell protein gene", "water climate energy", "mice and humans"]
        status, body = call(port, "POST", "/v1/search", {"queries": queries, "k": 20}, timeout=60)
        assert status == 200, body
        expected = SparseRetriever(tmp_path / "index").search(queries, 20)
        index = open_index(tmp_path / "index")
        for row, result in enumerate(body["results"]):
            ids = [h["id"] for h in result["hits"]]
            assert ids == index.external_ids(expected.ids[row][expected.ids[row] >= 0])
            np.testing.assert_allclose([h["score"] for h in result["hits"]],
                                       expected.scores[row][expected.ids[row] >= 0], rtol=1e-6)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_lsr_serve_shards_without_a_cluster_is_a_one_line_error(tmp_path, tiny_model, capsys, monkeypatch):
    from tests.conftest import one_line, write_corpus

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    corpus = write_corpus(tmp_path / "corpus.jsonl", 20)
    assert main(["-q", "index", str(corpus), str(tmp_path / "index"), "--model", str(tiny_model)]) == 0
    capsys.readouterr()
    assert main(["-q", "serve", str(tmp_path / "index"), "--shards", "2"]) == 1
    err = capsys.readouterr().err
    assert "--ray ADDRESS" in err and one_line(err)
