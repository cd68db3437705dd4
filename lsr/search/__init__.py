"""Retrievers: ``search(queries, k) -> Hits``. Fusion and PRF (later) wrap retrievers instead of adding flags."""

from lsr.search.retriever import Retriever, SparseRetriever

__all__ = ["Retriever", "SparseRetriever"]
