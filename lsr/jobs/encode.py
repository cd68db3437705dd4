"""``lsr encode``: a corpus -> encoded shards on disk, resumable after a crash or ``kill -9``.

The output folder holds ``job.json`` (what is being encoded, how, and whether it is finished) and
``shard-NNNNNN.npz`` files of ``shard_size`` documents each, in corpus order. Shards are written
atomically, so after an interruption the complete shards are exactly the first ``n`` of them: a rerun
skips ``n * shard_size`` documents and carries on. Each document therefore ends up in exactly one shard.

With ``workers > 1`` the parent reads the corpus and hands shards to worker processes, each with its own
copy of the encoder (rebuilt from ``encoder.config()``) and ``cores // workers`` torch threads. A worker
writes its shard under a private ``.pending`` name; the parent renames finished shards into place strictly in
order, so the "first ``n`` shards" invariant, and with it resumption, is the same as with one process.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
from tqdm.auto import tqdm

from lsr.encoders.base import SparseEncoder
from lsr.errors import InvalidInputError, JobStateError
from lsr.index.format import write_bytes_atomic
from lsr.index.vocabulary import Vocabulary
from lsr.io.beir import count_lines, find_corpus_file, iter_corpus
from lsr.io.shards import list_shards, shard_path, write_shard

__all__ = ["EncodeResult", "encode_corpus", "read_job", "read_job_vocabulary", "JOB_FILE"]

log = logging.getLogger(__name__)
JOB_FILE = "job.json"
VOCAB_FILE = "vocab.json"
PENDING_SUFFIX = ".pending"  # a shard a worker has written but the parent has not yet renamed into place


@dataclass
class EncodeResult:
    out_dir: Path
    n_docs: int
    n_shards: int
    seconds: float
    resumed_from: int  # documents already encoded by an earlier run


def _job_spec(corpus: Path, encoder: SparseEncoder, shard_size: int, dense_encoder=None) -> dict[str, Any]:  # noqa: ANN001
    stat = corpus.stat()
    return {
        "corpus": str(corpus.resolve()),
        "corpus_bytes": stat.st_size,
        "corpus_mtime_ns": stat.st_mtime_ns,
        "encoder": encoder.config(),
        "vocabulary": encoder.vocabulary.identity(),
        "shard_size": shard_size,
        "dense": None if dense_encoder is None else dense_encoder.config(),
    }


def read_job(out_dir: Path) -> dict[str, Any]:
    path = Path(out_dir) / JOB_FILE
    try:
        return orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise InvalidInputError(f"{out_dir} is not an lsr encode folder ({JOB_FILE} is missing).") from None
    except orjson.JSONDecodeError:
        raise InvalidInputError(f"{path} is corrupt (not valid JSON).") from None


def read_job_vocabulary(out_dir: Path) -> Vocabulary:
    """The vocabulary the job's vectors live in, checked against the identity recorded in job.json."""
    job = read_job(out_dir)
    path = Path(out_dir) / VOCAB_FILE
    try:
        tokens = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise InvalidInputError(f"{path} is missing or corrupt: {exc}.") from None
    vocabulary = Vocabulary.from_tokens(tokens, source=job["vocabulary"]["source"])
    if vocabulary.sha256 != job["vocabulary"]["sha256"]:
        raise InvalidInputError(f"{path} does not match the vocabulary recorded in {JOB_FILE}.")
    return vocabulary


def encode_corpus(corpus: str | os.PathLike[str], out_dir: str | os.PathLike[str], encoder: SparseEncoder,
                  shard_size: int = 1000, show_progress: bool = True, dense_encoder=None,  # noqa: ANN001
                  workers: int = 1) -> EncodeResult:
    """Encode every document of ``corpus`` into ``out_dir``, resuming an interrupted run there.
    With a ``dense_encoder`` (:class:`lsr.dense.DenseEncoder`) each shard also holds dense vectors.
    ``workers > 1`` encodes shards in that many processes (see the module docstring); the shards are the
    same as with one."""
    if shard_size < 1:
        raise InvalidInputError(f"shard_size must be >= 1, got {shard_size}.")
    if workers < 1:
        raise InvalidInputError(f"workers must be >= 1, got {workers}.")
    corpus_file, out, total, spec, done = open_job(corpus, out_dir, encoder, shard_size, dense_encoder)
    if done is not None:
        return done
    started = time.perf_counter()
    existing = list_shards(out)
    skip = len(existing) * shard_size
    if skip:
        log.info("resuming %s: %d shards (%d documents) already encoded", out, len(existing), skip)
    documents = islice(iter_corpus(corpus_file), skip, None)
    number = len(existing)
    n_docs = min(skip, total)
    chunks = iter(lambda: list(islice(documents, shard_size)), [])
    with tqdm(total=total, initial=n_docs, disable=not show_progress, desc="encoding", unit="doc") as bar:
        if workers == 1:
            for chunk in chunks:
                texts = [d.full_text for d in chunk]
                vectors = encoder.encode_documents(texts)
                dense = None if dense_encoder is None else dense_encoder.encode_documents(texts)
                write_shard(shard_path(out, number), [d.id for d in chunk], vectors, dense)
                number += 1
                n_docs += len(chunk)
                bar.update(len(chunk))
        else:
            for size in _encode_in_workers(chunks, out, number, encoder, dense_encoder, workers):
                number += 1
                n_docs += size
                bar.update(size)
    write_bytes_atomic(out / JOB_FILE, orjson.dumps({**spec, "complete": True, "n_docs": n_docs,
                                                      "n_shards": number}, option=orjson.OPT_INDENT_2))
    seconds = time.perf_counter() - started
    log.info("encoded %d documents into %d shards in %.1fs", n_docs, number, seconds)
    return EncodeResult(out, n_docs, number, seconds, skip)


def _encode_in_workers(chunks: Iterator[list], out: Path, first: int, encoder: SparseEncoder,
                       dense_encoder, workers: int) -> Iterator[int]:  # noqa: ANN001
    """Encode ``chunks`` (shards ``first``, ``first + 1``, …) in worker processes; commit each shard in order
    and yield its size. At most two shards per worker are in flight, so memory does not grow with the corpus."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # batch sizes too, so that a worker's batches, and hence its float rounding, match the parent's
    overrides = {name: getattr(encoder, name) for name in ("batch_size", "max_tokens_per_batch")
                 if hasattr(encoder, name)}
    dense_config = None if dense_encoder is None else dense_encoder.config()
    # spawn, not fork: a forked copy of a process that has already run torch can deadlock in its thread pools
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                               initargs=(encoder.config(), overrides, dense_config, max(1, cores // workers),
                                         os.getpid()))
    in_flight: deque[tuple[int, Future]] = deque()
    number = first
    try:
        for chunk in chunks:
            in_flight.append((number, pool.submit(_worker_encode, [d.id for d in chunk],
                                                  [d.full_text for d in chunk], str(shard_path(out, number)))))
            number += 1
            while len(in_flight) >= 2 * workers:
                yield _commit(*in_flight.popleft(), out)
        while in_flight:
            yield _commit(*in_flight.popleft(), out)
    except BrokenProcessPool as exc:
        raise JobStateError(f"an encoding worker died ({exc}); rerun the same command to resume.") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _commit(number: int, future: Future, out: Path) -> int:
    pending, size = future.result()
    os.replace(pending, shard_path(out, number))
    return size


_WORKER: dict[str, Any] = {}


def open_job(corpus: str | os.PathLike[str], out_dir: str | os.PathLike[str], encoder: SparseEncoder,
             shard_size: int, dense_encoder=None) -> tuple[Path, Path, int, dict, EncodeResult | None]:  # noqa: ANN001
    """What every run of an encode job starts with, local or on Ray: (corpus file, output folder, number of
    documents, the job spec, the result when the job is already complete). Writes or checks ``job.json`` and removes the
    shards a killed run's workers finished but never committed."""
    corpus_file = find_corpus_file(Path(corpus))
    out = Path(out_dir)
    spec = _job_spec(corpus_file, encoder, shard_size, dense_encoder)
    total = count_lines(corpus_file)  # before anything is written: an empty corpus leaves no trace
    if total == 0:
        raise InvalidInputError(f"{corpus_file} holds no documents.")
    done = _prepare(out, spec, encoder.vocabulary)
    if done is None:
        for stale in out.glob(f"shard-*{PENDING_SUFFIX}*"):
            stale.unlink()
    return corpus_file, out, total, spec, done


def _worker_init(config: dict[str, Any], overrides: dict[str, Any], dense_config: dict[str, Any] | None,
                 threads: int, parent: int) -> None:
    _die_with_parent(parent)
    import torch

    from lsr.encoders import load_encoder

    torch.set_num_threads(threads)
    _WORKER["encoder"] = load_encoder(config, **overrides)
    _WORKER["dense"] = None
    if dense_config is not None:
        from lsr.dense import DenseEncoder

        _WORKER["dense"] = DenseEncoder(dense_config["model"], max_length=dense_config["max_length"])


def _worker_encode(ids: list[str], texts: list[str], final: str) -> tuple[str, int]:
    vectors = _WORKER["encoder"].encode_documents(texts)
    dense = None if _WORKER["dense"] is None else _WORKER["dense"].encode_documents(texts)
    # a name of its own: an orphan of a killed run can never write into the file a rerun commits
    pending = Path(f"{final}.{os.getpid()}{PENDING_SUFFIX}")
    write_shard(pending, ids, vectors, dense)
    return str(pending), len(ids)


def _die_with_parent(parent: int) -> None:
    """Make the kernel kill this worker when the parent dies (``kill -9`` included), so that no orphan keeps
    encoding after an interrupted run. Linux only; elsewhere an orphan finishes its shard, which no one
    commits."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os._exit(1)


def _prepare(out: Path, spec: dict[str, Any], vocabulary: Vocabulary) -> EncodeResult | None:
    """Create the folder or check that it holds this same job; a finished job is returned as is."""
    if not out.exists():
        out.mkdir(parents=True)
    if not (out / JOB_FILE).exists():
        if any(out.iterdir()):
            raise JobStateError(f"{out} is not empty and holds no {JOB_FILE}; choose an empty or new folder.")
        vocabulary.write(out / VOCAB_FILE)
        write_bytes_atomic(out / JOB_FILE, orjson.dumps({**spec, "complete": False}, option=orjson.OPT_INDENT_2))
        return None
    job = read_job(out)
    differing = [key for key in spec if job.get(key) != spec[key]]
    if differing:
        raise JobStateError(
            f"{out} holds an encode job with other settings ({', '.join(differing)} differ); "
            "use a new output folder or delete this one."
        )
    if job.get("complete"):
        log.info("%s is already complete (%d documents)", out, job["n_docs"])
        return EncodeResult(out, int(job["n_docs"]), int(job["n_shards"]), 0.0, int(job["n_docs"]))
    return None
