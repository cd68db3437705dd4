"""Document texts for the search page, read from the corpus the index was built from.

The index stores vectors, not texts. A batch build records the corpus path, size and mtime in the manifest's
``provenance``; when that file is still there, unchanged, the page reads it once and shows titles and
snippets. Only documents that came from that build get a text: the build adds the corpus first, so its
documents hold global ids ``[0, n_corpus)`` (reordering permutes ids only within a segment), while a
document added or replaced later through the API gets a higher id and has no stored text to show. Merges
keep that order and drop deleted documents, lowering the bound; the manifest keeps it as
``provenance["corpus_id_bound"]``.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from lsr.index import Index

__all__ = ["DocumentText", "CorpusTexts", "texts_for"]

log = logging.getLogger(__name__)

# Texts are held in memory; past this size the page shows terms only rather than grow every worker.
MAX_CORPUS_BYTES = 512 << 20


@dataclass(frozen=True)
class DocumentText:
    title: str
    text: str


class CorpusTexts:
    """``{external id: DocumentText}`` for the build's documents, or unavailable with a reason."""

    def __init__(self, texts: dict[str, DocumentText] | None, n_corpus: int, reason: str = ""):
        self._texts = texts or {}
        self.n_corpus = n_corpus
        self.reason = reason

    @property
    def available(self) -> bool:
        return bool(self._texts)

    def get(self, external_id: str, internal_id: int) -> DocumentText | None:
        if internal_id >= self.n_corpus:  # added or replaced after the build: its text was never kept
            return None
        return self._texts.get(external_id)


def _load(provenance: dict | None) -> CorpusTexts:
    if not provenance or not provenance.get("corpus"):
        return CorpusTexts(None, 0, "the index was not built from a corpus, so no document texts are available")
    path = Path(provenance["corpus"])
    try:
        stat = path.stat()
    except OSError:
        return CorpusTexts(None, 0, f"the corpus the index was built from ({path}) is no longer there")
    if (stat.st_size, stat.st_mtime_ns) != (provenance.get("corpus_bytes"), provenance.get("corpus_mtime_ns")):
        return CorpusTexts(None, 0, f"the corpus {path} changed since the index was built")
    if stat.st_size > MAX_CORPUS_BYTES:
        return CorpusTexts(None, 0, f"the corpus {path} is too large to hold in memory for snippets")
    from lsr.io.beir import iter_corpus

    texts: dict[str, DocumentText] = {}
    n = 0
    try:
        for doc in iter_corpus(path):
            texts[doc.id] = DocumentText(doc.title, doc.text)
            n += 1
    except Exception as exc:  # noqa: BLE001 - a corpus we cannot read costs snippets, not the page
        log.warning("cannot read document texts from %s: %s", path, exc)
        return CorpusTexts(None, 0, f"the corpus {path} could not be read")
    return CorpusTexts(texts, n)


_cache: dict[tuple, CorpusTexts] = {}
_lock = threading.Lock()


def texts_for(index: Index) -> CorpusTexts:
    """The texts of ``index``'s corpus, loaded once per process (keyed by the provenance, which a commit
    through the API keeps, so reloads do not read the corpus again)."""
    provenance = index.manifest.provenance or {}
    key = (os.fspath(index.path), provenance.get("corpus"), provenance.get("corpus_bytes"),
           provenance.get("corpus_mtime_ns"))
    with _lock:
        if key not in _cache:
            _cache[key] = _load(provenance)
        texts = _cache[key]
    bound = provenance.get("corpus_id_bound")
    if bound is None or bound >= texts.n_corpus:
        return texts
    # merges dropped deleted corpus documents, so fewer ids than the corpus has lines are the corpus's now
    return CorpusTexts(texts._texts, int(bound), texts.reason)
