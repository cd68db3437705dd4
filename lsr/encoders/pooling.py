"""SPLADE pooling: per vocabulary term, max over valid tokens of log(1 + ReLU(logit)).

Two routes to the same vectors. :func:`splade_pool` takes a model's full ``(batch, tokens, vocab)`` logits.
:func:`projected_splade` never builds them: it takes the packed hidden states of the valid tokens only and
multiplies them by the output projection tile by tile (a few hundred token rows x a few thousand vocabulary
columns, small enough to stay in the L2 cache), keeping only the running max. For a small model such as
SPLADE-tiny nearly all encoding time is that projection, and writing and rereading the logits tensor
(tokens x 30,522 floats) costs more than the multiplication itself.

The float32 route is also *screened*: on CPUs with fast bfloat16 products (AMX, AVX-512 BF16) a bfloat16
product, with the bias raised by a bound on its rounding error, finds the terms that cannot be positive (99%
of the vocabulary for a SPLADE passage); those get weight 0, which is what float32 gives them, and only the
others are multiplied out in float32. Elsewhere an integer product (:mod:`lsr.encoders.int8_screen`, AVX2)
does the same with its own bound. The vectors are those of the plain float32 route.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from itertools import accumulate

import torch

from lsr.encoders.int8_screen import Int8Screen, int8_kernel_available

__all__ = ["splade_pool", "dense_to_sparse_batch", "VocabProjection", "projected_max", "projected_splade",
           "exact_max_logits", "activate", "fast_bfloat16"]

_U = 2.0**-8  # unit roundoff of bfloat16 (8 significant bits)


def splade_pool(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``(batch, tokens, vocab)`` logits -> ``(batch, vocab)`` non-negative weights.

    log1p∘relu is monotone, so the max is taken over the raw logits first and the activation applied to
    ``batch x vocab`` values only; the result is identical to activating every token first. Padding
    positions are multiplied by 0 in place (a 0 can never win over relu's floor), which avoids allocating a
    second logits-sized tensor. ``logits`` is modified.
    """
    logits.mul_(attention_mask.unsqueeze(-1).to(logits.dtype))
    return activate(logits.amax(dim=1))


def activate(max_logits: torch.Tensor) -> torch.Tensor:
    """log(1 + ReLU(x)), applied after the max (monotone, so the order does not change the result)."""
    return torch.log1p(torch.relu(max_logits))


def fast_bfloat16(device: torch.device) -> bool:
    """Whether bfloat16 matrix products are native here (CPU: AMX or AVX-512 BF16), not emulated.

    ``ONEDNN_MAX_CPU_ISA`` (oneDNN's own switch, read when torch starts) set to an ISA without bfloat16
    products, e.g. ``AVX2``, makes oneDNN emulate them, so the answer is then no: that is how a machine with
    AMX measures what a CPU without it does (``benchmarks/encode.py --isa avx2``).
    """
    if device.type != "cpu" or not _isa_cap_allows_bfloat16(os.environ.get("ONEDNN_MAX_CPU_ISA", "")):
        return False
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private, hence looked up defensively
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def _isa_cap_allows_bfloat16(cap: str) -> bool:
    """oneDNN's ISA names with bfloat16 dot products: AVX512_CORE_BF16, *_AMX*, *_FP16 and AVX10_*; an unset
    cap (or ALL/DEFAULT) allows whatever the CPU has."""
    cap = cap.strip().upper()
    return cap in ("", "ALL", "DEFAULT") or any(part in cap for part in ("BF16", "AMX", "FP16", "AVX10"))


def _screen_kind(screen: bool | str | None, dtype: torch.dtype, device: torch.device) -> str | None:
    """Which exact screen a float32 projection runs: ``"bfloat16"`` where bfloat16 products are native (or when
    asked with True), else ``"int8"`` where the C kernel is built (CPU), else None; False: none."""
    if dtype != torch.float32 or screen is False:
        return None
    if screen is True or screen == "bfloat16" or (screen is None and fast_bfloat16(device)):
        return "bfloat16"
    if screen not in (None, "int8"):
        raise ValueError(f"screen must be None, True, False, 'bfloat16' or 'int8', got {screen!r}")
    if device.type != "cpu" or not int8_kernel_available():
        if screen == "int8":
            raise ValueError("the int8 screen needs the C extension lsr.encoders._cproject and a CPU tensor")
        return None
    return "int8"


class VocabProjection:
    """The output projection ``x @ weight.T + bias``, its weight transposed once into contiguous column chunks.

    ``dtype=torch.bfloat16`` keeps the chunks (and the bias, which then goes into the product) in bfloat16:
    several times faster on CPUs with AMX or AVX-512 BF16, at a cosine of about 0.99998 to float32.
    ``screen`` (float32 only) adds an exact screen: ``"bfloat16"`` (default where bfloat16 is fast) or
    ``"int8"`` (default elsewhere, where the C kernel is built; :mod:`lsr.encoders.int8_screen`); False: none.
    ``dtype=torch.qint8``: int8 weights, activations quantised per product with their own scale (approximate,
    opt-in; a text's vector then depends a little on the texts batched with it).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype = torch.float32,
                 chunk: int | None = None, screen: bool | None = None):
        weight = weight.detach()
        self.dim, hidden = (int(n) for n in weight.shape)
        self.dtype = dtype
        self.bias = torch.zeros(self.dim, device=weight.device) if bias is None else bias.detach().float()
        self.screen = _screen_kind(screen, dtype, weight.device)
        tiled = torch.bfloat16 if self.screen == "bfloat16" else dtype
        chunk = chunk or (1024 if tiled == torch.bfloat16 else 2048)  # measured fastest (SPLADE-tiny, 2 cores)
        self.bounds = [(start, min(start + chunk, self.dim)) for start in range(0, self.dim, chunk)]
        if dtype == torch.qint8:  # each chunk a dynamically quantised Linear (int8 weight, bias inside)
            self.chunks = [_int8_linear(weight[a:b], self.bias[a:b]) for a, b in self.bounds]
            self.bias_chunks = None
            return
        # (hidden, chunk) contiguous blocks: each product then reads one compact block of the weight
        self.chunks = [weight[a:b].t().to(tiled).contiguous() for a, b in self.bounds]
        self.bias_chunks = [self.bias[a:b].to(tiled) for a, b in self.bounds]
        if self.screen:
            self.weight = weight.float()  # the exact products of the terms that pass the screen
            # How far a bfloat16 product can fall below the float32 one, per unit of |x| |w_j| (Cauchy-Schwarz
            # bounds sum_k |x_k w_jk| by that): rounding x and w to bfloat16 (2u + u^2), float32 accumulation of
            # hidden + 1 terms there and of hidden terms in the float32 product (n * 2^-24 each), 1% to spare.
            gamma = (hidden + 1) * 2.0**-24
            self.error_per_norm = 1.01 * (2 * _U + _U**2 + 2 * gamma * (1 + _U) ** 2)
            self.weight_norms = torch.linalg.vector_norm(self.weight, dim=1)
        if self.screen == "int8":
            self.int8 = Int8Screen(self.weight, self.bias)


def projected_max(hidden: torch.Tensor, lengths: Sequence[int], projection: VocabProjection,
                  tile_rows: int = 256) -> torch.Tensor:
    """Packed ``(sum(lengths), hidden)`` token states of consecutive texts -> ``(len(lengths), vocab)`` max
    logits, i.e. ``max over each text's rows of (hidden @ weight.T + bias)``, before the activation (a text
    without rows gets -inf). A float32 projection is computed unscreened (the screens only decide zeros).

    float32: the bias is added after the max, which is exact (rounding is monotone, so max(fl(a + b)) =
    fl(max(a) + b)) and saves one addition per token and term. bfloat16: the bias goes into the product, and
    negative maxima come back as 0 (the activation's floor).
    """
    if projection.dtype == torch.qint8:  # the bias is inside each chunk's product
        return _tiled_max(hidden.float(), lengths, projection.chunks, None, projection, tile_rows)
    if projection.dtype == torch.bfloat16:
        bits = _tiled_max(hidden, lengths, projection.chunks, projection.bias_chunks, projection, tile_rows)
        return bits.clamp_(min=0).view(torch.bfloat16).float()  # negative maxima (activated to 0 anyway) as 0
    if projection.screen == "bfloat16":  # its chunks are bfloat16: the plain float32 product, for reference and tests
        projection = VocabProjection(projection.weight, projection.bias, screen=False)
    out = _tiled_max(hidden, lengths, projection.chunks, None, projection, tile_rows)
    return out.add_(projection.bias)


def projected_splade(hidden: torch.Tensor, lengths: Sequence[int], projection: VocabProjection,
                     tile_rows: int | None = None) -> torch.Tensor:
    """:func:`projected_max` followed by the activation: ``(len(lengths), vocab)`` SPLADE weights, screened
    where the projection says so. ``tile_rows`` defaults to what measured fastest for its products."""
    if not projection.screen:
        return activate(projected_max(hidden, lengths, projection, tile_rows or _TILE_ROWS[projection.dtype]))
    if projection.screen == "int8":
        hidden = hidden.float()
        return _exact_where(hidden, lengths, projection, projection.int8.candidates(hidden, lengths))
    # The screen: per text and term, max over rows of bf16(x) @ bf16(w_j) + raised_bias_j, with the bias raised by
    # the most that product can fall below the float32 one. Where that max is <= 0 the float32 logit + bias is
    # <= 0 too, so the weight is exactly 0; only the rest (about 1% for SPLADE) is multiplied in float32.
    hidden = hidden.float()
    radius = float(torch.linalg.vector_norm(hidden, dim=1).max()) if len(hidden) else 0.0
    raised = projection.bias + (projection.error_per_norm * radius * 1.001) * projection.weight_norms
    raised += raised.abs() * (2 * _U)  # so that rounding to bfloat16 (half a unit, <= u |x|) cannot lower it
    bias_chunks = [raised[a:b].bfloat16() for a, b in projection.bounds]
    bits = _tiled_max(hidden, lengths, projection.chunks, bias_chunks, projection, tile_rows or 512)
    return _exact_where(hidden, lengths, projection, bits >= 0)  # sign bit clear: +0 or positive, maybe non-zero


def exact_max_logits(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, terms: torch.Tensor) -> torch.Tensor:
    """One text's float32 max logits for the screened ``terms``: max over its token ``rows`` of the products with
    those terms' weight rows, then the bias (after the max: exact, the same bias for every row)."""
    return torch.mm(rows, weight.index_select(0, terms).t()).amax(dim=0) + bias.index_select(0, terms)


def _exact_where(hidden: torch.Tensor, lengths: Sequence[int], projection: VocabProjection,
                 candidates: torch.Tensor) -> torch.Tensor:
    """SPLADE weights computed in float32 for the ``(texts, vocab)`` ``candidates`` of a screen, 0 elsewhere."""
    out = torch.zeros((len(lengths), projection.dim), device=hidden.device)
    rows = list(accumulate(lengths, initial=0))
    for text, possible in enumerate(candidates):
        terms = possible.nonzero().squeeze(1)
        if len(terms) and rows[text + 1] > rows[text]:
            out[text, terms] = activate(exact_max_logits(hidden[rows[text]:rows[text + 1]], projection.weight,
                                                         projection.bias, terms))
    return out


# 256 x 2048 float32 is 2 MiB, an L2 cache; AMX likes more
_TILE_ROWS = {torch.float32: 256, torch.bfloat16: 512, torch.qint8: 256}


def _tiled_max(hidden: torch.Tensor, lengths: Sequence[int], chunks: list[torch.Tensor],
               bias_chunks: list[torch.Tensor] | None, projection: VocabProjection, tile_rows: int) -> torch.Tensor:
    """Max over each text's rows of ``hidden @ chunk (+ bias)``, chunk by chunk, tile by tile. Float32 chunks
    give float32 maxima (no bias). bfloat16 chunks give the maxima of the bfloat16 *bit patterns read as int16*:
    several times faster than a bfloat16 max, right for every positive value, and negative exactly where the
    true max is negative (the sign bit), which is all that the activation or the screen looks at."""
    quantised = isinstance(chunks[0], torch.nn.Module)  # int8 Linear modules: float32 logits, bias included
    low = not quantised and chunks[0].dtype == torch.bfloat16
    out = torch.empty((len(lengths), projection.dim), dtype=torch.int16 if low else torch.float32,
                      device=hidden.device)
    for text in (i for i, n in enumerate(lengths) if n == 0):  # no token: every weight 0 after the activation
        out[text] = -1 if low else float("-inf")  # -inf stays so when the bias is added
    hidden = hidden.float() if quantised else hidden.to(chunks[0].dtype)
    for row0, row1, pieces in _tiles(lengths, tile_rows):
        tile = hidden[row0:row1]
        for index, ((a, b), weight) in enumerate(zip(projection.bounds, chunks, strict=True)):
            if quantised:
                logits = weight(tile)
            else:
                logits = torch.addmm(bias_chunks[index], tile, weight) if low else torch.mm(tile, weight)
            if low:
                logits = logits.view(torch.int16)
            for text, start, end, first in pieces:
                part = logits[start - row0 : end - row0]
                if first:  # amax straight into the result: no temporary
                    torch.amax(part, dim=0, out=out[text, a:b])
                else:  # a text split over tiles: combine with its earlier rows
                    torch.maximum(out[text, a:b], part.amax(dim=0), out=out[text, a:b])
    return out


def _tiles(lengths: Sequence[int], tile_rows: int):
    """Consecutive blocks of ``tile_rows`` packed rows (the last one shorter), each with the pieces of texts it
    holds: ``(row0, row1, [(text, start, end, first_piece_of_text)])``. Fixed-height blocks keep the products
    to a handful of shapes, which matters for oneDNN's bfloat16 kernels, generated and cached per shape."""
    bounds = list(accumulate(lengths, initial=0))
    text = 0
    for row0 in range(0, bounds[-1], tile_rows):
        row1 = min(row0 + tile_rows, bounds[-1])
        pieces = []
        while text < len(lengths) and bounds[text] < row1:
            start, end = max(bounds[text], row0), min(bounds[text + 1], row1)
            if start < end:
                pieces.append((text, start, end, start == bounds[text]))
            if bounds[text + 1] > row1:
                break  # the text goes on in the next block
            text += 1
        yield row0, row1, pieces


def _int8_linear(weight: torch.Tensor, bias: torch.Tensor) -> torch.nn.Module:
    """``x @ weight.T + bias`` with the weight in int8 (per-channel scales) and x quantised per call: torch's
    dynamic quantisation (fbgemm / oneDNN kernels)."""
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    return quantize_dynamic(torch.nn.Sequential(linear))[0]


def quantize_dynamic(module: torch.nn.Module, skip: frozenset = frozenset()) -> torch.nn.Module:
    """A copy of ``module`` whose Linear layers (but those named in ``skip``) are dynamically quantised to int8.
    torch.ao.quantization is deprecated in favour of torchao, whose CPU int8 path (torch._int_mm) is many times
    slower than float32 on AVX2 CPUs; the eager API still ships with torch 2.13."""
    import warnings

    names = {name for name, child in module.named_modules() if isinstance(child, torch.nn.Linear) and name not in skip}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice, once per call
        from torch.ao.quantization import default_dynamic_qconfig
        from torch.ao.quantization import quantize_dynamic as quantize

        return quantize(module, {name: default_dynamic_qconfig for name in names}, dtype=torch.qint8)


def dense_to_sparse_batch(weights: torch.Tensor):  # noqa: ANN201 - SparseBatch
    """``(batch, vocab)`` non-negative tensor -> SparseBatch of its positive entries."""
    import numpy as np

    from lsr.types import SparseBatch

    weights = weights.detach().float().cpu()
    rows, cols = torch.nonzero(weights > 0, as_tuple=True)
    indptr = np.zeros(weights.shape[0] + 1, np.int64)
    np.cumsum(torch.bincount(rows, minlength=weights.shape[0]).numpy(), out=indptr[1:])
    return SparseBatch(indptr, cols.numpy(), weights[rows, cols].numpy(), weights.shape[1])
