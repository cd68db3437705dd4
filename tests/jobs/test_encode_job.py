"""``lsr encode``: shards, resumption after kill -9 of a real process, and refusal to mix jobs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import orjson
import pytest

from lsr.errors import InvalidInputError, JobStateError
from lsr.io.beir import iter_corpus
from lsr.io.shards import list_shards, read_shard
from lsr.jobs.encode import encode_corpus
from lsr.types import SparseBatch
from tests.conftest import write_corpus


def read_all(folder):
    ids, parts = [], []
    for path in list_shards(folder):
        shard_ids, vectors = read_shard(path)
        ids += shard_ids
        parts.append(vectors)
    return ids, SparseBatch.concat(parts)


def test_encode_writes_every_document_once(tmp_path, tiny_encoder):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 25)
    result = encode_corpus(corpus, tmp_path / "out", tiny_encoder, shard_size=10, show_progress=False)
    assert (result.n_docs, result.n_shards) == (25, 3)
    ids, vectors = read_all(tmp_path / "out")
    docs = list(iter_corpus(corpus))
    assert ids == [d.id for d in docs]
    expected = tiny_encoder.encode_documents([d.full_text for d in docs])
    np.testing.assert_allclose(vectors.to_scipy().toarray(), expected.to_scipy().toarray(), rtol=1e-5, atol=1e-6)
    again = encode_corpus(corpus, tmp_path / "out", tiny_encoder, shard_size=10, show_progress=False)
    assert again.n_docs == 25 and again.seconds == 0.0  # finished jobs are not redone


def test_other_settings_in_the_same_folder_are_refused(tmp_path, tiny_encoder):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 5)
    encode_corpus(corpus, tmp_path / "out", tiny_encoder, shard_size=2, show_progress=False)
    with pytest.raises(JobStateError, match="shard_size"):
        encode_corpus(corpus, tmp_path / "out", tiny_encoder, shard_size=3, show_progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(JobStateError, match="not empty"):
        encode_corpus(corpus, tmp_path / "other", tiny_encoder, show_progress=False)


def test_empty_corpus_is_refused_and_leaves_nothing(tmp_path, tiny_encoder):
    (tmp_path / "corpus.jsonl").write_text("\n")
    with pytest.raises(InvalidInputError, match="no documents"):
        encode_corpus(tmp_path / "corpus.jsonl", tmp_path / "out", tiny_encoder, show_progress=False)
    assert not (tmp_path / "out").exists()


def _encode_cmd(corpus, out, model):
    return [sys.executable, "-m", "lsr.cli", "-q", "encode", str(corpus), str(out), "--model", str(model),
            "--shard-size", "7", "--max-length", "64", "--threads", "1"]


@pytest.mark.parametrize("kill_after_shards", [1, 4])
def test_resumes_after_kill_9(tmp_path, tiny_model, tiny_encoder, kill_after_shards):
    """Kill a real `lsr encode` process with SIGKILL mid-run, rerun it: every document exactly once, and the
    same vectors as an uninterrupted run."""
    corpus = write_corpus(tmp_path / "corpus.jsonl", 3000, seed=kill_after_shards)
    out = tmp_path / "out"
    log = open(tmp_path / "stderr.txt", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(_encode_cmd(corpus, out, tiny_model), stderr=log)
    target = out / f"shard-{kill_after_shards:06d}.npz"
    deadline = time.monotonic() + 120
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    alive = proc.poll() is None
    if alive:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    log.close()
    assert alive, f"lsr encode exited on its own: {(tmp_path / 'stderr.txt').read_text()[-2000:]}"
    assert proc.returncode == -signal.SIGKILL
    assert not orjson.loads((out / "job.json").read_bytes())["complete"], "the job finished before the kill"
    n_before = len(list_shards(out))
    assert 0 < n_before < 3000 // 7

    rerun = subprocess.run(_encode_cmd(corpus, out, tiny_model), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{n_before * 7} were already done" in rerun.stdout
    assert "docs/s" in rerun.stdout and "route: fused float32" in rerun.stdout  # users see speed and route
    ids, vectors = read_all(out)
    docs = list(iter_corpus(corpus))
    assert ids == [d.id for d in docs]  # every document, once, in corpus order
    expected_ids, expected = read_all(_uninterrupted(tmp_path, corpus, tiny_model))
    assert ids == expected_ids
    np.testing.assert_array_equal(vectors.indptr, expected.indptr)
    np.testing.assert_array_equal(vectors.indices, expected.indices)
    np.testing.assert_allclose(vectors.values, expected.values, rtol=1e-6)
    assert not list(out.glob("*.tmp"))


def _uninterrupted(tmp_path, corpus, model):
    out = tmp_path / "reference"
    subprocess.run(_encode_cmd(corpus, out, model), check=True, capture_output=True)
    return out


def _index_cmd(corpus, index, model):
    return [sys.executable, "-m", "lsr.cli", "-q", "index", str(corpus), str(index), "--model", str(model),
            "--shard-size", "50", "--max-length", "64", "--threads", "1"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_lsr_index_killed_at_random_points_resumes(tmp_path, tiny_model, seed):
    """`lsr index` from a corpus (encode + build), SIGKILLed at a seeded random moment, then rerun: the index
    holds every document exactly once, with the vectors of an uninterrupted build."""
    import random

    from lsr.index import open_index

    corpus = write_corpus(tmp_path / "corpus.jsonl", 2500, seed=seed)
    reference = tmp_path / "reference"
    started = time.monotonic()
    subprocess.run(_index_cmd(corpus, reference, tiny_model), check=True, capture_output=True)
    duration = time.monotonic() - started
    index = tmp_path / "index"
    proc = subprocess.Popen(_index_cmd(corpus, index, tiny_model), stderr=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL)
    time.sleep(random.Random(seed).uniform(0.2, 0.9 * duration))
    proc.kill()
    proc.wait()
    if proc.returncode != 0:  # killed (rather than finished just before the kill): rerun the same command
        rerun = subprocess.run(_index_cmd(corpus, index, tiny_model), capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr
    built, want = open_index(index), open_index(reference)
    ids = [d.id for d in iter_corpus(corpus)]
    assert built.n_live == len(ids) and sorted(built._id_lookup) == sorted(ids)
    for ext in ids[:: 97]:
        got = built.document_vector(built.internal_id(ext)).to_dicts()
        assert got == want.document_vector(want.internal_id(ext)).to_dicts()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".index.") or ".encoding" in p.name]


# ------------------------------------------------------------------------------ --workers N (processes)
def _scifact_corpus(path, n):
    import gzip

    from tests.conftest import SCIFACT

    with gzip.open(SCIFACT / "corpus.jsonl.gz", "rb") as src, open(path, "wb") as out:
        for _, line in zip(range(n), src, strict=False):
            out.write(line)
    return path


def _same_shards(a, b):
    ids_a, vectors_a = read_all(a)
    ids_b, vectors_b = read_all(b)
    assert ids_a == ids_b
    assert [p.name for p in list_shards(a)] == [p.name for p in list_shards(b)]
    np.testing.assert_array_equal(vectors_a.indptr, vectors_b.indptr)
    np.testing.assert_array_equal(vectors_a.indices, vectors_b.indices)
    np.testing.assert_allclose(vectors_a.values, vectors_b.values, rtol=1e-6)


@pytest.mark.slow
def test_workers_give_the_same_shards_as_one_process(tmp_path, splade_tiny):
    from lsr.encoders.splade import SpladeEncoder

    corpus = _scifact_corpus(tmp_path / "corpus.jsonl", 45)
    encoder = SpladeEncoder(splade_tiny, batch_size=8)
    one = encode_corpus(corpus, tmp_path / "one", encoder, shard_size=6, show_progress=False)
    two = encode_corpus(corpus, tmp_path / "two", encoder, shard_size=6, show_progress=False, workers=2)
    assert (one.n_docs, one.n_shards) == (two.n_docs, two.n_shards) == (45, 8)
    _same_shards(tmp_path / "one", tmp_path / "two")
    assert orjson.loads((tmp_path / "two" / "job.json").read_bytes())["complete"]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_bad_worker_count_and_stale_pending_shards(tmp_path, tiny_encoder):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 5)
    with pytest.raises(InvalidInputError, match="workers"):
        encode_corpus(corpus, tmp_path / "out", tiny_encoder, workers=0, show_progress=False)
    out = tmp_path / "out"
    encode_corpus(corpus, out, tiny_encoder, shard_size=2, show_progress=False)
    job = orjson.loads((out / "job.json").read_bytes())
    (out / "job.json").write_bytes(orjson.dumps({**job, "complete": False}))  # as if killed before the end
    (out / "shard-000002.npz").unlink()
    (out / "shard-000002.npz.999.pending").write_bytes(b"written by a killed run's worker")
    result = encode_corpus(corpus, out, tiny_encoder, shard_size=2, show_progress=False)
    assert (result.n_docs, result.resumed_from) == (5, 4)
    assert not list(out.glob("*.pending*"))


def _children(pid):
    import psutil

    return psutil.Process(pid).children(recursive=True)


@pytest.mark.slow
def test_workers_resume_after_kill_9_and_die_with_the_parent(tmp_path, tiny_model):
    """SIGKILL `lsr encode --workers 2` once it has committed a shard: its workers die with it, and a rerun
    (again with workers) holds every document once, with the vectors of an uninterrupted one-process run."""
    import psutil

    corpus = write_corpus(tmp_path / "corpus.jsonl", 3000, seed=7)
    out = tmp_path / "out"
    proc = subprocess.Popen(_encode_cmd(corpus, out, tiny_model) + ["--workers", "2"], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "shard-000002.npz").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    workers = _children(proc.pid)
    alive = proc.poll() is None
    if alive:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert alive, "lsr encode --workers 2 exited on its own"
    assert workers, "no worker processes were started"
    _, still_running = psutil.wait_procs(workers, timeout=30)
    assert not still_running, "workers outlived their parent"
    assert not orjson.loads((out / "job.json").read_bytes())["complete"], "the job finished before the kill"
    n_before = len(list_shards(out))
    assert 0 < n_before < 3000 // 7

    rerun = subprocess.run(_encode_cmd(corpus, out, tiny_model) + ["--workers", "2"], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{n_before * 7} were already done" in rerun.stdout
    assert [d.id for d in iter_corpus(corpus)] == read_all(out)[0]
    _same_shards(out, _uninterrupted(tmp_path, corpus, tiny_model))
    assert not list(out.glob("*.tmp")) and not list(out.glob("*.pending*"))
