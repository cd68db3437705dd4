"""The plain arrays a kernel scores: one segment's term-major postings."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["PostingArrays"]


class PostingArrays(NamedTuple):
    """Postings of one segment, CSC over terms.

    ``offsets`` int64 ``(dim + 1)``: term ``t``'s postings are ``docs[offsets[t]:offsets[t+1]]`` (local doc
    ids, int32, ascending) with ``weights`` at the same positions (float32).
    """

    offsets: np.ndarray
    docs: np.ndarray
    weights: np.ndarray
    n_docs: int

    @property
    def dim(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def from_documents(cls, documents) -> PostingArrays:  # noqa: ANN001 - a SparseBatch
        """Invert a batch of document vectors (the reference way, via scipy)."""
        csc = documents.to_scipy().tocsc()
        csc.sort_indices()
        return cls(
            csc.indptr.astype(np.int64),
            csc.indices.astype(np.int32),
            csc.data.astype(np.float32),
            documents.n,
        )
