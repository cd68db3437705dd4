"""faiss over each segment's dense vectors: build (for the writer) and search (for retrievers)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lsr.errors import IndexFormatError, InvalidQueryError, MissingDependencyError
from lsr.index import Index
from lsr.kernels import check_k
from lsr.types import Hits

__all__ = ["faiss_builder", "DenseSearcher"]


def _faiss():
    try:
        import faiss
    except ImportError:
        raise MissingDependencyError("dense retrieval needs faiss: pip install 'lsr-search[dense]'") from None
    return faiss


def faiss_builder(factory: str = "Flat") -> Callable[[np.ndarray], bytes]:
    """A function turning a segment's ``(n, dim)`` float32 vectors into a serialised faiss index.

    ``factory`` is a faiss index-factory string with inner-product metric: ``Flat`` (exact, the default),
    ``HNSW32``, ``IVF64,Flat``, ... An index that needs training is trained on the segment's own vectors.
    """
    faiss = _faiss()

    def build(vectors: np.ndarray) -> bytes:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        try:
            index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise InvalidQueryError(f"invalid faiss factory string {factory!r}: {exc}".splitlines()[0]) from None
        if not index.is_trained:
            index.train(vectors)
        if len(vectors):
            index.add(vectors)
        return faiss.serialize_index(index).tobytes()

    return build


class DenseSearcher:
    """Top-k by inner product over every segment's faiss index of one :class:`Index` snapshot."""

    def __init__(self, index: Index):
        if index.manifest.dense is None:
            raise InvalidQueryError(f"index {index.path} has no dense part; build it with lsr index --dense MODEL.")
        faiss = _faiss()
        self.index = index
        self.dim = int(index.manifest.dense["dim"])
        self._faiss = []
        for seg in index.segments:
            raw = seg.dense_faiss_bytes()
            try:
                self._faiss.append(faiss.deserialize_index(np.frombuffer(raw, dtype=np.uint8).copy()))
            except RuntimeError as exc:
                raise IndexFormatError(f"{seg.info.name}: dense.faiss is unreadable: {exc}".splitlines()[0]) from None
        self._deleted = [index.deleted_mask(seg) for seg in index.segments]

    def search(self, queries: np.ndarray, k: int) -> Hits:
        k = check_k(k)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise InvalidQueryError(f"dense queries must have shape (n, {self.dim}), got {queries.shape}.")
        parts = []
        for seg, fx, deleted in zip(self.index.segments, self._faiss, self._deleted, strict=True):
            n_dead = 0 if deleted is None else int(deleted.sum())
            fetch = min(k + n_dead, seg.info.n_docs)
            if fetch == 0:
                continue
            scores, ids = fx.search(queries, fetch)
            if deleted is not None:
                dead = (ids >= 0) & (deleted[np.clip(ids, 0, None)] != 0)
                ids = np.where(dead, -1, ids)
            scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
            ids = np.where(ids >= 0, ids + seg.info.doc_base, -1)
            parts.append(Hits(ids, scores))
        if not parts:
            return Hits.empty(len(queries), k)
        return Hits.merge(parts, k)  # also puts equal scores in id order, as every lsr result is

    def vectors(self, doc_ids: np.ndarray) -> np.ndarray:
        """Stored dense vectors of internal ids (for Vector-PRF)."""
        out = np.zeros((len(doc_ids), self.dim), np.float32)
        for row, d in enumerate(np.asarray(doc_ids).tolist()):
            seg, local = self.index._locate(d)
            out[row] = seg.dense_vectors[local]
        return out
