"""Vocabulary identity: the term space a vector lives in.

Vectors are only comparable when they were produced over the same vocabulary, so every index records the
hash of its token list and refuses queries encoded over another one (a BERT-30522 index must never
answer a Mistral-32k query).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from lsr.errors import InvalidInputError, VocabularyMismatchError

__all__ = ["Vocabulary", "check_same_vocabulary"]


@dataclass(frozen=True)
class Vocabulary:
    """Tokens in id order plus where they came from (a model name, or "collection")."""

    tokens: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        if not self.tokens:
            raise InvalidInputError("a vocabulary needs at least one token.")

    @property
    def size(self) -> int:
        return len(self.tokens)

    @property
    def sha256(self) -> str:
        return _hash_tokens(self.tokens)

    def identity(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256, "source": self.source}

    def write(self, path: Path) -> None:
        path.write_bytes(orjson.dumps(list(self.tokens)))

    def token_ids(self) -> dict[str, int]:
        return {tok: i for i, tok in enumerate(self.tokens)}

    @classmethod
    def from_tokens(cls, tokens, source: str) -> Vocabulary:  # noqa: ANN001 - any iterable of str
        return cls(tuple(str(t) for t in tokens), source)


def _hash_tokens(tokens: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for tok in tokens:
        digest.update(tok.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


def check_same_vocabulary(expected: dict[str, Any], actual_sha256: str, actual_source: str) -> None:
    """Raise VocabularyMismatchError unless the two identities name the same token list."""
    if expected["sha256"] != actual_sha256:
        raise VocabularyMismatchError(
            f"the index was built over vocabulary {expected.get('source')!r} ({expected['size']} terms) but the "
            f"queries come from {actual_source!r}, a different vocabulary; encode queries with the index's model."
        )
