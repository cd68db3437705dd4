"""Text -> sparse vector encoders (torch + transformers, imported only when an encoder is built).

Every encoder has ``encode_queries(texts)`` and ``encode_documents(texts)`` returning a
:class:`~lsr.types.SparseBatch`, a ``vocabulary`` (:class:`~lsr.index.Vocabulary`) and a ``config()``
dict that is stored in the index manifest; :func:`load_encoder` rebuilds the encoder from that dict, so an
index always knows how its queries must be encoded.
"""

from __future__ import annotations

from typing import Any

from lsr.encoders.base import SparseEncoder

__all__ = ["SparseEncoder", "load_encoder", "SpladeEncoder", "InferenceFreeEncoder", "CausalSpladeEncoder"]


def load_encoder(config: dict[str, Any] | str, **overrides: Any) -> SparseEncoder:
    """Build an encoder from a manifest's encoder config, or from a model spec (a SPLADE model)."""
    from lsr.encoders.base import build_encoder

    return build_encoder(config, **overrides)


def __getattr__(name: str):
    if name == "SpladeEncoder":
        from lsr.encoders.splade import SpladeEncoder

        return SpladeEncoder
    if name == "CausalSpladeEncoder":
        from lsr.encoders.causal import CausalSpladeEncoder

        return CausalSpladeEncoder
    if name == "InferenceFreeEncoder":
        from lsr.encoders.inference_free import InferenceFreeEncoder

        return InferenceFreeEncoder
    raise AttributeError(f"module 'lsr.encoders' has no attribute {name!r}")
