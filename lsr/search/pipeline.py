"""``SearchPipeline``: the retriever composition the CLI, evaluation and the service share, from a config.

A config (a dict, or JSON in a file for ``lsr eval --pipeline``)::

    {"retriever": "sparse" | "dense" | "hybrid" | "default",
     "query_weights": [1.0, 0.5],  # a hybrid index (splade+bm25): each part's weight in the sparse query
     "fusion": {"method": "pyserini" | "convex" | "rrf", "alpha": 0.5, "normalization": ..., "depth": 1000},
     "prf": {"placement": "before" | "after" | "both", "side": "sparse" | "dense",
             "sparse": {"method": "rocchio" | "rm3", "fb_docs": 10, "fb_terms": 20, "alpha": 1.0, "beta": 0.5},
             "dense": {"method": "rocchio" | "average", "depth": 5, "alpha": 0.4, "beta": 0.6}}}

Where interpolation happens relative to PRF (Li et al., "To Interpolate or not to Interpolate"):
- ``after``: each side runs PRF on its own feedback, then the two PRF rankings are fused;
- ``before``: the fused first-round ranking gives the feedback, and the ``side`` retriever's expanded
  query gives the final ranking;
- ``both``: the fused first-round ranking gives the feedback to both sides, whose PRF rankings are fused.
With ``retriever`` sparse or dense, PRF (if any) is that side's own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from lsr.errors import InvalidQueryError
from lsr.index import Index, open_index
from lsr.search.fusion import HybridRetriever
from lsr.search.prf import DensePRF, SparsePRF
from lsr.search.retriever import SparseRetriever
from lsr.types import Hits

__all__ = ["SearchPipeline", "RETRIEVERS", "PLACEMENTS", "DEFAULT_FUSION"]

RETRIEVERS = ("sparse", "dense", "hybrid", "default")
# "retriever": "default", the named default: the index's sparse side (on a splade+bm25 index, SPLADE + 3·BM25
# in one dot product) fused with its dense side by this convex fusion when the index has one, else the sparse
# side alone. Chosen on SciFact train + NFCorpus dev only (benchmarks/bm25_fusion.py).
DEFAULT_FUSION = {"method": "convex", "alpha": 0.6, "normalization": "minmax"}
PLACEMENTS = ("before", "after", "both")
_FUSION_KEYS = {"method", "alpha", "normalization", "weight_on", "depth", "k_rrf"}
_SPARSE_PRF_KEYS = {"method", "fb_docs", "fb_terms", "alpha", "beta", "lam"}
_DENSE_PRF_KEYS = {"method", "depth", "alpha", "beta"}


def _options(section: dict[str, Any] | None, allowed: set[str], where: str) -> dict[str, Any]:
    if section is not None and not isinstance(section, dict):
        raise InvalidQueryError(f"{where} options must be an object, got {section!r}.")
    section = dict(section or {})
    unknown = set(section) - allowed
    if unknown:
        raise InvalidQueryError(f"unknown {where} option(s) {sorted(unknown)}; allowed: {sorted(allowed)}.")
    return section


class SearchPipeline:
    """``search(texts, k) -> Hits`` for one index snapshot, composed as ``config`` says."""

    def __init__(self, index: Index | str | os.PathLike[str], config: dict[str, Any] | None = None,
                 sparse: SparseRetriever | None = None, dense=None, backend: str = "auto"):  # noqa: ANN001
        self.index = index if isinstance(index, Index) else open_index(index)
        self.config = dict(config or {"retriever": "sparse"})
        kind = self.config.get("retriever", "sparse")
        if kind not in RETRIEVERS:
            raise InvalidQueryError(f"retriever must be one of {', '.join(RETRIEVERS)}, got {kind!r}.")
        unknown = set(self.config) - {"retriever", "fusion", "prf", "query_weights"}
        if unknown:
            raise InvalidQueryError(f"unknown pipeline key(s) {sorted(unknown)}.")
        self._sparse, self._dense, self.backend = sparse, dense, backend
        if kind == "default":
            kind = "hybrid" if self.index.manifest.dense is not None else "sparse"
            if kind == "hybrid":
                self.config["fusion"] = {**DEFAULT_FUSION, **(self.config.get("fusion") or {})}
        self.kind = kind
        self.retriever = self._build(kind)
        self.timings: dict[str, float] = {}

    # the sides are built only when the config needs them
    @property
    def sparse(self) -> SparseRetriever:
        if self._sparse is None:
            self._sparse = SparseRetriever(self.index, backend=self.backend,
                                           query_weights=self.config.get("query_weights"))
        return self._sparse

    @property
    def dense(self):  # noqa: ANN201 - DenseRetriever
        if self._dense is None:
            from lsr.search.dense import DenseRetriever

            self._dense = DenseRetriever(self.index)
        return self._dense

    def _build(self, kind: str):  # noqa: ANN202
        fusion = _options(self.config.get("fusion"), _FUSION_KEYS, "fusion")
        prf = self.config.get("prf") or {}
        if not isinstance(prf, dict):
            raise InvalidQueryError(f"prf must be an object, got {prf!r}.")
        prf = dict(prf)
        placement = prf.pop("placement", "after")
        side = prf.pop("side", "sparse")
        sparse_prf = _options(prf.pop("sparse", None), _SPARSE_PRF_KEYS, "sparse PRF")
        dense_prf = _options(prf.pop("dense", None), _DENSE_PRF_KEYS, "dense PRF")
        if prf:
            raise InvalidQueryError(f"unknown PRF option(s) {sorted(prf)}.")
        use_prf = self.config.get("prf") is not None
        if placement not in PLACEMENTS:
            raise InvalidQueryError(f"PRF placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}.")
        if side not in ("sparse", "dense"):
            raise InvalidQueryError(f"PRF side must be sparse or dense, got {side!r}.")
        if kind == "sparse":
            return SparsePRF(self.sparse, **sparse_prf) if use_prf else self.sparse
        if kind == "dense":
            return DensePRF(self.dense, **dense_prf) if use_prf else self.dense
        first_round = HybridRetriever(self.sparse, self.dense, **fusion)
        if not use_prf:
            return first_round
        if placement == "after":
            return HybridRetriever(SparsePRF(self.sparse, **sparse_prf), DensePRF(self.dense, **dense_prf), **fusion)
        if placement == "before":
            return (SparsePRF(self.sparse, first_round, **sparse_prf) if side == "sparse"
                    else DensePRF(self.dense, first_round, **dense_prf))
        return HybridRetriever(SparsePRF(self.sparse, first_round, **sparse_prf),
                               DensePRF(self.dense, first_round, **dense_prf), **fusion)

    def search(self, texts: Sequence[str], k: int) -> Hits:
        if isinstance(texts, str):
            raise InvalidQueryError("queries must be a list of texts; wrap a single query in a list.")
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise InvalidQueryError(f"query texts must be non-empty strings, got {text!r}.")
        started = time.perf_counter()
        hits = self.retriever.search(list(texts), k)
        self.timings = {**getattr(self.retriever, "timings", {}), "total": time.perf_counter() - started}
        return hits
