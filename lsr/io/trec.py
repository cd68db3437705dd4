"""TREC run files: ``qid Q0 docid rank score tag``, one line per hit."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lsr.errors import InvalidInputError
from lsr.index.format import atomic_output
from lsr.io.beir import open_text

__all__ = ["write_run", "read_run", "hits_to_run"]

Run = dict[str, dict[str, float]]


def hits_to_run(query_ids: Sequence[str], external_ids: Sequence[Sequence[str | None]],
                scores: np.ndarray) -> Run:
    """``{qid: {docid: score}}`` from per-query external ids and the matching score rows."""
    run: Run = {}
    for qid, ids, row in zip(query_ids, external_ids, scores, strict=True):
        run[qid] = {doc: float(s) for doc, s in zip(ids, row, strict=True) if doc is not None}
    return run


def write_run(path: str | os.PathLike[str], run: Run, tag: str = "lsr") -> None:
    """Write atomically, hits ranked by score descending then doc id (the order trec_eval uses). The temporary
    name carries the process id, so two processes writing the same run never rename each other's file."""
    with atomic_output(Path(path)) as fh:
        for qid, docs in run.items():
            ranked = sorted(docs.items(), key=lambda item: (-item[1], item[0]))
            for rank, (doc, score) in enumerate(ranked, 1):
                fh.write(f"{qid} Q0 {doc} {rank} {score:.6f} {tag}\n".encode())


def read_run(path: str | os.PathLike[str]) -> Run:
    run: Run = {}
    with open_text(Path(path)) as fh:
        for number, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise InvalidInputError(f"{path}:{number}: expected 6 columns 'qid Q0 docid rank score tag'.")
            try:
                run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
            except ValueError:
                raise InvalidInputError(f"{path}:{number}: score {parts[4]!r} is not a number.") from None
    return run
