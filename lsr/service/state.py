"""The index a server answers from: one consistent snapshot per request, new commits picked up live.

Each request takes the current :class:`Snapshot` once and uses only it, so a commit that lands during a
request is never half-seen. Snapshots are cheap (memory maps); a new manifest generation is noticed by a
``stat`` of ``manifest.json`` at most every ``check_interval_s`` and opened once, under a lock, while
requests keep using the old one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lsr.encoders.base import SparseEncoder
from lsr.index import Index, open_index
from lsr.index.format import MANIFEST
from lsr.search import SparseRetriever

__all__ = ["Snapshot", "IndexHolder"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    index: Index
    retriever: SparseRetriever
    stamp: tuple[int, int, int]  # (inode, mtime_ns, size) of the manifest it was opened from
    dense: object | None = None  # a DenseRetriever when the index has a dense part

    @property
    def generation(self) -> int:
        return self.index.manifest.generation


def _stamp(path: Path) -> tuple[int, int, int]:
    st = os.stat(path / MANIFEST)
    return st.st_ino, st.st_mtime_ns, st.st_size


class IndexHolder:
    def __init__(self, path: str | os.PathLike[str], encoder: SparseEncoder | None = None, backend: str = "auto",
                 check_interval_s: float = 0.5):
        self.path = Path(path)
        self.backend = backend
        self.check_interval_s = check_interval_s
        self._encoder = encoder
        self._dense_encoder = None
        self._lock = threading.Lock()
        self._checked = 0.0
        self._current = self._open()

    def _open(self) -> Snapshot:
        stamp = _stamp(self.path)
        index = open_index(self.path)
        retriever = SparseRetriever(index, encoder=self._encoder, backend=self.backend)
        if self._encoder is None and index.encoder_config is not None:
            self._encoder = retriever.encoder  # load once, share with later snapshots
        retriever.searcher.warm_up()
        dense = None
        if index.manifest.dense is not None:
            try:
                from lsr.search.dense import DenseRetriever

                dense = DenseRetriever(index, encoder=self._dense_encoder)
                self._dense_encoder = dense.encoder  # load once, share with later snapshots
            except Exception as exc:  # noqa: BLE001 - serve sparse search even if the dense side cannot load
                log.error("dense side unavailable: %s", exc)
        log.info("serving %s generation %d (%d documents)", self.path, index.manifest.generation, index.n_live)
        return Snapshot(index, retriever, stamp, dense)

    @property
    def encoder(self) -> SparseEncoder | None:
        return self._encoder

    def snapshot(self) -> Snapshot:
        """The newest committed snapshot (checked at most every ``check_interval_s``)."""
        now = time.monotonic()
        if now - self._checked >= self.check_interval_s:
            self.refresh()
        return self._current

    def refresh(self) -> Snapshot:
        with self._lock:
            self._checked = time.monotonic()
            try:
                stamp = _stamp(self.path)
            except OSError as exc:
                log.error("cannot stat %s: %s; still serving generation %d", self.path, exc,
                          self._current.generation)
                return self._current
            if stamp != self._current.stamp:
                try:
                    self._current = self._open()
                except Exception as exc:  # keep answering from the snapshot we have
                    log.error("cannot open the new index generation: %s", exc)
            return self._current
