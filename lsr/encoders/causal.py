"""SPLADE over a decoder-only LM (Mistral, Llama, SmolLM2, ...): LM-head logits pooled like SPLADE's MLM logits.

A causal model's token at position i sees only tokens <= i, so pooling over the text itself gives early
tokens no view of the rest. ``mode="echo"`` follows Springer et al. 2024 ("Repetition Improves Language
Model Embeddings"): the text is written twice in a template and only the second copy is pooled, whose
tokens have read the whole text once. ``mode="causal"`` writes it once and pools over all of it.

An LM's logits carry an arbitrary per-position offset (softmax ignores it), and a pretrained LM's are mostly
positive, so the SPLADE formula on an untrained backbone gives vectors over almost the whole vocabulary;
training (with a sparsity penalty) is what makes them sparse. ``min_prob`` is an opt-in zero-shot variant
that pools log(p / min_prob) instead of the raw logits, i.e. keeps the terms the LM predicts with
probability above ``min_prob`` somewhere in the text.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lsr.encoders.base import check_texts
from lsr.encoders.loading import load_pretrained, vocabulary_of
from lsr.encoders.pooling import dense_to_sparse_batch, splade_pool
from lsr.encoders.pruning import check_pruning, prune
from lsr.errors import InvalidInputError
from lsr.models import KNOWN_MODELS
from lsr.types import SparseBatch

__all__ = ["CausalSpladeEncoder", "TEMPLATES", "PLACEHOLDER"]

log = logging.getLogger(__name__)

PLACEHOLDER = "{text}"
# The echo templates are the ones the paper's code ships (github.com/jakespringer/echo-embeddings, README:
# '<s>Instruct:{!%%prompt%%,}\nQuery:{!%%text%%}\nQuery again:{%%text%%}{</s>}' and
# '<s>Document:{!%%text%%}\nDocument again:{%%text%%}{</s>}') with its example retrieval prompt filled in.
# Their leading <s> is added here only when the tokenizer itself adds a BOS token, and the trailing </s> is
# dropped: it comes after the pooled span, and a causal model's earlier logits cannot depend on it.
# The causal templates are the echo ones without the repetition, so the two modes differ only by it.
TEMPLATES: dict[str, dict[str, str]] = {
    "echo": {
        "query": "Instruct:Retrieve passages that answer the question,\nQuery:{text}\nQuery again:{text}",
        "document": "Document:{text}\nDocument again:{text}",
    },
    "causal": {"query": "Query:{text}", "document": "Document:{text}"},
}
_COPIES = {"echo": 2, "causal": 1}


class CausalSpladeEncoder:
    """LM-head logits -> log(1 + ReLU) -> max over the pooled text tokens -> a sparse vector over the vocabulary.

    ``model`` is a known name (``smollm2-135m``), a folder or a hub id of any ``AutoModelForCausalLM``;
    ``gguf_file`` loads a GGUF file in that folder. Templates hold ``{text}`` twice (echo) or once (causal);
    queries and documents have their own. The literal template parts and the text are tokenized separately
    and concatenated (as the paper's parser does), so the pooled span is known exactly, both copies are
    the same tokens, and truncation cuts the text only, never the template. ``lora`` (``{"r": 8,
    "alpha": 16, "target_modules": [...], ...}``) wraps the model with a peft LoRA adapter for training.
    ``padding_side`` only changes how batches are laid out, never the vectors.
    """

    kind = "causal-splade"

    def __init__(self, model: str = "smollm2-135m", mode: str = "echo", max_length: int = 256,
                 query_template: str | None = None, document_template: str | None = None,
                 gguf_file: str | None = None, lora: dict[str, Any] | None = None, min_prob: float | None = None,
                 batch_size: int = 32, max_tokens_per_batch: int = 2048, zero_special_tokens: bool = True,
                 padding_side: str = "right", device: str = "cpu", threads: int | None = None,
                 pruning: dict[str, Any] | None = None):
        if mode not in _COPIES:
            raise InvalidInputError(f"mode must be one of {', '.join(_COPIES)}, got {mode!r}.")
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}.")
        if padding_side not in ("left", "right"):
            raise InvalidInputError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
        if min_prob is not None and not 0 < min_prob < 1:
            raise InvalidInputError(f"min_prob must be in (0, 1), got {min_prob}.")
        if threads is not None:
            torch.set_num_threads(threads)
        self.model_spec = str(model)
        self.mode = mode
        self.max_length = max_length
        self.templates = {"query": query_template or TEMPLATES[mode]["query"],
                          "document": document_template or TEMPLATES[mode]["document"]}
        self.gguf_file = gguf_file
        self.lora = dict(lora) if lora else None
        self.min_prob = min_prob
        self.pruning = check_pruning(pruning)  # documents only, as for SPLADE
        self.batch_size = batch_size
        self.max_tokens_per_batch = max_tokens_per_batch
        self.zero_special_tokens = zero_special_tokens
        self.padding_side = padding_side
        self.device = torch.device(device)

        known_gguf = KNOWN_MODELS[self.model_spec].gguf_file if self.model_spec in KNOWN_MODELS else None
        if (gguf_file or known_gguf) and importlib.util.find_spec("gguf") is None:
            raise InvalidInputError("loading a GGUF model needs the gguf package: pip install 'lsr-search[causal]'.")
        self.tokenizer, self.model = load_pretrained(self.model_spec, "AutoModelForCausalLM", gguf_file=gguf_file)
        if self.tokenizer.pad_token_id is None:  # decoder tokenizers often have none; masks make its value moot
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._dim = int(self.model.get_output_embeddings().out_features)
        # Only the pooled positions need the (tokens x vocabulary) LM head; echo skips it on the first copy.
        self._can_slice = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        if self.lora:
            self.model = _with_lora(self.model, self.lora)
        self.model.to(self.device).eval()
        self.vocabulary = vocabulary_of(self.tokenizer, self.dim, source=self.model_spec)
        self._special_ids = torch.tensor(sorted(set(self.tokenizer.all_special_ids)), dtype=torch.long)
        # Follow the tokenizer's own convention for a leading BOS (Llama/Mistral add <s>; GPT-2-style BPEs don't).
        bos = self.tokenizer.bos_token_id
        probe = self.tokenizer("a")["input_ids"]
        self._prefix = [bos] if bos is not None and probe[:1] == [bos] else []
        self._layouts = {role: self._layout(role, template) for role, template in self.templates.items()}

    @property
    def dim(self) -> int:
        return self._dim

    def config(self) -> dict[str, Any]:
        config = {"type": self.kind, "model": self.model_spec, "mode": self.mode, "max_length": self.max_length,
                  "query_template": self.templates["query"], "document_template": self.templates["document"],
                  "zero_special_tokens": self.zero_special_tokens}
        if self.gguf_file:
            config["gguf_file"] = self.gguf_file
        if self.lora:
            config["lora"] = self.lora
        if self.min_prob is not None:
            config["min_prob"] = self.min_prob
        if self.pruning is not None:
            config["pruning"] = self.pruning
        return config

    def encode_queries(self, texts: Sequence[str], show_progress: bool = False) -> SparseBatch:
        return self.encode(texts, show_progress, role="query")

    def encode_documents(self, texts: Sequence[str], show_progress: bool = False) -> SparseBatch:
        return prune(self.encode(texts, show_progress, role="document"), self.pruning)

    def tokenize(self, texts: Sequence[str], role: str = "document") -> list[tuple[list[int], int, int]]:
        """Per text: the model's input ids and the ``[start, end)`` span of the copy that is pooled."""
        if role not in self._layouts:
            raise InvalidInputError(f"role must be 'query' or 'document', got {role!r}.")
        literals, per_copy = self._layouts[role]
        if not texts:
            return []
        # stripped: whitespace at a text's ends means nothing and would become stray tokens at the template joints
        text_ids = self.tokenizer([t.strip() for t in texts], add_special_tokens=False, truncation=True,
                                  max_length=per_copy)["input_ids"]
        out = []
        for ids in text_ids:
            seq = list(self._prefix)
            for literal in literals[:-1]:
                seq += literal + ids
            start = len(seq) - len(ids)  # the last copy is the pooled one
            seq += literals[-1]
            out.append((seq or [self._pad_id], start, start + len(ids)))  # an empty text still needs a token
        return out

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], show_progress: bool = False, role: str = "document") -> SparseBatch:
        texts = check_texts(texts)
        rows = self.tokenize(texts, role)
        if not rows:
            return SparseBatch.empty(0, self.dim)
        lengths = np.array([len(seq) for seq, _, _ in rows])
        order = np.argsort(-lengths, kind="stable")
        parts: list[SparseBatch] = []
        with tqdm(total=len(texts), disable=not show_progress, desc="encoding", unit="text") as bar:
            for batch_rows in _batches(order, lengths, self.batch_size, self.max_tokens_per_batch):
                parts.append(dense_to_sparse_batch(self._encode_batch([rows[i] for i in batch_rows])))
                bar.update(len(batch_rows))
        return SparseBatch.concat(parts).take(np.argsort(order, kind="stable"))

    def _encode_batch(self, rows: list[tuple[list[int], int, int]]) -> torch.Tensor:
        width = max(len(seq) for seq, _, _ in rows)
        input_ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        span = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (seq, start, end) in enumerate(rows):
            shift = width - len(seq) if self.padding_side == "left" else 0
            input_ids[r, shift : shift + len(seq)] = torch.tensor(seq)
            attention[r, shift : shift + len(seq)] = 1
            span[r, shift + start : shift + end] = 1
        pooled_columns = torch.nonzero(span.any(dim=0)).flatten()
        if len(pooled_columns) == 0:  # only empty texts
            return torch.zeros((len(rows), self.dim))
        # Explicit positions: with left padding each text must still start at position 0 (rotary embeddings).
        positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
        kwargs: dict[str, Any] = {}
        if self._can_slice:
            lo, hi = int(pooled_columns[0]), int(pooled_columns[-1]) + 1
            kwargs["logits_to_keep"] = torch.arange(lo, hi, device=self.device)
            span = span[:, lo:hi]
        logits = self.model(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                            position_ids=positions.to(self.device), use_cache=False, **kwargs).logits
        if self.min_prob is not None:  # log(p / min_prob), in place: logits are tokens x vocabulary
            logits.sub_(torch.logsumexp(logits, dim=-1, keepdim=True)).sub_(math.log(self.min_prob))
        weights = splade_pool(logits, span.to(self.device))
        if self.zero_special_tokens:
            weights[:, self._special_ids.to(weights.device)] = 0
        return weights

    def _layout(self, role: str, template: str) -> tuple[list[list[int]], int]:
        """A template's literal parts as token ids, and how many text tokens fit in each copy."""
        copies = _COPIES[self.mode]
        if template.count(PLACEHOLDER) != copies:
            raise InvalidInputError(f"the {self.mode} {role} template must contain {PLACEHOLDER} {copies} time(s), "
                                    f"got {template!r}.")
        literals = [self.tokenizer(part, add_special_tokens=False)["input_ids"] if part else []
                    for part in template.split(PLACEHOLDER)]
        fixed = len(self._prefix) + sum(map(len, literals))
        per_copy = (self.max_length - fixed) // copies
        if per_copy < 1:
            raise InvalidInputError(f"max_length {self.max_length} leaves no room for text in the {role} template "
                                    f"({fixed} template tokens, {copies} copies).")
        return literals, per_copy


def _batches(order: np.ndarray, lengths: np.ndarray, batch_size: int, max_tokens: int) -> Iterator[list[int]]:
    """Consecutive runs of the length-sorted texts within both the text and the token budgets."""
    start = 0
    while start < len(order):
        longest = lengths[order[start]]  # sorted descending, so the first text is the longest
        size = max(1, min(batch_size, max_tokens // max(1, longest)))
        yield order[start : start + size].tolist()
        start += size


def _with_lora(model, options: dict[str, Any]):  # noqa: ANN001, ANN202 - a transformers / peft model
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise InvalidInputError("lora needs the peft package: pip install 'lsr-search[causal]'.") from None
    kwargs = dict(options)
    # short names in lsr configs; anything else goes to peft's LoraConfig as is
    for short, full in (("alpha", "lora_alpha"), ("dropout", "lora_dropout")):
        if short in kwargs:
            kwargs[full] = kwargs.pop(short)
    try:
        config = LoraConfig(task_type="CAUSAL_LM", **kwargs)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"bad lora options {options!r}: {str(exc).splitlines()[0]}") from None
    return get_peft_model(model, config)
