"""Opening an index: the manifest, the vocabulary, memory-mapped segments and the tombstones.

An :class:`Index` is one consistent snapshot (one manifest generation). Opening is cheap: arrays are
memory-mapped, so processes opening the same index share the page cache.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import orjson

from lsr.errors import IndexFormatError, InvalidQueryError
from lsr.index import format as fmt
from lsr.kernels import BlockMaxima, ForwardArrays, PostingArrays
from lsr.kernels._arrays import ANCHOR_EVERY, mask_bytes
from lsr.types import SparseBatch

__all__ = ["Index", "Segment", "open_index"]

log = logging.getLogger(__name__)


@dataclass
class Segment:
    """One immutable segment, memory-mapped."""

    info: fmt.SegmentInfo
    postings: PostingArrays
    fwd_indptr: np.ndarray
    fwd_indices: np.ndarray
    fwd_values: np.ndarray  # stored weights (postings' dtype)
    docid_offsets: np.ndarray
    docid_bytes: np.ndarray
    dense_vectors: np.ndarray | None = None  # float32 (n_docs, dim), memory-mapped
    seg_dir: Path | None = None

    @classmethod
    def open(cls, index_dir: Path, info: fmt.SegmentInfo, manifest: fmt.Manifest) -> Segment:
        seg_dir = index_dir / info.name
        for name, record in info.files.items():
            fmt.verify_file(seg_dir / name, record)
        weight_dtype = manifest.weights["dtype"]
        tables = manifest.tables(info, fmt.DENSE_ARRAYS["dense"][0] in info.files)
        arrays = {}
        for key, (file_name, dtype) in tables.items():
            path = seg_dir / file_name
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except Exception as exc:  # noqa: BLE001 - a damaged .npy header raises EOFError, SyntaxError, ...
                raise IndexFormatError(f"index file {path} is unreadable ({type(exc).__name__}).") from None
            expected = weight_dtype if dtype == fmt.WEIGHTS else dtype
            if arr.dtype != np.dtype(expected) or arr.ndim != 1:
                raise IndexFormatError(f"index file {path} holds {arr.dtype}{arr.shape}, expected 1-d {expected}.")
            arrays[key] = arr
        docid_bytes = np.memmap(seg_dir / fmt.DOCIDS_BYTES, dtype=np.uint8, mode="r") if (
            seg_dir / fmt.DOCIDS_BYTES).stat().st_size else np.zeros(0, np.uint8)
        _check_shapes(seg_dir, info, manifest, arrays, len(docid_bytes))
        if manifest.format_version < 4:
            # doc ids stored plainly: re-code them (and the block maxima) in memory, as a merge would on disk
            log.info("segment %s has index format %d: re-coded in memory (lsr optimize rewrites it)",
                     seg_dir, manifest.format_version)
            postings = PostingArrays.from_postings(arrays["offsets"], arrays["docs"], arrays["weights"], info.n_docs,
                                                   manifest.codec_block_size,
                                                   manifest.weights["scale"])
        else:
            dense = {key: arrays[key] for key in fmt.DENSE_ARRAYS if key in arrays}
            blocks = BlockMaxima(manifest.block_size, arrays["block_offsets"], arrays["block_ids"],
                                 arrays["block_maxima"], arrays["block_masks"], arrays["block_anchors"], **dense)
            postings = PostingArrays(arrays["offsets"], arrays["weights"], blocks, info.n_docs,
                                     manifest.weights["scale"])
        dense = None
        if manifest.dense is not None:
            path = seg_dir / fmt.DENSE_VECTORS
            try:
                dense = np.load(path, mmap_mode="r", allow_pickle=False)
            except Exception as exc:  # noqa: BLE001 - see above
                raise IndexFormatError(f"index file {path} is unreadable ({type(exc).__name__}).") from None
            if dense.dtype != np.float32 or dense.shape != (info.n_docs, int(manifest.dense["dim"])):
                raise IndexFormatError(f"index file {path} holds {dense.dtype}{dense.shape}, expected float32 "
                                       f"({info.n_docs}, {manifest.dense['dim']}).")
            if fmt.DENSE_FAISS not in info.files:
                raise IndexFormatError(f"segment {seg_dir} lacks {fmt.DENSE_FAISS}.")
        return cls(info, postings, arrays["fwd_indptr"], arrays["fwd_indices"], arrays["fwd_values"],
                   arrays["docid_offsets"], docid_bytes, dense, seg_dir)

    @property
    def forward(self) -> ForwardArrays:
        """The documents' own term ids and stored weights (two-step search rescores on them)."""
        return ForwardArrays(self.fwd_indptr, self.fwd_indices, self.fwd_values)

    def dense_faiss_bytes(self) -> bytes:
        return (self.seg_dir / fmt.DENSE_FAISS).read_bytes()

    def vectors(self, start: int, stop: int) -> SparseBatch:
        """Document vectors ``start:stop`` (local ids) with real weights (stored / scale)."""
        lo, hi = self.fwd_indptr[start], self.fwd_indptr[stop]
        values = np.asarray(self.fwd_values[lo:hi], dtype=np.float32)
        if self.postings.scale != 1.0:
            values = values / np.float32(self.postings.scale)
        return SparseBatch(np.asarray(self.fwd_indptr[start : stop + 1]) - lo,
                           np.asarray(self.fwd_indices[lo:hi], dtype=np.int32), values, self.postings.dim)

    def external_id(self, local: int) -> str:
        lo, hi = self.docid_offsets[local], self.docid_offsets[local + 1]
        return str(self._docid_view[lo:hi], "utf-8")

    @cached_property
    def _docid_view(self) -> memoryview:
        """The id bytes as a memoryview: slicing the memory map itself makes a memmap object per id (~3 us)."""
        return memoryview(np.ascontiguousarray(self.docid_bytes, dtype=np.uint8))


def _check_shapes(seg_dir: Path, info: fmt.SegmentInfo, manifest: fmt.Manifest, a: dict[str, np.ndarray],
                  n_bytes: int) -> None:
    """Cheap structural checks: a truncated or swapped file fails here instead of inside a kernel."""
    problems = []
    dim = manifest.dim
    if len(a["offsets"]) != dim + 1:
        problems.append(f"postings.offsets has {len(a['offsets'])} entries, expected {dim + 1}")
    elif a["offsets"][0] != 0 or a["offsets"][-1] != len(a["weights"]):
        problems.append("postings.offsets does not span postings.weights")
    if len(a.get("docs", a["weights"])) != info.nnz or len(a["weights"]) != info.nnz:
        problems.append(f"postings hold {len(a['weights'])} entries, expected {info.nnz}")
    if len(a["fwd_indptr"]) != info.n_docs + 1 or a["fwd_indptr"][-1] != info.nnz:
        problems.append("forward.indptr does not match the segment's documents")
    if len(a["fwd_indices"]) != info.nnz or len(a["fwd_values"]) != info.nnz:
        problems.append("forward vectors do not match the postings' size")
    if len(a["docid_offsets"]) != info.n_docs + 1 or a["docid_offsets"][-1] != n_bytes:
        problems.append("docids.offsets does not match docids.utf8")
    if "block_offsets" in a:
        n_entries = len(a["block_ids"])
        if len(a["block_offsets"]) != dim + 1 or a["block_offsets"][-1] != n_entries:
            problems.append("blocks.offsets does not span blocks.ids")
        if len(a["block_maxima"]) != n_entries or len(a.get("block_starts", a["block_maxima"])) != n_entries:
            problems.append("block arrays differ in length")
        if "block_masks" in a and (len(a["block_masks"]) != n_entries * mask_bytes(manifest.block_size)
                                   or len(a["block_anchors"]) != -(-n_entries // ANCHOR_EVERY)):
            problems.append("block masks or anchors do not match the block entries")
    if "dense" in a:
        n_rows, n_blocks = len(a["dense_scale"]), -(-info.n_docs // manifest.block_size)
        if len(a["dense_rows"]) not in (0, dim) or len(a["dense"]) != n_rows * n_blocks:
            problems.append("dense bound rows do not match the vocabulary and blocks")
        if len(a["dense_prefix"]) != n_rows * -(-n_blocks // 64):
            problems.append("dense prefixes do not match the dense rows")
    if problems:
        raise IndexFormatError(f"segment {seg_dir} is inconsistent: {'; '.join(problems)}.")


class Index:
    """A read-only snapshot of an index. Use :func:`open_index`."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.manifest = fmt.read_manifest(self.path)
        for name, record in self.manifest.files.items():
            fmt.verify_file(self.path / name, record)
        self.segments = [Segment.open(self.path, info, self.manifest) for info in self.manifest.segments]
        self.deleted_ids = self._read_tombstones()

    # ------------------------------------------------------------------ metadata
    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def n_docs(self) -> int:
        """Size of the global id space (deleted documents included)."""
        return self.manifest.n_docs

    @property
    def n_live(self) -> int:
        return self.n_docs - len(self.deleted_ids)

    @property
    def encoder_config(self) -> dict | None:
        return self.manifest.encoder

    @property
    def vocabulary_hash(self) -> str:
        return self.manifest.vocabulary["sha256"]

    @cached_property
    def vocabulary(self) -> list[str]:
        path = self.path / fmt.VOCAB
        try:
            tokens = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise IndexFormatError(f"{path} is unreadable: {exc}.") from None
        if not isinstance(tokens, list) or len(tokens) != self.dim:
            raise IndexFormatError(f"{path} does not hold {self.dim} tokens.")
        return tokens

    @cached_property
    def token_ids(self) -> dict[str, int]:
        return {tok: i for i, tok in enumerate(self.vocabulary)}

    # ------------------------------------------------------------------ documents
    def _read_tombstones(self) -> np.ndarray:
        record = self.manifest.tombstones
        if record is None:
            return np.zeros(0, np.int64)
        path = self.path / record["file"]
        fmt.verify_file(path, record)
        try:
            ids = np.load(path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - see Segment.open
            raise IndexFormatError(f"{path} is unreadable ({type(exc).__name__}).") from None
        if ids.dtype != np.int64 or len(ids) != record["count"]:
            raise IndexFormatError(f"{path} does not hold {record['count']} int64 ids.")
        return ids

    def deleted_mask(self, segment: Segment) -> np.ndarray | None:
        """uint8 mask over a segment's documents, or None when none of them is deleted."""
        base, n = segment.info.doc_base, segment.info.n_docs
        lo, hi = np.searchsorted(self.deleted_ids, [base, base + n])
        if lo == hi:
            return None
        mask = np.zeros(n, np.uint8)
        mask[self.deleted_ids[lo:hi] - base] = 1
        return mask

    def _locate(self, doc_id: int) -> tuple[Segment, int]:
        if not 0 <= doc_id < self.n_docs:
            raise InvalidQueryError(f"document id {doc_id} is outside [0, {self.n_docs}).")
        bases = [s.info.doc_base for s in self.segments]
        seg = self.segments[int(np.searchsorted(bases, doc_id, side="right")) - 1]
        return seg, doc_id - seg.info.doc_base

    def external_ids(self, doc_ids: np.ndarray) -> list[str | None]:
        """External ids for internal ids (None for the -1 padding)."""
        ids = np.asarray(doc_ids, dtype=np.int64).ravel()
        if len(ids) and (ids.max() >= self.n_docs or ids.min() < -1):
            bad = int(ids.max() if ids.max() >= self.n_docs else ids.min())
            raise InvalidQueryError(f"document id {bad} is outside [0, {self.n_docs}).")
        segment_of = np.searchsorted(self._bases, ids, side="right") - 1
        out: list[str | None] = []
        for d, s in zip(ids.tolist(), segment_of.tolist(), strict=True):
            out.append(None if d < 0 else self.segments[s].external_id(d - self._bases[s]))
        return out

    @cached_property
    def _bases(self) -> np.ndarray:
        return np.array([s.info.doc_base for s in self.segments], dtype=np.int64)

    @cached_property
    def _id_lookup(self) -> dict[str, int]:
        """External id -> live internal id. Deleted documents are skipped (a replaced document's old and new
        versions share an external id, and after reordering either may come first)."""
        lookup = {}
        for seg in self.segments:
            offsets = np.asarray(seg.docid_offsets)
            raw = bytes(seg.docid_bytes)
            dead = self.deleted_mask(seg)
            for local in range(seg.info.n_docs):
                if dead is None or not dead[local]:
                    lookup[raw[offsets[local] : offsets[local + 1]].decode("utf-8")] = seg.info.doc_base + local
        return lookup

    def internal_id(self, external_id: str) -> int | None:
        """The live internal id of an external id, or None."""
        return self._id_lookup.get(external_id)

    def document_vector(self, doc_id: int) -> SparseBatch:
        seg, local = self._locate(doc_id)
        return seg.vectors(local, local + 1)

    def __repr__(self) -> str:
        return (f"Index({str(self.path)!r}, docs={self.n_live}, segments={len(self.segments)}, "
                f"generation={self.manifest.generation})")


def open_index(path: str | os.PathLike[str]) -> Index:
    """Open the index at ``path`` (its current manifest generation)."""
    return Index(path)
