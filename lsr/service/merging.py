"""Merging in the service: a background thread per worker, so that no request waits for a merge.

A write request commits its segment and calls :meth:`BackgroundMerger.notify`. The merger thread then runs
the merge policy (:func:`lsr.index.merge.maybe_merge`), and once writes have paused for ``idle_s`` settles
the small trailing segments into one (:func:`lsr.index.merge.settle`). Merges work from a snapshot and take
the writer lock only for their commit, which maps deletions made meanwhile onto the merged ids, so readers
never wait and no concurrent add or delete is lost. Gunicorn workers each have a merger; ``merge.lock``
lets one merge at a time, the others skip.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from lsr.index.merge import DEFAULT_POLICY, MergePolicy, maybe_merge, settle

__all__ = ["BackgroundMerger"]

log = logging.getLogger(__name__)


class BackgroundMerger:
    def __init__(self, path: str | Path, policy: MergePolicy = DEFAULT_POLICY, idle_s: float = 1.0,
                 lock_wait_s: float = 60.0):
        self.path = Path(path)
        self.policy, self.idle_s, self.lock_wait_s = policy, idle_s, lock_wait_s
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._idle_lock = threading.Lock()  # "no wake pending, so idle" is checked and recorded atomically
        self.merges = 0  # merges this worker committed (for /metrics and tests)
        self.busy = threading.Event()  # set while the thread has unfinished work

    def notify(self) -> None:
        """A write was committed: merge what the policy asks for, soon, off the request's thread."""
        with self._idle_lock:
            self.busy.set()
            self._wake.set()
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():  # started lazily: after gunicorn's fork
                self._thread = threading.Thread(target=self._run, name="lsr-merger", daemon=True)
                self._thread.start()

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until every notified write has been merged and settled (tests, benchmarks)."""
        deadline = time.monotonic() + timeout_s
        while self.busy.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.busy.is_set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            self._guarded(maybe_merge)
            if self._wake.wait(self.idle_s):  # more writes came: merge again before settling
                continue
            self._guarded(settle)
            with self._idle_lock:  # else a notify between the check and the clear would be reported idle
                if not self._wake.is_set():
                    self.busy.clear()

    def _guarded(self, step) -> None:  # noqa: ANN001
        try:
            self.merges += step(self.path, self.policy, lock_wait_s=self.lock_wait_s)
        except Exception as exc:  # noqa: BLE001 - a failed merge costs speed, never data: the index is unchanged
            log.error("merging %s failed: %s", self.path, exc)
