"""Anserini/Pyserini JsonVectorCollection: ``{"id": ..., "vector": {token: weight}}`` per line.

Reading maps tokens to the term ids of a vocabulary; writing (for Anserini) is part of the ecosystem
integration.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lsr.errors import InvalidInputError
from lsr.io.beir import iter_jsonl
from lsr.types import SparseBatch

__all__ = ["looks_like_vectors", "iter_vector_records", "collect_tokens", "iter_vector_batches"]


def looks_like_vectors(path: Path) -> bool:
    """True when the first record of a JSONL file carries a ``vector`` field."""
    for _, obj in iter_jsonl(path):
        return "vector" in obj
    return False


def iter_vector_records(path: Path) -> Iterator[tuple[str, dict[str, float]]]:
    for number, obj in iter_jsonl(path):
        where = f"{path}:{number}"
        doc_id = obj.get("id", obj.get("_id", obj.get("docid")))
        if isinstance(doc_id, int) and not isinstance(doc_id, bool):
            doc_id = str(doc_id)
        if not isinstance(doc_id, str) or not doc_id:
            raise InvalidInputError(f"{where}: missing or empty 'id'.")
        vector = obj.get("vector")
        if not isinstance(vector, dict):
            raise InvalidInputError(f"{where}: 'vector' must be an object mapping tokens to weights.")
        for token, weight in vector.items():
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight >= 0:
                raise InvalidInputError(f"{where}: weight of {token!r} must be a number >= 0, got {weight!r}.")
        yield doc_id, vector


def collect_tokens(path: Path) -> list[str]:
    """Every token the collection uses, sorted (the vocabulary of an index built without a model)."""
    tokens: set[str] = set()
    for _, vector in iter_vector_records(path):
        tokens.update(vector)
    return sorted(tokens)


def iter_vector_batches(path: Path, token_ids: dict[str, int], dim: int,
                        batch_size: int = 10_000) -> Iterator[tuple[list[str], SparseBatch]]:
    """Batches of (ids, vectors); a token outside the vocabulary is an error naming it."""
    ids: list[str] = []
    rows: list[dict[int, float]] = []
    for doc_id, vector in iter_vector_records(path):
        row = {}
        for token, weight in vector.items():
            term = token_ids.get(token)
            if term is None:
                raise InvalidInputError(f"{path}: document {doc_id!r} uses token {token!r}, not in the vocabulary.")
            if weight > 0:
                row[term] = float(weight)
        ids.append(doc_id)
        rows.append(row)
        if len(ids) == batch_size:
            yield ids, SparseBatch.from_dicts(rows, dim)
            ids, rows = [], []
    if ids:
        yield ids, SparseBatch.from_dicts(rows, dim)
