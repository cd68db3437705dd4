"""Why a document matched: each shared term's contribution, summing exactly to the kernel's score."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lsr.index import Index
from lsr.types import SparseBatch

__all__ = ["TermContribution", "Explanation", "explain"]


@dataclass(frozen=True)
class TermContribution:
    term_id: int
    token: str
    query_weight: float
    document_weight: float
    contribution: float


@dataclass(frozen=True)
class Explanation:
    doc_id: int
    score: float
    terms: list[TermContribution]  # by contribution, largest first


def explain(index: Index, query: SparseBatch, doc_id: int) -> Explanation:
    """Contributions of the terms ``query`` (one row) shares with document ``doc_id``.

    They are computed as the kernels compute scores -- float32 products of the query weight (dequantised
    through the index's scale) and the stored weight, summed in ascending term order -- so their sum is
    bit for bit the score search reports.
    """
    seg, local = index._locate(doc_id)
    q_terms, q_values = query.row(0)
    lo, hi = seg.fwd_indptr[local], seg.fwd_indptr[local + 1]
    d_terms = np.asarray(seg.fwd_indices[lo:hi])
    d_stored = np.asarray(seg.fwd_values[lo:hi])
    shared, qi, di = np.intersect1d(q_terms, d_terms, assume_unique=True, return_indices=True)
    scale = seg.postings.scale
    q_scaled = q_values.astype(np.float32) * np.float32(1.0 / scale) if scale != 1.0 else q_values
    products = (q_scaled[qi] * d_stored[di].astype(np.float32)).astype(np.float32)
    total = np.float32(0.0)
    for p in products:  # ascending term order, float32: the kernels' order and precision
        total = np.float32(total + p)
    vocab = index.vocabulary
    terms = [TermContribution(int(t), vocab[int(t)], float(q_values[i]), float(d_stored[j]) / scale, float(c))
             for t, i, j, c in zip(shared, qi, di, products, strict=True)]
    terms.sort(key=lambda c: -c.contribution)
    return Explanation(int(doc_id), float(total), terms)
