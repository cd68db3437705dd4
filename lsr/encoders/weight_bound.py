"""A proven upper bound on every weight a SPLADE-style encoder can output, from its output head alone.

Why: an index that stores integer impacts (uint8/uint16, ``weight = stored / scale``) needs its scale before
it has seen every document. A scale fitted on the first documents clips a later, larger weight; a scale from
a bound that no input can exceed never clips, so a service that adds documents one at a time keeps every
weight's precision, and the same scale serves every segment and merge.

The bound. SPLADE weights are ``log(1 + relu(logit))``, max-pooled, and a masked LM's logits are
``W h + b`` where ``h``, the input of the output projection, is the output of a normalisation layer:
``h = gamma * z + beta`` with ``z = (x - mean) / sqrt(var + eps)`` (LayerNorm) or ``x / sqrt(mean(x^2) + eps)``
(RMSNorm, ``beta = 0``), so ``|z|^2 <= d`` whatever the input (``d`` the hidden size). By Cauchy-Schwarz,
for vocabulary row ``v``::

    logit_v = (W_v * gamma) . z + W_v . beta + b_v  <=  sqrt(d) |W_v * gamma| + W_v . beta + b_v

and the weight bound is ``log1p`` of the largest of these. On SPLADE-tiny it is 4.12, against a largest
weight of 2.76 seen over 100k enwiki passages: a uint8 step of 0.016 instead of 0.011.

What is checked before a bound is given (else None, and the index stays float32): the output embeddings are
a ``Linear``; the tensor they receive is, bit for bit, the output of a ``LayerNorm`` or ``*RMSNorm`` module
on a probe batch; and that module's output, undone by its own ``gamma`` and ``beta``, has ``|z|^2 = d`` per
token (a norm that does something else, e.g. scales by ``1 + gamma``, fails this).
"""

from __future__ import annotations

import logging
import math

import torch

__all__ = ["head_norm_bound", "splade_weight_bound", "ROUNDING_SLACK"]

log = logging.getLogger(__name__)

# float32 evaluation of the logits can land a few ulps above the real-number bound; weights are also
# rounded again on their way to the index. 1e-3 relative is far above either and costs nothing in precision.
ROUNDING_SLACK = 1e-3


def _norm_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules()
            if isinstance(m, torch.nn.LayerNorm) or type(m).__name__.endswith("RMSNorm")]


def _feeding_norm(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                  head_input) -> tuple[torch.nn.Module, torch.Tensor] | None:  # noqa: ANN001 - a callable
    """The normalisation module whose output is exactly what the output projection receives, and that output."""
    outputs: dict[int, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda mod, args, out: outputs.__setitem__(id(mod), out))
               for m in _norm_modules(model)]
    try:
        with torch.inference_mode():
            fed = head_input(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    for module in _norm_modules(model):
        out = outputs.get(id(module))
        if isinstance(out, torch.Tensor) and out.shape == fed.shape and torch.equal(out, fed):
            return module, fed
    return None


def head_norm_bound(model: torch.nn.Module, batch: dict[str, torch.Tensor], head_input) -> float | None:  # noqa: ANN001
    """An upper bound on every logit ``model`` can output (any input), or None when its head is not
    "normalisation layer, then Linear" as checked on ``batch`` (see the module's docstring).
    ``head_input(model, batch)`` returns what the output projection receives."""
    decoder = model.get_output_embeddings()
    if not isinstance(decoder, torch.nn.Linear):
        return None
    try:
        found = _feeding_norm(model, batch, head_input)
    except (RuntimeError, ValueError, IndexError) as exc:
        log.info("no weight bound: the head input could not be captured (%s)", exc)
        return None
    if found is None:
        log.info("no weight bound: the output projection is not fed by a normalisation layer")
        return None
    norm, fed = found
    gamma = getattr(norm, "weight", None)
    if not isinstance(gamma, torch.Tensor) or gamma.dim() != 1 or gamma.numel() != fed.shape[-1]:
        return None
    gamma = gamma.detach().double()
    beta = getattr(norm, "bias", None)
    beta = torch.zeros_like(gamma) if not isinstance(beta, torch.Tensor) else beta.detach().double()
    if torch.any(gamma == 0):
        return None  # z cannot be recovered to check the norm (and such a model is unusual)
    d = gamma.numel()
    mask = batch.get("attention_mask")
    tokens = fed.double()[mask.bool()] if mask is not None else fed.double().reshape(-1, d)
    z_sq = (((tokens - beta) / gamma) ** 2).sum(-1)
    # a real norm gives |z|^2 = d * var / (var + eps): d up to eps; anything else is not this normalisation
    if tokens.numel() == 0 or not torch.all(z_sq <= d * (1 + 1e-3)) or not torch.all(z_sq >= d * 0.9):
        log.info("no weight bound: %s does not normalise to |z|^2 = d on the probe", type(norm).__name__)
        return None
    weight = decoder.weight.detach().double()
    bias = decoder.bias.detach().double() if decoder.bias is not None else torch.zeros(weight.shape[0]).double()
    rows = math.sqrt(d) * torch.linalg.vector_norm(weight * gamma, dim=1) + weight @ beta + bias
    return float(rows.max())


def splade_weight_bound(model: torch.nn.Module, batch: dict[str, torch.Tensor], head_input,  # noqa: ANN001
                        slack: float = ROUNDING_SLACK) -> float | None:
    """The largest ``log(1 + relu(logit))`` weight the model can give, with ``slack`` relative headroom."""
    logit = head_norm_bound(model, batch, head_input)
    if logit is None or not math.isfinite(logit):
        return None
    return math.log1p(max(logit, 0.0)) * (1 + slack) or None
