"""The plain arrays a kernel scores: one segment's term-major postings and their per-block maxima."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["PostingArrays", "BlockMaxima", "build_block_maxima", "WEIGHT_DTYPES"]

# stored impact types: float32 as is, or integers with a recorded scale (weight = stored / scale)
WEIGHT_DTYPES = ("float32", "uint8", "uint16")


class BlockMaxima(NamedTuple):
    """Per term, the documents cut into blocks of ``block_size`` consecutive ids, and for each block that
    holds the term: its id, the term's largest stored weight in it, and where its postings start.

    Term ``t``'s entries are ``[offsets[t], offsets[t+1])``; entry ``e`` covers postings
    ``[starts[e], starts[e+1])`` (or up to the term's last posting for its last entry).
    """

    block_size: int
    offsets: np.ndarray  # int64 (dim + 1)
    ids: np.ndarray  # int32, ascending within a term
    maxima: np.ndarray  # same dtype as the postings' weights
    starts: np.ndarray  # int64 positions in the postings arrays

    @property
    def n_entries(self) -> int:
        return len(self.ids)


class PostingArrays(NamedTuple):
    """Postings of one segment, CSC over terms.

    ``offsets`` int64 ``(dim + 1)``: term ``t``'s postings are ``docs[offsets[t]:offsets[t+1]]`` (local doc
    ids, int32, ascending) with ``weights`` at the same positions (float32, or uint8/uint16 impacts whose
    real value is ``weight / scale``). ``blocks`` enables block-max pruning.
    """

    offsets: np.ndarray
    docs: np.ndarray
    weights: np.ndarray
    n_docs: int
    scale: float = 1.0
    blocks: BlockMaxima | None = None

    @property
    def dim(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def from_documents(cls, documents, block_size: int | None = None, weight_dtype: str | None = None,
                       scale: float = 1.0) -> PostingArrays:  # noqa: ANN001 - a SparseBatch
        """Invert a batch of document vectors (the reference way, via scipy).

        With ``weight_dtype`` uint8/uint16, float weights are stored as ``round(weight * scale)`` clipped to
        the type's range, and postings that round to 0 are dropped; without it the values are kept in
        their own dtype (already stored weights)."""
        csc = documents.to_scipy().tocsc()
        csc.sort_indices()
        if weight_dtype is None:
            weight_dtype = csc.data.dtype.name if csc.data.dtype.name in WEIGHT_DTYPES else "float32"
            weights = csc.data.astype(weight_dtype, copy=False)
        else:
            weights = quantize(csc.data, weight_dtype, scale)
        keep = weights > 0
        docs = csc.indices.astype(np.int32)
        offsets = csc.indptr.astype(np.int64)
        if not keep.all():
            terms = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))[keep]
            offsets = np.zeros_like(offsets)
            np.cumsum(np.bincount(terms, minlength=len(offsets) - 1), out=offsets[1:])
            docs, weights = docs[keep], weights[keep]
        postings = cls(offsets, docs, weights, documents.n, float(scale) if weight_dtype != "float32" else 1.0)
        if block_size is not None:
            postings = postings._replace(blocks=build_block_maxima(postings, block_size))
        return postings


def quantize(values: np.ndarray, weight_dtype: str, scale: float) -> np.ndarray:
    if weight_dtype == "float32":
        return np.asarray(values, dtype=np.float32)
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {weight_dtype!r}.")
    if not scale > 0:
        raise ValueError(f"quantisation scale must be > 0, got {scale}.")
    top = np.iinfo(weight_dtype).max
    return np.clip(np.rint(np.asarray(values, np.float64) * scale), 0, top).astype(weight_dtype)


def build_block_maxima(postings: PostingArrays, block_size: int) -> BlockMaxima:
    """Vectorised: one entry per (term, block) pair that has postings."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}.")
    dim = postings.dim
    terms = np.repeat(np.arange(dim, dtype=np.int64), np.diff(postings.offsets))
    blocks = postings.docs.astype(np.int64) // block_size
    new_entry = np.ones(len(terms), bool)
    new_entry[1:] = (terms[1:] != terms[:-1]) | (blocks[1:] != blocks[:-1])
    starts = np.flatnonzero(new_entry).astype(np.int64)
    maxima = np.maximum.reduceat(postings.weights, starts) if len(terms) else postings.weights[:0]
    offsets = np.zeros(dim + 1, np.int64)
    np.cumsum(np.bincount(terms[starts], minlength=dim), out=offsets[1:])
    return BlockMaxima(block_size, offsets, blocks[starts].astype(np.int32), maxima.astype(postings.weights.dtype),
                       starts)
