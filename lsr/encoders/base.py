"""The encoder interface and the factory that rebuilds an encoder from its recorded config."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from lsr.errors import InvalidInputError
from lsr.index.vocabulary import Vocabulary
from lsr.types import SparseBatch

__all__ = ["SparseEncoder", "build_encoder", "ENCODER_TYPES"]


@runtime_checkable
class SparseEncoder(Protocol):
    vocabulary: Vocabulary

    @property
    def dim(self) -> int: ...

    def encode_queries(self, texts: Sequence[str], show_progress: bool = False) -> SparseBatch: ...

    def encode_documents(self, texts: Sequence[str], show_progress: bool = False) -> SparseBatch: ...

    def config(self) -> dict[str, Any]: ...


def _splade(**kwargs: Any) -> SparseEncoder:
    from lsr.encoders.splade import SpladeEncoder

    return SpladeEncoder(**kwargs)


ENCODER_TYPES = {"splade": _splade}


def build_encoder(config: dict[str, Any] | str, **overrides: Any) -> SparseEncoder:
    if isinstance(config, str):
        config = {"type": "splade", "model": config}
    config = {**config, **{k: v for k, v in overrides.items() if v is not None}}
    kind = config.pop("type", None)
    if kind not in ENCODER_TYPES:
        raise InvalidInputError(f"unknown encoder type {kind!r}; known: {', '.join(ENCODER_TYPES)}.")
    config.pop("vocabulary", None)  # recorded for information; the model determines it
    return ENCODER_TYPES[kind](**config)
