"""The exchange folder every engine in the benchmark reads: the same document and query vectors for all.

    <dir>/docs.npz      indptr, indices, values (float32), dim    -- documents, CSR
    <dir>/doc_ids.txt   one external id per line
    <dir>/queries.npz   the same layout for the queries
    <dir>/query_ids.txt
    <dir>/vocab.json    the tokens of the term ids (JSON list)

``python benchmarks/vectors.py ENCODED_DIR QUERIES_FILE OUT_DIR`` builds it from an ``lsr encode`` folder
and a queries file (queries are encoded with the same model).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from lsr.types import SparseBatch


def save_batch(path: Path, batch: SparseBatch) -> None:
    np.savez(path, indptr=batch.indptr, indices=batch.indices, values=batch.values, dim=np.int64(batch.dim))


def load_batch(path: Path) -> SparseBatch:
    with np.load(path, allow_pickle=False) as data:
        return SparseBatch(data["indptr"], data["indices"], data["values"], int(data["dim"]))


def load_exchange(folder: Path) -> tuple[list[str], SparseBatch, list[str], SparseBatch]:
    doc_ids = (folder / "doc_ids.txt").read_text(encoding="utf-8").splitlines()
    query_ids = (folder / "query_ids.txt").read_text(encoding="utf-8").splitlines()
    return doc_ids, load_batch(folder / "docs.npz"), query_ids, load_batch(folder / "queries.npz")


def export(encoded: Path, queries_file: Path, out: Path, query_ids: list[str] | None = None) -> Path:
    from lsr.encoders import load_encoder
    from lsr.io.beir import read_queries
    from lsr.io.shards import list_shards, read_shard
    from lsr.jobs.encode import read_job

    out.mkdir(parents=True, exist_ok=True)
    ids, parts = [], []
    for shard in list_shards(encoded):
        shard_ids, vectors = read_shard(shard)
        ids += shard_ids
        parts.append(vectors)
    save_batch(out / "docs.npz", SparseBatch.concat(parts))
    (out / "doc_ids.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
    shutil.copy(encoded / "vocab.json", out / "vocab.json")
    queries = read_queries(queries_file)
    qids = query_ids if query_ids is not None else list(queries)
    encoder = load_encoder(read_job(encoded)["encoder"])
    save_batch(out / "queries.npz", encoder.encode_queries([queries[q] for q in qids]))
    (out / "query_ids.txt").write_text("\n".join(qids) + "\n", encoding="utf-8")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Export lsr-encoded vectors to the benchmark exchange folder.")
    parser.add_argument("encoded", type=Path)
    parser.add_argument("queries", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--qrels", type=Path, default=None, help="keep only the queries these qrels judge")
    args = parser.parse_args()
    qids = None
    if args.qrels is not None:
        from lsr.io.beir import read_qrels

        qids = list(read_qrels(args.qrels))
    print(export(args.encoded, args.queries, args.out, qids))


if __name__ == "__main__":
    main()
