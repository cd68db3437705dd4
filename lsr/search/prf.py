"""Pseudo-relevance feedback, as retrievers that wrap a retriever and take feedback from another.

The feedback documents are the top of ``feedback.search(texts)`` -- the same retriever (plain PRF) or a
fusion of sparse and dense (interpolation before PRF) -- and the expanded query is run on ``base``.

- :class:`SparsePRF` works on the index's stored document vectors: ``rocchio`` (Anserini's Rocchio:
  ``alpha * q/|q| + beta * mean(d/|d|)`` over the top feedback documents, L2 norms, keeping the original
  terms plus the ``fb_terms`` heaviest feedback terms) and ``rm3`` (each feedback document weighted by its
  share of the feedback scores, L1-normalised vectors, ``(1 - lam) * q + lam * feedback``).
- :class:`DensePRF` is Vector-PRF: ``average`` (the query and the top ``depth`` document vectors averaged)
  and ``rocchio`` (``alpha * q + beta * mean(d)``; depth 5, alpha 0.4, beta 0.6 by default).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from lsr.errors import InvalidQueryError
from lsr.search.fusion import number
from lsr.types import Hits, SparseBatch

__all__ = ["SparsePRF", "DensePRF"]


def _check_positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise InvalidQueryError(f"{name} must be an integer in [1, 1000], got {value!r}.")
    return value


class _FeedbackRetriever:
    """Search = expand the query from feedback documents, then search the base retriever with it; the timings
    hold the expansion (``<stage>``) and the base's own stages (``<stage>_<name>``)."""

    stage: str

    def search(self, texts: Sequence[str], k: int) -> Hits:
        started = time.perf_counter()
        expanded = self.expand(texts)
        prf_time = time.perf_counter() - started
        hits = self.base.search(expanded, k)
        self.timings = {self.stage: prf_time, **{f"{self.stage}_{key}": v for key, v in self.base.timings.items()}}
        return hits


class SparsePRF(_FeedbackRetriever):
    stage = "sparse_prf"

    def __init__(self, base, feedback=None, method: str = "rocchio", fb_docs: int = 10,  # noqa: ANN001
                 fb_terms: int = 20, alpha: float = 1.0, beta: float = 0.5, lam: float = 0.5):
        if method not in ("rocchio", "rm3"):
            raise InvalidQueryError(f"sparse PRF method must be rocchio or rm3, got {method!r}.")
        self.base, self.feedback = base, feedback if feedback is not None else base
        self.method = method
        self.fb_docs, self.fb_terms = _check_positive_int("fb_docs", fb_docs), _check_positive_int("fb_terms", fb_terms)
        self.alpha, self.beta, self.lam = number("alpha", alpha), number("beta", beta), number("lam", lam, 0, 1)
        self.timings: dict[str, float] = {}

    def expand(self, texts: Sequence[str]) -> SparseBatch:
        queries = self.base.encode(list(texts))
        fb = self.feedback.search(texts, self.fb_docs)
        index = self.base.index
        rows = []
        for i in range(queries.n):
            q_terms, q_weights = queries.row(i)
            ids, scores = fb.row(i)
            q = np.zeros(index.dim)
            q[q_terms] = q_weights
            if len(ids) == 0:
                rows.append({int(t): float(w) for t, w in zip(q_terms, q_weights, strict=True)})
                continue
            docs = np.zeros((len(ids), index.dim))
            for j, d in enumerate(ids.tolist()):
                terms, weights = index.document_vector(d).row(0)
                docs[j, terms] = weights
            if self.method == "rocchio":
                query_part = self.alpha * q / max(np.linalg.norm(q), 1e-12)
                feedback = (docs / np.maximum(np.linalg.norm(docs, axis=1, keepdims=True), 1e-12)).mean(axis=0)
                feedback *= self.beta
            else:
                shares = np.maximum(scores.astype(np.float64), 0)
                shares = shares / shares.sum() if shares.sum() > 0 else np.full(len(ids), 1 / len(ids))
                query_part = (1 - self.lam) * q / max(q.sum(), 1e-12)
                l1 = docs / np.maximum(docs.sum(axis=1, keepdims=True), 1e-12)
                feedback = self.lam * (shares[:, None] * l1).sum(axis=0)
            keep = np.argsort(-feedback, kind="stable")[: self.fb_terms]
            expanded = query_part.copy()
            expanded[keep] += feedback[keep]
            nz = np.flatnonzero(expanded > 0)
            rows.append({int(t): float(expanded[t]) for t in nz})
        return SparseBatch.from_dicts(rows, index.dim)



class DensePRF(_FeedbackRetriever):
    stage = "dense_prf"

    def __init__(self, base, feedback=None, method: str = "rocchio", depth: int = 5,  # noqa: ANN001
                 alpha: float = 0.4, beta: float = 0.6):
        if method not in ("rocchio", "average"):
            raise InvalidQueryError(f"dense PRF method must be rocchio or average, got {method!r}.")
        self.base, self.feedback = base, feedback if feedback is not None else base
        self.method, self.depth = method, _check_positive_int("depth", depth)
        self.alpha, self.beta = number("alpha", alpha), number("beta", beta)
        self.timings: dict[str, float] = {}

    def expand(self, texts: Sequence[str]) -> np.ndarray:
        queries = self.base.encode(list(texts))
        fb = self.feedback.search(texts, self.depth)
        out = np.array(queries, dtype=np.float32, copy=True)
        for i in range(len(queries)):
            ids, _ = fb.row(i)
            if len(ids) == 0:
                continue
            docs = self.base.document_vectors(ids)
            if self.method == "average":
                out[i] = (queries[i] + docs.sum(axis=0)) / (len(ids) + 1)
            else:
                out[i] = self.alpha * queries[i] + self.beta * docs.mean(axis=0)
        return out

