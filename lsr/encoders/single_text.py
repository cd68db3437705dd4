"""Encoding one text at a time (a search query) with little fixed cost.

A query to the service is a batch of one: its cost is not throughput but per-call overhead. Three pieces of
the batched route are slow there. The Hugging Face tokenizer call spends ~0.2 ms of Python on one text
(argument handling, batch objects), so a private copy of its Rust tokenizer, with the same truncation, is
called directly. The Hugging Face forward spends ~1 ms of Python per call on a 2-layer model (masks,
dispatch, output objects), so the body up to the output projection runs in C for BERT and DistilBERT
masked-LM models (:class:`lsr.encoders.bert_body.CBertBody`: one call, no operator dispatch, no GIL), and for
other models is traced once with ``torch.jit.trace`` (fixed for a batch of one without padding: no mask, any length) and
frozen (parameters folded in as constants). And the projection onto the vocabulary is screened exactly in
integers (:class:`ScreenedProjection`, the batched int8 screen's kernel for one text): ~20 of 30k terms are
then multiplied out in float32 (in C where built). The body and the screen are snapshots of the model when
the route is built (the first single-text call): an encoder whose model is trained further in place must not
be used for single texts meanwhile.

Each piece is checked against the batched route when the route is built (:meth:`SingleTextPath.build`);
where one is unavailable or disagrees, that piece falls back (C body -> traced body -> the model's forward;
screen -> the batched projection). The vectors equal the batched route's to within float32 rounding (a
different summation order in the body and the projection), not bit for bit.
"""

from __future__ import annotations

import copy
import logging
import threading
import warnings
from collections.abc import Callable

import numpy as np
import torch

from lsr.encoders.bert_body import CBertBody, c_max_logits
from lsr.encoders.int8_screen import Int8Screen, int8_kernel_available
from lsr.encoders.pooling import VocabProjection, activate, exact_max_logits, projected_splade

__all__ = ["SingleTextPath", "ScreenedProjection"]

log = logging.getLogger(__name__)
BUILD_LOCK = threading.Lock()  # threads of a server share an encoder: the first query builds its route, once


class ScreenedProjection:
    """One text's positive max logits ``max over rows of (x @ weight.T) + bias``: :meth:`Int8Screen.select`
    names every term whose float32 logit can be positive (a proven bound; see :mod:`lsr.encoders.int8_screen`),
    ~33 per title query on SPLADE-tiny for ~15 positive, and only those rows are multiplied out in float32, as
    the batched int8 screen does for documents. A term left out has a float32 logit <= 0, i.e. weight 0."""

    def __init__(self, screen: Int8Screen, weight: torch.Tensor, bias: torch.Tensor) -> None:
        self.screen = screen
        self.weight = weight.detach().float().cpu().contiguous()
        self.bias = bias.detach().float().cpu()
        self.dim = len(self.bias)

    @classmethod
    def load(cls, weight: torch.Tensor, bias: torch.Tensor, projection: VocabProjection) -> ScreenedProjection | None:
        """The batched route's own int8 screen where it has one, else a new one; None without the C kernel."""
        if not int8_kernel_available() or weight.device.type != "cpu":
            return None
        screen = projection.int8 if projection.screen == "int8" else Int8Screen(weight, bias)
        return cls(screen, weight, bias)

    def positive(self, hidden: torch.Tensor, keep: np.ndarray | None = None) -> tuple[np.ndarray, torch.Tensor]:
        """Float32 ``(rows, hidden)`` -> ``(terms, logits)`` of the positive logits (bias added after the max:
        exact, as in pooling), terms ascending; ``keep`` (booleans over the vocabulary) drops the others."""
        x = hidden.detach().float().contiguous()
        terms = self.screen.select(x.numpy())
        if keep is not None:
            terms = terms[keep[terms]]
        if not len(terms):
            return terms, torch.zeros(0)
        # the C product without the GIL where built (torch's ~10 operators cost ~0.1 ms a query), else torch's,
        # not numpy's: numpy's OpenBLAS, called from two threads at once (a threaded server), serialised them
        # (two threads encoded 0.95x one thread's queries per second; with torch, 2x)
        logits = c_max_logits(x.numpy(), self.weight.numpy(), self.bias.numpy(), terms)
        if logits is None:
            logits = exact_max_logits(x, self.weight, self.bias, torch.from_numpy(terms)).numpy()
        positive = logits > 0
        return terms[positive], torch.from_numpy(logits[positive])


class SingleTextPath:
    """A text -> the ``(indices, values)`` of its SPLADE vector, the ``zeroed`` terms (special tokens) left out."""

    def __init__(self, tokenize: Callable[[str], list[int]], body, projection: VocabProjection,  # noqa: ANN001
                 screened: ScreenedProjection | None, zeroed: torch.Tensor) -> None:
        self.tokenize = tokenize
        self.body = body  # token ids -> (tokens, hidden) head input
        self.projection = projection
        self.screened = screened
        self.zeroed = zeroed.numpy()
        self.keep = np.ones(projection.dim, bool)
        self.keep[self.zeroed] = False

    @classmethod
    def build(cls, model: torch.nn.Module, tokenizer, max_length: int, projection: VocabProjection,  # noqa: ANN001
              zeroed: torch.Tensor) -> SingleTextPath:
        """The fastest pieces that reproduce the batched route on a few probe texts."""
        from lsr.encoders.splade import head_input

        def tokenize(text: str) -> list[int]:
            return tokenizer([text], truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"][0]

        def batched(ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            tensor = torch.tensor([ids])
            hidden = head_input(model, {"input_ids": tensor, "attention_mask": torch.ones_like(tensor)})[0]
            return hidden, projected_splade(hidden, [len(ids)], projection)[0]

        texts = ["a b c d", "a", "the quick brown fox jumps over the lazy dog " * 3]
        probes = [tokenize(text) for text in texts]  # short: the model may hold fewer positions than max_length
        fast = _fast_tokenizer(tokenizer, max_length)
        tokenizer_texts = [*texts, "", "Naïve café — ÉTÉ 北京 x" * 200]  # and one past max_length (truncated)
        if fast is not None and [fast(text) for text in tokenizer_texts] != [tokenize(t) for t in tokenizer_texts]:
            log.info("the tokenizer's own encoder differs from its Hugging Face call; using the call")
            fast = None
        with torch.inference_mode():
            expected = [batched(ids) for ids in probes]

            def agrees(body, what: str):  # noqa: ANN001, ANN202 - the body, or None where it differs
                if body is not None and not all(torch.allclose(body(ids), hidden, rtol=1e-5, atol=1e-5)
                                                for ids, (hidden, _) in zip(probes, expected, strict=True)):
                    log.info("the %s differs from the model's own forward; not used", what)
                    return None
                return body

            body = agrees(CBertBody.from_model(model), "model body in C") or agrees(
                _traced_body(model, probes[0]), "traced model body")
            screened = ScreenedProjection.load(model.get_output_embeddings().weight, projection.bias, projection)
            if screened is not None and not all(
                    torch.allclose(_dense(*screened.positive(hidden), projection.dim), weights, rtol=1e-5, atol=1e-5)
                    for hidden, weights in expected):
                log.info("the int8 screen of one text differs from the batched projection; using the batched one")
                screened = None
        if body is None:
            body = lambda ids: batched(ids)[0]  # noqa: E731
        return cls(fast or tokenize, body, projection, screened, zeroed)

    @property
    def accelerated(self) -> bool:
        return self.screened is not None

    @torch.inference_mode()
    def __call__(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        ids = self.tokenize(text)
        hidden = self.body(ids)
        if self.screened is None:
            weights = projected_splade(hidden, [len(ids)], self.projection)[0].numpy()
            weights[self.zeroed] = 0
            indices = np.flatnonzero(weights > 0)
            return indices, weights[indices]
        indices, logits = self.screened.positive(hidden, self.keep)
        return indices, activate(logits).numpy()


def _dense(terms: np.ndarray, logits: torch.Tensor, dim: int) -> torch.Tensor:
    """Activated weights of ``terms`` as a dense ``(dim,)`` vector (the build's check)."""
    out = torch.zeros(dim)
    out[torch.from_numpy(terms)] = activate(logits)
    return out


def _fast_tokenizer(tokenizer, max_length: int) -> Callable[[str], list[int]] | None:  # noqa: ANN001
    """A private copy of a fast tokenizer's Rust encoder with the truncation its Hugging Face call applies
    (``longest_first`` from the tokenizer's side, special tokens counted), or None for a slow tokenizer. A
    copy: the Hugging Face call reconfigures the shared encoder on every call, from any thread."""
    backend = getattr(tokenizer, "_tokenizer", None)
    if not getattr(tokenizer, "is_fast", False) or backend is None:
        return None
    try:
        own = copy.deepcopy(backend)
        own.no_padding()
        own.enable_truncation(max_length, direction=getattr(tokenizer, "truncation_side", "right"))
    except Exception as exc:  # noqa: BLE001 - any tokenizer this cannot copy keeps the Hugging Face call
        log.info("the tokenizer's encoder could not be copied (%s); using its Hugging Face call", exc)
        return None
    return lambda text: own.encode(text).ids


def _traced_body(model: torch.nn.Module, ids: list[int]) -> Callable[[list[int]], torch.Tensor] | None:
    """The model up to its output projection, traced for a batch of one (token ids -> ``(tokens, hidden)``).
    The trace runs on a copy of the module path down to the output embeddings, there replaced by an identity
    (the parameters are shared, the model itself is never modified: other threads may be using it), so the
    graph returns what they would be fed."""
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
        traced = torch.jit.freeze(traced)
    except Exception as exc:  # noqa: BLE001 - the traced body is as exact, only slower
        log.info("the traced model body could not be frozen (%s); using it unfrozen", exc)
    return lambda ids: traced(torch.tensor([ids]))[0]
