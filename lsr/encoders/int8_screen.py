"""The exact int8 screen of the fused projection, for CPUs without fast bfloat16 products.

Why: on such CPUs (AVX2 only) the float32 projection of every token onto the 30k vocabulary is ~90% of
document encoding and runs near the FMA peak, so only fewer multiply-adds make it faster. AVX2 multiplies
32 byte pairs per instruction (vpmaddubsw) against 8 float pairs per FMA; the C kernel ``screen_i8`` in
``_cproject.c`` computes, per text and term, the max over the text's tokens of an integer product, about 2x
the float32 rate per core; where the CPU has AVX-512 VNNI, one ``vpdpbusd`` does the three AVX2 instructions'
work for twice the terms (the same integers; ``LSR_SCREEN_ISA=avx2`` keeps to AVX2, see :func:`screen_isa`).
Like the bfloat16 screen, it only decides which terms *can* be positive; those
(a few per cent) are multiplied out in float32 (:func:`lsr.encoders.pooling.projected_splade`), so the
vectors are the float32 route's.

The bound. Term rows are stored as ``w_j = s_j q_j + r_j`` with q_j in [-63, 63] (7 bits, so that a pair of
u8 x int8 products fits int16 in vpmaddubsw); the token states of one text as ``x_t = a xq_t + e_t`` with
xq_t in [-127, 127] (one scale a per text, sent as xq + 128 in u8). Then, exactly in the reals,

    x_t . w_j = a s_j (xq_t . q_j) + a xq_t . r_j + e_t . w_j
             <= a s_j (xq_t . q_j) + a |xq_t| |r_j| + |e_t| |w_j|                 (Cauchy-Schwarz)

and the float32 product of the exact route errs by at most gamma_d |x_t| |w_j| (Higham). The integer part
is computed exactly, its max over tokens taken in integers (a and s_j do not depend on the token), so a term
whose bound plus bias is <= 0 has a float32 logit <= 0, i.e. weight 0. Every other term is a candidate.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

__all__ = ["Int8Screen", "int8_kernel_available", "quantise_rows", "dot_gamma", "screen_isa"]

TERMS = 8  # terms per panel, as SCREEN_TERMS in _cproject.c
_Q = 63  # the largest |q|: 7 bits
_X = 127  # the largest |xq|; xq + 128 is the kernel's u8
_POOLS: dict[int, ThreadPoolExecutor] = {}  # per process: a forked worker gets its own
_ISAS = ("auto", "avx2", "plain")


def screen_isa() -> str:
    """The widest screen kernel allowed: ``LSR_SCREEN_ISA`` = ``auto`` (default: AVX-512 VNNI, else AVX2, else
    plain C, by CPU), ``avx2`` (no AVX-512: an ordinary CPU, for benchmarks on a newer one) or ``plain``. All
    compute the same integers."""
    isa = os.environ.get("LSR_SCREEN_ISA", "auto").lower()
    if isa not in _ISAS:
        raise ValueError(f"LSR_SCREEN_ISA={isa!r} is not one of {', '.join(_ISAS)}")
    return isa


def _kernel():  # noqa: ANN202 - the C module or None
    try:
        from lsr.encoders import _cproject
    except ImportError:  # the optional C extension was not built (no compiler)
        return None
    return _cproject if hasattr(_cproject, "screen_i8") else None


def int8_kernel_available() -> bool:
    return _kernel() is not None


def quantise_rows(exact: np.ndarray, levels: int, scale_dtype: type = np.float64) -> tuple[np.ndarray, ...]:
    """Each float64 row as ``scale * q + residual``, integer q in [-levels, levels], one scale per row (of
    ``scale_dtype``, the very numbers a kernel multiplies by): ``(q, scale, |residual|)``, q as float64. A zero
    row, or one too small for its scale type, gets scale 1, q = 0 and the row itself as residual."""
    scale = (np.abs(exact).max(1) / levels).astype(scale_dtype)
    scale[scale == 0] = 1
    q = np.clip(np.rint(exact / scale[:, None]), -levels, levels)
    return q, scale, np.linalg.norm(exact - q * scale[:, None].astype(np.float64), axis=1)


def dot_gamma(d: int) -> float:
    """Higham's gamma_d for float32: a dot product of length d, any summation order, errs by at most
    gamma_d * sum |x_k y_k| <= gamma_d |x| |y|."""
    return d * 2.0**-24 / (1 - d * 2.0**-24)


def _pool() -> ThreadPoolExecutor:
    pid = os.getpid()
    if pid not in _POOLS:
        _POOLS[pid] = ThreadPoolExecutor(max(1, (os.cpu_count() or 2) - 1), thread_name_prefix="lsr-int8-screen")
    return _POOLS[pid]


class Int8Screen:
    """The int8 panels of a projection's weight and what the bound needs per term (see the module docstring)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        self.kernel = _kernel()
        self.isa = screen_isa()
        exact = weight.detach().double().cpu().numpy()
        self.dim, self.hidden = exact.shape
        self.hidden4 = -(-self.hidden // 4)
        self.n_panels = -(-self.dim // TERMS)
        q, self.scale, self.residual_norms = quantise_rows(exact, _Q)
        self.weight_norms = np.linalg.norm(exact, axis=1)
        self.q_sums = q.sum(1).astype(np.int64)
        padded = np.zeros((self.n_panels * TERMS, self.hidden4 * 4), np.int8)  # zero terms and dimensions
        padded[: self.dim, : self.hidden] = q
        # panel p: for each group of 4 dimensions, its 8 terms x 4 bytes (one 32-byte load in the kernel)
        self.panels = np.ascontiguousarray(padded.reshape(self.n_panels, TERMS, self.hidden4, 4).transpose(0, 2, 1, 3))
        self.bias = bias.detach().double().cpu().numpy()
        self.gamma = dot_gamma(self.hidden)
        # what select_i8 reads per term, one row each: scale, bias, |r_j|, |w_j|, 128 Q_j (exact in float64)
        self.terms = np.ascontiguousarray(np.stack([self.scale, self.bias, self.residual_norms, self.weight_norms,
                                                    128.0 * self.q_sums]))

    def candidates(self, hidden: torch.Tensor, lengths: Sequence[int]) -> torch.Tensor:
        """Packed float32 ``(sum(lengths), hidden)`` token states -> ``(len(lengths), vocab)`` booleans: the terms
        whose float32 logit can be positive in each text (none for a text without tokens)."""
        lengths = np.asarray(lengths, np.int64)
        u8, offsets, a, error_q, coef_n = self._quantise(hidden.detach().float().cpu().numpy(), lengths)
        maxima = np.empty((len(lengths), self.n_panels * TERMS), np.int32)
        self._run(u8, offsets, maxima)
        out = torch.zeros((len(lengths), self.dim), dtype=torch.bool)
        for text in np.flatnonzero(lengths):
            out[text, torch.from_numpy(self._passing(maxima[text], a[text], error_q[text], coef_n[text]))] = True
        return out

    def select(self, hidden: np.ndarray) -> np.ndarray:
        """One text's float32 ``(tokens, hidden)`` states -> the ids (ascending) of the terms whose float32 logit
        can be positive: :meth:`candidates` for a query, on one thread (the caller's)."""
        if not len(hidden):
            return np.zeros(0, np.int64)
        u8, offsets, a, error_q, coef_n = self._quantise(hidden, np.array([len(hidden)]))
        maxima = np.empty(self.n_panels * TERMS, np.int32)
        self.kernel.screen_i8(u8, offsets, self.panels, maxima, 1, self.hidden4, self.n_panels, 0, self.n_panels,
                              self.isa)
        return self._passing(maxima, a[0], error_q[0], coef_n[0])

    @property
    def kernel_name(self) -> str:
        """The screen kernel this CPU runs under :func:`screen_isa`'s cap, for people to read."""
        if self.kernel is None:
            return "no C kernel"
        if self.isa == "auto" and self.kernel.has_vnni():
            return "AVX-512 VNNI"
        return "AVX2" if self.isa != "plain" and self.kernel.has_avx2() else "plain C"

    def _passing(self, maxima: np.ndarray, a: float, error_q: float, coef_n: float) -> np.ndarray:
        """One text's integer maxima -> the terms whose bound (the module docstring's, in float64:
        ``a s_j (M_j - 128 Q_j) + b_j + error_q |r_j| + coef_n |w_j|``, with 1e-9 relative room) is positive,
        evaluated by the C kernel ``select_i8`` (numpy's passes over the vocabulary cost a query more than the
        screen)."""
        out = np.empty(self.dim, np.int64)
        count = self.kernel.select_i8(maxima, self.terms, out, self.dim, float(a), float(error_q), float(coef_n))
        return out[:count]

    def _quantise(self, x: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, ...]:
        """Float32 token states of consecutive texts -> the kernel's u8 rows and row offsets, and per text the
        scale a, the largest a |xq_t| (coefficient of |r_j|) and the largest |e_t| + gamma |x_t| (of |w_j|), all
        in float64 (the C function ``quantise_i8``; the module docstring defines them)."""
        x = np.ascontiguousarray(x, np.float32)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        u8 = np.empty((len(x), self.hidden4 * 4), np.uint8)
        stats = np.empty((len(lengths), 4))
        self.kernel.quantise_i8(x, offsets, u8, stats, len(lengths), self.hidden, self.hidden4)
        a, error_q, error_e, norm_x = stats.T
        return u8, offsets, a, error_q, error_e + self.gamma * norm_x

    def _run(self, u8: np.ndarray, offsets: np.ndarray, maxima: np.ndarray) -> None:
        """The kernel over the panels, split over torch's thread count (it releases the GIL)."""
        parts = max(1, min(torch.get_num_threads(), self.n_panels))
        cuts = np.linspace(0, self.n_panels, parts + 1).astype(int)

        def run(first: int, last: int) -> None:
            self.kernel.screen_i8(u8, offsets, self.panels, maxima, len(offsets) - 1, self.hidden4, self.n_panels,
                                  first, last, self.isa)

        helpers = [_pool().submit(run, first, last) for first, last in zip(cuts[1:-1], cuts[2:], strict=True)]
        run(cuts[0], cuts[1])
        for helper in helpers:
            helper.result()
