"""The readable oracle every fast kernel is tested against: a scipy sparse product and a full sort.

Semantics shared by all backends: the score of a document is ``sum_t (q_t * (1/scale)) * w_t`` in float32,
where ``w_t`` are its stored weights (``scale`` is 1 for float weights; integer impacts are dequantised
through the query, so ranking and reported score are the same number); only documents with a score > 0
(at least one shared term) and not deleted are returned; rows are ordered by score descending, then by
document id ascending; missing places are padded with id -1 and score -inf.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lsr.kernels._arrays import PostingArrays
from lsr.types import Hits, SparseBatch

__all__ = ["topk", "score_all", "scaled_query_values"]


def scaled_query_values(postings: PostingArrays, queries: SparseBatch) -> np.ndarray:
    """Query weights with the index's dequantisation factor folded in (float32)."""
    if postings.scale == 1.0:
        return queries.values
    return (queries.values * np.float32(1.0 / postings.scale)).astype(np.float32)


def score_all(postings: PostingArrays, queries: SparseBatch) -> np.ndarray:
    """Dense ``(n_queries, n_docs)`` float32 score matrix."""
    docs_by_terms = sp.csc_matrix(
        (np.asarray(postings.weights, np.float32), postings.doc_ids(), postings.offsets),
        shape=(postings.n_docs, postings.dim),
    )
    q = sp.csr_matrix((scaled_query_values(postings, queries), queries.indices, queries.indptr),
                      shape=(queries.n, queries.dim))
    return np.asarray((q @ docs_by_terms.T).toarray(), dtype=np.float32)


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
