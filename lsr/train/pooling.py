"""Differentiable SPLADE pooling that never keeps the tokens x vocabulary logits for the backward pass.

``max over tokens of log(1 + ReLU(h_t . W_j + b_j))`` has a sparse gradient: per text and term only the
arg-max token receives any, and only where the pooled weight is positive (ReLU), i.e. for the ~100-300 terms a
passage keeps out of 30,522. Autograd through the full logits would store a ``(tokens, vocab)`` tensor per text
(31 MB for 256 tokens) and run a dense backward product of the same size; :class:`_MaxProjection` keeps only the
arg-max row per (text, term) and scatters the gradient of the non-zero entries, so a training step costs
little more than the forward projection. Its gradient equals autograd's through the full logits except at
exact ties of two tokens' logits (property-tested in ``tests/train/test_pooling.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lsr.encoders.pooling import activate

__all__ = ["splade_representation", "max_projection"]


class _MaxProjection(torch.autograd.Function):
    """``(texts, vocab)`` max over each text's packed rows of ``hidden @ weight.T`` (no bias)."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, lengths: Sequence[int]) -> torch.Tensor:  # noqa: ANN001
        out = hidden.new_full((len(lengths), weight.shape[0]), float("-inf"))
        argmax = torch.zeros((len(lengths), weight.shape[0]), dtype=torch.long, device=hidden.device)
        start = 0
        weight_t = weight.t()
        for text, n in enumerate(lengths):
            if n:
                values, rows = torch.mm(hidden[start:start + n], weight_t).max(dim=0)
                out[text], argmax[text] = values, rows + start
            start += n
        ctx.save_for_backward(hidden, weight, argmax)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        hidden, weight, argmax = ctx.saved_tensors
        texts, terms = torch.nonzero(grad, as_tuple=True)  # ReLU zeroes the rest: only kept terms have a gradient
        g = grad[texts, terms].unsqueeze(1)
        rows = argmax[texts, terms]
        grad_hidden = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_hidden = torch.zeros_like(hidden).index_add_(0, rows, g * weight[terms])
        if ctx.needs_input_grad[1]:
            grad_weight = torch.zeros_like(weight).index_add_(0, terms, g * hidden[rows])
        return grad_hidden, grad_weight, None


def max_projection(hidden: torch.Tensor, weight: torch.Tensor, lengths: Sequence[int]) -> torch.Tensor:
    return _MaxProjection.apply(hidden, weight, list(lengths))


def splade_representation(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                          special_ids: torch.Tensor | None = None) -> torch.Tensor:
    """``(batch, vocab)`` SPLADE weights of a padded batch, differentiable in the model's parameters.

    The model body and head transform run as usual; only the valid tokens' states reach the vocabulary
    projection (its weight and bias taken from the model's output embeddings, so tied input embeddings get
    their gradient too). Special tokens' dimensions are zeroed, as at encoding time.
    """
    from lsr.encoders.splade import head_input

    valid = batch["attention_mask"].bool()
    hidden = head_input(model, batch)[valid]
    decoder = model.get_output_embeddings()
    logits = max_projection(hidden, decoder.weight, valid.sum(1).tolist())
    if decoder.bias is not None:
        logits = logits + decoder.bias
    reps = activate(logits)
    if special_ids is not None:
        keep = torch.ones(reps.shape[1], dtype=reps.dtype, device=reps.device)
        keep[special_ids] = 0
        reps = reps * keep
    return reps
