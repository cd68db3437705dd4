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
sharded = ShardedRetriever(index, 2)
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
