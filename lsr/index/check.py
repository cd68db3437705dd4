"""``lsr check``: verify every checksum and structural invariant of an index (like Lucene's CheckIndex).

Opening an index checks sizes, shapes and the checksums of small files; this reads everything: each
file's sha256, sorted postings with ids in range, positive finite weights, forward vectors equal to the
postings, block maxima equal to the maxima of their postings (and dense bounds never below them),
external ids decodable and unique among live documents, tombstones in range, document counts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import scipy.sparse as sp

from lsr.errors import LsrError
from lsr.index import format as fmt

__all__ = ["CheckReport", "check_index"]


@dataclass
class CheckReport:
    path: Path
    problems: list[str] = field(default_factory=list)
    files_verified: int = 0
    documents: int = 0
    segments: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def check_index(path: str | os.PathLike[str]) -> CheckReport:
    report = CheckReport(Path(path))
    try:
        manifest = fmt.read_manifest(path)
    except LsrError as exc:
        report.problems.append(str(exc))
        return report
    root = Path(path)
    report.segments, report.documents = len(manifest.segments), manifest.n_docs - manifest.n_deleted
    for name, record in manifest.files.items():
        _verify(report, root / name, record)
    _check_vocabulary(report, root, manifest)
    for info in manifest.segments:
        seg_dir = root / info.name
        for name, record in info.files.items():
            _verify(report, seg_dir / name, record)
        try:
            _check_segment(report, seg_dir, info, manifest)
        except Exception as exc:  # noqa: BLE001 - a damaged .npy header can raise EOFError, SyntaxError, ...
            report.problems.append(f"{info.name}: unreadable: {type(exc).__name__}: {exc}".splitlines()[0])
    _check_tombstones(report, root, manifest)
    _check_unique_ids(report, root, manifest)
    return report


def _verify(report: CheckReport, path: Path, record: dict) -> None:
    try:
        fmt.verify_file(path, record, full=True)
        report.files_verified += 1
    except LsrError as exc:
        report.problems.append(str(exc))


def _check_vocabulary(report: CheckReport, root: Path, manifest: fmt.Manifest) -> None:
    try:
        tokens = orjson.loads((root / fmt.VOCAB).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        report.problems.append(f"{fmt.VOCAB}: unreadable: {exc}")
        return
    if not isinstance(tokens, list) or len(tokens) != manifest.dim:
        report.problems.append(f"{fmt.VOCAB} does not hold {manifest.dim} tokens")


def _load(seg_dir: Path, table: dict[str, tuple[str, str]], weight_dtype: str) -> dict[str, np.ndarray]:
    arrays = {}
    for key, (file_name, dtype) in table.items():
        arr = np.load(seg_dir / file_name, mmap_mode="r", allow_pickle=False)
        expected = weight_dtype if dtype == fmt.WEIGHTS else dtype
        if arr.dtype != np.dtype(expected) or arr.ndim != 1:
            raise ValueError(f"{file_name} holds {arr.dtype}{arr.shape}, expected 1-d {expected}")
        arrays[key] = np.asarray(arr)
    return arrays


def _check_segment(report: CheckReport, seg_dir: Path, info: fmt.SegmentInfo, manifest: fmt.Manifest) -> None:
    bad = report.problems.append
    name, dim, n_docs = info.name, manifest.dim, info.n_docs
    tables = manifest.tables(info)
    a = _load(seg_dir, {key: tables[key] for key in (*fmt.SEGMENT_ARRAYS, "docs") if key in tables},
              manifest.weights["dtype"])
    offsets, weights = a["offsets"], a["weights"]
    if len(offsets) != dim + 1 or offsets[0] != 0 or offsets[-1] != len(weights) or np.any(np.diff(offsets) < 0):
        bad(f"{name}: postings.offsets do not span postings.weights in order")
        return
    if len(weights) != info.nnz:
        bad(f"{name}: {len(weights)} postings, the manifest says {info.nnz}")
        return
    docs = a["docs"] if "docs" in a else _decoded_docs(report, seg_dir, info, manifest, offsets)
    if docs is None:
        return
    if len(docs) != len(weights):
        bad(f"{name}: {len(docs)} doc ids for {len(weights)} postings")
        return
    if len(docs) and (docs.min() < 0 or docs.max() >= n_docs):
        bad(f"{name}: posting doc ids outside [0, {n_docs})")
        return
    terms = np.repeat(np.arange(dim), np.diff(offsets))
    ascending = np.diff(docs.astype(np.int64)) > 0
    same_term = terms[1:] == terms[:-1]
    if np.any(same_term & ~ascending):
        bad(f"{name}: postings not strictly ascending within term {int(terms[1:][same_term & ~ascending][0])}")
    w = weights.astype(np.float64)
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        bad(f"{name}: postings hold weights that are not positive and finite")
    # the forward vectors must be exactly the postings, transposed
    indptr, indices, values = a["fwd_indptr"], a["fwd_indices"].astype(np.int32), a["fwd_values"]
    if len(indptr) != n_docs + 1 or indptr[0] != 0 or indptr[-1] != info.nnz or np.any(np.diff(indptr) < 0):
        bad(f"{name}: forward.indptr does not span the forward vectors")
    elif len(indices) and (indices.min() < 0 or indices.max() >= dim):
        bad(f"{name}: forward term ids outside the vocabulary")
    else:
        forward = sp.csr_matrix((values, indices, indptr), shape=(n_docs, dim))
        inverted = sp.csc_matrix((weights, docs, offsets), shape=(n_docs, dim)).tocsr()
        forward.sort_indices()
        inverted.sort_indices()
        if (forward.indptr.tolist() != inverted.indptr.tolist() or not np.array_equal(forward.indices, inverted.indices)
                or not np.array_equal(forward.data, inverted.data)):
            bad(f"{name}: forward vectors and postings disagree")
    _check_docids(report, seg_dir, info, a["docid_offsets"])
    if manifest.block_size is not None:
        _check_blocks(report, seg_dir, info, manifest, offsets, docs, weights)


def _decoded_docs(report: CheckReport, seg_dir: Path, info: fmt.SegmentInfo, manifest: fmt.Manifest,
                  offsets: np.ndarray) -> np.ndarray | None:
    """The doc ids coded in the block entries' masks (format 4), once the entries are shown to hold
    exactly each term's postings (their equality with freshly coded entries is checked in _check_blocks)."""
    from lsr.kernels import BlockMaxima
    from lsr.kernels._arrays import mask_bytes

    bad = report.problems.append
    tables = manifest.tables(info)
    b = _load(seg_dir, {key: tables[key] for key in fmt.BLOCK_ARRAYS}, manifest.weights["dtype"])
    b_offsets, ids, masks = b["block_offsets"], b["block_ids"], b["block_masks"]
    bs, n_entries = manifest.block_size, len(ids)
    if (len(b_offsets) != manifest.dim + 1 or b_offsets[0] != 0 or b_offsets[-1] != n_entries
            or np.any(np.diff(b_offsets) < 0)):
        bad(f"{info.name}: blocks.offsets do not span blocks.ids in order")
        return None
    if len(masks) != n_entries * mask_bytes(bs):
        bad(f"{info.name}: blocks.masks.npy holds {len(masks)} bytes for {n_entries} entries")
        return None
    if n_entries and (ids.min() < 0 or ids.max() >= -(-info.n_docs // bs)):
        bad(f"{info.name}: block ids outside the segment's blocks")
        return None
    blocks = BlockMaxima(bs, b_offsets, ids, b["block_maxima"], masks, b["block_anchors"])
    counts = blocks.entry_counts()
    running = np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))
    per_term = running[b_offsets[1:]] - running[b_offsets[:-1]]
    if np.any(counts == 0) or not np.array_equal(per_term, np.diff(offsets)):
        bad(f"{info.name}: blocks.masks.npy does not account for each term's postings")
        return None
    docs = blocks.docs_of_entries(0, n_entries)
    if len(docs) and docs.max() >= info.n_docs or np.any(docs - np.repeat(ids.astype(np.int64), counts) * bs >= bs):
        bad(f"{info.name}: block masks name documents outside their blocks or the segment")
        return None
    return docs


def _check_docids(report: CheckReport, seg_dir: Path, info: fmt.SegmentInfo, offsets: np.ndarray) -> None:
    raw = (seg_dir / fmt.DOCIDS_BYTES).read_bytes()
    if len(offsets) != info.n_docs + 1 or offsets[0] != 0 or offsets[-1] != len(raw) or np.any(np.diff(offsets) < 0):
        report.problems.append(f"{info.name}: docids.offsets do not span docids.utf8")
        return
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        report.problems.append(f"{info.name}: docids.utf8 is not valid UTF-8")


def _check_blocks(report: CheckReport, seg_dir: Path, info: fmt.SegmentInfo, manifest: fmt.Manifest,
                  offsets: np.ndarray, docs: np.ndarray, weights: np.ndarray) -> None:
    from lsr.kernels import PostingArrays

    bad = report.problems.append
    tables = manifest.tables(info)
    b = _load(seg_dir, {key: tables[key] for key in (*fmt.BLOCK_ARRAYS, "block_starts") if key in tables},
              manifest.weights["dtype"])
    expected = PostingArrays.from_postings(offsets, docs, weights, info.n_docs, manifest.block_size).blocks
    wanted = {"block_offsets": expected.offsets, "block_ids": expected.ids, "block_maxima": expected.maxima,
              "block_masks": expected.masks, "block_anchors": expected.anchors, "block_starts": expected.entry_starts()}
    for key in b:
        if not np.array_equal(np.asarray(b[key], np.int64) if key == "block_starts" else b[key], wanted[key]):
            bad(f"{info.name}: {fmt.ALL_ARRAYS[key][0]} does not match the postings")
    if fmt.DENSE_ARRAYS["dense"][0] not in info.files:
        return
    d = _load(seg_dir, fmt.DENSE_ARRAYS, manifest.weights["dtype"])
    rows, dense, scale = d["dense_rows"], d["dense"], d["dense_scale"]
    n_blocks = -(-info.n_docs // manifest.block_size)
    if len(dense) != len(scale) * n_blocks or (len(rows) not in (0, manifest.dim)):
        bad(f"{info.name}: dense bound rows have the wrong shape")
        return
    for t in np.flatnonzero(rows >= 0) if len(rows) else []:
        r = int(rows[t])
        if r >= len(scale):
            bad(f"{info.name}: term {t} points at dense row {r}, beyond the rows")
            continue
        row = dense[r * n_blocks:(r + 1) * n_blocks]
        lo, hi = expected.offsets[t], expected.offsets[t + 1]
        ids, maxima = expected.ids[lo:hi], expected.maxima[lo:hi].astype(np.float32)
        present = np.zeros(n_blocks, bool)
        present[ids] = True
        if not np.array_equal(row != 0, present) or np.any(row[ids].astype(np.float32) * scale[r] < maxima):
            bad(f"{info.name}: the dense bounds of term {t} are below its block maxima or misplaced")
    prefix = d["dense_prefix"]
    from lsr.kernels._arrays import dense_prefix

    if not np.array_equal(prefix, dense_prefix(dense, len(scale), n_blocks)):
        bad(f"{info.name}: blocks.dense_prefix.npy does not count the dense rows")


def _check_tombstones(report: CheckReport, root: Path, manifest: fmt.Manifest) -> None:
    if manifest.tombstones is None:
        return
    try:
        ids = np.load(root / manifest.tombstones["file"], allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - see _check_segment
        report.problems.append(f"tombstones unreadable: {type(exc).__name__}: {exc}".splitlines()[0])
        return
    if len(ids) != manifest.tombstones["count"] or (len(ids) and (ids.min() < 0 or ids.max() >= manifest.n_docs)):
        report.problems.append("tombstones are out of range or miscounted")
    elif np.any(np.diff(ids) <= 0):
        report.problems.append("tombstones are not sorted and unique")


def _check_unique_ids(report: CheckReport, root: Path, manifest: fmt.Manifest) -> None:
    if report.problems:
        return  # the lookup needs a readable index
    from lsr.index.reader import open_index

    try:
        index = open_index(root)
        live = index.n_live
        lookup = index._id_lookup
    except LsrError as exc:
        report.problems.append(str(exc))
        return
    if len(lookup) != live:
        report.problems.append(f"{live - len(lookup)} live documents share an external id with another")
