"""One text's BERT forward in C (``_cbert.c``): the states a BERT masked-LM head feeds its vocabulary projection.

A search query is a batch of one of a few tokens; on SPLADE-tiny torch spends ~0.5 ms of operator dispatch on
it (60 operators at ~10-30 us each), several times the arithmetic. :class:`CBertBody` runs the same forward
(embeddings, post-LayerNorm layers with erf GELU, the head's transform) in one C call without the GIL, from a
packed float32 copy of the parameters, taken when it is built: like the traced body it replaces, it is a
snapshot, and an encoder trained further in place must not be used for single texts meanwhile.

Only the architecture it implements is accepted (:meth:`CBertBody.from_model` returns None otherwise): a
``BertForMaskedLM``-shaped model (``bert`` + ``cls.predictions.transform``), absolute positions, erf GELU,
no decoder or cross-attention. The caller still checks its states against the model's own forward before use
(:meth:`lsr.encoders.single_text.SingleTextPath.build`): they agree to float32 rounding, not bit for bit.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

__all__ = ["CBertBody", "c_max_logits"]

log = logging.getLogger(__name__)


def _kernel() -> Any | None:
    try:
        from lsr.encoders import _cbert
    except ImportError:  # the optional C extension was not built (no compiler)
        return None
    return _cbert


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().contiguous().numpy()


class CBertBody:
    """Token ids -> ``(tokens, hidden)`` head input, as the traced body it stands in for."""

    def __init__(self, words: np.ndarray, params: np.ndarray, hidden: int, intermediate: int, layers: int,
                 heads: int, positions: int, eps: float) -> None:
        self.kernel = _kernel()
        self.words, self.params = words, params
        self.sizes = (hidden, intermediate, layers, heads, positions)
        self.eps = eps

    @classmethod
    def from_model(cls, model: torch.nn.Module) -> CBertBody | None:
        """The C body of ``model``, or None where the kernel is missing or the model is not what it implements."""
        kernel, config = _kernel(), getattr(model, "config", None)
        reason = _unsupported(model, config) if kernel is not None else "the C extension is not built"
        if reason:
            log.info("single-text body in C not used: %s", reason)
            return None
        bert, transform = model.bert, model.cls.predictions.transform
        emb = bert.embeddings
        parts = [emb.position_embeddings.weight, emb.token_type_embeddings.weight[0], emb.LayerNorm.weight,
                 emb.LayerNorm.bias]
        for layer in bert.encoder.layer:
            attn = layer.attention
            parts += [torch.cat([attn.self.query.weight, attn.self.key.weight, attn.self.value.weight]).t(),
                      torch.cat([attn.self.query.bias, attn.self.key.bias, attn.self.value.bias]),
                      attn.output.dense.weight.t(), attn.output.dense.bias,
                      attn.output.LayerNorm.weight, attn.output.LayerNorm.bias,
                      layer.intermediate.dense.weight.t(), layer.intermediate.dense.bias,
                      layer.output.dense.weight.t(), layer.output.dense.bias,
                      layer.output.LayerNorm.weight, layer.output.LayerNorm.bias]
        parts += [transform.dense.weight.t(), transform.dense.bias, transform.LayerNorm.weight,
                  transform.LayerNorm.bias]
        with torch.no_grad():
            params = np.concatenate([_numpy(p).ravel() for p in parts])
        sizes = (config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.num_attention_heads,
                 config.max_position_embeddings)
        if len(params) != kernel.packed_size(sizes[0], sizes[1], sizes[2], sizes[4]):
            log.info("single-text body in C not used: the parameters do not have the shapes of the config")
            return None
        return cls(_numpy(emb.word_embeddings.weight), params, *sizes, float(config.layer_norm_eps))

    def __call__(self, ids: list[int]) -> torch.Tensor:
        row = np.array(ids, np.int64)
        out = np.empty((len(row), self.sizes[0]), np.float32)
        self.kernel.bert_forward(row, self.words, self.params, out, *self.sizes, self.eps)
        return torch.from_numpy(out)


def _unsupported(model: torch.nn.Module, config: Any) -> str | None:
    """Why the C body cannot run ``model`` (None: it can)."""
    if config is None or getattr(config, "model_type", None) != "bert":
        return "not a BERT model"
    if not (hasattr(model, "bert") and hasattr(getattr(model, "cls", None), "predictions")):
        return "not a BERT masked-LM head"
    if getattr(config, "hidden_act", None) != "gelu":
        return f"activation {config.hidden_act!r}, not erf GELU"
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return f"{config.position_embedding_type} position embeddings"
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return "a decoder"
    if config.hidden_size % config.num_attention_heads:
        return "hidden size not divisible by the heads"
    if model.bert.embeddings.word_embeddings.weight.device.type != "cpu":
        return "not on the CPU"
    return None


def c_max_logits(rows: np.ndarray, weight: np.ndarray, bias: np.ndarray, terms: np.ndarray) -> np.ndarray | None:
    """Per term, max over the float32 ``rows`` of the product with its ``weight`` row, plus its bias (as
    :func:`lsr.encoders.pooling.exact_max_logits`, to float32 rounding); None without the C extension."""
    kernel = _kernel()
    if kernel is None:
        return None
    out = np.empty(len(terms), np.float32)
    kernel.max_logits(rows, weight, bias, np.ascontiguousarray(terms, np.int64), out, rows.shape[1])
    return out
