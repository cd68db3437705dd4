"""One text's BERT forward in C (``_cbert.c``): the states a BERT masked-LM head feeds its vocabulary projection.

A search query is a batch of one of a few tokens; on SPLADE-tiny torch spends ~0.5 ms of operator dispatch on
it (60 operators at ~10-30 us each), several times the arithmetic. :class:`CBertBody` runs the same forward
(embeddings, post-LayerNorm layers with erf GELU, the head's transform) in one C call without the GIL, from a
packed float32 copy of the parameters, taken when it is built: like the traced body it replaces, it is a
snapshot, and an encoder trained further in place must not be used for single texts meanwhile.

Only the architectures it implements are accepted (:meth:`CBertBody.from_model` returns None otherwise):
``BertForMaskedLM``-shaped models (``bert`` + ``cls.predictions.transform``; absolute positions, no decoder
or cross-attention) and ``DistilBertForMaskedLM``-shaped ones, with erf GELU and one LayerNorm eps. The
caller still checks its states against the model's own forward before use
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
        kernel = _kernel()
        layout = _layout(model) if kernel is not None else "the C extension is not built"
        if isinstance(layout, str):
            log.info("single-text body in C not used: %s", layout)
            return None
        words, parts, sizes, norms = layout
        eps = {float(norm.eps) for norm in norms}
        if len(eps) != 1:
            log.info("single-text body in C not used: its LayerNorms have different eps (%s)", sorted(eps))
            return None
        with torch.no_grad():
            params = np.concatenate([_numpy(p).ravel() for p in parts])
        if len(params) != kernel.packed_size(sizes[0], sizes[1], sizes[2], sizes[4]):
            log.info("single-text body in C not used: the parameters do not have the shapes of the config")
            return None
        return cls(_numpy(words), params, *sizes, eps.pop())

    def __call__(self, ids: list[int]) -> torch.Tensor:
        row = np.array(ids, np.int64)
        out = np.empty((len(row), self.sizes[0]), np.float32)
        self.kernel.bert_forward(row, self.words, self.params, out, *self.sizes, self.eps)
        return torch.from_numpy(out)


_Layout = tuple[torch.Tensor, list[torch.Tensor], tuple[int, int, int, int, int], list[torch.nn.LayerNorm]]


def _layout(model: torch.nn.Module) -> _Layout | str:
    """``model``'s word embeddings, its other parameters in ``_cbert.c``'s packed order (dense weights
    transposed to inputs x outputs), its sizes (hidden, intermediate, layers, heads, positions) and its
    LayerNorms; or why the C body cannot run it. BERT and DistilBERT masked-LM models share the forward
    (post-LayerNorm layers, erf GELU, a dense + GELU + LayerNorm head transform); DistilBERT has no token
    types (a zero row)."""
    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    if kind not in ("bert", "distilbert"):
        return f"model type {kind!r}, not BERT or DistilBERT"
    if any(p.device.type != "cpu" for p in model.parameters()):
        return "not on the CPU"
    try:
        return (_bert_layout if kind == "bert" else _distilbert_layout)(model, config)
    except (AttributeError, TypeError, RuntimeError) as exc:  # a variant with other modules (no biases, ...)
        return f"its modules are not those of a {kind} masked-LM model ({exc})"


def _bert_layout(model: torch.nn.Module, config: Any) -> _Layout | str:
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
    emb, transform = model.bert.embeddings, model.cls.predictions.transform
    parts = [emb.position_embeddings.weight, emb.token_type_embeddings.weight[0], emb.LayerNorm.weight,
             emb.LayerNorm.bias]
    norms = [emb.LayerNorm, transform.LayerNorm]
    for layer in model.bert.encoder.layer:
        attn = layer.attention
        parts += _layer_parts((attn.self.query, attn.self.key, attn.self.value), attn.output.dense,
                              attn.output.LayerNorm, layer.intermediate.dense, layer.output.dense,
                              layer.output.LayerNorm)
        norms += [attn.output.LayerNorm, layer.output.LayerNorm]
    parts += [transform.dense.weight.t(), transform.dense.bias, transform.LayerNorm.weight,
              transform.LayerNorm.bias]
    sizes = (config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.num_attention_heads,
             config.max_position_embeddings)
    return emb.word_embeddings.weight, parts, sizes, norms


def _distilbert_layout(model: torch.nn.Module, config: Any) -> _Layout | str:
    if not all(hasattr(model, name) for name in ("distilbert", "vocab_transform", "vocab_layer_norm")):
        return "not a DistilBERT masked-LM head"
    if getattr(config, "activation", None) != "gelu":
        return f"activation {config.activation!r}, not erf GELU"
    if config.dim % config.n_heads:
        return "hidden size not divisible by the heads"
    emb = model.distilbert.embeddings
    parts = [emb.position_embeddings.weight, torch.zeros(config.dim), emb.LayerNorm.weight, emb.LayerNorm.bias]
    norms = [emb.LayerNorm, model.vocab_layer_norm]
    for layer in model.distilbert.transformer.layer:
        attn = layer.attention
        parts += _layer_parts((attn.q_lin, attn.k_lin, attn.v_lin), attn.out_lin, layer.sa_layer_norm,
                              layer.ffn.lin1, layer.ffn.lin2, layer.output_layer_norm)
        norms += [layer.sa_layer_norm, layer.output_layer_norm]
    parts += [model.vocab_transform.weight.t(), model.vocab_transform.bias, model.vocab_layer_norm.weight,
              model.vocab_layer_norm.bias]
    sizes = (config.dim, config.hidden_dim, config.n_layers, config.n_heads, config.max_position_embeddings)
    return emb.word_embeddings.weight, parts, sizes, norms


def _layer_parts(qkv, out, out_norm, up, down, down_norm) -> list[torch.Tensor]:  # noqa: ANN001 - Linear/LayerNorm
    """One encoder layer in the packed order: query|key|value side by side, then the attention output, its
    LayerNorm, the feed-forward up and down projections and their LayerNorm."""
    return [torch.cat([lin.weight for lin in qkv]).t(), torch.cat([lin.bias for lin in qkv]),
            out.weight.t(), out.bias, out_norm.weight, out_norm.bias,
            up.weight.t(), up.bias, down.weight.t(), down.bias, down_norm.weight, down_norm.bias]


def c_max_logits(rows: np.ndarray, weight: np.ndarray, bias: np.ndarray, terms: np.ndarray) -> np.ndarray | None:
    """Per term, max over the float32 ``rows`` of the product with its ``weight`` row, plus its bias (as
    :func:`lsr.encoders.pooling.exact_max_logits`, to float32 rounding); None without the C extension."""
    kernel = _kernel()
    if kernel is None:
        return None
    out = np.empty(len(terms), np.float32)
    kernel.max_logits(rows, weight, bias, np.ascontiguousarray(terms, np.int64), out, rows.shape[1])
    return out
