"""SPLADE pooling: per vocabulary term, max over valid tokens of log(1 + ReLU(logit))."""

from __future__ import annotations

import torch

__all__ = ["splade_pool", "dense_to_sparse_batch"]


def splade_pool(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``(batch, tokens, vocab)`` logits -> ``(batch, vocab)`` non-negative weights.

    log1p∘relu is monotone, so the max is taken over the raw logits first and the activation applied to
    ``batch x vocab`` values only; the result is identical to activating every token first. Padding
    positions are multiplied by 0 in place (a 0 can never win over relu's floor), which avoids allocating a
    second logits-sized tensor. ``logits`` is modified.
    """
    logits.mul_(attention_mask.unsqueeze(-1).to(logits.dtype))
    return torch.log1p(torch.relu(logits.amax(dim=1)))


def dense_to_sparse_batch(weights: torch.Tensor):  # noqa: ANN201 - SparseBatch
    """``(batch, vocab)`` non-negative tensor -> SparseBatch of its positive entries."""
    import numpy as np

    from lsr.types import SparseBatch

    weights = weights.detach().float().cpu()
    rows, cols = torch.nonzero(weights > 0, as_tuple=True)
    indptr = np.zeros(weights.shape[0] + 1, np.int64)
    np.cumsum(torch.bincount(rows, minlength=weights.shape[0]).numpy(), out=indptr[1:])
    return SparseBatch(indptr, cols.numpy(), weights[rows, cols].numpy(), weights.shape[1])
