"""Writing one segment's files, streamed: the single owner of how a segment directory is laid down.

A :class:`SegmentBuilder` takes documents in id order (forward vectors, external ids, dense rows) and
postings in term order, a range of terms at a time, and appends each to its ``.npy`` file as it comes. So a
fresh segment (one call each, from memory) and a merge of many segments (term ranges streamed from memory
maps) write the same files through the same code, and a merge needs memory for one term range, not for the
whole merged segment.

Arrays whose final length is unknown until the end are written behind a fixed-size ``.npy`` header that
is rewritten once the length is known (see :class:`_NpyAppender`); the files are ordinary ``.npy`` files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from lsr.index import format as fmt
from lsr.kernels._arrays import DENSE_MIN_FRACTION, MAX_SEGMENT_POSTINGS, anchors_of, block_entries

__all__ = ["SegmentBuilder", "save_array", "save_bytes"]

_HEADER_BYTES = 128  # magic (6) + version (2) + length (2) + a dict padded with spaces; a multiple of 64


class _NpyAppender:
    """A 1-d ``.npy`` file written by appending chunks; the header is rewritten with the length at close."""

    def __init__(self, path: Path, dtype: np.dtype | str, columns: int | None = None):
        self.path, self.dtype, self.length, self.columns = path, np.dtype(dtype), 0, columns
        self._fh = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._fh.write(self._header(0))

    def _header(self, length: int) -> bytes:
        text = repr({"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                     "shape": (length,) if self.columns is None else (length // self.columns, self.columns)})
        body = text.ljust(_HEADER_BYTES - 10 - 1) + "\n"
        if len(body) != _HEADER_BYTES - 10:
            raise ValueError(f"array of {length} items does not fit the fixed .npy header")
        return b"\x93NUMPY\x01\x00" + (len(body)).to_bytes(2, "little") + body.encode("latin1")

    def append(self, values: np.ndarray) -> None:
        if len(values):
            self._fh.write(np.ascontiguousarray(values, dtype=self.dtype).tobytes())
            self.length += len(values)

    def close(self) -> dict[str, Any]:
        self._fh.seek(0)
        self._fh.write(self._header(self.length))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        return fmt.file_record(self.path)

    def abandon(self) -> None:
        self._fh.close()


def save_array(path: Path, array: np.ndarray) -> dict[str, Any]:
    with open(path, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())
    return fmt.file_record(path)


def save_bytes(path: Path, data: bytes) -> dict[str, Any]:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return fmt.file_record(path)


class SegmentBuilder:
    """Streams one segment into ``seg_dir`` (a temporary directory the caller renames into place).

    Call :meth:`add_documents` for every document in local-id order, :meth:`add_postings` for consecutive
    term ranges covering ``[0, dim)``, then :meth:`finish`, which returns the manifest's file records.
    ``weight_dtype`` is the stored weights' type; ``block_size`` the documents per block of the doc-id codec
    and block maxima; ``dense_dim`` (the index's dense part) makes every document carry a dense vector.
    """

    def __init__(self, seg_dir: Path, dim: int, n_docs: int, weight_dtype: str, block_size: int,
                 dense_dim: int | None = None, dense_min_fraction: float = DENSE_MIN_FRACTION):
        self.seg_dir, self.dim, self.n_docs = seg_dir, dim, n_docs
        self.block_size = block_size
        self.n_blocks = -(-n_docs // block_size)
        tables = fmt.segment_tables(fmt.FORMAT_VERSION, dim, self.n_blocks)
        self._min_fraction = dense_min_fraction
        self._next_term = 0
        self._docs_added = 0
        self._n_postings = 0
        self._n_entries = 0
        self._fwd_nnz = 0
        self._id_bytes = 0
        self._dense_rows: list[np.ndarray] = []  # per term range: int32 local rows (or -1)
        self._n_dense_rows = 0
        self._files: dict[str, _NpyAppender] = {}
        self._raw: dict[str, Any] = {}
        self._records: dict[str, dict[str, Any]] = {}
        for key, (file_name, dtype) in tables.items():
            if key != "dense_rows":  # written whole at the end
                self._files[key] = _NpyAppender(seg_dir / file_name, weight_dtype if dtype == fmt.WEIGHTS else dtype)
        self._raw["docids"] = open(seg_dir / fmt.DOCIDS_BYTES, "wb")  # noqa: SIM115 - closed in finish()
        self._files["offsets"].append(np.zeros(1, np.int64))
        self._files["fwd_indptr"].append(np.zeros(1, np.int64))
        self._files["docid_offsets"].append(np.zeros(1, np.int64))
        self._files["block_offsets"].append(np.zeros(1, np.int64))
        self._dense_vectors = None if dense_dim is None else _NpyAppender(seg_dir / fmt.DENSE_VECTORS, np.float32,
                                                                          dense_dim)

    # ------------------------------------------------------------------ documents
    def add_documents(self, external_ids: list[bytes], row_nnz: np.ndarray, indices: np.ndarray,
                      values: np.ndarray, dense: np.ndarray | None = None) -> None:
        """The next documents' UTF-8 external ids and forward vectors (CSR rows given by their lengths)."""
        self._files["fwd_indptr"].append(self._fwd_nnz + np.cumsum(row_nnz, dtype=np.int64))
        self._files["fwd_indices"].append(indices)
        self._files["fwd_values"].append(values)
        self._fwd_nnz += int(np.sum(row_nnz, dtype=np.int64))
        self._files["docid_offsets"].append(self._id_bytes + np.cumsum([len(b) for b in external_ids],
                                                                       dtype=np.int64))
        data = b"".join(external_ids)
        self._raw["docids"].write(data)
        self._id_bytes += len(data)
        self._docs_added += len(external_ids)
        if (dense is None) != (self._dense_vectors is None):
            raise ValueError("dense vectors are needed exactly when the segment has a dense part")
        if dense is not None:
            self._dense_vectors.append(dense.reshape(-1))

    # ------------------------------------------------------------------ postings
    def add_postings(self, term_lo: int, term_hi: int, counts: np.ndarray, docs: np.ndarray,
                     weights: np.ndarray) -> None:
        """Postings of terms ``[term_lo, term_hi)`` (the next range), sorted by term then doc id;
        ``counts[i]`` postings belong to term ``term_lo + i``."""
        if term_lo != self._next_term or len(counts) != term_hi - term_lo:
            raise ValueError(f"postings must come in term order: expected term {self._next_term}, got {term_lo}")
        self._next_term = term_hi
        self._files["offsets"].append(self._n_postings + np.cumsum(counts, dtype=np.int64))
        self._files["weights"].append(weights)
        entries = block_entries(counts, docs, weights, self.block_size, self.n_blocks, self._min_fraction)
        self._files["block_offsets"].append(self._n_entries + entries.offsets[1:])
        self._files["block_ids"].append(entries.ids)
        self._files["block_maxima"].append(entries.maxima)
        self._files["block_masks"].append(entries.masks)
        self._files["block_anchors"].append(anchors_of(entries.entry_counts(), self._n_entries, self._n_postings))
        rows = (entries.dense_rows.copy() if len(entries.dense_rows)
                else np.full(term_hi - term_lo, -1, np.int32))
        rows[rows >= 0] += self._n_dense_rows
        self._dense_rows.append(rows)
        self._n_dense_rows += len(entries.dense_scale)
        self._files["dense"].append(entries.dense)
        self._files["dense_scale"].append(entries.dense_scale)
        self._files["dense_prefix"].append(entries.dense_prefix)
        self._n_entries += len(entries.ids)
        self._n_postings += len(docs)
        if self._n_postings > MAX_SEGMENT_POSTINGS:
            raise ValueError(f"a segment holds at most {MAX_SEGMENT_POSTINGS} postings (int32 anchors)")

    # ------------------------------------------------------------------ the end
    def finish(self, dense_index: bytes | None = None) -> tuple[dict[str, dict[str, Any]], int]:
        """Close and fsync every file; returns (file records, number of postings)."""
        if self._next_term != self.dim or self._docs_added != self.n_docs:
            raise ValueError(f"segment incomplete: {self._next_term}/{self.dim} terms, "
                             f"{self._docs_added}/{self.n_docs} documents")
        if self._fwd_nnz != self._n_postings:
            raise ValueError(f"forward vectors hold {self._fwd_nnz} entries but postings {self._n_postings}")
        records = {fmt.ALL_ARRAYS[key][0]: appender.close() for key, appender in self._files.items()}
        # no frequent term at all: an empty row map (the reader's "no dense rows")
        rows = np.concatenate(self._dense_rows) if self._n_dense_rows else np.zeros(0, np.int32)
        file_name = fmt.DENSE_ARRAYS["dense_rows"][0]
        records[file_name] = save_array(self.seg_dir / file_name, rows.astype(np.int32))
        fh = self._raw["docids"]
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        records[fmt.DOCIDS_BYTES] = fmt.file_record(self.seg_dir / fmt.DOCIDS_BYTES)
        if self._dense_vectors is not None:
            records[fmt.DENSE_VECTORS] = self._dense_vectors.close()
            records[fmt.DENSE_FAISS] = save_bytes(self.seg_dir / fmt.DENSE_FAISS, dense_index)
        fmt.fsync_dir(self.seg_dir)
        return records, self._n_postings

    def abandon(self) -> None:
        """Close every file without finishing (the caller removes the directory)."""
        for appender in self._files.values():
            appender.abandon()
        if self._dense_vectors is not None:
            self._dense_vectors.abandon()
        self._raw["docids"].close()
