"""BM25 as sparse vectors (bm25s's idea): the whole BM25 score of a term is precomputed into the document
vector, so a query is a bag of words and BM25 search is a sparse dot product through lsr's own kernels.

The analysis and the scoring follow Lucene as Pyserini/Anserini run BEIR's "flat" BM25 baseline, so that the
numbers agree without Java:

- analyzer (Anserini's default English): Unicode word tokens (a regex for the common cases of Lucene's
  UAX#29 StandardTokenizer: ``U.S.`` -> ``u.s``, ``3.5mg`` and ``don't`` stay whole, hyphens split),
  possessive ``'s`` removed, lower case, Lucene's 33 English stop words, Porter stemmer (PyStemmer);
- document weight ``idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))`` with Lucene's IDF
  ``ln(1 + (N - df + 0.5) / (df + 0.5))`` and the document length ``dl`` rounded the way Lucene stores it
  (one byte: exact up to 23, then 4 significant bits) -- Lucene >= 8 drops the constant ``k1 + 1``;
- query weight: the term's count in the query (Anserini's bag-of-words query boosts a term by its count).

The statistics (terms, document frequencies, N, total length) are fitted once on a corpus and saved as a
model folder holding ``bm25.json``; documents added later are weighted with those frozen statistics, and
their terms outside the fitted vocabulary are dropped (they could match no query term of the vocabulary
either). Refit and rebuild when the collection has changed a lot.
"""

from __future__ import annotations

import os
import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from tqdm.auto import tqdm

from lsr.encoders.base import check_texts
from lsr.encoders.idf import idf_from_df
from lsr.errors import InvalidInputError, MissingDependencyError, ModelNotFoundError
from lsr.index.format import write_bytes_atomic
from lsr.index.vocabulary import Vocabulary
from lsr.types import SparseBatch

__all__ = ["Bm25Encoder", "analyze", "fit_bm25", "lucene_length", "MODEL_FILE"]

MODEL_FILE = "bm25.json"
ANALYZER = "lucene-english-porter"
DEFAULT_K1, DEFAULT_B = 0.9, 0.4  # Pyserini's BEIR baseline

# Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET
STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these "
    "they this to was will with".split()
)
# A word is a run of letters/digits/underscore; UAX#29 keeps it whole across '.' or an apostrophe followed by
# more word characters, across ':' between letters and across ',' or ';' between digits.
_TOKEN = re.compile(r"\w+(?:(?:[.'’](?=\w)|(?<=[^\W\d_]):(?=[^\W\d_])|(?<=\d)[,;](?=\d))\w+)*")
_POSSESSIVE = re.compile(r"['’][sS]$")
_MAX_TOKEN_CHARS = 255  # StandardTokenizer's default maximum token length


_LOCAL = threading.local()


def _stemmer():  # noqa: ANN202 - Stemmer.Stemmer
    # one per thread: a PyStemmer object keeps state between calls (threaded service workers share encoders)
    stemmer = getattr(_LOCAL, "stemmer", None)
    if stemmer is None:
        try:
            import Stemmer
        except ImportError:
            raise MissingDependencyError("BM25 needs PyStemmer: pip install PyStemmer") from None
        stemmer = _LOCAL.stemmer = Stemmer.Stemmer("porter")
    return stemmer


def analyze(text: str) -> list[str]:
    """The indexed terms of ``text``, in order (stop words removed, Porter stems)."""
    words = []
    for match in _TOKEN.finditer(text):
        word = _POSSESSIVE.sub("", match.group()[:_MAX_TOKEN_CHARS]).lower()
        if word and word not in STOP_WORDS:
            words.append(word)
    return _stemmer().stemWords(words)


def _int4(value: int) -> int:
    """Lucene's SmallFloat.longToInt4: 4 significant bits and a shift."""
    bits = value.bit_length()
    if bits < 4:
        return value
    shift = bits - 4
    return ((value >> shift) & 0x07) | ((shift + 1) << 3)


def _from_int4(code: int) -> int:
    bits, shift = code & 0x07, (code >> 3) - 1
    return bits if shift == -1 else (bits | 0x08) << shift


_FREE_CODES = 255 - _int4(2**31 - 1)  # lengths below this are stored exactly (24)


def lucene_length(length: int) -> int:
    """The document length Lucene's BM25 sees: the length encoded into its one-byte norm and decoded."""
    if length < _FREE_CODES:
        return length
    return _FREE_CODES + _from_int4(_int4(length - _FREE_CODES))


def fit_bm25(texts: Iterable[str], k1: float = DEFAULT_K1, b: float = DEFAULT_B, show_progress: bool = False,
             total: int | None = None) -> dict[str, Any]:
    """The BM25 statistics of a corpus, as saved in ``bm25.json`` (terms sorted, with their document
    frequencies)."""
    df: Counter[str] = Counter()
    n_docs = total_length = 0
    for text in tqdm(texts, total=total, disable=not show_progress, desc="BM25 statistics", unit="doc"):
        terms = analyze(text)
        df.update(set(terms))
        n_docs += 1
        total_length += len(terms)
    if n_docs == 0:
        raise InvalidInputError("cannot fit BM25 on an empty corpus.")
    if not df:
        raise InvalidInputError("the corpus has no indexable words (all texts are empty or stop words).")
    terms = sorted(df)
    return {"format": "lsr-bm25", "version": 1, "analyzer": ANALYZER, "k1": float(k1), "b": float(b),
            "n_docs": n_docs, "total_length": total_length, "terms": terms, "df": [df[t] for t in terms]}


def save_bm25(model: dict[str, Any], folder: str | os.PathLike[str]) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(folder / MODEL_FILE, orjson.dumps(model))
    return folder


class Analyzer:
    """``tokenize(text)``: the terms a text is indexed under (what the search page marks as the query's own)."""

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return analyze(text)


class Bm25Encoder:
    """BM25 document vectors and bag-of-words query vectors over a fitted vocabulary of stems.

    ``model`` is a folder holding ``bm25.json`` (see :func:`fit_bm25`, :meth:`fit`); ``k1`` and ``b``
    default to the values it was fitted with. ``batch_size`` and ``threads`` are accepted and ignored (the
    encoder is a tokenizer and a table), so the CLI's common options apply to every encoder kind.
    """

    kind = "bm25"
    route = "bm25 (no model)"
    tokenizer = Analyzer()

    def __init__(self, model: str | os.PathLike[str], k1: float | None = None, b: float | None = None,
                 analyzer: str = ANALYZER, batch_size: int | None = None, threads: int | None = None):
        if analyzer != ANALYZER:
            raise InvalidInputError(f"unknown BM25 analyzer {analyzer!r}; this lsr has {ANALYZER!r}.")
        folder = Path(model)
        path = folder / MODEL_FILE if folder.is_dir() else folder
        if not path.is_file():
            raise ModelNotFoundError(f"no BM25 model at {model} (a folder with {MODEL_FILE}: fit one with "
                                     "`lsr index CORPUS INDEX --encoder bm25`, which fits on the corpus).")
        stats = orjson.loads(path.read_bytes())
        if stats.get("format") != "lsr-bm25" or stats.get("analyzer") != ANALYZER:
            raise InvalidInputError(f"{path} is not an lsr BM25 model with analyzer {ANALYZER}.")
        self.model_path = path.parent
        self.k1 = float(stats["k1"] if k1 is None else k1)
        self.b = float(stats["b"] if b is None else b)
        if not self.k1 >= 0 or not 0 <= self.b <= 1:
            raise InvalidInputError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={self.k1}, b={self.b}.")
        self.n_docs, self.total_length = int(stats["n_docs"]), int(stats["total_length"])
        terms = stats["terms"]
        self.vocabulary = Vocabulary.from_tokens(terms, f"bm25:{ANALYZER}:{self.n_docs}")
        self._ids = {term: i for i, term in enumerate(terms)}
        # the IDF the inference-free encoders use too, which is Lucene's: computed in double, kept as float32
        self.idf = idf_from_df(np.asarray(stats["df"]), self.n_docs)
        self.avg_length = np.float32(self.total_length / self.n_docs)

    @classmethod
    def fit(cls, texts: Iterable[str], folder: str | os.PathLike[str], k1: float = DEFAULT_K1,
            b: float = DEFAULT_B, show_progress: bool = False, total: int | None = None) -> Bm25Encoder:
        """Fit the statistics on ``texts``, save them in ``folder`` and load the encoder from there."""
        return cls(save_bm25(fit_bm25(texts, k1, b, show_progress, total), folder))

    @property
    def dim(self) -> int:
        return self.vocabulary.size

    def config(self) -> dict[str, Any]:
        return {"type": self.kind, "model": str(self.model_path), "analyzer": ANALYZER, "k1": self.k1,
                "b": self.b, "vocabulary": self.vocabulary.identity()}

    def weight_bound(self) -> float:
        """A document weight is ``idf * tf / (tf + norm)`` with ``norm >= 0``: at most the largest IDF (in
        float32 too: the ratio rounds to at most 1)."""
        return float(self.idf.max(initial=0.0)) or 1.0

    def _term_counts(self, text: str) -> tuple[np.ndarray, np.ndarray, int]:
        terms = analyze(text)
        counts = Counter(terms)
        known = sorted((self._ids[t], c) for t, c in counts.items() if t in self._ids)
        ids = np.fromiter((i for i, _ in known), np.int32, len(known))
        tf = np.fromiter((c for _, c in known), np.float32, len(known))
        return ids, tf, len(terms)

    def _batch(self, rows: list[tuple[np.ndarray, np.ndarray]]) -> SparseBatch:
        lengths = np.fromiter((len(ids) for ids, _ in rows), np.int64, len(rows))
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        indices = np.concatenate([ids for ids, _ in rows]) if rows else np.zeros(0, np.int32)
        values = np.concatenate([w for _, w in rows]) if rows else np.zeros(0, np.float32)
        return SparseBatch(indptr, indices, values, self.dim)

    def encode_documents(self, texts: Sequence[str], show_progress: bool = False) -> SparseBatch:
        rows = []
        for text in tqdm(check_texts(texts), disable=not show_progress, desc="BM25 documents", unit="doc"):
            ids, tf, length = self._term_counts(text)
            norm = np.float32(self.k1 * ((1 - self.b) + self.b * lucene_length(length) / self.avg_length))
            rows.append((ids, (self.idf[ids] * tf / (tf + norm)).astype(np.float32)))
        return self._batch(rows)

    def encode_queries(self, texts: Sequence[str], show_progress: bool = False) -> SparseBatch:
        return self._batch([self._term_counts(text)[:2] for text in check_texts(texts)])
