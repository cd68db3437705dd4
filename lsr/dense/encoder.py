"""A dense encoder: any sentence-transformers model folder or id (default all-MiniLM-L6-v2)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from lsr.errors import InvalidInputError, MissingDependencyError, ModelNotFoundError
from lsr.models import DEFAULT_DENSE_MODEL, resolve_model

__all__ = ["DenseEncoder"]


class DenseEncoder:
    """Texts -> float32 ``(n, dim)`` embeddings (normalised when the model normalises)."""

    def __init__(self, model: str = DEFAULT_DENSE_MODEL, batch_size: int = 64, max_length: int | None = 256,
                 device: str = "cpu"):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise MissingDependencyError("dense retrieval needs sentence-transformers: "
                                         "pip install 'lsr-search[dense]'") from None
        self.model_spec = str(model)
        path = resolve_model(self.model_spec)
        if not os.path.isdir(path):
            raise ModelNotFoundError(f"dense model {self.model_spec!r} is not a local folder or a known name; "
                                     "download it where the hub is reachable and pass its folder.")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        try:
            self.model = SentenceTransformer(path, device=device)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(f"could not load dense model {path}: {exc}".splitlines()[0]) from None
        if max_length is not None:
            self.model.max_seq_length = max_length
        self.batch_size = batch_size
        self.max_length = max_length

    @property
    def dim(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get())

    def config(self) -> dict[str, Any]:
        return {"model": self.model_spec, "dim": self.dim, "max_length": self.max_length}

    def _encode(self, texts: Sequence[str], show_progress: bool) -> np.ndarray:
        if isinstance(texts, str):
            raise InvalidInputError("encode takes a list of texts, got a single string; wrap it in a list.")
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        out = self.model.encode(list(texts), batch_size=self.batch_size, show_progress_bar=show_progress,
                                convert_to_numpy=True)
        return np.ascontiguousarray(out, dtype=np.float32)

    def encode_queries(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        return self._encode(texts, show_progress)

    def encode_documents(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        return self._encode(texts, show_progress)
