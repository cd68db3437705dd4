"""The encoder interface and the factory that rebuilds an encoder from its recorded config."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from lsr.errors import InvalidInputError
from lsr.index.vocabulary import Vocabulary
from lsr.types import SparseBatch

__all__ = ["SparseEncoder", "build_encoder", "ENCODER_TYPES", "check_texts", "query_identity", "built_with"]


@runtime_checkable
class SparseEncoder(Protocol):
    vocabulary: Vocabulary

    @property
    def dim(self) -> int: ...

    def encode_queries(self, texts: Sequence[str], show_progress: bool = False) -> SparseBatch: ...

    def encode_documents(self, texts: Sequence[str], show_progress: bool = False) -> SparseBatch: ...

    def config(self) -> dict[str, Any]: ...


def check_texts(texts: Sequence[str]) -> list[str]:
    """The texts as a list, or a clear error for a bare string or a non-string item."""
    if isinstance(texts, str):
        raise InvalidInputError("encode takes a list of texts, got a single string; wrap it in a list.")
    out = list(texts)
    for text in out:
        if not isinstance(text, str):
            raise InvalidInputError(f"texts must be strings, got {type(text).__name__}.")
    return out


# Config keys that change how documents are encoded or how fast, but not how a query is: an index built with
# one value still answers queries encoded with another. The model path is left out too, since a copy of the
# same model in another folder is the same encoder (the vocabulary check still catches another tokenizer).
_NOT_QUERY_SIDE = {"model", "pruning", "max_length", "batch_size", "max_tokens_per_batch", "device", "threads",
                   "dtype", "idf", "vocabulary"}


def query_identity(config: dict[str, Any]) -> dict[str, Any]:
    """The part of an encoder config that decides what a query vector is (its kind, IDF table, template…).
    Two encoders with different identities must not share an index."""
    return {k: v for k, v in config.items() if k not in _NOT_QUERY_SIDE}


def built_with(config: dict[str, Any] | None, model: str, options: dict[str, Any] | None = None) -> bool:
    """Whether an index whose manifest records encoder ``config`` was built by ``model`` with these encoder
    ``options`` (as the CLI passes them): same model, kind, pruning and, when named, IDF file."""
    if config is None:
        return False
    options = {k: v for k, v in (options or {}).items() if v is not None}
    return (config.get("model") == model
            and config.get("type", "splade") == options.get("type", "splade")
            and config.get("pruning") == options.get("pruning")
            and ("idf" not in options or config.get("idf") == str(options["idf"])))


def _splade(**kwargs: Any) -> SparseEncoder:
    from lsr.encoders.splade import SpladeEncoder

    return SpladeEncoder(**kwargs)


def _inference_free(**kwargs: Any) -> SparseEncoder:
    from lsr.encoders.inference_free import InferenceFreeEncoder

    return InferenceFreeEncoder(**kwargs)


def _causal_splade(**kwargs: Any) -> SparseEncoder:
    from lsr.encoders.causal import CausalSpladeEncoder

    return CausalSpladeEncoder(**kwargs)


ENCODER_TYPES = {"splade": _splade, "inference-free": _inference_free, "causal-splade": _causal_splade}


def build_encoder(config: dict[str, Any] | str, **overrides: Any) -> SparseEncoder:
    if isinstance(config, str):
        config = {"type": "splade", "model": config}
    config = {**config, **{k: v for k, v in overrides.items() if v is not None}}
    kind = config.pop("type", None)
    if kind not in ENCODER_TYPES:
        raise InvalidInputError(f"unknown encoder type {kind!r}; known: {', '.join(ENCODER_TYPES)}.")
    config.pop("vocabulary", None)  # recorded for information; the model determines it
    try:
        return ENCODER_TYPES[kind](**config)
    except TypeError as exc:  # an option the encoder does not have: the user's mistake, not a crash
        if "unexpected keyword argument" not in str(exc):
            raise
        raise InvalidInputError(f"the {kind} encoder has no option {str(exc).rsplit(' ', 1)[-1]}.") from None
