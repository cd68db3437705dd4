"""SPLADE encoder over any Hugging Face masked-LM checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lsr.encoders.loading import load_masked_lm, vocabulary_of
from lsr.encoders.pooling import dense_to_sparse_batch, splade_pool
from lsr.errors import InvalidInputError
from lsr.types import SparseBatch

__all__ = ["SpladeEncoder"]

log = logging.getLogger(__name__)


class SpladeEncoder:
    """MLM logits -> log(1 + ReLU) -> max over the valid tokens -> a sparse vector over the vocabulary.

    ``model`` is a known name (``splade-tiny``), a local folder or a hub id. Texts are tokenized once,
    sorted by length and encoded in batches of at most ``batch_size`` texts and ``max_tokens_per_batch``
    padded tokens (the logits tensor is tokens x vocabulary floats, so the token budget bounds memory).
    The vocabulary dimensions of special tokens are zeroed: ``[CLS]``/``[SEP]`` carry no lexical meaning.
    """

    kind = "splade"

    def __init__(self, model: str = "splade-tiny", max_length: int = 256, batch_size: int = 32,
                 max_tokens_per_batch: int = 4096, zero_special_tokens: bool = True,
                 device: str = "cpu", threads: int | None = None):
        if max_length < 2:
            raise InvalidInputError(f"max_length must be >= 2, got {max_length}.")
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}.")
        if threads is not None:
            torch.set_num_threads(threads)
        self.model_spec = str(model)
        self.max_length = max_length
        self.batch_size = batch_size
        self.max_tokens_per_batch = max_tokens_per_batch
        self.zero_special_tokens = zero_special_tokens
        self.device = torch.device(device)
        self.tokenizer, self.model = load_masked_lm(self.model_spec)
        self.model.to(self.device).eval()
        self.vocabulary = vocabulary_of(self.tokenizer, self.dim, source=self.model_spec)
        self._special_ids = torch.tensor(sorted(set(self.tokenizer.all_special_ids)), dtype=torch.long)

    @property
    def dim(self) -> int:
        return int(self.model.get_output_embeddings().out_features)

    def config(self) -> dict[str, Any]:
        return {"type": self.kind, "model": self.model_spec, "max_length": self.max_length,
                "zero_special_tokens": self.zero_special_tokens}

    def encode_queries(self, texts: Sequence[str], show_progress: bool = False) -> SparseBatch:
        return self.encode(texts, show_progress)

    def encode_documents(self, texts: Sequence[str], show_progress: bool = False) -> SparseBatch:
        return self.encode(texts, show_progress)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], show_progress: bool = False) -> SparseBatch:
        texts = _check_texts(texts)
        if not texts:
            return SparseBatch.empty(0, self.dim)
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length,
                                 add_special_tokens=True)["input_ids"]
        lengths = np.array([len(ids) for ids in encoded])
        order = np.argsort(-lengths, kind="stable")
        parts: list[SparseBatch] = []
        with tqdm(total=len(texts), disable=not show_progress, desc="encoding", unit="text") as bar:
            for batch_rows in self._batches(order, lengths):
                batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in batch_rows]}, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items()}
                logits = self.model(**batch).logits
                weights = splade_pool(logits, batch["attention_mask"])
                if self.zero_special_tokens:
                    weights[:, self._special_ids.to(weights.device)] = 0
                parts.append(dense_to_sparse_batch(weights))
                bar.update(len(batch_rows))
        stacked = SparseBatch.concat(parts)
        return stacked.take(np.argsort(order, kind="stable"))

    def _batches(self, order: np.ndarray, lengths: np.ndarray):
        """Consecutive runs of the length-sorted texts within both the text and the token budgets."""
        start = 0
        while start < len(order):
            longest = lengths[order[start]]  # sorted descending, so the first text is the longest
            size = max(1, min(self.batch_size, self.max_tokens_per_batch // max(1, longest)))
            yield order[start : start + size].tolist()
            start += size


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise InvalidInputError("encode takes a list of texts, got a single string; wrap it in a list.")
    out = list(texts)
    for text in out:
        if not isinstance(text, str):
            raise InvalidInputError(f"texts must be strings, got {type(text).__name__}.")
    return out
