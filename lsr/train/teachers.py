"""Heterogeneous ensemble teachers: a dense and a sparse encoder, both run by lsr, scored per query over its
candidates, min-max normalised per query, averaged with weights and scaled by ``S``.

Raw teacher scores are the expensive part (every candidate document through two encoders), so they go to a
cache file beside the training file, appended a chunk of queries at a time and fsynced: an interrupted run
resumes with the queries it has not scored yet, and other weights or another ``S`` cost nothing. The cache
holds one JSON object per query: ``{"qid", "teacher": name, "scores": {doc id: score}}``; a torn last line
(a kill mid-write) is ignored.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson
from tqdm.auto import tqdm

from lsr.errors import InvalidInputError
from lsr.train.data import TrainingExample

__all__ = ["TEACHERS", "score_with_teacher", "combine_teacher_scores", "minmax_per_query", "ensemble_teacher_scores"]

log = logging.getLogger(__name__)

# name -> default model; the dense teacher is a bi-encoder (cosine), the sparse one SPLADE (dot product)
TEACHERS = {"dense": "all-MiniLM-L6-v2", "sparse": "splade-tiny"}


class _Scorer:
    """Query x document scores of one teacher; each document is encoded once per run (candidate lists of
    different queries overlap heavily), queries a chunk at a time."""

    def __init__(self, encoder, texts: dict[str, str]):  # noqa: ANN001 - a dense or sparse lsr encoder
        self.encoder, self.texts = encoder, texts
        self.rows: dict[str, int] = {}
        self.matrix = None  # every document encoded so far, one row each; restacked only when some are new

    def __call__(self, queries: list[str], doc_ids: list[str]) -> np.ndarray:
        new = [d for d in dict.fromkeys(doc_ids) if d not in self.rows]
        if new:
            encoded = self._matrix(self.encoder.encode_documents([self.texts[d] for d in new]))
            self.matrix = encoded if self.matrix is None else self._stack(self.matrix, encoded)
            base = len(self.rows)
            self.rows.update((d, base + i) for i, d in enumerate(new))
        docs = self.matrix[[self.rows[d] for d in doc_ids]]  # only the candidates asked for
        return self._product(self.encoder.encode_queries(queries), docs)


class _DenseScorer(_Scorer):
    _matrix = staticmethod(np.asarray)

    @staticmethod
    def _stack(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.concatenate([a, b])

    @staticmethod
    def _product(queries: np.ndarray, docs: np.ndarray) -> np.ndarray:
        return queries @ docs.T


class _SparseScorer(_Scorer):
    @staticmethod
    def _matrix(batch):  # noqa: ANN001, ANN205 - SparseBatch -> scipy CSR
        return batch.to_scipy()

    @staticmethod
    def _stack(a, b):  # noqa: ANN001, ANN205
        from scipy.sparse import vstack

        return vstack([a, b], format="csr")

    @staticmethod
    def _product(queries, docs) -> np.ndarray:  # noqa: ANN001
        return np.asarray((queries.to_scipy() @ docs.T).todense(), dtype=np.float32)


def _dense_scorer(model: str, texts: dict[str, str]) -> _Scorer:
    from lsr.dense import DenseEncoder

    return _DenseScorer(DenseEncoder(model), texts)


def _sparse_scorer(model: str, texts: dict[str, str]) -> _Scorer:
    from lsr.encoders import SpladeEncoder

    return _SparseScorer(SpladeEncoder(model), texts)


_SCORERS = {"dense": _dense_scorer, "sparse": _sparse_scorer}


def _read_cache(path: Path, teacher: str) -> dict[str, dict[str, float]]:
    done: dict[str, dict[str, float]] = {}
    if not path.is_file():
        return done
    with path.open("rb") as fh:
        for line in fh:
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # the torn tail of an interrupted append
            if obj.get("teacher") == teacher:
                done[obj["qid"]] = obj["scores"]
    return done


def score_with_teacher(teacher: str, examples: Sequence[TrainingExample], texts: dict[str, str], cache: Path,
                       model: str | None = None, chunk: int = 64) -> dict[str, dict[str, float]]:
    """``{qid: {doc id: raw score}}`` of one teacher over every example's candidates, resumed from ``cache``."""
    if teacher not in _SCORERS:
        raise InvalidInputError(f"unknown teacher {teacher!r}; known: {', '.join(_SCORERS)}.")
    done = _read_cache(cache, teacher)
    todo = [e for e in examples if e.qid not in done]
    if not todo:
        return done
    log.info("%s teacher: %d of %d queries to score (%d cached in %s)", teacher, len(todo), len(examples),
             len(done), cache)
    scorer = _SCORERS[teacher](model or TEACHERS[teacher], texts)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with cache.open("ab") as fh, tqdm(total=len(todo), desc=f"{teacher} teacher", unit="query") as bar:
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            doc_ids = list(dict.fromkeys(d for e in part for d in e.candidates()))
            column = {d: i for i, d in enumerate(doc_ids)}
            scores = scorer([e.query for e in part], doc_ids)
            lines = []
            for row, example in enumerate(part):
                own = {d: float(scores[row, column[d]]) for d in example.candidates()}
                done[example.qid] = own
                lines.append(orjson.dumps({"qid": example.qid, "teacher": teacher, "scores": own}) + b"\n")
            fh.write(b"".join(lines))
            fh.flush()
            os.fsync(fh.fileno())
            bar.update(len(part))
    return done


def minmax_per_query(scores: dict[str, float]) -> dict[str, float]:
    """Scores mapped to [0, 1] over one query's candidates (all equal -> all 0)."""
    values = np.fromiter(scores.values(), np.float64, len(scores))
    low, span = values.min(), values.max() - values.min()
    return {d: float((s - low) / span) if span > 0 else 0.0 for d, s in scores.items()}


def combine_teacher_scores(per_teacher: dict[str, dict[str, float]], weights: dict[str, float],
                           scale: float) -> dict[str, float]:
    """``S * sum_k w_k minmax_k(score)`` over one query's candidates, the weights normalised to sum 1."""
    total = sum(weights.values())
    if total <= 0 or any(w < 0 for w in weights.values()):
        raise InvalidInputError("teacher weights must be non-negative and not all 0.")
    normalised = {name: minmax_per_query(per_teacher[name]) for name in weights}
    docs = next(iter(normalised.values())).keys()
    return {d: scale * sum(weights[n] / total * normalised[n][d] for n in weights) for d in docs}


def ensemble_teacher_scores(examples: Sequence[TrainingExample], texts: dict[str, str], cache: Path,
                            weights: dict[str, float] | None = None, scale: float = 10.0,
                            models: dict[str, str] | None = None) -> list[TrainingExample]:
    """Every example with ``teacher_scores`` from the ensemble (default: dense and sparse, equal weights)."""
    weights = weights or {"dense": 0.5, "sparse": 0.5}
    raw = {name: score_with_teacher(name, examples, texts, cache, (models or {}).get(name)) for name in weights}
    for example in examples:
        example.teacher_scores = combine_teacher_scores({n: raw[n][example.qid] for n in weights}, weights, scale)
    return list(examples)
