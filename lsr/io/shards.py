"""Encoded shards: the output of ``lsr encode`` (one ``.npz`` per shard, no pickle).

A shard holds ``ids`` (unicode array), ``indptr``/``indices``/``values`` (a SparseBatch) and ``dim``, and
``dense`` (float32, one row per document) when the job also encodes dense vectors.
It is written to a temporary name, fsynced and renamed, so a shard file that exists is complete.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from lsr.errors import InvalidInputError
from lsr.types import SparseBatch

__all__ = ["shard_path", "write_shard", "read_shard", "read_shard_dense", "list_shards"]


def shard_path(folder: Path, number: int) -> Path:
    return folder / f"shard-{number:06d}.npz"


def write_shard(path: Path, ids: list[str], vectors: SparseBatch, dense: np.ndarray | None = None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    extra = {} if dense is None else {"dense": np.ascontiguousarray(dense, dtype=np.float32)}
    with open(tmp, "wb") as fh:
        np.savez(fh, ids=np.array(ids, dtype=str), indptr=vectors.indptr, indices=vectors.indices,
                 values=vectors.values, dim=np.int64(vectors.dim), **extra)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_shard(path: Path) -> tuple[list[str], SparseBatch]:
    try:
        with np.load(path, allow_pickle=False) as data:
            ids = data["ids"].tolist()
            batch = SparseBatch(data["indptr"], data["indices"], data["values"], int(data["dim"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidInputError(f"encoded shard {path} is unreadable: {exc}.") from None
    if len(ids) != batch.n:
        raise InvalidInputError(f"encoded shard {path} has {len(ids)} ids for {batch.n} vectors.")
    return ids, batch


def read_shard_dense(path: Path) -> np.ndarray | None:
    """The shard's dense vectors, or None when the job encoded none."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return np.asarray(data["dense"]) if "dense" in data.files else None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidInputError(f"encoded shard {path} is unreadable: {exc}.") from None


def list_shards(folder: Path) -> list[Path]:
    """Complete shards in order; they must be numbered 0..n-1 without gaps."""
    shards = sorted(folder.glob("shard-*.npz"))
    for number, path in enumerate(shards):
        if path != shard_path(folder, number):
            raise InvalidInputError(f"{folder}: shard {number} is missing (found {path.name}).")
    return shards
