"""Distributed encoding and index building on a local Ray cluster: the same index and the same encode folder
as the single-process path, every document exactly once even when a worker is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np
import orjson
import pytest

from lsr.distributed.encode import RayJobStats, ray_build_index, ray_encode_corpus
from lsr.errors import InvalidInputError
from lsr.index import Searcher, open_index
from lsr.index.check import check_index
from lsr.io.beir import iter_corpus
from lsr.io.shards import list_shards, read_shard
from lsr.jobs.build import build_index
from lsr.jobs.encode import encode_corpus
from tests.conftest import one_line, write_corpus

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]


@contextmanager
def _worker_threads():
    """Run the local side with the torch threads of one worker (2 workers share the 2-CPU cluster: one each).
    A matrix product on another thread count sums in another order, and some CPUs (seen on AMD EPYC) then
    round a few weights 1 ulp apart; equal arithmetic is what makes the two paths bit-equal."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _same_index(a, b) -> None:
    """Same documents, ids, stored vectors and tombstones, segment boundaries aside."""
    assert a.n_docs == b.n_docs
    assert a.external_ids(np.arange(a.n_docs)) == b.external_ids(np.arange(b.n_docs))
    np.testing.assert_array_equal(a.deleted_ids, b.deleted_ids)
    assert a.manifest.weights == b.manifest.weights and a.manifest.encoder == b.manifest.encoder
    for doc in range(a.n_docs):
        va, vb = a.document_vector(doc), b.document_vector(doc)
        np.testing.assert_array_equal(va.indices, vb.indices)
        np.testing.assert_array_equal(va.values, vb.values)


def _same_hits(a, b, queries) -> None:
    for k in (1, 10, 1000):
        for algorithm in ("exhaustive", "blockmax"):
            ha, hb = Searcher(a).search(queries, k, algorithm), Searcher(b).search(queries, k, algorithm)
            np.testing.assert_array_equal(ha.ids, hb.ids)
            np.testing.assert_array_equal(ha.scores, hb.scores)


@pytest.mark.parametrize("storage", [None, {"weight_dtype": "uint8", "scale": 40.0, "reorder": "bp"}])
def test_ray_build_equals_single_process(ray_local, tmp_path, tiny_model, tiny_encoder, storage):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 230, seed=3)
    with open(corpus, "ab") as fh:  # a repeated id: the later document replaces the earlier one in both paths
        fh.write(orjson.dumps({"_id": "doc7", "title": "", "text": "water climate energy"}) + b"\n")
    stats = RayJobStats()
    result = ray_build_index(corpus, tmp_path / "ray", tiny_encoder, shard_size=40, workers=2, storage=storage,
                             show_progress=False, stats=stats)
    # segments of one chunk each on both sides, since BP reordering works within a segment
    with _worker_threads():
        single = build_index(corpus, tmp_path / "single", model=str(tiny_model), shard_size=40, segment_docs=40,
                             show_progress=False, encoder_options={"max_length": 64}, storage=storage)
    assert result.n_docs == single.n_docs == 231
    a, b = open_index(tmp_path / "ray"), open_index(tmp_path / "single")
    assert len(a.segments) == 6 and stats.worker_pids  # one segment per chunk
    assert a.manifest.provenance == b.manifest.provenance
    _same_index(a, b)
    assert a.deleted_ids.tolist() == [7] and a.internal_id("doc7") == 230
    _same_hits(a, b, tiny_encoder.encode_queries(["cell protein gene", "water climate", "the of a", "mice"]))
    report = check_index(tmp_path / "ray")  # every checksum of the adopted segments, as committed
    assert report.ok, report.problems
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ray")]  # the staging folder is gone


def test_ray_encode_folder_equals_local_and_resumes(ray_local, tmp_path, tiny_encoder):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 130, seed=5)
    with _worker_threads():
        local = encode_corpus(corpus, tmp_path / "local", tiny_encoder, shard_size=20, show_progress=False)
    out = tmp_path / "ray"
    result = ray_encode_corpus(corpus, out, tiny_encoder, shard_size=20, workers=2, show_progress=False)
    assert (result.n_docs, result.n_shards) == (local.n_docs, local.n_shards) == (130, 7)
    job = orjson.loads((out / "job.json").read_bytes())
    assert job == orjson.loads((tmp_path / "local" / "job.json").read_bytes())
    expected = [read_shard(p) for p in list_shards(tmp_path / "local")]
    got = [read_shard(p) for p in list_shards(out)]
    for (ids_a, va), (ids_b, vb) in zip(got, expected, strict=True):
        assert ids_a == ids_b
        np.testing.assert_array_equal(va.indptr, vb.indptr)
        np.testing.assert_array_equal(va.values, vb.values)
    # an interrupted run: the last shards missing, one shard a killed worker wrote but nobody committed
    for path in list_shards(out)[4:]:
        path.unlink()
    (out / "shard-000004-999-deadbeef.npz.pending").write_bytes(b"partial")
    (out / "job.json").write_bytes(orjson.dumps({**job, "complete": False}))
    again = ray_encode_corpus(corpus, out, tiny_encoder, shard_size=20, workers=2, show_progress=False)
    assert again.resumed_from == 80 and again.n_docs == 130
    assert [read_shard(p)[0] for p in list_shards(out)] == [ids for ids, _ in expected]
    assert not list(out.glob("*.pending"))


def test_quantised_build_needs_a_scale_without_a_weight_bound(ray_local, tmp_path, tiny_encoder, monkeypatch):
    """Workers quantise independently: the scale must be known up front, from --scale or the encoder's bound."""
    corpus = write_corpus(tmp_path / "corpus.jsonl", 5)
    monkeypatch.setattr(tiny_encoder, "weight_bound", lambda: None)
    with pytest.raises(InvalidInputError, match="--scale"):
        ray_build_index(corpus, tmp_path / "idx", tiny_encoder, storage={"weight_dtype": "uint8"},
                        show_progress=False)
    assert not (tmp_path / "idx").exists()


def test_worker_killed_mid_encode_still_yields_a_complete_index(ray_local, tmp_path, tiny_model, tiny_encoder):
    """SIGKILL a real encoder actor process while it works through its chunks: Ray restarts it and retries
    its chunk, the killed attempt's output is never committed, and the index holds every document once."""
    corpus = write_corpus(tmp_path / "corpus.jsonl", 2400, seed=11)
    stats, box = RayJobStats(), {}

    def run():
        try:
            box["result"] = ray_build_index(corpus, tmp_path / "ray", tiny_encoder, shard_size=40, workers=1,
                                            show_progress=False, stats=stats)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    killed = None
    deadline = time.monotonic() + 180
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        for staging in tmp_path.glob(".ray.ray-*"):
            parts = sorted(staging.glob("part-*"))
            if len(parts) >= 3:  # the actor is up and busy with the chunks after these
                killed = int(parts[0].name.split("-")[2])
                os.kill(killed, signal.SIGKILL)
                break
        time.sleep(0.01)
    thread.join(240)
    assert not thread.is_alive()
    if "error" in box:
        raise box["error"]
    assert killed is not None, "the build finished before a worker could be killed"
    assert killed in stats.worker_pids and len(stats.worker_pids) >= 2  # the restarted actor did the rest
    index = open_index(tmp_path / "ray")
    ids = [d.id for d in iter_corpus(corpus)]
    assert index.n_docs == 2400 and len(index.deleted_ids) == 0
    assert index.external_ids(np.arange(index.n_docs)) == ids  # each document once, in corpus order
    build_index(corpus, tmp_path / "single", model=str(tiny_model), shard_size=40, show_progress=False,
                encoder_options={"max_length": 64})
    single = open_index(tmp_path / "single")
    _same_hits(index, single, tiny_encoder.encode_queries(["cell protein gene", "water climate energy"]))
    assert not [p for p in tmp_path.iterdir() if ".ray-" in p.name]


def test_cli_without_ray_says_how_to_install_it(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 3)
    code = ("import sys; sys.modules['ray'] = None; from lsr.cli import main; "
            f"sys.exit(main(['-q', 'index', {str(corpus)!r}, {str(tmp_path / 'idx')!r}, '--ray']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert one_line(proc.stderr) and "pip install 'lsr-search[ray]'" in proc.stderr
    assert not (tmp_path / "idx").exists()


def test_cli_encode_with_ray_then_index(ray_local, tmp_path, tiny_model, capsys):
    from lsr.cli import main

    corpus = write_corpus(tmp_path / "corpus.jsonl", 90, seed=4)
    common = ["--model", str(tiny_model), "--max-length", "64", "--shard-size", "30"]
    assert main(["-q", "encode", str(corpus), str(tmp_path / "ray"), "--ray", "--workers", "2", *common]) == 0
    assert "on Ray" in capsys.readouterr().out
    assert main(["-q", "encode", str(corpus), str(tmp_path / "local"), *common]) == 0
    assert [read_shard(p)[0] for p in list_shards(tmp_path / "ray")] == \
        [read_shard(p)[0] for p in list_shards(tmp_path / "local")]
    # an encode folder needs no model: `lsr index --ray` indexes it here, as without --ray
    assert main(["-q", "index", str(tmp_path / "ray"), str(tmp_path / "idx"), "--ray"]) == 0
    assert open_index(tmp_path / "idx").n_docs == 90
    assert main(["-q", "encode", str(corpus), str(tmp_path / "x"), "--ray", "--dense", "m", *common]) == 2  # usage
    assert one_line(capsys.readouterr().err)
