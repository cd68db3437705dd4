"""The dense retriever: texts (or query vectors) -> faiss inner-product top-k over the index's dense part."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import numpy as np

from lsr.errors import InvalidQueryError
from lsr.index import Index, open_index
from lsr.types import Hits

__all__ = ["DenseRetriever"]


class DenseRetriever:
    """``search(texts | (n, dim) array, k) -> Hits`` in the same document-id space as the sparse side."""

    def __init__(self, index: Index | str | os.PathLike[str], encoder=None):  # noqa: ANN001 - a DenseEncoder
        from lsr.dense import DenseSearcher

        self.index = index if isinstance(index, Index) else open_index(index)
        self.searcher = DenseSearcher(self.index)
        self._encoder = encoder
        self._last: tuple[tuple[str, ...], np.ndarray] | None = None
        self.timings: dict[str, float] = {}

    @property
    def encoder(self):  # noqa: ANN201 - a DenseEncoder, loaded on first use from the manifest
        if self._encoder is None:
            from lsr.dense import DenseEncoder

            spec = self.index.manifest.dense
            self._encoder = DenseEncoder(spec["model"], max_length=spec.get("max_length", 256))
            if self._encoder.dim != int(spec["dim"]):
                raise InvalidQueryError(f"dense model {spec['model']!r} makes {self._encoder.dim}-d vectors; the "
                                        f"index holds {spec['dim']}-d ones.")
        return self._encoder

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors, memoised for the last batch (pipelines ask more than once per query)."""
        key = tuple(texts)
        last = self._last  # read once: another thread (threaded workers) may replace it meanwhile
        if last is None or last[0] != key:
            last = self._last = (key, self.encoder.encode_queries(list(texts)))
        return last[1]

    def search(self, queries: Sequence[str] | np.ndarray, k: int) -> Hits:
        self.timings = {}
        if not isinstance(queries, np.ndarray):
            started = time.perf_counter()
            queries = self.encode(queries)
            self.timings["dense_encode"] = time.perf_counter() - started
        started = time.perf_counter()
        hits = self.searcher.search(queries, k)
        self.timings["dense_search"] = time.perf_counter() - started
        return hits

    def document_vectors(self, doc_ids: np.ndarray) -> np.ndarray:
        return self.searcher.vectors(doc_ids)
