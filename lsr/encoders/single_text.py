"""Encoding one text at a time (a search query) with little fixed cost.

A query to the service is a batch of one: its cost is not throughput but per-call overhead. Two pieces of the
batched route are slow there. The Hugging Face forward spends ~1 ms of Python per call on a 2-layer model
(masks, dispatch, output objects), so the body up to the output projection is traced once with
``torch.jit.trace`` (fixed for a batch of one without padding: no mask, any length) and frozen (parameters
folded in as constants). And BLAS sgemm is tuned for many rows: with a query's 5-25 token rows against 30k
vocabulary columns it reaches a third of the FMA rate, so the projection and its max run in a small C kernel
(``_cproject.c``) over the weight stored in panels, as int8 with an exact screen (:class:`PanelProjection`).
Both are snapshots of the model when the route is built (the first single-text call): an encoder whose model
is trained further in place must not be used for single texts meanwhile.

Both pieces are checked against the batched route when the encoder loads (:meth:`SingleTextPath.build`);
where either is unavailable or disagrees, that piece falls back to the batched code. The vectors equal the
batched route's to within float32 rounding (a different summation order in the projection), not bit for bit.
"""

from __future__ import annotations

import copy
import logging
import threading
import warnings

import numpy as np
import torch

from lsr.encoders.int8_screen import dot_gamma, quantise_rows
from lsr.encoders.pooling import VocabProjection, activate, projected_splade

__all__ = ["SingleTextPath", "PanelProjection"]

log = logging.getLogger(__name__)
PANEL = 24  # terms per weight panel, as in _cproject.c
BUILD_LOCK = threading.Lock()  # threads of a server share an encoder: the first query builds its route, once


class PanelProjection:
    """``max over rows of (x @ weight.T) + bias`` for a few rows, by the C kernel; None where it is not built.

    ``screen`` (the default): the kernel streams an int8 copy of the weight (one scale per term), a quarter of
    the float32 bytes, and every term whose estimate, raised by a proven bound on its error, can be positive
    is recomputed exactly from the float32 rows. The bound, per term j and token state x_t, from
    ``w_j = s_j q_j + r_j`` and float32 dot products of length d erring by at most gamma_d |x| |v|
    (Higham, any summation order)::

        |x_t . w_j - computed s_j (x_t . q_j)|  <=  |x_t| (|r_j| + gamma_d (s_j |q_j| + |w_j|))

    (the last term covers the exact route's own rounding), so a term left out has a float32 logit <= 0 in
    either computation, i.e. weight 0 after the activation. On SPLADE-tiny ~19 terms per title query pass
    the screen for ~15 positive. Without the screen the kernel streams the float32 panels."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, kernel, screen: bool = True) -> None:  # noqa: ANN001 - C module
        weight = weight.detach().float().cpu().numpy()
        self.dim, self.hidden = weight.shape
        self.n_panels = -(-self.dim // PANEL)
        self.bias = bias.detach().float().cpu().numpy()
        self.kernel = kernel
        self.screen = screen
        if screen:
            self.weight = np.ascontiguousarray(weight)  # the exact rows of the terms that pass the screen
            self.panels, self.scale, self.slack = _int8_panels(weight, self.n_panels)
        else:
            self.panels = _panels(weight, self.n_panels)

    @classmethod
    def load(cls, weight: torch.Tensor, bias: torch.Tensor) -> PanelProjection | None:
        try:
            from lsr.encoders import _cproject
        except ImportError:  # the optional C extension was not built (no compiler)
            return None
        return cls(weight, bias, _cproject)

    def max_logits(self, hidden: torch.Tensor) -> np.ndarray:
        """``(rows, hidden)`` -> ``(vocab,)`` max logits with the bias (added after the max: exact, as in pooling);
        screened, a term that cannot be positive holds its estimate instead (<= 0: weight 0 all the same).
        One thread: splitting the panels over two (the kernel releases the GIL) halved the kernel alone but
        gained nothing inside the encoder on a 2-core machine, float32 or int8 (torch's own threads still spin
        after the model body)."""
        x = np.ascontiguousarray(hidden.detach().float().cpu().numpy())
        out = np.empty(self.n_panels * PANEL, np.float32)
        self._run(x, 0, self.n_panels, out)
        logits = out[: self.dim]
        logits += self.bias
        if self.screen and len(x):
            norm = float(np.sqrt(np.square(x, dtype=np.float64).sum(1)).max()) * (1 + 1e-9)
            # the estimate's own float32 rounding (scale, bias) is covered by the relative 1e-6
            bound = logits + norm * self.slack + 1e-6 * (np.abs(logits) + np.abs(self.bias))
            exact = np.flatnonzero(bound > 0)
            logits[exact] = (x @ self.weight[exact].T).max(0) + self.bias[exact]
        return logits

    def _run(self, x: np.ndarray, first: int, last: int, out: np.ndarray) -> None:
        span = out[first * PANEL : last * PANEL]
        if self.screen:
            self.kernel.max_logits_i8(x, self.panels[first:last], self.scale[first * PANEL : last * PANEL], span,
                                      len(x), self.hidden, last - first, "auto")
        else:
            self.kernel.max_logits(x, self.panels[first:last], span, len(x), self.hidden, last - first, "auto")


def _panels(weight: np.ndarray, n_panels: int) -> np.ndarray:
    """Panel p = terms [p*PANEL, (p+1)*PANEL) as a contiguous (hidden, PANEL) block, zero columns past the
    vocabulary: the kernel streams it in order."""
    padded = np.zeros((n_panels * PANEL, weight.shape[1]), weight.dtype)
    padded[: len(weight)] = weight
    return np.ascontiguousarray(padded.reshape(n_panels, PANEL, weight.shape[1]).transpose(0, 2, 1))


def _int8_panels(weight: np.ndarray, n_panels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``weight`` as int8 panels with one float32 scale per term (padded to the panels), and per term the
    coefficient of the token norm in the screen's error bound (see :class:`PanelProjection`), rounded up."""
    exact = weight.astype(np.float64)
    q, scale, residual = quantise_rows(exact, 127, np.float32)
    gamma = dot_gamma(weight.shape[1])
    slack = (residual + gamma * (scale * np.linalg.norm(q, axis=1) + np.linalg.norm(exact, axis=1))) * 1.001
    padded_scale = np.ones(n_panels * PANEL, np.float32)
    padded_scale[: len(scale)] = scale
    return _panels(q.astype(np.int8), n_panels), padded_scale, slack.astype(np.float32) * np.float32(1 + 1e-6)


class SingleTextPath:
    """``input_ids`` of one text -> the ``(indices, values)`` of its SPLADE vector, the ``zeroed`` terms (special
    tokens) left out."""

    def __init__(self, body, projection: VocabProjection, panels: PanelProjection | None,  # noqa: ANN001
                 zeroed: torch.Tensor) -> None:
        self.body = body  # (1, tokens) ids -> (1, tokens, hidden) head input
        self.projection = projection
        self.panels = panels
        self.zeroed = zeroed.numpy()

    @classmethod
    def build(cls, model: torch.nn.Module, projection: VocabProjection, probes: list[list[int]],
              zeroed: torch.Tensor) -> SingleTextPath:
        """The fastest pieces that reproduce the batched route on ``probes`` (token ids of a few texts)."""
        from lsr.encoders.splade import head_input

        def batched(ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            tensor = torch.tensor([ids])
            hidden = head_input(model, {"input_ids": tensor, "attention_mask": torch.ones_like(tensor)})[0]
            return hidden, projected_splade(hidden, [len(ids)], projection)[0]

        with torch.inference_mode():
            expected = [batched(ids) for ids in probes]
            body = _traced_body(model, probes[0])
            if body is not None and not all(torch.allclose(body(torch.tensor([ids]))[0], hidden, rtol=1e-5, atol=1e-5)
                                            for ids, (hidden, _) in zip(probes, expected, strict=True)):
                log.info("the traced model body differs from the model's own forward; using the forward")
                body = None
            panels = PanelProjection.load(model.get_output_embeddings().weight, projection.bias)
            if panels is not None and not all(
                    torch.allclose(activate(torch.from_numpy(panels.max_logits(hidden))), weights, rtol=1e-5, atol=1e-5)
                    for hidden, weights in expected):
                log.info("the C projection kernel differs from the batched projection; using the batched one")
                panels = None
        if body is None:
            body = lambda ids: head_input(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})  # noqa: E731
        return cls(body, projection, panels, zeroed)

    @property
    def accelerated(self) -> bool:
        return self.panels is not None

    @torch.inference_mode()
    def __call__(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        hidden = self.body(torch.tensor([ids]))[0]
        if self.panels is None:
            weights = projected_splade(hidden, [len(ids)], self.projection)[0].numpy()
            weights[self.zeroed] = 0
            indices = np.flatnonzero(weights > 0)
            return indices, weights[indices]
        logits = self.panels.max_logits(hidden)
        logits[self.zeroed] = 0  # activated to 0, i.e. left out
        indices = np.flatnonzero(logits > 0)  # the activation only where it is not 0: ~1-3% of the vocabulary
        return indices, activate(torch.from_numpy(logits[indices])).numpy()


def _traced_body(model: torch.nn.Module, ids: list[int]):  # noqa: ANN202 - a traced module or None
    """The model up to its output projection, traced for a batch of one. The trace runs on a copy of the module
    path down to the output embeddings, there replaced by an identity (the parameters are shared, the model
    itself is never modified: other threads may be using it), so the graph returns what they would be fed."""
    decoder = model.get_output_embeddings()
    path = next((name.split(".") for name, module in model.named_modules() if module is decoder and name), None)
    if path is None:
        return None
    root = parent = copy.copy(model)
    root._modules = dict(model._modules)
    for attr in path[:-1]:
        child = copy.copy(parent._modules[attr])
        child._modules = dict(child._modules)
        parent._modules[attr] = parent = child
    parent._modules[path[-1]] = torch.nn.Identity()

    class Body(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = root

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids).logits

    try:
        with warnings.catch_warnings():  # tracer warnings about Python values frozen into the graph
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(Body().eval(), (torch.tensor([ids]),), check_trace=False)
    except Exception as exc:  # noqa: BLE001 - any model the tracer cannot follow keeps the eager forward
        log.info("the model body could not be traced (%s); using its forward", exc)
        return None
    try:  # the parameters folded in as constants: ~15% less per call on SPLADE-tiny, the same bits
        return torch.jit.freeze(traced)
    except Exception as exc:  # noqa: BLE001 - the traced body is as exact, only slower
        log.info("the traced model body could not be frozen (%s); using it unfrozen", exc)
        return traced
