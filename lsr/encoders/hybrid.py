"""Several sparse encoders as one: learned sparse + BM25 in one index, fused by a single dot product.

Each document vector is the concatenation of its parts' vectors over the concatenated vocabularies (the
parts after the first are prefixed, ``bm25:gener``), so one index, one id space and the same kernels, merges
and fault handling serve every part. A query is the concatenation of its parts' query vectors, each scaled
by that part's query weight, so the exact score is ``sum_i w_i * score_i``: linear score fusion computed by
the index itself (top-k pruning included), not by merging two ranked lists. A weight of 0 leaves that part
out of the query (BM25 alone over a ``splade+bm25`` index is ``query_weights=[0, 1]``) and skips its query
encoding.

Config: ``{"type": "splade+bm25", "parts": [{part config}, ...], "query_weights": [1.0, w]}``; the type
names the parts' kinds in order. Built from ``type="splade+bm25"`` and a ``model`` (the first part's),
the BM25 part's model comes from ``bm25_model`` (a fitted folder, see :mod:`lsr.encoders.bm25`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lsr.encoders.base import SparseEncoder, check_texts
from lsr.errors import InvalidInputError
from lsr.index.vocabulary import Vocabulary
from lsr.types import SparseBatch

__all__ = ["HybridSparseEncoder", "DEFAULT_QUERY_WEIGHTS"]

# splade+bm25: the BM25 part's weight was chosen on training queries only (SciFact train and NFCorpus dev,
# both best at 3 on the grid 0.1 ... 5; benchmarks/bm25_fusion.py), never on a test split. One setting for
# every collection: a weight tuned per test set would not carry to collections nobody tuned on.
DEFAULT_QUERY_WEIGHTS = {"splade+bm25": (1.0, 3.0)}


class HybridSparseEncoder:
    def __init__(self, parts: Sequence[SparseEncoder], query_weights: Sequence[float] | None = None,
                 model: str | None = None):
        if len(parts) < 2:
            raise InvalidInputError("a hybrid encoder needs at least two parts.")
        self.parts = list(parts)
        self.kind = "+".join(getattr(p, "kind", "splade") for p in self.parts)
        if len(set(self.kind.split("+"))) != len(self.parts):
            raise InvalidInputError(f"a hybrid encoder's parts must be of different kinds, got {self.kind}.")
        weights = query_weights if query_weights is not None else DEFAULT_QUERY_WEIGHTS.get(self.kind)
        if weights is None:
            weights = (1.0,) * len(self.parts)
        weights = [float(w) if not isinstance(w, bool) and isinstance(w, int | float) else float("nan")
                   for w in weights]
        # 0 leaves a part out; a positive weight is kept within [1e-6, 1e6] so that scaled float32 query
        # weights neither underflow to 0 nor overflow
        if len(weights) != len(self.parts) or not all(w == 0 or 1e-6 <= w <= 1e6 for w in weights) \
                or not any(weights):
            raise InvalidInputError(f"query_weights must be {len(self.parts)} numbers, each 0 or in [1e-6, 1e6], "
                                    f"not all 0; got {query_weights!r}.")
        self.query_weights = weights
        self.model_spec = model
        self.offsets = np.concatenate([[0], np.cumsum([p.dim for p in self.parts])]).astype(np.int64)
        tokens: list[str] = []
        for i, part in enumerate(self.parts):
            prefix = "" if i == 0 else f"{part.kind}:"
            tokens.extend(prefix + t for t in part.vocabulary.tokens)
        self.vocabulary = Vocabulary.from_tokens(tokens, "+".join(p.vocabulary.source for p in self.parts))

    @property
    def tokenizer(self) -> _JointTokenizer:
        return _JointTokenizer(self)

    @property
    def dim(self) -> int:
        return int(self.offsets[-1])

    @property
    def route(self) -> str | None:
        routes = [getattr(p, "route", None) for p in self.parts]
        return " + ".join(r for r in routes if r) or None

    def config(self) -> dict[str, Any]:
        return {"type": self.kind, "model": self.model_spec, "parts": [p.config() for p in self.parts],
                "query_weights": self.query_weights, "vocabulary": self.vocabulary.identity()}

    def weight_bound(self) -> float | None:
        """The largest of the parts' bounds (documents are joined unscaled), None if a part has none."""
        bounds = [getattr(p, "weight_bound", lambda: None)() for p in self.parts]
        return None if any(b is None for b in bounds) else max(bounds)

    def join(self, batches: list[SparseBatch | None], n: int, scales: Sequence[float]) -> SparseBatch:
        """Row i of the result is row i of every part, shifted into that part's id range and scaled (a part
        scaled by 0, or None, is left out)."""
        present = [(b, i) for i, b in enumerate(batches) if b is not None and scales[i] > 0]
        counts = np.stack([b.row_nnz() for b, _ in present], axis=1)  # (n, parts)
        indptr = np.concatenate([[0], np.cumsum(counts.sum(axis=1))])
        indices = np.empty(int(indptr[-1]), np.int32)
        values = np.empty(int(indptr[-1]), np.float32)
        start = indptr[:-1].copy()
        for (batch, i), column in zip(present, counts.T, strict=True):
            # where each of this part's postings goes: its row's start plus its rank within the row
            row_of = np.repeat(np.arange(n), column)
            rank = np.arange(batch.nnz) - np.repeat(batch.indptr[:-1], column)
            target = start[row_of] + rank
            indices[target] = batch.indices + self.offsets[i]
            values[target] = batch.values * np.float32(scales[i])
            start += column
        return SparseBatch(indptr, indices, values, self.dim)

    def encode_documents(self, texts: Sequence[str], show_progress: bool = False) -> SparseBatch:
        texts = check_texts(texts)
        batches = [p.encode_documents(texts, show_progress=show_progress and i == 0)
                   for i, p in enumerate(self.parts)]
        return self.join(batches, len(texts), [1.0] * len(self.parts))

    def encode_queries(self, texts: Sequence[str], show_progress: bool = False) -> SparseBatch:
        texts = check_texts(texts)
        batches = [p.encode_queries(texts, show_progress=show_progress) if w > 0 else None
                   for p, w in zip(self.parts, self.query_weights, strict=True)]
        return self.join(batches, len(texts), self.query_weights)


class _JointTokenizer:
    """``tokenize(text)`` over the joint vocabulary: every part's tokens, prefixed as in the vocabulary."""

    def __init__(self, encoder: HybridSparseEncoder):
        self.encoder = encoder

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        for i, part in enumerate(self.encoder.parts):
            tokenize = getattr(getattr(part, "tokenizer", None), "tokenize", None)
            if tokenize is not None:
                prefix = "" if i == 0 else f"{part.kind}:"
                tokens.extend(prefix + t for t in tokenize(text))
        return tokens
