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
                   "dtype", "idf", "vocabulary", "k1", "b", "query_weights"}


def query_identity(config: dict[str, Any]) -> dict[str, Any]:
    """The part of an encoder config that decides what a query vector is (its kind, IDF table, template…).
    Two encoders with different identities must not share an index."""
    identity = {k: v for k, v in config.items() if k not in _NOT_QUERY_SIDE}
    if isinstance(identity.get("parts"), list):  # a hybrid encoder: each part's own identity
        identity["parts"] = [query_identity(p) if isinstance(p, dict) else p for p in identity["parts"]]
    return identity


def built_with(config: dict[str, Any] | None, model: str, options: dict[str, Any] | None = None) -> bool:
    """Whether an index whose manifest records encoder ``config`` was built by ``model`` with these encoder
    ``options`` (as the CLI passes them): same model, kind, pruning and, when named, IDF file."""
    if config is None:
        return False
    options = {k: v for k, v in (options or {}).items() if v is not None}
    kind = config.get("type", "splade")
    first = config["parts"][0] if isinstance(config.get("parts"), list) and config["parts"] else config
    return ((kind == "bm25" or config.get("model") == model)  # BM25's model is what lsr index fitted
            and kind == options.get("type", "splade")
            and first.get("pruning") == options.get("pruning")
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


def _bm25(**kwargs: Any) -> SparseEncoder:
    from lsr.encoders.bm25 import Bm25Encoder

    if kwargs.get("model") is None:
        raise InvalidInputError("a bm25 encoder needs its fitted model folder (lsr index fits one on the corpus).")
    return Bm25Encoder(**kwargs)


ENCODER_TYPES = {"splade": _splade, "inference-free": _inference_free, "causal-splade": _causal_splade,
                 "bm25": _bm25}
# Options that belong to the BM25 part of a hybrid ("splade+bm25") encoder rather than to its first part.
_BM25_PART_OPTIONS = {"bm25_model": "model", "k1": "k1", "b": "b"}


def _hybrid(kind: str, config: dict[str, Any]) -> SparseEncoder:
    """``splade+bm25``: from ``parts`` (a recorded config) or from one model and options (the CLI's)."""
    from lsr.encoders.hybrid import HybridSparseEncoder

    kinds = kind.split("+")
    unknown = [k for k in kinds if k not in ENCODER_TYPES]
    if unknown:
        raise InvalidInputError(f"unknown encoder type(s) {unknown} in {kind!r}; known: {', '.join(ENCODER_TYPES)}.")
    weights, model = config.pop("query_weights", None), config.get("model")
    parts = config.pop("parts", None)
    if parts is None:  # first part: the model and the common options; the BM25 part: its own options
        bm25 = {dst: config.pop(src) for src, dst in _BM25_PART_OPTIONS.items() if src in config}
        parts = [{**config, "type": k} if i == 0 else ({**bm25, "type": k} if k == "bm25" else {"type": k})
                 for i, k in enumerate(kinds)]
    elif [p.get("type") for p in parts] != kinds:
        raise InvalidInputError(f"hybrid encoder {kind!r} has parts of kinds {[p.get('type') for p in parts]}.")
    return HybridSparseEncoder([build_encoder(p) for p in parts], weights, model)


def build_encoder(config: dict[str, Any] | str, **overrides: Any) -> SparseEncoder:
    if isinstance(config, str):
        config = {"type": "splade", "model": config}
    config = {**config, **{k: v for k, v in overrides.items() if v is not None}}
    kind = config.pop("type", None)
    if isinstance(kind, str) and "+" in kind:
        config.pop("vocabulary", None)
        return _hybrid(kind, config)
    if kind not in ENCODER_TYPES:
        raise InvalidInputError(f"unknown encoder type {kind!r}; known: {', '.join(ENCODER_TYPES)}.")
    config.pop("vocabulary", None)  # recorded for information; the model determines it
    try:
        return ENCODER_TYPES[kind](**config)
    except TypeError as exc:  # an option the encoder does not have: the user's mistake, not a crash
        if "unexpected keyword argument" not in str(exc):
            raise
        raise InvalidInputError(f"the {kind} encoder has no option {str(exc).rsplit(' ', 1)[-1]}.") from None
