"""``lsr encode``: a corpus -> encoded shards on disk, resumable after a crash or ``kill -9``.

The output folder holds ``job.json`` (what is being encoded, how, and whether it is finished) and
``shard-NNNNNN.npz`` files of ``shard_size`` documents each, in corpus order. Shards are written
atomically, so after an interruption the complete shards are exactly the first ``n`` of them: a rerun
skips ``n * shard_size`` documents and carries on. Each document therefore ends up in exactly one shard.
"""

from __future__ import annotations

import logging
import os
import time
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
                  shard_size: int = 1000, show_progress: bool = True, dense_encoder=None) -> EncodeResult:  # noqa: ANN001
    """Encode every document of ``corpus`` into ``out_dir``, resuming an interrupted run there.
    With a ``dense_encoder`` (:class:`lsr.dense.DenseEncoder`) each shard also holds dense vectors."""
    if shard_size < 1:
        raise InvalidInputError(f"shard_size must be >= 1, got {shard_size}.")
    corpus_file = find_corpus_file(Path(corpus))
    out = Path(out_dir)
    spec = _job_spec(corpus_file, encoder, shard_size, dense_encoder)
    total = count_lines(corpus_file)  # before anything is written: an empty corpus leaves no trace
    if total == 0:
        raise InvalidInputError(f"{corpus_file} holds no documents.")
    done = _prepare(out, spec, encoder.vocabulary)
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
    with tqdm(total=total, initial=n_docs, disable=not show_progress, desc="encoding", unit="doc") as bar:
        while True:
            chunk = list(islice(documents, shard_size))
            if not chunk:
                break
            texts = [d.full_text for d in chunk]
            vectors = encoder.encode_documents(texts)
            dense = None if dense_encoder is None else dense_encoder.encode_documents(texts)
            write_shard(shard_path(out, number), [d.id for d in chunk], vectors, dense)
            number += 1
            n_docs += len(chunk)
            bar.update(len(chunk))
    write_bytes_atomic(out / JOB_FILE, orjson.dumps({**spec, "complete": True, "n_docs": n_docs,
                                                      "n_shards": number}, option=orjson.OPT_INDENT_2))
    seconds = time.perf_counter() - started
    log.info("encoded %d documents into %d shards in %.1fs", n_docs, number, seconds)
    return EncodeResult(out, n_docs, number, seconds, skip)


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
