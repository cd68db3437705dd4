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

    Terms present in many blocks also get a dense row: ``dense[row, b]`` (uint8) times ``dense_scale[row]``
    is at least the term's maximum in block ``b`` (0 where absent), with ``row = dense_rows[t]`` (-1: no
    row); ``dense`` is stored flattened, ``dense[row * n_blocks + b]``. Summing dense rows is a vectorised
    loop over all blocks instead of a scatter over entries: a frequent query term's bounds cost about a
    byte per block. A byte is non-zero exactly where the term has an entry, so
    ``dense_prefix[row * n_chunks + b // 64]`` (the row's entries before block ``64 * (b // 64)``) plus the
    non-zero bytes from there to ``b`` locate the entry of block ``b`` without a binary search.
    """

    block_size: int
    offsets: np.ndarray  # int64 (dim + 1)
    ids: np.ndarray  # int32, ascending within a term
    maxima: np.ndarray  # same dtype as the postings' weights
    starts: np.ndarray  # int32 positions in the postings arrays (a segment holds < 2^31 postings)
    dense_rows: np.ndarray = np.zeros(0, np.int32)  # int32 (dim), or empty: no dense rows
    dense: np.ndarray = np.zeros(0, np.uint8)  # uint8 (n_rows x n_blocks), row-major, flattened
    dense_scale: np.ndarray = np.zeros(0, np.float32)  # float32 (n_rows)
    dense_prefix: np.ndarray = np.zeros(0, np.uint32)  # uint32 (n_rows x ceil(n_blocks / 64)), flattened

    @property
    def n_entries(self) -> int:
        return len(self.ids)


# Block starts are int32: one segment holds fewer postings than this (merges and flushes stay far below).
MAX_SEGMENT_POSTINGS = 2**31 - 1

# A term gets a dense row when it occurs in at least this fraction of the blocks.
DENSE_MIN_FRACTION = 1 / 16


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


def build_block_maxima(postings: PostingArrays, block_size: int,
                       dense_min_fraction: float = DENSE_MIN_FRACTION) -> BlockMaxima:
    """Vectorised: one entry per (term, block) pair that has postings, and dense rows for frequent terms."""
    n_blocks = (postings.n_docs + block_size - 1) // max(block_size, 1)
    return block_entries(np.diff(postings.offsets), postings.docs, postings.weights, block_size, n_blocks,
                         dense_min_fraction)


def block_entries(counts: np.ndarray, docs: np.ndarray, weights: np.ndarray, block_size: int, n_blocks: int,
                  dense_min_fraction: float = DENSE_MIN_FRACTION) -> BlockMaxima:
    """Block maxima of a run of consecutive terms: ``counts[i]`` postings of the run's i-th term, sorted by
    term then doc id. Offsets, starts and dense rows are relative to the run (a whole segment is one run;
    a streamed segment appends runs, shifting them -- see :mod:`lsr.index.segment_files`)."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}.")
    n_terms = len(counts)
    terms = np.repeat(np.arange(n_terms, dtype=np.int64), counts)
    blocks = docs.astype(np.int64) // block_size
    new_entry = np.ones(len(terms), bool)
    new_entry[1:] = (terms[1:] != terms[:-1]) | (blocks[1:] != blocks[:-1])
    starts = np.flatnonzero(new_entry).astype(np.int64)
    maxima = np.maximum.reduceat(weights, starts) if len(terms) else weights[:0]
    offsets = np.zeros(n_terms + 1, np.int64)
    np.cumsum(np.bincount(terms[starts], minlength=n_terms), out=offsets[1:])
    ids = blocks[starts].astype(np.int32)
    maxima = maxima.astype(weights.dtype)
    if len(docs) > MAX_SEGMENT_POSTINGS:
        raise ValueError(f"{len(docs)} postings in one segment; int32 block starts hold {MAX_SEGMENT_POSTINGS}")
    starts = starts.astype(np.int32)
    dense_rows, dense, dense_scale = dense_bound_rows(offsets, ids, maxima, n_blocks, dense_min_fraction)
    return BlockMaxima(block_size, offsets, ids, maxima, starts, dense_rows, dense, dense_scale,
                       dense_prefix(dense, len(dense_scale), n_blocks))


def dense_prefix(dense: np.ndarray, n_rows: int, n_blocks: int) -> np.ndarray:
    """Per row, the number of non-zero bytes before each 64-block chunk."""
    if n_rows == 0:
        return np.zeros(0, np.uint32)
    present = dense.reshape(n_rows, n_blocks) != 0
    counts = np.cumsum(present, axis=1, dtype=np.int64)
    chunk_starts = np.arange(0, n_blocks, 64)
    before = np.zeros((n_rows, len(chunk_starts)), np.int64)
    before[:, 1:] = counts[:, chunk_starts[1:] - 1]
    return before.astype(np.uint32).reshape(-1)


def dense_bound_rows(offsets: np.ndarray, ids: np.ndarray, maxima: np.ndarray, n_blocks: int,
                     min_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 rows of upper bounds for the terms in at least ``min_fraction`` of the blocks.

    Each row has a float32 scale chosen so that ``float32(255 * scale)`` is at least the row's largest
    maximum; each stored byte is the smallest integer whose ``float32(q * scale)`` is at least the
    block's maximum. Bounds are thus never below the true maxima (checked below).
    """
    dim = len(offsets) - 1
    counts = np.diff(offsets)
    dense_terms = np.flatnonzero((counts >= max(1.0, min_fraction * n_blocks)) & (counts > 0))
    dense_rows = np.full(dim, -1, np.int32)
    if len(dense_terms) == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.uint8), np.zeros(0, np.float32)
    dense_rows[dense_terms] = np.arange(len(dense_terms), dtype=np.int32)
    dense = np.zeros((len(dense_terms), n_blocks), np.uint8)
    scale = np.zeros(len(dense_terms), np.float32)
    for row, t in enumerate(dense_terms):
        lo, hi = offsets[t], offsets[t + 1]
        values = maxima[lo:hi].astype(np.float32)
        top = np.float32(values.max())
        s = np.float32(top / np.float32(255))
        while np.float32(255) * s < top:
            s = np.nextafter(s, np.float32(np.inf), dtype=np.float32)
        q = np.ceil(values / s).astype(np.int64)
        q = np.minimum(q, 255)
        low = (q.astype(np.float32) * s) < values
        while low.any():  # float rounding may leave q * s a hair below the value: step up
            q[low] += 1
            low = (np.minimum(q, 255).astype(np.float32) * s) < values
            q = np.minimum(q, 255)
        dense[row, ids[lo:hi]] = q.astype(np.uint8)
        scale[row] = s
    return dense_rows, dense.reshape(-1), scale
