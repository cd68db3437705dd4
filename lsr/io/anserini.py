"""Anserini / Pyserini exchange formats for sparse vectors (no Java here; :mod:`lsr.pyserini` runs Lucene).

- Documents: Anserini's ``JsonVectorCollection``, ``{"id", "contents", "vector": {token: weight}}`` per line.
  Anserini's impact indexer (``IndexCollection -impact -pretokenized``) casts each weight to an integer, so
  documents are written as ``round(scale * w)`` (Anserini's convention is ``scale = 100``), dropping weights
  that round to 0. Reading them back is :mod:`lsr.io.jsonvectors` (``lsr index vectors.jsonl``).
- Queries, two forms, both integers:
  ``tsv`` — ``qid<TAB>tok tok tok …`` with each token repeated ``round(scale * w)`` times: what
  ``python -m pyserini.encode.query`` writes for sparse encoders and what Anserini's ``SearchCollection
  -impact -pretokenized`` and Pyserini's default ``TokFreqQueryEncoder`` read (a token's weight = its count);
  ``jsonl`` — ``{"id", "contents", "vector"}``, what Pyserini's ``CachedDataQueryEncoder`` reads (keyed by
  ``contents``, the query text).
Tokens are the vocabulary's strings as they are (wordpieces such as ``##s`` included), the form Pyserini's
SPLADE encoders write, so that vectors from either side meet over the same terms.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import orjson

from lsr.errors import InvalidInputError
from lsr.index.format import atomic_output
from lsr.io.beir import open_text
from lsr.types import SparseBatch

__all__ = ["ANSERINI_SCALE", "quantise_rows", "write_vector_collection", "export_index_vectors",
           "write_impact_queries", "read_impact_queries", "queries_to_batch"]

ANSERINI_SCALE = 100.0


def _check_tokens(tokens: Sequence[str]) -> None:
    # Lucene's pretokenized field splits on whitespace: such a token would silently become two terms.
    bad = next((t for t in tokens if not t or any(c.isspace() for c in t)), None)
    if bad is not None:
        raise InvalidInputError(f"token {bad!r} is empty or holds whitespace; Anserini cannot index it as one term.")


def quantise_rows(batch: SparseBatch, tokens: Sequence[str], scale: float | None) -> Iterator[dict[str, float]]:
    """Each row as ``{token: weight}``; with ``scale``, integer weights ``round(scale * w)`` (zeros dropped),
    rounded half to even in float64 like numpy's ``rint``."""
    for i in range(batch.n):
        idx, w = batch.row(i)
        if scale is None:
            yield {tokens[t]: float(v) for t, v in zip(idx.tolist(), w.tolist(), strict=True)}
            continue
        ints = np.rint(w.astype(np.float64) * scale).astype(np.int64)
        yield {tokens[t]: int(v) for t, v in zip(idx.tolist(), ints.tolist(), strict=True) if v > 0}


def write_vector_collection(path: str | os.PathLike[str], items: Iterable[tuple[str, Mapping[str, float]]],
                            contents: Mapping[str, str] | None = None) -> int:
    """Write ``(id, {token: weight})`` pairs as a JsonVectorCollection file (atomically); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with atomic_output(path) as fh:
        for doc_id, vector in items:
            fh.write(orjson.dumps({"id": doc_id, "contents": (contents or {}).get(doc_id, ""), "vector": vector}))
            fh.write(b"\n")
            n += 1
    return n


def export_index_vectors(index, path: str | os.PathLike[str], scale: float | None = ANSERINI_SCALE,  # noqa: ANN001
                         batch_size: int = 4096) -> int:
    """Write an lsr index's live documents (their stored vectors, dequantised first) as a JsonVectorCollection
    for Anserini; ``scale=None`` keeps float weights (Pyserini's encoder output form). Returns the count."""
    from lsr.index import Index, open_index

    index = index if isinstance(index, Index) else open_index(index)
    tokens = index.vocabulary
    _check_tokens(tokens)

    def items() -> Iterator[tuple[str, dict[str, float]]]:
        for seg in index.segments:
            deleted = index.deleted_mask(seg)
            for lo in range(0, seg.info.n_docs, batch_size):
                hi = min(lo + batch_size, seg.info.n_docs)
                for local, vector in zip(range(lo, hi), quantise_rows(seg.vectors(lo, hi), tokens, scale),
                                         strict=True):
                    if deleted is None or not deleted[local]:
                        yield seg.external_id(local), vector

    return write_vector_collection(path, items())


def write_impact_queries(path: str | os.PathLike[str], query_ids: Sequence[str], batch: SparseBatch,
                         tokens: Sequence[str], scale: float = ANSERINI_SCALE, texts: Sequence[str] | None = None,
                         fmt: str | None = None) -> int:
    """Encoded queries as integers for Anserini/Pyserini; ``fmt`` ``tsv`` or ``jsonl`` (default: from the file
    suffix). ``texts`` fill the JSONL ``contents`` field (Pyserini looks cached queries up by their text)."""
    path = Path(path)
    fmt = fmt or ("jsonl" if path.suffix in (".jsonl", ".json") else "tsv")
    if fmt not in ("tsv", "jsonl"):
        raise InvalidInputError(f"query format must be 'tsv' or 'jsonl', got {fmt!r}.")
    if len(query_ids) != batch.n or (texts is not None and len(texts) != batch.n):
        raise InvalidInputError(f"{len(query_ids)} query ids for {batch.n} query vectors.")
    _check_tokens(tokens)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as fh:
        for i, (qid, vector) in enumerate(zip(query_ids, quantise_rows(batch, tokens, scale), strict=True)):
            if any(c in "\t\n\r" for c in qid):
                raise InvalidInputError(f"query id {qid!r} holds a tab or newline.")
            if fmt == "tsv":
                line = " ".join(tok for tok, n in vector.items() for _ in range(int(n)))
                fh.write(f"{qid}\t{line}\n".encode())
            else:
                text = texts[i] if texts is not None else ""
                fh.write(orjson.dumps({"id": qid, "contents": text, "vector": vector}) + b"\n")
    return batch.n


def read_impact_queries(path: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """``{qid: {token: weight}}`` from either query form (TSV of repeated tokens, or JSONL with ``vector``)."""
    path = Path(path)
    out: dict[str, dict[str, float]] = {}
    if ".jsonl" in path.suffixes or path.suffix == ".json":
        from lsr.io.jsonvectors import iter_vector_records

        for qid, vector in iter_vector_records(path):
            out[qid] = {tok: float(w) for tok, w in vector.items() if w > 0}
        return out
    with open_text(path) as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            qid, sep, toks = line.rstrip("\n").partition("\t")
            if not sep or not qid:
                raise InvalidInputError(f"{path}:{number}: expected 'qid<TAB>tokens'.")
            out[qid] = {tok: float(n) for tok, n in Counter(toks.split()).items()}
    return out


def queries_to_batch(vectors: Sequence[Mapping[str, float]], token_ids: Mapping[str, int], dim: int) -> SparseBatch:
    """Query vectors over an index's vocabulary. A token the vocabulary lacks is left out: no document holds
    it, so it could not change any score (the same rule as Anserini, whose searcher skips unknown terms)."""
    rows = [{token_ids[t]: float(w) for t, w in v.items() if t in token_ids and w > 0} for v in vectors]
    return SparseBatch.from_dicts(rows, dim)

