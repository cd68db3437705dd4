"""Snippets with the matching terms marked, and the query's own tokens (to tell expansion terms apart).

Output is a list of ``(text, matched)`` pieces; the template wraps matched ones in ``<mark>`` and Jinja
escapes every piece, so no HTML is ever built from document text here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

__all__ = ["Piece", "Marker", "snippet", "query_tokens"]

Piece = tuple[str, bool]
_WORD = re.compile(r"(\w+)")
SNIPPET_WORDS = 50
_LEAD_WORDS = 8  # words kept before the first match, so it is not the snippet's first word
_SUBWORD_MIN = 4  # a word whose first subword is a matching token is marked only if that piece is this long


def _surface(token: str) -> str | None:
    """The word form of a vocabulary token; None for continuation pieces (``##ing``), which match parts of
    words and would mark unrelated ones."""
    if token.startswith("##"):
        return None
    return token.lstrip("Ġ▁").lower() or None


class Marker:
    """Decides which words of a text match ``tokens`` (the terms a query shares with the document)."""

    def __init__(self, tokens: Iterable[str], tokenize: Callable[[str], list[str]] | None = None):
        self.words = {s for s in map(_surface, tokens) if s}
        self._tokenize = tokenize
        self._seen: dict[str, bool] = {}

    def __call__(self, word: str) -> bool:
        lower = word.lower()
        if lower in self.words:
            return True
        if self._tokenize is None or not self.words:
            return False
        if lower not in self._seen:  # "cells" -> ["cell", "##s"]: the stem matched
            pieces = self._tokenize(lower)
            first = _surface(pieces[0]) if pieces else None
            self._seen[lower] = bool(first) and len(first) >= _SUBWORD_MIN and first in self.words
        return self._seen[lower]


def snippet(text: str, marker: Marker, max_words: int | None = SNIPPET_WORDS) -> tuple[list[Piece], bool]:
    """``text`` cut to about ``max_words`` words around its first match, as pieces; and whether any word
    matched. Leading and trailing cuts are shown with an ellipsis."""
    parts = _WORD.split(text)  # even indices: separators, odd: words
    words = range(1, len(parts), 2)
    first = next((i for i in words if marker(parts[i])), None)
    start, stop = 0, len(parts)
    if max_words is not None and len(words) > max_words:
        if first is not None:
            start = max(0, first - 2 * _LEAD_WORDS)
            start -= start % 2  # begin on a separator
        stop = min(len(parts), start + 2 * max_words)
    pieces: list[Piece] = [("… ", False)] if start > 0 else []
    for i in range(start + 1 if start > 0 else 0, stop):  # a cut starts after its separator
        if parts[i]:
            pieces.append((parts[i], i % 2 == 1 and marker(parts[i])))
    if stop < len(parts):
        pieces.append((" …", False))
    return _merge(pieces), first is not None


def _merge(pieces: list[Piece]) -> list[Piece]:
    """Adjacent unmarked pieces joined, so the page is not a span per word."""
    out: list[Piece] = []
    for text, matched in pieces:
        if out and not matched and not out[-1][1]:
            out[-1] = (out[-1][0] + text, False)
        else:
            out.append((text, matched))
    return out


def query_tokens(text: str, tokenize: Callable[[str], list[str]] | None) -> set[str]:
    """The vocabulary tokens the query text itself consists of; query-vector terms outside this set are
    expansion terms the encoder added."""
    if tokenize is not None:
        return set(tokenize(text)) | {t.lower() for t in tokenize(text)}
    return {w.lower() for w in _WORD.findall(text)}
