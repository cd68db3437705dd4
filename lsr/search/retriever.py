"""The sparse retriever: encode query texts with the index's encoder, then exact top-k over the index."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from lsr.encoders.base import SparseEncoder, query_identity
from lsr.errors import InvalidQueryError
from lsr.index import Index, Searcher, check_same_vocabulary, open_index
from lsr.types import Hits, SparseBatch

__all__ = ["Retriever", "SparseRetriever"]

log = logging.getLogger(__name__)


@runtime_checkable
class Retriever(Protocol):
    def search(self, queries: Sequence[str] | SparseBatch, k: int) -> Hits: ...


class SparseRetriever:
    """Texts (or pre-encoded SparseBatch queries) -> exact top-k over one index snapshot.

    The encoder defaults to the one recorded in the index manifest; an explicitly given encoder must share
    the index's vocabulary. ``timings`` holds the seconds spent per stage in the last call.
    """

    def __init__(self, index: Index | str | os.PathLike[str], encoder: SparseEncoder | None = None,
                 backend: str = "auto", query_weights: Sequence[float] | None = None):
        self.index = index if isinstance(index, Index) else open_index(index)
        self.searcher = Searcher(self.index, backend)
        self._encoder = encoder
        # a hybrid index (splade+bm25): how much each part's query counts (see lsr.encoders.hybrid)
        self.query_weights = None if query_weights is None else list(query_weights)
        if self.query_weights is not None and "parts" not in (self.index.encoder_config or {}):
            raise InvalidQueryError(f"query_weights need an index built by a hybrid encoder (e.g. splade+bm25); "
                                    f"{self.index.path} was not.")
        if encoder is not None:
            self._check_encoder(encoder)
        self.timings: dict[str, float] = {}
        self._last: tuple[tuple[str, ...], SparseBatch] | None = None

    @property
    def encoder(self) -> SparseEncoder:
        if self._encoder is None:
            config = self.index.encoder_config
            if config is None:
                raise InvalidQueryError(
                    f"index {self.index.path} was built from pre-encoded vectors without a model; "
                    "pass query vectors, or an encoder over the same vocabulary."
                )
            from lsr.encoders import load_encoder

            if self.query_weights is not None:
                config = {**config, "query_weights": self.query_weights}
            encoder = load_encoder(config)
            self._check_encoder(encoder)
            self._encoder = encoder
        return self._encoder

    def _check_encoder(self, encoder: SparseEncoder) -> None:
        check_same_vocabulary(self.index.manifest.vocabulary, encoder.vocabulary.sha256, encoder.vocabulary.source)
        expected = self.index.encoder_config
        if expected is not None and query_identity(expected) != query_identity(encoder.config()):
            raise InvalidQueryError(
                f"index {self.index.path} expects queries encoded by {query_identity(expected)}, "
                f"but the encoder given is {query_identity(encoder.config())}."
            )

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> SparseBatch:
        if isinstance(texts, str):
            raise InvalidQueryError("queries must be a list of texts; wrap a single query in a list.")
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise InvalidQueryError(f"query texts must be non-empty strings, got {text!r}.")
        key = tuple(texts)  # memoised for the last batch: pipelines ask more than once per query
        last = self._last  # read once: another thread (threaded workers) may replace it meanwhile
        if last is None or last[0] != key:
            last = self._last = (key, self.encoder.encode_queries(list(texts), show_progress=show_progress))
        return last[1]

    def explain(self, query: str, doc_id: str):  # noqa: ANN201 - lsr.search.explain.Explanation
        """Why document ``doc_id`` (an external id) scores what it does for ``query``: each shared term's
        query weight x document weight, decoded, summing exactly to the score :meth:`search` reports."""
        from lsr.search.explain import explain

        internal = self.index.internal_id(doc_id)
        if internal is None:
            raise InvalidQueryError(f"document {doc_id!r} is not in {self.index.path}.")
        return explain(self.index, self.encode([query]), internal)

    def search(self, queries: Sequence[str] | SparseBatch, k: int, show_progress: bool = False,
               **search_options) -> Hits:
        """``search_options`` go to :meth:`lsr.index.Searcher.search` (algorithm, alpha, query_cut, query_mass)."""
        self.timings = {}
        if not isinstance(queries, SparseBatch):
            started = time.perf_counter()
            queries = self.encode(queries, show_progress)
            self.timings["encode"] = time.perf_counter() - started
        started = time.perf_counter()
        hits = self.searcher.search(queries, k, **search_options)
        self.timings["search"] = time.perf_counter() - started
        return hits
