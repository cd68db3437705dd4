"""Fusion of two retrievers' rankings, as a retriever that wraps retrievers.

Methods:
- ``pyserini``: Pyserini's hybrid formula -- ``alpha * sparse + dense`` (or ``sparse + alpha * dense`` with
  ``weight_on="dense"``); a document missing from one list gets that list's minimum score; optional
  normalisation centres each list on its mid-range and divides by its range (as Pyserini does);
- ``convex``: ``alpha * sparse + (1 - alpha) * dense`` after min-max or z-score normalisation of each list,
  a missing document at its list's minimum;
- ``rrf``: reciprocal rank fusion, ``sum 1 / (k_rrf + rank)`` with k_rrf = 60.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from lsr.errors import InvalidQueryError
from lsr.types import Hits

__all__ = ["HybridRetriever", "fuse", "FUSION_METHODS", "number"]

FUSION_METHODS = ("pyserini", "convex", "rrf")
NORMALISATIONS = ("none", "midrange", "minmax", "zscore")


def number(name: str, value, lo: float = -1e6, hi: float = 1e6) -> float:  # noqa: ANN001
    """A finite real option, or a clear error (options arrive from configs and HTTP bodies)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise InvalidQueryError(f"{name} must be a number in [{lo:g}, {hi:g}], got {value!r}.")
    return float(value)


def _whole(name: str, value, lo: int, hi: int) -> int:  # noqa: ANN001
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidQueryError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}.")
    return value


def _normalise(scores: np.ndarray, how: str) -> np.ndarray:
    if how == "none" or len(scores) == 0:
        return scores
    lo, hi = scores.min(), scores.max()
    if how == "midrange":
        return (scores - (lo + hi) / 2) / (hi - lo) if hi > lo else scores - lo
    if how == "minmax":
        return (scores - lo) / (hi - lo) if hi > lo else np.zeros_like(scores)
    std = scores.std()
    return (scores - scores.mean()) / std if std > 0 else np.zeros_like(scores)


def fuse(sparse: Hits, dense: Hits, k: int, method: str = "pyserini", alpha: float = 0.5,
         normalization: str | None = None, weight_on: str = "sparse", k_rrf: int = 60) -> Hits:
    """Fuse two result sets for the same queries into the top ``k`` (ties by ascending id)."""
    if method not in FUSION_METHODS:
        raise InvalidQueryError(f"fusion method must be one of {', '.join(FUSION_METHODS)}, got {method!r}.")
    if normalization is None:
        normalization = {"pyserini": "none", "convex": "minmax", "rrf": "none"}[method]
    if normalization not in NORMALISATIONS:
        raise InvalidQueryError(f"normalization must be one of {', '.join(NORMALISATIONS)}, got {normalization!r}.")
    out = Hits.empty(sparse.n, k)
    for i in range(sparse.n):
        s_ids, s_scores = sparse.row(i)
        d_ids, d_scores = dense.row(i)
        docs = np.union1d(s_ids, d_ids)
        if len(docs) == 0:
            continue
        if method == "rrf":
            fused = np.zeros(len(docs))
            for ids in (s_ids, d_ids):
                fused[np.searchsorted(docs, ids)] += 1.0 / (k_rrf + np.arange(1, len(ids) + 1))
        else:
            columns = []
            for ids, scores in ((s_ids, s_scores), (d_ids, d_scores)):
                full = np.full(len(docs), scores.min() if len(scores) else 0.0, dtype=np.float64)
                full[np.searchsorted(docs, ids)] = scores
                columns.append(_normalise(full, normalization))
            s_col, d_col = columns
            if method == "convex":
                fused = alpha * s_col + (1 - alpha) * d_col
            elif weight_on == "dense":
                fused = s_col + alpha * d_col
            else:
                fused = alpha * s_col + d_col
        order = np.lexsort((docs, -fused))[:k]
        out.ids[i, : len(order)] = docs[order]
        out.scores[i, : len(order)] = fused[order]
    return out


class HybridRetriever:
    """Searches both retrievers ``depth`` deep and fuses the two lists."""

    def __init__(self, sparse, dense, method: str = "pyserini", alpha: float = 0.5,  # noqa: ANN001 - retrievers
                 normalization: str | None = None, weight_on: str = "sparse", depth: int = 1000, k_rrf: int = 60):
        if method not in FUSION_METHODS:
            raise InvalidQueryError(f"fusion method must be one of {', '.join(FUSION_METHODS)}, got {method!r}.")
        if weight_on not in ("sparse", "dense"):
            raise InvalidQueryError(f"weight_on must be sparse or dense, got {weight_on!r}.")
        if normalization is not None and normalization not in NORMALISATIONS:
            raise InvalidQueryError(f"normalization must be one of {', '.join(NORMALISATIONS)}, got {normalization!r}.")
        self.sparse, self.dense = sparse, dense
        self.method, self.alpha, self.normalization = method, number("alpha", alpha), normalization
        self.weight_on = weight_on
        self.depth, self.k_rrf = _whole("depth", depth, 1, 10_000), _whole("k_rrf", k_rrf, 0, 1_000_000)
        self.timings: dict[str, float] = {}

    def search(self, queries: Sequence[str], k: int) -> Hits:
        depth = max(k, self.depth)
        sparse_hits = self.sparse.search(queries, depth)
        dense_hits = self.dense.search(queries, depth)
        started = time.perf_counter()
        hits = fuse(sparse_hits, dense_hits, k, self.method, self.alpha, self.normalization, self.weight_on,
                    self.k_rrf)
        self.timings = {**_prefixed("sparse", self.sparse), **_prefixed("dense", self.dense),
                        "fusion": time.perf_counter() - started}
        return hits


def _prefixed(side: str, retriever) -> dict[str, float]:  # noqa: ANN001
    timings = getattr(retriever, "timings", {}) or {}
    return {(key if key.startswith(side) else f"{side}_{key}"): value for key, value in timings.items()}
