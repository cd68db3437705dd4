"""Training examples: the JSONL format users bring, and BEIR training splits with negatives mined by lsr.

One example per line (``docs/training.md`` documents it)::

    {"qid": "q1", "query": "text", "positives": ["d1"], "negatives": ["d7", "d9"],
     "teacher_scores": {"d1": 9.1, "d7": 2.0, "d9": 0.4}}

``qid`` is optional (the line number otherwise); ``positives`` must be non-empty; ``negatives`` may be empty
for InfoNCE (other queries' documents are negatives too) but distillation losses need them and a teacher
score for every positive and negative. Document ids refer to a corpus (BEIR ``corpus.jsonl`` or any lsr
corpus file) given next to the examples.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from lsr.errors import InvalidInputError
from lsr.index.format import write_bytes_atomic
from lsr.io.beir import iter_corpus, iter_jsonl, read_qrels, read_queries, resolve_dataset, split_queries

__all__ = ["TrainingExample", "read_examples", "write_examples", "read_texts", "mine_examples"]

log = logging.getLogger(__name__)


@dataclass
class TrainingExample:
    qid: str
    query: str
    positives: list[str]
    negatives: list[str]
    teacher_scores: dict[str, float] | None = field(default=None)

    def candidates(self) -> list[str]:
        return list(dict.fromkeys([*self.positives, *self.negatives]))

    def to_json(self) -> dict:
        out = {"qid": self.qid, "query": self.query, "positives": self.positives, "negatives": self.negatives}
        if self.teacher_scores is not None:
            out["teacher_scores"] = self.teacher_scores
        return out


def _id_list(obj: dict, key: str, where: str) -> list[str]:
    value = obj.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidInputError(f"{where}: {key!r} must be a list of document ids (non-empty strings).")
    return value


def read_examples(path: str | os.PathLike[str]) -> list[TrainingExample]:
    """Every example of a training JSONL file, checked line by line (one-line errors naming the line)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"training file {path} does not exist.")
    examples = []
    for number, obj in iter_jsonl(path):
        where = f"{path}:{number}"
        query = obj.get("query")
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError(f"{where}: 'query' must be a non-empty string.")
        positives = _id_list(obj, "positives", where)
        if not positives:
            raise InvalidInputError(f"{where}: 'positives' is empty; every example needs a relevant document.")
        scores = obj.get("teacher_scores")
        if scores is not None:
            if not isinstance(scores, dict) or not all(isinstance(v, int | float) for v in scores.values()):
                raise InvalidInputError(f"{where}: 'teacher_scores' must map document ids to numbers.")
            scores = {str(k): float(v) for k, v in scores.items()}
        examples.append(TrainingExample(str(obj.get("qid", number)), query, positives,
                                        _id_list(obj, "negatives", where), scores))
    if not examples:
        raise InvalidInputError(f"{path} holds no training examples.")
    return examples


def write_examples(path: str | os.PathLike[str], examples: Sequence[TrainingExample]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, b"".join(orjson.dumps(e.to_json()) + b"\n" for e in examples))
    return path


def read_texts(corpus: str | os.PathLike[str], needed: set[str] | None = None) -> dict[str, str]:
    """``{doc id: title + " " + text}`` of a corpus (only the ``needed`` ids when given; all must exist)."""
    texts = {doc.id: doc.full_text for doc in iter_corpus(Path(corpus)) if needed is None or doc.id in needed}
    if needed is not None and len(texts) < len(needed):
        missing = sorted(needed - texts.keys())
        raise InvalidInputError(f"{len(missing)} training document ids are not in {corpus}, e.g. {missing[0]!r}.")
    return texts


def mine_examples(dataset: str | os.PathLike[str], index_dir: str | os.PathLike[str], split: str = "train",
                  depth: int = 50, negatives: int = 30) -> list[TrainingExample]:
    """Examples for a BEIR split: positives are each query's highest-graded judged documents, negatives the
    top-ranked documents of lsr's own retrieval on ``index_dir`` that are not judged at all (a judged
    non-relevant document may be a near miss the annotators saw; an unjudged one is the usual hard negative)."""
    from lsr.search import SparseRetriever

    folder = resolve_dataset(dataset)
    qrels = read_qrels(folder, split)
    queries = split_queries(read_queries(folder), qrels)
    retriever = SparseRetriever(index_dir)
    qids = [qid for qid in queries if max(qrels[qid].values()) > 0]
    hits = retriever.search([queries[q] for q in qids], depth, show_progress=True)
    examples = []
    for row, qid in enumerate(qids):
        judged = qrels[qid]
        best = max(judged.values())
        ranked = [d for d in retriever.index.external_ids(hits.ids[row][hits.ids[row] >= 0]) if d is not None]
        examples.append(TrainingExample(qid, queries[qid], sorted(d for d, r in judged.items() if r == best),
                                        [d for d in ranked if d not in judged][:negatives]))
    log.info("%d examples from %s/%s (%d queries without a relevant document skipped)", len(examples),
             folder.name, split, len(queries) - len(qids))
    return examples
