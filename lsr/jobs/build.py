"""``lsr index``: build an index from encoded shards, from JsonVectorCollection vectors, or from a corpus.

A corpus is first encoded into a resumable work folder (``<index>.encoding`` unless told otherwise), so an
interrupted build restarts where encoding stopped; the work folder is removed once the index is committed.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lsr.errors import InvalidInputError
from lsr.index import IndexWriter, Vocabulary, open_index
from lsr.index.merge import compact
from lsr.index.weight_policy import AUTO, resolve_storage
from lsr.index.writer import DEFAULT_SEGMENT_DOCS
from lsr.io.beir import find_corpus_file
from lsr.io.jsonvectors import collect_tokens, iter_vector_batches, looks_like_vectors
from lsr.io.shards import list_shards, read_shard, read_shard_dense
from lsr.jobs.encode import JOB_FILE, encode_corpus, read_job, read_job_vocabulary

__all__ = ["BuildResult", "build_index", "fit_bm25_part", "index_from_shards", "index_from_vectors", "detect_source"]

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    index_dir: Path
    n_docs: int
    seconds: float
    encode_seconds: float = 0.0


def detect_source(source: Path) -> str:
    """``encoded`` (an lsr encode folder), ``vectors`` (JsonVectorCollection) or ``corpus``."""
    if source.is_dir() and (source / JOB_FILE).exists():
        return "encoded"
    if source.is_dir() and any(source.glob("*.jsonl*")) and not any(source.glob("corpus.jsonl*")):
        files = sorted(source.glob("*.jsonl*"))
        return "vectors" if looks_like_vectors(files[0]) else "corpus"
    corpus = find_corpus_file(source) if source.exists() else None
    if corpus is None:
        raise InvalidInputError(f"input {source} does not exist.")
    return "vectors" if looks_like_vectors(corpus) else "corpus"


def index_from_shards(encoded: Path, index_dir: Path, overwrite: bool = False,
                      segment_docs: int = DEFAULT_SEGMENT_DOCS, show_progress: bool = True,
                      storage: dict[str, Any] | None = None, dense_factory: str = "Flat") -> BuildResult:
    started = time.perf_counter()
    job = read_job(encoded)
    if not job.get("complete"):
        raise InvalidInputError(f"{encoded} is an unfinished encode job; rerun lsr encode to complete it.")
    shards = list_shards(encoded)
    vocabulary = read_job_vocabulary(encoded)
    storage = dict(storage or {})
    if storage.get("weight_dtype", AUTO) != "float32" and storage.get("scale") is None:
        from lsr.encoders import load_encoder  # the job's encoder: its weight bound, when it has one

        storage = resolve_storage(storage, load_encoder(job["encoder"]))
    if storage.get("weight_dtype") != "float32" and storage.get("scale") is None:
        # one scale for the whole index: the largest weight of any shard maps to the type's maximum
        largest = max(float(read_shard(path)[1].values.max(initial=0.0)) for path in shards)
        storage["scale"] = float(np.iinfo(storage["weight_dtype"]).max) / (largest or 1.0)
    provenance = {key: job[key] for key in ("corpus", "corpus_bytes", "corpus_mtime_ns")}
    dense_spec = builder = None
    if job.get("dense"):
        from lsr.dense import faiss_builder

        dense_spec = {**job["dense"], "factory": dense_factory}
        builder = faiss_builder(dense_factory)
    with IndexWriter.create(index_dir, vocabulary, job["encoder"], overwrite, segment_docs, provenance=provenance,
                            dense=dense_spec, dense_builder=builder, **storage) as writer:
        for path in tqdm(shards, disable=not show_progress, desc="indexing", unit="shard"):
            ids, vectors = read_shard(path)
            writer.add(ids, vectors, read_shard_dense(path) if dense_spec else None)
        manifest = writer.commit()
    compact(index_dir, segment_docs)  # the flushed runs -> one segment (or segments of segment_docs), streamed
    return BuildResult(index_dir, manifest.n_docs, time.perf_counter() - started)


def index_from_vectors(vectors_path: Path, index_dir: Path, model: str | None = None, overwrite: bool = False,
                       segment_docs: int = DEFAULT_SEGMENT_DOCS, show_progress: bool = True,
                       storage: dict[str, Any] | None = None) -> BuildResult:
    """Index pre-encoded vectors. With ``model`` the tokens are that model's vocabulary (and queries can be
    encoded by it later); without, the vocabulary is the collection's own tokens and queries must be given
    as vectors."""
    started = time.perf_counter()
    files = sorted(vectors_path.glob("*.jsonl*")) if vectors_path.is_dir() else [vectors_path]
    encoder_config: dict[str, Any] | None = None
    if model is not None:
        from lsr.encoders import load_encoder

        encoder = load_encoder(model)
        vocabulary, encoder_config = encoder.vocabulary, encoder.config()
    else:
        tokens = sorted({tok for f in files for tok in collect_tokens(f)})
        if not tokens:
            raise InvalidInputError(f"{vectors_path} holds no vectors with terms.")
        vocabulary = Vocabulary.from_tokens(tokens, source="collection")
    token_ids = vocabulary.token_ids()
    # these vectors were made outside lsr, so the model's weight bound proves nothing about them: auto stores
    # float32, and an explicit integer type without a scale takes the writer's (the first batch's largest)
    storage = resolve_storage(storage, None)
    with IndexWriter.create(index_dir, vocabulary, encoder_config, overwrite, segment_docs,
                            **storage) as writer:
        for path in files:
            for ids, batch in tqdm(iter_vector_batches(path, token_ids, vocabulary.size),
                                   disable=not show_progress, desc=f"indexing {path.name}", unit="batch"):
                writer.add(ids, batch)
        manifest = writer.commit()
    compact(index_dir, segment_docs)
    return BuildResult(index_dir, manifest.n_docs, time.perf_counter() - started)


def build_index(source: str | os.PathLike[str], index_dir: str | os.PathLike[str], model: str | None = None,
                overwrite: bool = False, work_dir: str | os.PathLike[str] | None = None,
                shard_size: int = 1000, segment_docs: int = DEFAULT_SEGMENT_DOCS,
                encoder_options: dict[str, Any] | None = None, show_progress: bool = True,
                storage: dict[str, Any] | None = None, dense_model: str | None = None,
                dense_factory: str = "Flat", workers: int = 1) -> BuildResult:
    """Index whatever ``source`` is (see :func:`detect_source`). ``storage`` holds IndexWriter options:
    ``weight_dtype``, ``scale``, ``block_size``. ``dense_model`` also encodes dense vectors (corpus sources)
    into a faiss index of type ``dense_factory`` beside the sparse one. ``workers`` encoding processes
    (:func:`~lsr.jobs.encode.encode_corpus`)."""
    source, index_dir = Path(source), Path(index_dir)
    default_work = index_dir.with_name(index_dir.name + ".encoding")
    if index_dir.exists() and not overwrite:
        finished = _finished_earlier(index_dir, source, model, encoder_options)
        if finished is not None:  # a rerun of a job killed after its commit: only the cleanup was left
            if work_dir is None:
                _remove_work(default_work)
            return finished
        raise InvalidInputError(f"{index_dir} already exists; pass --overwrite to replace it.")
    kind = detect_source(source)
    log.info("indexing %s (%s) into %s", source, kind, index_dir)
    if kind == "encoded":
        return index_from_shards(source, index_dir, overwrite, segment_docs, show_progress, storage, dense_factory)
    if dense_model is not None and kind == "vectors":
        raise InvalidInputError("--dense needs texts: index a corpus (or an lsr encode folder made with --dense).")
    if kind == "vectors":
        return index_from_vectors(source, index_dir, model, overwrite, segment_docs, show_progress, storage)
    from lsr.encoders import load_encoder
    from lsr.models import DEFAULT_MODEL

    model, encoder_options = fit_bm25_part(source, index_dir, model, encoder_options, show_progress)
    encoder = load_encoder(model or DEFAULT_MODEL, **(encoder_options or {}))
    storage = resolve_storage(storage, encoder)
    dense_encoder = None
    if dense_model is not None:
        from lsr.dense import DenseEncoder

        dense_encoder = DenseEncoder(dense_model)
    work = Path(work_dir) if work_dir else default_work
    encoded = encode_corpus(source, work, encoder, shard_size, show_progress, dense_encoder, workers)
    result = index_from_shards(work, index_dir, overwrite, segment_docs, show_progress, storage, dense_factory)
    if work_dir is None:
        _remove_work(work)
    result.encode_seconds = encoded.seconds
    return result


def fit_bm25_part(corpus: Path, index_dir: Path, model: str | None, options: dict[str, Any] | None,
                  show_progress: bool = True) -> tuple[str | None, dict[str, Any] | None]:
    """For a ``bm25`` or ``...+bm25`` encoder without a fitted BM25 model (for ``bm25`` alone, ``model`` is
    that model when it is a fitted folder, and ignored otherwise, as the CLI's default SPLADE name is): fit one
    on ``corpus`` into
    ``<index>.bm25`` (kept beside the index: the manifest names it, and documents added later are weighted
    with its statistics) and return the model and options that name it."""
    options = dict(options or {})
    kinds = str(options.get("type") or "splade").split("+")
    if "bm25" not in kinds:
        return model, options
    from lsr.encoders.bm25 import DEFAULT_B, DEFAULT_K1, MODEL_FILE, Bm25Encoder

    pure = kinds == ["bm25"]
    given = model if pure else options.get("bm25_model")
    if given is not None and (Path(given).is_file() or (Path(given) / MODEL_FILE).is_file()):
        return model, options
    if given is not None and not pure:
        raise InvalidInputError(f"bm25_model {given} is not a fitted BM25 model folder (no {MODEL_FILE}).")
    from lsr.io.beir import count_lines, iter_corpus

    folder = index_dir.with_name(index_dir.name + ".bm25")
    log.info("fitting BM25 statistics on %s into %s", corpus, folder)
    Bm25Encoder.fit((doc.full_text for doc in iter_corpus(corpus)), folder, options.pop("k1", DEFAULT_K1),
                    options.pop("b", DEFAULT_B), show_progress, count_lines(corpus))
    if pure:
        return str(folder.resolve()), options
    return model, {**options, "bm25_model": str(folder.resolve())}


def _remove_work(work: Path) -> None:
    # renamed first, so that a kill during the removal leaves no half-deleted encode folder behind (only a
    # ".done-" folder, removed here the next time)
    if work.exists():
        os.replace(work, work.with_name(f"{work.name}.done-{os.getpid()}"))
    for trash in work.parent.glob(f"{work.name}.done-*"):
        shutil.rmtree(trash, ignore_errors=True)


def _finished_earlier(index_dir: Path, source: Path, model: str | None,
                      encoder_options: dict[str, Any] | None = None) -> BuildResult | None:
    """The index an earlier run of this same job (same corpus file, same model) committed."""
    from lsr.models import DEFAULT_MODEL

    try:
        index = open_index(index_dir)
        corpus = find_corpus_file(source)
    except (OSError, ValueError):
        return None
    stat = corpus.stat()
    here = {"corpus": str(corpus.resolve()), "corpus_bytes": stat.st_size, "corpus_mtime_ns": stat.st_mtime_ns}
    from lsr.encoders.base import built_with

    same_model = built_with(index.encoder_config, model or DEFAULT_MODEL, encoder_options)
    provenance = index.manifest.provenance or {}
    # (the manifest adds keys of its own, e.g. corpus_id_bound; a kill during the final compaction leaves a
    # complete index of several segments, which merges later)
    if {key: provenance.get(key) for key in here} == here and same_model:
        log.info("%s was already built from %s; nothing left to do", index_dir, corpus)
        return BuildResult(index_dir, index.n_docs, 0.0)
    return None
