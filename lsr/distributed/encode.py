"""Distributed encoding and index building with Ray Data.

The driver reads the corpus into chunks of ``shard_size`` documents, numbered in corpus order (the same
chunks ``lsr encode`` makes, so each chunk is encoded in the same batches and gives the same floats).
``map_batches`` hands chunks to a pool of encoder actors — one model load per actor — and each actor writes
its chunk's output under a name of its own (chunk number, pid, random tag) and returns only that name.

Exactly once: an output is committed only if its name came back to the driver, at most one per chunk, and
only when every chunk came back with the right number of documents. An actor killed mid-chunk never
returns a name, so whatever it wrote is garbage; Ray Data restarts the actor and retries the chunk
(``max_restarts``/``max_task_retries``). The commit is the existing single-writer one:

- ``ray_encode_corpus`` renames shard files into place in chunk order (the resumable ``lsr encode``
  folder: after an interruption the complete shards are a prefix, and a rerun skips them);
- ``ray_build_index`` has each actor write a one-segment index ("part") and moves the parts' segments into
  one new index with :meth:`~lsr.index.IndexWriter.adopt`, published by a single manifest commit. Global
  ids follow corpus order, as in a single-process build.

Outputs go to a staging folder beside the target, so the final renames never cross file systems; on a
cluster the target must be on storage every node can write (see ``benchmarks/README.md``).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lsr.distributed._ray import ray_session, require_ray
from lsr.errors import InvalidInputError, JobStateError
from lsr.index import IndexWriter
from lsr.index import format as fmt
from lsr.index.format import write_bytes_atomic
from lsr.index.weight_policy import resolve_storage
from lsr.io.beir import count_lines, find_corpus_file, iter_corpus
from lsr.io.shards import list_shards, shard_path, write_shard
from lsr.jobs.build import BuildResult
from lsr.jobs.encode import JOB_FILE, PENDING_SUFFIX, EncodeResult, open_job

__all__ = ["ray_encode_corpus", "ray_build_index", "encode_on_ray", "build_index_on_ray", "RayJobStats"]

log = logging.getLogger(__name__)
STAGING_TAG = ".ray-"  # staging folders are ".<index name>.ray-<random>" beside the index


class RayJobStats:
    """What the driver saw: which worker processes reported chunks (a restarted actor has a new pid)."""

    def __init__(self) -> None:
        self.worker_pids: set[int] = set()
        self.nodes: set[str] = set()  # Ray node ids the reporting workers ran on
        self.duplicates = 0  # chunks reported more than once (only the first is used)


class _ChunkEncoder:
    """A Ray Data actor: loads the encoder once, then encodes one chunk per row into its own output."""

    def __init__(self, config: dict[str, Any], overrides: dict[str, Any], threads: int, staging: str,
                 mode: str, storage: dict[str, Any] | None) -> None:
        import torch

        from lsr.encoders import load_encoder

        torch.set_num_threads(threads)
        self.encoder = load_encoder(config, **overrides)
        self.config = config
        self.staging = Path(staging)
        self.mode = mode
        self.storage = storage or {}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import ray

        node = ray.get_runtime_context().get_node_id()
        out: dict[str, list] = {"number": [], "path": [], "n_docs": [], "pid": [], "node": []}
        for number, ids, texts in zip(batch["number"], batch["ids"], batch["texts"], strict=True):
            ids, texts = [str(x) for x in ids], [str(x) for x in texts]
            vectors = self.encoder.encode_documents(texts)
            # a name no other attempt can use: a retry never writes into a killed attempt's output
            tag = f"{int(number):06d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            if self.mode == "shards":
                path = self.staging / f"shard-{tag}.npz{PENDING_SUFFIX}"
                write_shard(path, ids, vectors)
            else:
                path = self.staging / f"part-{tag}"
                with IndexWriter.create(path, self.encoder.vocabulary, self.config, **self.storage) as writer:
                    writer.add(ids, vectors)
            out["number"].append(int(number))
            out["path"].append(str(path))
            out["n_docs"].append(len(ids))
            out["pid"].append(os.getpid())
            out["node"].append(node)
        return {key: np.array(values) for key, values in out.items()}


def _chunks(corpus_file: Path, shard_size: int, skip_chunks: int) -> Iterator[dict[str, Any]]:
    documents = islice(iter_corpus(corpus_file), skip_chunks * shard_size, None)
    number = skip_chunks
    while chunk := list(islice(documents, shard_size)):
        yield {"number": number, "ids": [d.id for d in chunk], "texts": [d.full_text for d in chunk]}
        number += 1


def _run_actors(ray: Any, chunks: list[dict[str, Any]], encoder: Any, workers: int, staging: Path, mode: str,
                storage: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    """Yield one result row per chunk as actors finish them (in any order)."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # our own bar counts documents; Ray's would interleave with it
    context.print_on_execution_start = False
    cpus = _cpus_per_worker(ray, workers)
    # the worker's batch sizes too, so that its batches, and hence its float rounding, match a local run's
    overrides = {name: getattr(encoder, name) for name in ("batch_size", "max_tokens_per_batch")
                 if hasattr(encoder, name)}
    dataset = ray.data.from_items(chunks, override_num_blocks=len(chunks))
    results = dataset.map_batches(
        _ChunkEncoder, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus,
        fn_constructor_kwargs={"config": encoder.config(), "overrides": overrides, "threads": cpus,
                               "staging": str(staging), "mode": mode, "storage": storage},
    )
    yield from results.iter_rows()


def _cpus_per_worker(ray: Any, workers: int) -> int:
    """Split the cluster's CPUs between the actors, but never ask for more than the largest node has."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    largest = max((int(n["Resources"].get("CPU", 0)) for n in nodes), default=1)
    total = int(ray.cluster_resources().get("CPU", 1))
    return max(1, min(largest, total // workers))


def _collect(rows: Iterator[dict[str, Any]], sizes: dict[int, int], stats: RayJobStats,
             bar: tqdm) -> Iterator[tuple[int, Path]]:
    """The first reported output of each chunk; later reports of the same chunk (a retry whose first attempt
    did report after all) are removed. Raises if a chunk's document count is off."""
    seen: set[int] = set()
    for row in rows:
        number, path, n_docs = int(row["number"]), Path(str(row["path"])), int(row["n_docs"])
        stats.worker_pids.add(int(row["pid"]))
        stats.nodes.add(str(row["node"]))
        if number in seen:
            stats.duplicates += 1
            _remove(path)
            continue
        if sizes.get(number) != n_docs:
            raise JobStateError(f"chunk {number} came back with {n_docs} documents, expected {sizes.get(number)}.")
        seen.add(number)
        bar.update(n_docs)
        yield number, path
    missing = sorted(set(sizes) - seen)
    if missing:
        raise JobStateError(f"{len(missing)} chunks never came back from the workers (first: {missing[0]}); "
                            "nothing was committed.")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _check_workers(workers: int, shard_size: int) -> None:
    if shard_size < 1:
        raise InvalidInputError(f"shard_size must be >= 1, got {shard_size}.")
    if workers < 1:
        raise InvalidInputError(f"workers must be >= 1, got {workers}.")


def ray_encode_corpus(corpus: str | os.PathLike[str], out_dir: str | os.PathLike[str], encoder: Any,
                      shard_size: int = 1000, workers: int = 1, address: str | None = None,
                      show_progress: bool = True, stats: RayJobStats | None = None) -> EncodeResult:
    """``lsr encode --ray``: the same resumable folder as :func:`lsr.jobs.encode.encode_corpus` (same
    ``job.json``, same shards), encoded by ``workers`` Ray actors."""
    require_ray()  # before anything is written
    _check_workers(workers, shard_size)
    corpus_file, out, total, spec, done = open_job(corpus, out_dir, encoder, shard_size)
    if done is not None:
        return done
    started = time.perf_counter()
    first = len(list_shards(out))
    chunks = list(_chunks(corpus_file, shard_size, first))
    sizes = {c["number"]: len(c["ids"]) for c in chunks}
    stats = stats or RayJobStats()
    waiting: dict[int, Path] = {}
    number, n_docs = first, min(first * shard_size, total)
    with tqdm(total=total, initial=n_docs, disable=not show_progress, desc="encoding", unit="doc") as bar:
        if chunks:
            with ray_session(address) as ray:
                rows = _run_actors(ray, chunks, encoder, workers, out, "shards", None)
                for done_number, path in _collect(rows, sizes, stats, bar):
                    waiting[done_number] = path
                    while number in waiting:  # in order, so that complete shards are always a prefix
                        os.replace(waiting.pop(number), shard_path(out, number))
                        n_docs += sizes[number]
                        number += 1
    write_bytes_atomic(out / JOB_FILE, _job_json(spec, n_docs, number))
    seconds = time.perf_counter() - started
    log.info("encoded %d documents into %d shards on Ray in %.1fs", n_docs, number, seconds)
    return EncodeResult(out, n_docs, number, seconds, first * shard_size)


def _job_json(spec: dict[str, Any], n_docs: int, n_shards: int) -> bytes:
    import orjson

    return orjson.dumps({**spec, "complete": True, "n_docs": n_docs, "n_shards": n_shards},
                        option=orjson.OPT_INDENT_2)


def ray_build_index(corpus: str | os.PathLike[str], index_dir: str | os.PathLike[str], encoder: Any,
                    shard_size: int = 1000, workers: int = 1, address: str | None = None, overwrite: bool = False,
                    storage: dict[str, Any] | None = None, show_progress: bool = True,
                    stats: RayJobStats | None = None) -> BuildResult:
    """``lsr index CORPUS INDEX --ray``: encode and write segments on Ray actors, one commit publishes them.
    ``storage`` holds IndexWriter options (``weight_dtype``, ``scale``, ``block_size``, ``reorder``); integer
    weights need a ``scale`` fixed up front, since the workers quantise independently: given, or from the
    encoder's weight bound (:mod:`lsr.index.weight_policy`, also what ``auto`` uses); ``reorder="bp"`` orders
    documents within each chunk's segment (a local build reorders within its own, larger segments)."""
    require_ray()  # before anything is written
    _check_workers(workers, shard_size)
    storage = resolve_storage(storage, encoder)
    if storage["weight_dtype"] != "float32" and storage.get("scale") is None:
        raise InvalidInputError("a distributed build quantises on every worker: pass --scale (e.g. 100) with "
                                f"--weights {storage['weight_dtype']}.")
    corpus_file = find_corpus_file(Path(corpus))
    index_dir = Path(index_dir)
    if index_dir.exists() and not overwrite:
        raise InvalidInputError(f"{index_dir} already exists; pass --overwrite to replace it.")
    if count_lines(corpus_file) == 0:
        raise InvalidInputError(f"{corpus_file} holds no documents.")
    started = time.perf_counter()
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(index_dir)
    staging = index_dir.parent / f".{index_dir.name}{STAGING_TAG}{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    lock = fmt.WriterLock(staging)  # marks the staging folder as in use by this (live) driver
    stat = corpus_file.stat()
    provenance = {"corpus": str(corpus_file.resolve()), "corpus_bytes": stat.st_size,
                  "corpus_mtime_ns": stat.st_mtime_ns}
    try:
        chunks = list(_chunks(corpus_file, shard_size, 0))
        sizes = {c["number"]: len(c["ids"]) for c in chunks}
        stats = stats or RayJobStats()
        with tqdm(total=sum(sizes.values()), disable=not show_progress, desc="encoding", unit="doc") as bar:
            with ray_session(address) as ray:
                rows = _run_actors(ray, chunks, encoder, workers, staging, "index", storage)
                parts = dict(_collect(rows, sizes, stats, bar))
        encode_seconds = time.perf_counter() - started
        with IndexWriter.create(index_dir, encoder.vocabulary, encoder.config(), overwrite,
                                provenance=provenance, **storage) as writer:
            for number in sorted(parts):
                writer.adopt(parts[number])
            # no compaction into one segment, unlike a local build: the parts' segments are what
            # `lsr serve --shards N` spreads over nodes (`lsr optimize --max-segments N` regroups them)
            manifest = writer.commit()
    finally:
        lock.release()
        shutil.rmtree(staging, ignore_errors=True)
    log.info("indexed %d documents from %d worker parts into %s", manifest.n_docs, len(parts), index_dir)
    return BuildResult(index_dir, manifest.n_docs, time.perf_counter() - started, encode_seconds)


def _remove_abandoned_staging(index_dir: Path) -> None:
    """Staging folders of this index left by a killed driver (their lock is stale or absent)."""
    for entry in index_dir.parent.glob(f".{index_dir.name}{STAGING_TAG}*"):
        lock = entry / fmt.LOCK
        if entry.is_dir() and not (lock.exists() and not fmt._lock_is_stale(lock)):
            log.info("removing %s, left by an interrupted distributed build", entry)
            shutil.rmtree(entry, ignore_errors=True)


def build_index_on_ray(source: str | os.PathLike[str], index_dir: str | os.PathLike[str], model: str | None = None,
                       encoder_options: dict[str, Any] | None = None, shard_size: int = 1000, workers: int = 1,
                       address: str | None = None, overwrite: bool = False, storage: dict[str, Any] | None = None,
                       show_progress: bool = True) -> BuildResult:
    """``lsr index SOURCE INDEX --ray``: a corpus is encoded and indexed on Ray; encoded shards and vectors
    need no model, so they are indexed here as without ``--ray``."""
    from lsr.jobs.build import build_index, detect_source

    require_ray()  # before a model is loaded: a missing extra should fail in a second
    if detect_source(Path(source)) != "corpus":
        return build_index(source, index_dir, model=model, overwrite=overwrite, shard_size=shard_size,
                           encoder_options=encoder_options, show_progress=show_progress, storage=storage)
    from lsr.encoders import load_encoder
    from lsr.jobs.build import fit_bm25_part
    from lsr.models import DEFAULT_MODEL

    model, encoder_options = fit_bm25_part(Path(source), Path(index_dir), model, encoder_options, show_progress)
    encoder = load_encoder(model or DEFAULT_MODEL, **(encoder_options or {}))
    return ray_build_index(source, index_dir, encoder, shard_size, workers, address or None, overwrite, storage,
                           show_progress)


def encode_on_ray(corpus: str | os.PathLike[str], out_dir: str | os.PathLike[str], model: str | None = None,
                  encoder_options: dict[str, Any] | None = None, shard_size: int = 1000, workers: int = 1,
                  address: str | None = None, show_progress: bool = True) -> EncodeResult:
    """``lsr encode CORPUS OUT --ray``: :func:`ray_encode_corpus` with the model loaded from its name."""
    require_ray()  # before a model is loaded
    from lsr.encoders import load_encoder
    from lsr.jobs.build import fit_bm25_part
    from lsr.models import DEFAULT_MODEL

    model, encoder_options = fit_bm25_part(Path(corpus), Path(out_dir), model, encoder_options, show_progress)
    encoder = load_encoder(model or DEFAULT_MODEL, **(encoder_options or {}))
    return ray_encode_corpus(corpus, out_dir, encoder, shard_size, workers, address or None, show_progress)
