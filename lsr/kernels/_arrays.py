"""The plain arrays a kernel scores: one segment's term-major postings and their per-block maxima."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["PostingArrays", "BlockMaxima", "WEIGHT_DTYPES", "ANCHOR_EVERY", "DEFAULT_BLOCK_SIZE"]

# stored impact types: float32 as is, or integers with a recorded scale (weight = stored / scale)
WEIGHT_DTYPES = ("float32", "uint8", "uint16")


class BlockMaxima(NamedTuple):
    """Per term, the documents cut into blocks of ``block_size`` consecutive ids, and for each block that
    holds the term (an *entry*): its id, the term's largest stored weight in it, and which of the block's
    documents hold the term. The entries are the postings' doc-id codec: a posting is stored as one bit.

    Term ``t``'s entries are ``[offsets[t], offsets[t+1])``, ascending by block id. Entry ``e``'s bit mask
    is ``masks[e * mask_bytes : (e + 1) * mask_bytes]`` (bit ``r`` of byte ``i``, little-endian, is document
    ``ids[e] * block_size + 8 * i + r``); its postings' weights are the next ``popcount(mask)`` values of the
    postings' ``weights``, in document order, continuing from the previous entry. Entries of all terms are
    laid out in term order, so ``anchors[e // ANCHOR_EVERY]`` (the position of that entry's first posting)
    plus the popcounts of the entries since then locate any entry's postings without a stored start each.

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
    ids: np.ndarray  # uint16 or int32 (see block_id_dtype), ascending within a term
    maxima: np.ndarray  # same dtype as the postings' weights
    masks: np.ndarray  # uint8 (n_entries x mask_bytes), flattened: which documents of the block hold the term
    anchors: np.ndarray  # int32 (ceil(n_entries / ANCHOR_EVERY)): first posting of every ANCHOR_EVERY-th entry
    dense_rows: np.ndarray = np.zeros(0, np.int32)  # int32 (dim), or empty: no dense rows
    dense: np.ndarray = np.zeros(0, np.uint8)  # uint8 (n_rows x n_blocks), row-major, flattened
    dense_scale: np.ndarray = np.zeros(0, np.float32)  # float32 (n_rows)
    dense_prefix: np.ndarray = np.zeros(0, np.uint32)  # uint32 (n_rows x ceil(n_blocks / 64)), flattened

    @property
    def n_entries(self) -> int:
        return len(self.ids)

    @property
    def mask_bytes(self) -> int:
        return mask_bytes(self.block_size)

    def entry_counts(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Postings per entry of entries ``[lo, hi)`` (the popcounts of their masks), int64."""
        return entry_counts(self.masks, self.mask_bytes, lo, self.n_entries if hi is None else hi)

    def entry_starts(self) -> np.ndarray:
        """Position of every entry's first posting (int64), as older formats stored them."""
        starts = np.zeros(self.n_entries, np.int64)
        np.cumsum(self.entry_counts()[:-1], out=starts[1:])
        return starts

    def docs_of_entries(self, lo: int, hi: int) -> np.ndarray:
        """The doc ids of entries ``[lo, hi)``'s postings, in posting order (int32)."""
        mb = self.mask_bytes
        bits = np.unpackbits(np.asarray(self.masks[lo * mb : hi * mb]).reshape(-1, mb), axis=1, bitorder="little")
        entry, offset = np.nonzero(bits)
        return (np.asarray(self.ids[lo:hi], np.int64)[entry] * self.block_size + offset).astype(np.int32)


# Every ANCHOR_EVERY-th entry records where its postings start (see BlockMaxima): 4 bytes per 16 entries
# instead of 4 per entry, for at most 15 byte popcounts to locate an entry.
ANCHOR_EVERY = 16

# popcount of every byte value
POPCOUNT8 = np.array([bin(v).count("1") for v in range(256)], np.uint8)


def mask_bytes(block_size: int) -> int:
    return (block_size + 7) // 8


def entry_counts(masks: np.ndarray, n_mask_bytes: int, lo: int, hi: int) -> np.ndarray:
    counts = POPCOUNT8[np.asarray(masks[lo * n_mask_bytes : hi * n_mask_bytes])].astype(np.int64)
    return counts.reshape(-1, n_mask_bytes).sum(axis=1) if n_mask_bytes > 1 else counts


def anchors_of(counts: np.ndarray, first_entry: int = 0, first_posting: int = 0) -> np.ndarray:
    """Anchors of a run of entries with these posting counts, the run starting at global entry
    ``first_entry`` and posting ``first_posting``: the start of each entry whose global index is a
    multiple of ANCHOR_EVERY (so runs written one after another concatenate into the segment's anchors)."""
    starts = np.zeros(len(counts), np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    first = (-first_entry) % ANCHOR_EVERY
    anchors = starts[first::ANCHOR_EVERY] + first_posting
    if len(anchors) and anchors[-1] > MAX_SEGMENT_POSTINGS:
        raise ValueError(f"a segment holds at most {MAX_SEGMENT_POSTINGS} postings (int32 anchors)")
    return anchors.astype(np.int32)


# Anchors are int32: one segment holds fewer postings than this (merges and flushes stay far below).
MAX_SEGMENT_POSTINGS = 2**31 - 1

# A term gets a dense row when it occurs in at least this fraction of the blocks. A row costs a byte per
# block, its entries' ids and maxima ~3 bytes per entry, so rows below ~1/3 of the blocks make the index
# bigger; 1/4 keeps the few very frequent terms, where the vectorised bounds pay: on enwiki-100k and
# synth-1m (uint8, 1,000 title queries) latency at k=10 and 1000 was the same as with 1/16 (p50 and p99
# within noise), with rows taking 15 instead of 70 MiB at 100k and 179 instead of 750 MiB at 1M.
DENSE_MIN_FRACTION = 1 / 4


DEFAULT_BLOCK_SIZE = 8


def block_id_dtype(n_blocks: int) -> np.dtype:
    """Block ids take 2 bytes where a segment has at most 65,536 blocks (524,288 documents at the default
    block size), else 4: a block entry then costs 2 + mask + maximum bytes."""
    return np.dtype(np.uint16 if n_blocks <= 1 << 16 else np.int32)


class PostingArrays(NamedTuple):
    """Postings of one segment, CSC over terms.

    ``offsets`` int64 ``(dim + 1)``: term ``t``'s postings are positions ``[offsets[t], offsets[t+1])`` of
    ``weights`` (float32, or uint8/uint16 impacts whose real value is ``weight / scale``), in ascending
    document order; which documents they are is coded in ``blocks`` (see :class:`BlockMaxima`), which also
    carries the per-block maxima of block-max pruning. :meth:`doc_ids` decodes them.
    """

    offsets: np.ndarray
    weights: np.ndarray
    blocks: BlockMaxima
    n_docs: int
    scale: float = 1.0

    @property
    def dim(self) -> int:
        return len(self.offsets) - 1

    @property
    def nnz(self) -> int:
        return len(self.weights)

    def doc_ids(self, term_lo: int = 0, term_hi: int | None = None) -> np.ndarray:
        """Local doc ids (int32) of terms ``[term_lo, term_hi)``'s postings, i.e. of positions
        ``[offsets[term_lo], offsets[term_hi])``."""
        term_hi = self.dim if term_hi is None else term_hi
        return self.blocks.docs_of_entries(int(self.blocks.offsets[term_lo]), int(self.blocks.offsets[term_hi]))

    @classmethod
    def from_postings(cls, offsets: np.ndarray, docs: np.ndarray, weights: np.ndarray, n_docs: int,
                      block_size: int = DEFAULT_BLOCK_SIZE, scale: float = 1.0,
                      dense_min_fraction: float = DENSE_MIN_FRACTION) -> PostingArrays:
        """Encode plain CSC postings (int doc ids ascending within each term)."""
        n_blocks = -(-n_docs // max(block_size, 1))
        blocks = block_entries(np.diff(offsets), docs, weights, block_size, n_blocks, dense_min_fraction)
        return cls(np.asarray(offsets, np.int64), weights, blocks, n_docs, scale)

    @classmethod
    def from_documents(cls, documents, block_size: int = DEFAULT_BLOCK_SIZE, weight_dtype: str | None = None,
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
        return cls.from_postings(offsets, docs, weights, documents.n, block_size,
                                 float(scale) if weight_dtype != "float32" else 1.0)


def quantize(values: np.ndarray, weight_dtype: str, scale: float) -> np.ndarray:
    if weight_dtype == "float32":
        return np.asarray(values, dtype=np.float32)
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {weight_dtype!r}.")
    if not scale > 0:
        raise ValueError(f"quantisation scale must be > 0, got {scale}.")
    top = np.iinfo(weight_dtype).max
    return np.clip(np.rint(np.asarray(values, np.float64) * scale), 0, top).astype(weight_dtype)


def block_entries(counts: np.ndarray, docs: np.ndarray, weights: np.ndarray, block_size: int, n_blocks: int,
                  dense_min_fraction: float = DENSE_MIN_FRACTION) -> BlockMaxima:
    """Block maxima of a run of consecutive terms: ``counts[i]`` postings of the run's i-th term, sorted by
    term then doc id. Offsets, starts and dense rows are relative to the run (a whole segment is one run;
    a streamed segment appends runs, shifting them -- see :mod:`lsr.index.segment_files`)."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}.")
    if len(docs) > MAX_SEGMENT_POSTINGS:
        raise ValueError(f"{len(docs)} postings in one segment; int32 anchors hold {MAX_SEGMENT_POSTINGS}")
    n_terms = len(counts)
    terms = np.repeat(np.arange(n_terms, dtype=np.int64), counts)
    docs = np.asarray(docs, np.int64)
    blocks = docs // block_size
    new_entry = np.ones(len(terms), bool)
    new_entry[1:] = (terms[1:] != terms[:-1]) | (blocks[1:] != blocks[:-1])
    starts = np.flatnonzero(new_entry).astype(np.int64)
    maxima = np.maximum.reduceat(weights, starts) if len(terms) else weights[:0]
    offsets = np.zeros(n_terms + 1, np.int64)
    np.cumsum(np.bincount(terms[starts], minlength=n_terms), out=offsets[1:])
    ids = blocks[starts].astype(block_id_dtype(n_blocks))
    maxima = maxima.astype(weights.dtype)
    # each posting sets its document's bit in its entry's mask (bits are distinct, so a sum is an or)
    mb = mask_bytes(block_size)
    entry = np.cumsum(new_entry) - 1
    offset = docs - blocks * block_size
    masks = np.bincount(entry * mb + offset // 8, weights=np.left_shift(1, offset % 8).astype(np.float64),
                        minlength=len(starts) * mb).astype(np.uint8)
    anchors = anchors_of(np.diff(np.append(starts, len(docs))))
    dense_rows, dense, dense_scale = dense_bound_rows(offsets, ids, maxima, n_blocks, dense_min_fraction)
    return BlockMaxima(block_size, offsets, ids, maxima, masks, anchors, dense_rows, dense, dense_scale,
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
