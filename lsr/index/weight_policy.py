"""How a new index stores its weights when the user does not say: ``weight_dtype="auto"`` (the default of
``lsr index``, ``lsr eval`` and the build functions).

- The encoder proves a bound on its document weights (``encoder.weight_bound()``: SPLADE-style heads, see
  :mod:`lsr.encoders.weight_bound`; BM25: the largest IDF; hybrids: the largest of their parts'): uint8
  impacts at ``scale = 255 / bound``. No document, now or added later, can be clipped, so every segment and
  every merge shares the one scale. The price of a bound instead of the largest weight seen is a coarser
  step (SPLADE-tiny: 4.12 / 255 instead of 2.76 / 255); measured (benchmarks/README.md "Stored weight
  types"): nDCG@10 within 0.002 of float32 on SciFact and NFCorpus, the same spread as uint8 at any scale
  from 2.8 to 6 (quantisation noise), and 99.3% of float32's top 10 on 1,000 enwiki queries (99.45% at
  the largest-weight scale). ``--weights uint16`` keeps float32's rankings to 0.0004 nDCG at 1.3x uint8's
  size; float32 is 2x.
- No bound (vectors made outside lsr, e.g. JSONL or Anserini vectors, even when a model names their
  vocabulary; encoders whose head is not a normalisation layer and a Linear): float32, as before.

An explicit ``uint8``/``uint16`` without a ``scale`` also takes its scale from the bound where there is one
(else from the first batch's largest weight, as the writer does). An explicit ``scale`` is used as given,
also under ``auto``, which then stores uint8.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

__all__ = ["AUTO", "resolve_storage", "encoder_weight_bound"]

log = logging.getLogger(__name__)

AUTO = "auto"


def encoder_weight_bound(encoder: Any) -> float | None:
    """The encoder's proven largest document weight, or None (no such method, or no proof for this model)."""
    bound = getattr(encoder, "weight_bound", None)
    value = bound() if callable(bound) else None
    return float(value) if value is not None and np.isfinite(value) and value > 0 else None


def resolve_storage(storage: dict[str, Any] | None, encoder: Any) -> dict[str, Any]:
    """``storage`` (IndexWriter options) with ``weight_dtype`` resolved (absent or ``auto``, see the module
    docstring) and, for integer types without a scale, the scale and ``weight_bound`` from the encoder."""
    storage = {k: v for k, v in (storage or {}).items() if v is not None}
    dtype = storage.get("weight_dtype", AUTO)
    if dtype == AUTO and storage.get("scale") is not None:
        dtype = storage["weight_dtype"] = "uint8"  # a scale asks for integer impacts: auto's type, that scale
    if dtype == "float32" or storage.get("scale") is not None:
        return storage
    bound = None if encoder is None else encoder_weight_bound(encoder)
    if dtype == AUTO:
        if bound is None:
            return {**storage, "weight_dtype": "float32"}
        dtype = "uint8"
    if bound is None:
        return {**storage, "weight_dtype": dtype}
    scale = float(np.iinfo(dtype).max) / bound
    log.info("storing %s impacts at scale %.6g: the encoder's weights are at most %.4g", dtype, scale, bound)
    return {**storage, "weight_dtype": dtype, "scale": scale, "weight_bound": bound}
