"""Retrievers: ``search(queries, k) -> Hits``. Fusion and PRF wrap retrievers instead of adding flags;
``SearchPipeline`` composes them from a config for the CLI, evaluation and the service."""

from lsr.search.fusion import HybridRetriever, fuse
from lsr.search.pipeline import SearchPipeline
from lsr.search.prf import DensePRF, SparsePRF
from lsr.search.retriever import Retriever, SparseRetriever

__all__ = ["Retriever", "SparseRetriever", "HybridRetriever", "SparsePRF", "DensePRF", "SearchPipeline", "fuse"]
