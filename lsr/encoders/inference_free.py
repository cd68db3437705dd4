"""Inference-free sparse encoding (OpenSearch's "doc-only" family): SPLADE for documents, IDF for queries.

A query costs a tokenizer call and a table lookup -- no neural network at query time -- so query latency is
that of the index alone. Documents are encoded by a SPLADE model (in practice one fine-tuned against this
query side, see ``lsr train``); the query vector is binary token presence x IDF, special tokens 0.

The IDF table comes from ``idf.json`` in the model folder (written by ``lsr idf``), from an explicit
``idf`` path, or from the ``SparseStaticEmbedding`` query route of a sentence-transformers model folder
(see :mod:`lsr.encoders.idf`). Its sha256 goes into the encoder config and hence the index manifest; an
index is never searched with other IDF weights than those it was built for.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lsr.encoders.base import check_texts
from lsr.encoders.idf import STATIC_EMBEDDING, find_st_module, load_idf, weights_sha256
from lsr.encoders.splade import SpladeEncoder
from lsr.errors import InvalidInputError
from lsr.models import resolve_model
from lsr.types import SparseBatch

__all__ = ["InferenceFreeEncoder"]

log = logging.getLogger(__name__)


class InferenceFreeEncoder:
    """Documents: :class:`SpladeEncoder` over ``model``; queries: tokenizer + IDF lookup.

    ``model`` is a SPLADE model (name, folder, hub id) or a sentence-transformers sparse model folder
    whose document route is an ``MLMTransformer``. ``idf`` is an idf.json file or a folder holding the
    weights (default: the model folder). ``idf_sha256``, when given (an index's manifest gives it), must
    match the weights found.
    """

    kind = "inference-free"

    def __init__(self, model: str = "splade-tiny", idf: str | os.PathLike[str] | None = None,
                 idf_sha256: str | None = None, max_length: int = 256, **splade_options: Any):
        self.model_spec = str(model)
        folder = Path(resolve_model(self.model_spec))
        document_model = find_st_module(folder, "MLMTransformer") if folder.is_dir() else None
        if document_model is not None:
            _check_st_pooling(folder)
        self.documents = SpladeEncoder(str(document_model or self.model_spec), max_length=max_length,
                                       **splade_options)
        self.vocabulary = self.documents.vocabulary
        self.tokenizer = self.documents.tokenizer
        self.max_length = max_length
        source = Path(idf) if idf is not None else (find_st_module(folder, STATIC_EMBEDDING) or folder)
        self.idf, self.idf_path = load_idf(source, self.tokenizer, self.dim)
        self.idf_sha256 = weights_sha256(self.idf)
        if idf_sha256 is not None and idf_sha256 != self.idf_sha256:
            raise InvalidInputError(
                f"the IDF weights at {self.idf_path} are not the ones this index was built with "
                f"(sha256 {self.idf_sha256[:12]}… here, {idf_sha256[:12]}… recorded); restore that idf.json "
                "or rebuild the index."
            )

    @property
    def dim(self) -> int:
        return self.documents.dim

    def config(self) -> dict[str, Any]:
        return {**self.documents.config(), "type": self.kind, "model": self.model_spec,
                "idf": str(self.idf_path), "idf_sha256": self.idf_sha256}

    def weight_bound(self) -> float | None:
        """Documents' weights only: they are what an index stores."""
        return self.documents.weight_bound()

    def encode_documents(self, texts: Sequence[str], show_progress: bool = False) -> SparseBatch:
        return self.documents.encode_documents(texts, show_progress)

    def encode_queries(self, texts: Sequence[str], show_progress: bool = False) -> SparseBatch:
        """Binary presence x IDF over each query's tokens (no special tokens added, truncated to max_length)."""
        texts = check_texts(texts)
        if not texts:
            return SparseBatch.empty(0, self.dim)
        token_ids = self.tokenizer(texts, add_special_tokens=False, truncation=True,
                                   max_length=self.max_length)["input_ids"]
        rows = [np.unique(np.asarray(ids, np.int64)) for ids in token_ids]
        rows = [ids[self.idf[ids] > 0] for ids in rows]  # special and never-weighted tokens carry nothing
        indptr = np.zeros(len(rows) + 1, np.int64)
        np.cumsum([len(ids) for ids in rows], out=indptr[1:])
        indices = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        return SparseBatch(indptr, indices.astype(np.int32), self.idf[indices], self.dim)


def _check_st_pooling(folder: Path) -> None:
    """lsr pools as SPLADE does (max, log(1 + ReLU)); a sentence-transformers model pooling otherwise (sum, or
    OpenSearch v3's log1p∘log1p∘ReLU) would silently get other document vectors, so it is refused."""
    pooling = find_st_module(folder, "SpladePooling")
    config_file = pooling / "config.json" if pooling is not None else None
    config = json.loads(config_file.read_text()) if config_file is not None and config_file.is_file() else {}
    strategy, activation = config.get("pooling_strategy", "max"), config.get("activation_function", "relu")
    if (strategy, activation) != ("max", "relu"):
        raise InvalidInputError(f"{folder}: SpladePooling({strategy}, {activation}) is not supported; lsr pools "
                                "with max over tokens of log(1 + ReLU(logits)).")
