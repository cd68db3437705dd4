"""SPLADE encoder over any Hugging Face masked-LM checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lsr.encoders.base import check_texts
from lsr.encoders.loading import load_masked_lm, vocabulary_of
from lsr.encoders.pooling import VocabProjection, dense_to_sparse_batch, projected_splade, quantize_dynamic, splade_pool
from lsr.encoders.pruning import check_pruning, prune
from lsr.encoders.single_text import BUILD_LOCK, SingleTextPath
from lsr.encoders.weight_bound import ROUNDING_SLACK, splade_weight_bound
from lsr.errors import InvalidInputError
from lsr.types import SparseBatch

__all__ = ["SpladeEncoder"]

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": torch.qint8}


class SpladeEncoder:
    """MLM logits -> log(1 + ReLU) -> max over the valid tokens -> a sparse vector over the vocabulary.

    ``model`` is a known name (``splade-tiny``), a local folder or a hub id. Texts are tokenized once,
    sorted by length and encoded in batches of at most ``batch_size`` texts and ``max_tokens_per_batch``
    padded tokens. The vocabulary dimensions of special tokens are zeroed: ``[CLS]``/``[SEP]`` carry no
    lexical meaning.

    The model body runs on the padded batch, but only the valid tokens' states reach the vocabulary
    projection, which is fused with the max (:func:`~lsr.encoders.pooling.projected_splade`), so the
    tokens x vocabulary logits never exist. This needs the output head to end in a plain ``nn.Linear`` (the
    model's output embeddings) whose result is the logits, as in BERT, DistilBERT and RoBERTa masked LMs; it
    is checked on a tiny input at load time, and any other model takes its full logits (the reference route).
    On CPUs with fast bfloat16 products the float32 projection is screened in bfloat16 (exact: see
    :mod:`lsr.encoders.pooling`). ``dtype="bfloat16"`` runs the whole model in bfloat16 (autocast, and the
    projection in bfloat16): faster still, at a cosine to float32 of about 0.9998, where bfloat16 is fast.
    ``dtype="int8"`` (opt-in, CPUs without fast bfloat16) quantises the body's Linear layers and the projection
    dynamically to int8 (benchmarks/README.md "Encoding" has its speed and nDCG change). ``threads`` sets torch's
    thread count for the process.
    """

    kind = "splade"

    def __init__(self, model: str = "splade-tiny", max_length: int = 256, batch_size: int = 32,
                 max_tokens_per_batch: int = 4096, zero_special_tokens: bool = True,
                 device: str = "cpu", threads: int | None = None, pruning: dict[str, Any] | None = None,
                 dtype: str = "float32"):
        if max_length < 2:
            raise InvalidInputError(f"max_length must be >= 2, got {max_length}.")
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}.")
        if dtype not in DTYPES:
            raise InvalidInputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}.")
        if threads is not None:
            torch.set_num_threads(threads)
        self.model_spec = str(model)
        self.max_length = max_length
        self.batch_size = batch_size
        self.max_tokens_per_batch = max_tokens_per_batch
        self.zero_special_tokens = zero_special_tokens
        self.pruning = check_pruning(pruning)  # documents only: a query keeps every term
        self.dtype = dtype
        self.device = torch.device(device)
        self.tokenizer, self.model = load_masked_lm(self.model_spec)
        self.model.to(self.device).eval()
        if dtype == "int8":  # the body's Linear layers; the output projection gets its own int8 chunks below
            if self.device.type != "cpu":
                raise InvalidInputError("dtype='int8' (dynamic quantisation) runs on the CPU only.")
            decoder = self.model.get_output_embeddings()
            skip = frozenset(name for name, module in self.model.named_modules() if module is decoder)
            self.model = quantize_dynamic(self.model, skip).eval()
        self.vocabulary = vocabulary_of(self.tokenizer, self.dim, source=self.model_spec)
        self._special_ids = torch.tensor(sorted(set(self.tokenizer.all_special_ids)), dtype=torch.long)
        self._projection = self._fused_projection()  # None: the full-logits route
        self._single = None  # batch-of-one route (queries): built on first use, see lsr.encoders.single_text
        self._bound: list[float | None] = []  # computed on first use

    @property
    def dim(self) -> int:
        return int(self.model.get_output_embeddings().out_features)

    @property
    def route(self) -> str:
        """How this encoder computes its vectors, for people to read (``lsr encode`` prints it)."""
        if self._projection is None:
            return "full logits (the output head is not a plain Linear layer)"
        if self.dtype == "bfloat16":
            return "bfloat16 (whole model; approximate)"
        if self.dtype == "int8":
            return "int8 dynamic quantisation (approximate, opt-in)"
        if self._projection.screen == "bfloat16":
            return "fused float32 + exact bfloat16 screen (fast bfloat16 on this CPU)"
        if self._projection.screen == "int8":
            kernel = self._projection.int8.kernel_name
            return f"fused float32 + exact int8 screen, {kernel} (no fast bfloat16 on this CPU)"
        return "fused float32 (no exact screen: no fast bfloat16 on this CPU and no C kernel)"

    def config(self) -> dict[str, Any]:
        config = {"type": self.kind, "model": self.model_spec, "max_length": self.max_length,
                  "zero_special_tokens": self.zero_special_tokens}
        if self.pruning is not None:  # absent rather than None: configs of unpruned indexes stay as they were
            config["pruning"] = self.pruning
        if self.dtype != "float32":  # likewise: float32 configs stay equal to those of older manifests
            config["dtype"] = self.dtype
        return config

    def weight_bound(self) -> float | None:
        """A weight no input can exceed (see :mod:`lsr.encoders.weight_bound`), or None where the head does
        not allow a proof. bfloat16 and int8 compute the logits approximately: 5% headroom instead of 0.1%."""
        if not self._bound:
            batch = self.tokenizer(["a b c d", "the quick brown fox"], padding=True, return_tensors="pt")
            batch = {k: v.to(self.device) for k, v in batch.items()}
            slack = ROUNDING_SLACK if self.dtype == "float32" else 0.05
            self._bound.append(splade_weight_bound(self.model, batch, head_input, slack))
        return self._bound[0]

    def encode_queries(self, texts: Sequence[str], show_progress: bool = False) -> SparseBatch:
        return self.encode(texts, show_progress)

    def encode_documents(self, texts: Sequence[str], show_progress: bool = False) -> SparseBatch:
        return prune(self.encode(texts, show_progress), self.pruning)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], show_progress: bool = False) -> SparseBatch:
        texts = check_texts(texts)
        if not texts:
            return SparseBatch.empty(0, self.dim)
        if len(texts) == 1 and self._projection is not None and self.dtype == "float32":
            return self._encode_one(texts[0])
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length,
                                 add_special_tokens=True)["input_ids"]
        lengths = np.array([len(ids) for ids in encoded])
        order = np.argsort(-lengths, kind="stable")
        parts: list[SparseBatch] = []
        with tqdm(total=len(texts), disable=not show_progress, desc="encoding", unit="text") as bar:
            for batch_rows in self._batches(order, lengths):
                batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in batch_rows]}, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items()}
                weights = self._pool(batch)
                if self.zero_special_tokens:
                    weights[:, self._special_ids.to(weights.device)] = 0
                parts.append(dense_to_sparse_batch(weights))
                bar.update(len(batch_rows))
        stacked = SparseBatch.concat(parts)
        return stacked.take(np.argsort(order, kind="stable"))

    def _encode_one(self, text: str) -> SparseBatch:
        """One text: the low-overhead route of :mod:`lsr.encoders.single_text` (same vectors to float32 rounding)."""
        with BUILD_LOCK:
            if self._single is None:
                zeroed = self._special_ids if self.zero_special_tokens else torch.zeros(0, dtype=torch.long)
                self._single = SingleTextPath.build(self.model, self.tokenizer, self.max_length, self._projection,
                                                    zeroed)
        indices, values = self._single(text)
        # the projection's dim, not self.dim: that asks the model for its output embeddings (~12 us a query)
        return SparseBatch(np.array([0, len(indices)], np.int64), indices.astype(np.int32), values,
                           self._projection.dim)

    def _pool(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """A padded batch -> ``(batch, vocab)`` SPLADE weights."""
        mask = batch["attention_mask"]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.dtype == "bfloat16"):
            if self._projection is None:
                return splade_pool(self.model(**batch).logits.float(), mask)
            valid = mask.bool()
            hidden = head_input(self.model, batch)[valid]  # (valid tokens, hidden): padding is never projected
        return projected_splade(hidden, valid.sum(1).tolist(), self._projection)

    def _fused_projection(self) -> VocabProjection | None:
        """The fused projection when it reproduces this model's own logits on a tiny batch, else None."""
        decoder = self.model.get_output_embeddings()
        if not isinstance(decoder, torch.nn.Linear):
            log.info("%s: the output head is not a Linear layer; encoding through the full logits", self.model_spec)
            return None
        batch = self.tokenizer(["a b c d", "a"], padding=True, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        projection = VocabProjection(decoder.weight, decoder.bias, torch.float32)
        with torch.inference_mode():
            expected = splade_pool(self.model(**batch).logits.float(), batch["attention_mask"])
            try:
                hidden = head_input(self.model, batch)
                valid = batch["attention_mask"].bool()
                got = projected_splade(hidden[valid], valid.sum(1).tolist(), projection)
            except (RuntimeError, IndexError, ValueError) as exc:  # a head that feeds its Linear something else
                log.info("%s: fused projection unavailable (%s); encoding through the full logits",
                         self.model_spec, exc)
                return None
        if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
            log.info("%s: the output head does more than its Linear layer; encoding through the full logits",
                     self.model_spec)
            return None
        if self.dtype == "float32":
            return projection
        return VocabProjection(decoder.weight, decoder.bias, DTYPES[self.dtype])

    def _batches(self, order: np.ndarray, lengths: np.ndarray):
        """Consecutive runs of the length-sorted texts within both the text and the token budgets."""
        start = 0
        while start < len(order):
            longest = lengths[order[start]]  # sorted descending, so the first text is the longest
            size = max(1, min(self.batch_size, self.max_tokens_per_batch // max(1, longest)))
            yield order[start : start + size].tolist()
            start += size


class _HeadInput(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Carries the input of the output projection out of the model's forward, which it cuts short."""


def head_input(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(batch, tokens, hidden)``: what the model feeds its output embeddings (the vocabulary projection),
    i.e. the body and every head layer before that projection, which is never run."""
    def stop(module: torch.nn.Module, args: tuple) -> None:
        raise _HeadInput(args[0])

    # registered per call, so that the model itself (the reference route, tests) stays untouched
    handle = model.get_output_embeddings().register_forward_pre_hook(stop)
    try:
        model(**batch)
    except _HeadInput as captured:
        hidden = captured.args[0]
    else:
        raise RuntimeError("the model never called its output embeddings")
    finally:
        handle.remove()
    if hidden.shape[:2] != batch["attention_mask"].shape:
        raise ValueError(f"the output head gets shape {tuple(hidden.shape)}, not (batch, tokens, hidden)")
    return hidden
