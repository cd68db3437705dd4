"""Sharded search on a local Ray cluster: the merged top-k equals the single index's exactly (ids, scores,
order, ties by id), with deletions, quantised impacts and every algorithm; a killed shard actor restarts;
the service answers from shard actors."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from lsr.distributed.sharded import ShardedRetriever, ShardedSearcher, ShardServer, plan_shards
from lsr.errors import IndexFormatError, InvalidInputError
from lsr.index import IndexWriter, Searcher, Vocabulary, open_index
from lsr.search import SearchPipeline, SparseRetriever
from lsr.types import SparseBatch

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

DIM = 300


def _random_batch(rng: np.random.Generator, n: int, nnz: int, dim: int = DIM) -> SparseBatch:
    rows = []
    for _ in range(n):
        terms = np.sort(rng.choice(dim, size=rng.integers(1, nnz + 1), replace=False))
        # few distinct weights, so that many documents tie on score and ties must be broken by id
        rows.append((terms, rng.choice([0.5, 1.0, 1.5, 2.0], size=len(terms)).astype(np.float32)))
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum([len(t) for t, _ in rows], out=indptr[1:])
    return SparseBatch(indptr, np.concatenate([t for t, _ in rows]).astype(np.int32),
                       np.concatenate([v for _, v in rows]), dim)


def _build(path, weight_dtype: str = "float32", n: int = 700, seed: int = 0):
    """An index of many small segments with replaced and deleted documents."""
    rng = np.random.default_rng(seed)
    vocab = Vocabulary.from_tokens([f"t{i}" for i in range(DIM)], source="test")
    with IndexWriter.create(path, vocab, None, segment_docs=90, weight_dtype=weight_dtype,
                            scale=None if weight_dtype == "float32" else 50.0) as writer:
        for start in range(0, n, 60):  # a segment is cut once a batch takes it past segment_docs
            stop = min(n, start + 60)
            writer.add([f"d{i}" for i in range(start, stop)], _random_batch(rng, stop - start, 12))
        writer.commit()
        writer.add([f"d{i}" for i in range(0, n, 50)], _random_batch(rng, len(range(0, n, 50)), 12))  # replaced
        writer.delete([f"d{i}" for i in range(3, n, 41)])
    return open_index(path)


@pytest.fixture(scope="module")
def indexes(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    return {dtype: _build(root / dtype, dtype) for dtype in ("float32", "uint8")}


def test_plan_shards_is_contiguous_balanced_and_never_empty(indexes):
    manifest = indexes["float32"].manifest
    names = [s.name for s in manifest.segments]
    for shards in range(1, len(names) + 3):
        plan = plan_shards(manifest, shards)
        assert len(plan) == min(shards, len(names)) and all(plan)
        assert [name for group in plan for name in group] == names
    nnz = {s.name: s.nnz for s in manifest.segments}
    sizes = [sum(nnz[n] for n in group) for group in plan_shards(manifest, 2)]
    assert max(sizes) < 0.7 * sum(sizes)
    with pytest.raises(InvalidInputError, match="shards"):
        plan_shards(manifest, 0)


def test_shard_server_refuses_another_generation(indexes):
    index = indexes["float32"]
    gen = index.manifest.generation
    with pytest.raises(IndexFormatError, match="generation"):
        ShardServer(str(index.path), gen - 1, [index.manifest.segments[0].name])


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_sharded_search_equals_single_index(ray_local, indexes, dtype):
    index = indexes[dtype]
    assert len(index.segments) >= 6 and len(index.deleted_ids) > 0
    queries = _random_batch(np.random.default_rng(7), 25, 8)
    single = Searcher(index)
    for shards in (1, 2, 3, 5):
        sharded = ShardedSearcher(index, shards)
        assert sharded.n_shards == shards
        for k in (1, 10, 1000):
            for algorithm in ("exhaustive", "blockmax", "auto"):
                expected, got = single.search(queries, k, algorithm), sharded.search(queries, k, algorithm)
                np.testing.assert_array_equal(got.ids, expected.ids)
                np.testing.assert_array_equal(got.scores, expected.scores)
        sharded.close()
    # the approximate knobs reach the shards too: with query_cut both sides drop the same terms
    sharded = ShardedSearcher(index, 3)
    expected = single.search(queries, 10, "blockmax", alpha=0.7, query_cut=3)
    got = sharded.search(queries, 10, "blockmax", alpha=0.7, query_cut=3)
    np.testing.assert_array_equal(got.ids, expected.ids)
    # two-step search runs per segment, wherever the segment is
    expected, got = single.search(queries, 10, query_mass=0.5), sharded.search(queries, 10, query_mass=0.5)
    np.testing.assert_array_equal(got.ids, expected.ids)
    np.testing.assert_array_equal(got.scores, expected.scores)
    sharded.close()


def test_a_killed_shard_actor_restarts_and_the_search_is_answered(ray_local, indexes):
    index = indexes["float32"]
    sharded = ShardedSearcher(index, 2)
    queries = _random_batch(np.random.default_rng(3), 10, 8)
    before = sharded.search(queries, 20)
    victim = sharded.describe()[0]["pid"]
    os.kill(victim, signal.SIGKILL)
    after = sharded.search(queries, 20)
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_array_equal(after.scores, before.scores)
    assert victim not in {d["pid"] for d in sharded.describe()}
    sharded.close()


def test_sharded_retriever_in_a_pipeline_and_the_service(ray_local, tmp_path, tiny_model):
    from lsr.jobs.build import build_index
    from tests.conftest import write_corpus

    corpus = write_corpus(tmp_path / "corpus.jsonl", 300, seed=2)
    build_index(corpus, tmp_path / "seg", model=str(tiny_model), encoder_options={"max_length": 64},
                shard_size=60, segment_docs=60, show_progress=False)
    index = open_index(tmp_path / "seg")
    assert len(index.segments) == 5
    queries = ["cell protein gene", "water climate energy", "mice and humans"]
    single = SparseRetriever(index)
    sharded = ShardedRetriever(index, 3)
    assert sharded.searcher.n_shards == 3
    hits, expected = sharded.search(queries, 50), single.search(queries, 50)
    np.testing.assert_array_equal(hits.ids, expected.ids)
    np.testing.assert_array_equal(hits.scores, expected.scores)
    prf = {"retriever": "sparse", "prf": {"sparse": {"method": "rm3", "fb_docs": 5}}}
    a = SearchPipeline(index, prf, sparse=sharded).search(queries, 20)
    b = SearchPipeline(index, prf, sparse=single).search(queries, 20)
    np.testing.assert_array_equal(a.ids, b.ids)
    sharded.close()

    pytest.importorskip("flask")
    from lsr.distributed.serving import ShardedIndexHolder
    from lsr.service import create_app

    plain = create_app({"LSR_INDEX": str(tmp_path / "seg"), "TESTING": True})
    app = create_app({"LSR_INDEX": str(tmp_path / "seg"), "TESTING": True})
    app.extensions["lsr"] = ShardedIndexHolder(tmp_path / "seg", shards=2)
    body = {"queries": queries, "k": 15}
    got = app.test_client().post("/v1/search", json=body)
    want = plain.test_client().post("/v1/search", json=body)
    assert got.status_code == want.status_code == 200
    strip = [[{key: h[key] for key in ("id", "score")} for h in r["hits"]] for r in got.get_json()["results"]]
    assert strip == [[{key: h[key] for key in ("id", "score")} for h in r["hits"]] for r in want.get_json()["results"]]
    assert app.extensions["lsr"].snapshot().retriever.searcher.n_shards == 2

