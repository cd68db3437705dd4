"""The readable oracle every fast kernel is tested against: a scipy sparse product and a full sort.

Semantics shared by all backends: the score of a document is the dot product of its vector with the
query's; only documents with a score > 0 (at least one shared term) and not deleted are returned; rows of
the result are ordered by score descending, then by document id ascending; missing places are padded
with id -1 and score -inf.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lsr.kernels._arrays import PostingArrays
from lsr.types import Hits, SparseBatch

__all__ = ["topk", "score_all"]


def score_all(postings: PostingArrays, queries: SparseBatch) -> np.ndarray:
    """Dense ``(n_queries, n_docs)`` float32 score matrix."""
    docs_by_terms = sp.csc_matrix(
        (postings.weights.astype(np.float32), postings.docs, postings.offsets),
        shape=(postings.n_docs, postings.dim),
    )
    return np.asarray((queries.to_scipy() @ docs_by_terms.T).toarray(), dtype=np.float32)


def topk(postings: PostingArrays, queries: SparseBatch, k: int, deleted: np.ndarray | None = None) -> Hits:
    scores = score_all(postings, queries)
    hits = Hits.empty(queries.n, k)
    doc_ids = np.arange(postings.n_docs)
    for i, row in enumerate(scores):
        eligible = row > 0
        if deleted is not None and len(deleted):
            eligible &= ~deleted.astype(bool)
        ids, vals = doc_ids[eligible], row[eligible]
        order = np.lexsort((ids, -vals))[:k]  # last key is primary: score desc, then id asc
        hits.ids[i, : len(order)] = ids[order]
        hits.scores[i, : len(order)] = vals[order]
    return hits
