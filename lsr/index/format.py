"""The on-disk index format. This module owns every file name, the manifest schema and FORMAT_VERSION.

Layout::

    my_index/
      manifest.json            the only mutable file; replaced atomically at each commit
      vocab.json               the vocabulary, a JSON list of tokens in id order (written once)
      tombstones-<gen>.npy     sorted global ids of deleted documents (one immutable file per generation)
      seg-<n>/                 immutable once committed
        postings.offsets.npy   int64 (dim + 1): term t's postings are [offsets[t], offsets[t+1])
        postings.weights.npy   impacts: float32, or uint8/uint16 with weight = stored / scale (manifest),
                               in ascending document order within a term
        blocks.offsets.npy     int64 (dim + 1): term t's block entries are [offsets[t], offsets[t+1])
        blocks.ids.npy         block id (= doc id // block_size), ascending within a term: uint16
                               when the segment has at most 65,536 blocks (v4), else int32
        blocks.maxima.npy      the term's largest stored weight in the block (postings' dtype)
        blocks.masks.npy       uint8 (n_entries x ceil(block_size / 8)): bit r of the entry's mask is a
                               posting of document id * block_size + r: the doc-id codec       (v4)
        blocks.anchors.npy     int32 (ceil(n_entries / 16)): first posting of every 16th entry (v4)
        postings.docs.npy      int32 local doc ids, ascending within a term                 (v1-v3 only)
        blocks.starts.npy      int32 first posting of each entry (int64 in v2)               (v2-v3 only)
        blocks.dense_rows.npy  int32 (dim): row of dense bounds of a frequent term, or -1       (v2, optional)
        blocks.dense.npy       uint8 (rows x n_blocks): bound = byte x dense_scale[row]        (v2, optional)
        blocks.dense_scale.npy float32 (rows)                                                  (v2, optional)
        blocks.dense_prefix.npy uint32 (rows x ceil(n_blocks / 64)): entries before each chunk (v2, optional)
        dense.vectors.npy      float32 (n_docs, dim): dense embeddings                          (optional)
        dense.faiss            the serialised faiss index over them (built by lsr.dense)       (optional)
        forward.indptr.npy     int64 (n_docs + 1)  document vectors (CSR), for PRF and explanations
        forward.indices.npy    term ids: uint16 when dim <= 65536 (v3), else int32
        forward.values.npy     stored weights (postings' dtype)
        docids.offsets.npy     int64 (n_docs + 1) byte offsets into docids.utf8
        docids.utf8            external ids, UTF-8, concatenated

A commit writes new files under temporary names, fsyncs them, renames them into place, fsyncs the
directory, and only then replaces ``manifest.json`` (write ``manifest.json.tmp``, fsync, ``os.replace``,
fsync the directory). A crash at any point leaves the previous manifest, which names only complete files.
Files no manifest names are garbage from an interrupted writer and are removed by the next writer.

Versions: 1 had float32 weights and no block maxima; 2 adds quantised impacts and ``blocks.*``; 3 stores
block starts as int32 and forward term ids as uint16 when the vocabulary has at most 65,536 terms (a quarter
less space for the same index); 4 drops ``postings.docs`` and ``blocks.starts``: the block entries' bit masks
code the doc ids (a posting costs one bit of its entry's mask instead of a 4-byte id) and sparse anchors
locate an entry's postings (see lsr.kernels._arrays.BlockMaxima). This lsr reads all four (a segment of
versions 1-3 is re-coded in memory when it is opened; ``lsr optimize`` rewrites it) and writes version 4.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from lsr.errors import IndexFormatError, IndexLockedError, IndexNotFoundError
from lsr.kernels._arrays import DEFAULT_BLOCK_SIZE
from lsr.kernels._arrays import block_id_dtype as _kernel_block_id_dtype

log = logging.getLogger(__name__)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST",
    "VOCAB",
    "SEGMENT_ARRAYS",
    "BLOCK_ARRAYS",
    "DENSE_ARRAYS",
    "ALL_ARRAYS",
    "DENSE_VECTORS",
    "DENSE_FAISS",
    "WEIGHTS",
    "DEFAULT_BLOCK_SIZE",
    "READABLE_VERSIONS",
    "DOCIDS_BYTES",
    "Manifest",
    "SegmentInfo",
    "read_manifest",
    "write_manifest",
    "segment_dir_name",
    "tombstone_file_name",
    "file_record",
    "fsync_dir",
    "write_bytes_atomic",
    "sha256_file",
    "verify_file",
    "WriterLock",
    "LOCK",
]

FORMAT_NAME = "lsr-index"
FORMAT_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
MANIFEST = "manifest.json"
VOCAB = "vocab.json"
LOCK = "write.lock"
MERGE_LOCK = "merge.lock"  # one merger per index (lsr.index.merge)
MERGING_PREFIX = ".merging-"  # a merge in progress: .merging-<pid>-<random>/, a segment being written
DOCIDS_BYTES = "docids.utf8"
WEIGHTS = "weights"  # stands for the manifest's weight dtype in the tables below
TERM_IDS = "term_ids"  # stands for the forward index's term-id dtype (see term_id_dtype)
# array name -> (file name, dtype). Shapes are checked by the segment reader.
SEGMENT_ARRAYS: dict[str, tuple[str, str]] = {
    "offsets": ("postings.offsets.npy", "int64"),
    "weights": ("postings.weights.npy", WEIGHTS),
    "fwd_indptr": ("forward.indptr.npy", "int64"),
    "fwd_indices": ("forward.indices.npy", TERM_IDS),
    "fwd_values": ("forward.values.npy", WEIGHTS),
    "docid_offsets": ("docids.offsets.npy", "int64"),
}
BLOCK_ARRAYS: dict[str, tuple[str, str]] = {
    "block_offsets": ("blocks.offsets.npy", "int64"),
    "block_ids": ("blocks.ids.npy", "int32"),
    "block_maxima": ("blocks.maxima.npy", WEIGHTS),
    "block_masks": ("blocks.masks.npy", "uint8"),
    "block_anchors": ("blocks.anchors.npy", "int32"),
}
# Versions 1-3 stored doc ids and entry starts instead of masks and anchors.
LEGACY_ARRAYS: dict[str, tuple[str, str]] = {
    "docs": ("postings.docs.npy", "int32"),
    "block_starts": ("blocks.starts.npy", "int32"),
}
# Dense bound rows speed up block-max bounds; segments written before they existed search without them.
DENSE_ARRAYS: dict[str, tuple[str, str]] = {
    "dense_rows": ("blocks.dense_rows.npy", "int32"),
    "dense": ("blocks.dense.npy", "uint8"),
    "dense_scale": ("blocks.dense_scale.npy", "float32"),
    "dense_prefix": ("blocks.dense_prefix.npy", "uint32"),
}
ALL_ARRAYS = {**SEGMENT_ARRAYS, **BLOCK_ARRAYS, **DENSE_ARRAYS, **LEGACY_ARRAYS}


def term_id_dtype(version: int, dim: int) -> str:
    """Forward term ids: uint16 when the vocabulary fits (from version 3: half the bytes), else int32."""
    return "uint16" if version >= 3 and dim <= 1 << 16 else "int32"


def block_id_dtype(version: int, n_blocks: int) -> str:
    """Block ids: from version 4 as the kernels code them (uint16 for at most 65,536 blocks), else int32."""
    return _kernel_block_id_dtype(n_blocks).name if version >= 4 else "int32"


def segment_tables(version: int, dim: int, n_blocks: int | None,
                   dense_bounds: bool = True) -> dict[str, tuple[str, str]]:
    """array name -> (file name, dtype) of a segment written in ``version`` with ``n_blocks`` blocks
    (ceil(n_docs / block_size), which picks the block ids' dtype; None: an index without blocks, version 1);
    WEIGHTS stays symbolic."""
    tables = dict(SEGMENT_ARRAYS)
    tables["fwd_indices"] = (SEGMENT_ARRAYS["fwd_indices"][0], term_id_dtype(version, dim))
    if version < 4:
        tables["docs"] = LEGACY_ARRAYS["docs"]
    if n_blocks is not None:
        tables.update(BLOCK_ARRAYS)
        tables["block_ids"] = (BLOCK_ARRAYS["block_ids"][0], block_id_dtype(version, n_blocks))
        if version < 4:
            del tables["block_masks"], tables["block_anchors"]
            # int64 block starts until version 2
            tables["block_starts"] = (LEGACY_ARRAYS["block_starts"][0], "int64" if version < 3 else "int32")
        if dense_bounds:
            tables.update(DENSE_ARRAYS)
    return tables

DENSE_VECTORS = "dense.vectors.npy"
DENSE_FAISS = "dense.faiss"
# Files up to this size have their checksum verified every time an index is opened.
VERIFY_AT_OPEN_BYTES = 4 << 20


def segment_dir_name(number: int) -> str:
    return f"seg-{number:06d}"


def tombstone_file_name(generation: int) -> str:
    return f"tombstones-{generation:06d}.npy"


@dataclass
class SegmentInfo:
    name: str
    n_docs: int
    nnz: int
    doc_base: int
    files: dict[str, dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "n_docs": self.n_docs, "nnz": self.nnz, "doc_base": self.doc_base,
                "files": self.files}


@dataclass
class Manifest:
    """Everything a reader needs to know, in one JSON document."""

    dim: int
    vocabulary: dict[str, Any]  # {"size", "sha256", "source"}
    encoder: dict[str, Any] | None  # how queries must be encoded (None: vectors supplied by the user)
    weights: dict[str, Any] = field(default_factory=lambda: {"dtype": "float32", "scale": 1.0})
    block_size: int | None = DEFAULT_BLOCK_SIZE
    reorder: str | None = None  # how documents are ordered inside each segment: None (as added) or "bp"
    provenance: dict[str, Any] | None = None  # what the index was built from (set by batch jobs)
    dense: dict[str, Any] | None = None  # {"model", "dim", "factory"} when segments hold dense vectors
    segments: list[SegmentInfo] = field(default_factory=list)
    generation: int = 0
    next_segment: int = 1
    tombstones: dict[str, Any] | None = None  # {"file", "count", "size", "sha256"}
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # root files (vocab.json)
    created_by: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def n_docs(self) -> int:
        """Documents stored, deleted ones included (the size of the global id space)."""
        return sum(s.n_docs for s in self.segments)

    @property
    def codec_block_size(self) -> int:
        """The block size segments are coded with: the index's, or the default for a version-1 index (which
        had no blocks; its segments are re-coded at open and rewritten by a merge)."""
        return self.block_size or DEFAULT_BLOCK_SIZE

    def tables(self, info: SegmentInfo, dense_bounds: bool = True) -> dict[str, tuple[str, str]]:
        """The arrays of one of this index's segments (see segment_tables)."""
        n_blocks = None if self.block_size is None else -(-info.n_docs // self.block_size)
        return segment_tables(self.format_version, self.dim, n_blocks, dense_bounds)

    @property
    def n_deleted(self) -> int:
        return 0 if self.tombstones is None else int(self.tombstones["count"])

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "generation": self.generation,
            "created_by": self.created_by,
            "dim": self.dim,
            "vocabulary": self.vocabulary,
            "encoder": self.encoder,
            "weights": self.weights,
            "block_size": self.block_size,
            "reorder": self.reorder,
            "provenance": self.provenance,
            "dense": self.dense,
            "n_docs": self.n_docs,
            "n_deleted": self.n_deleted,
            "next_segment": self.next_segment,
            "segments": [s.to_json() for s in self.segments],
            "tombstones": self.tombstones,
            "files": self.files,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: Path) -> Manifest:
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise IndexFormatError(f"{where} is not an lsr index manifest.")
        version = data.get("format_version")
        if version not in READABLE_VERSIONS:
            raise IndexFormatError(
                f"{where} has index format version {version}; this lsr reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}."
            )
        try:
            manifest = cls(
                dim=int(data["dim"]),
                vocabulary=dict(data["vocabulary"]),
                encoder=data["encoder"],
                weights=_weights_of(data["weights"]),
                block_size=data.get("block_size"),
                reorder=data.get("reorder"),
                provenance=data.get("provenance"),
                dense=data.get("dense"),
                segments=[SegmentInfo(**s) for s in data["segments"]],
                generation=int(data["generation"]),
                next_segment=int(data["next_segment"]),
                tombstones=data["tombstones"],
                files=dict(data["files"]),
                created_by=str(data.get("created_by", "")),
                format_version=version,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexFormatError(f"{where} is missing or has a malformed field: {exc}.") from None
        if manifest.n_docs != data.get("n_docs"):
            raise IndexFormatError(f"{where}: n_docs {data.get('n_docs')} disagrees with its segments.")
        base = 0
        for seg in manifest.segments:
            if seg.doc_base != base:
                raise IndexFormatError(f"{where}: segment {seg.name} starts at {seg.doc_base}, expected {base}.")
            base += seg.n_docs
        return manifest


def _weights_of(record: dict[str, Any]) -> dict[str, Any]:
    dtype = record["dtype"]
    if dtype not in ("float32", "uint8", "uint16"):
        raise ValueError(f"unknown weight dtype {dtype!r}")
    scale = 1.0 if record.get("scale") is None else float(record["scale"])
    if not scale > 0:
        raise ValueError(f"weight scale must be > 0, got {scale}")
    if record.get("bound") is not None:  # the encoder's proven largest weight the scale came from
        return {"dtype": dtype, "scale": scale, "bound": float(record["bound"])}
    return {"dtype": dtype, "scale": scale}


def read_manifest(index_dir: str | os.PathLike[str]) -> Manifest:
    path = Path(index_dir) / MANIFEST
    if not Path(index_dir).is_dir():
        aside = sorted(Path(index_dir).parent.glob(f".{Path(index_dir).name}.old-*"))
        if aside:  # an --overwrite was interrupted between moving the old index aside and the new one in
            raise IndexNotFoundError(f"no index at {index_dir}; an interrupted rebuild left the previous one at "
                                     f"{aside[-1]}: rename it back, or rebuild.")
        raise IndexNotFoundError(f"no index at {index_dir}: not a directory.")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise IndexNotFoundError(f"no index at {index_dir}: {MANIFEST} is missing.") from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise IndexFormatError(f"{path} is corrupt (not valid JSON: {exc}).") from None
    if isinstance(data, dict) and "checksum" in data:
        recorded = data.pop("checksum")
        if recorded != _manifest_checksum(data):
            raise IndexFormatError(f"{path} is corrupt (its checksum does not match its content).")
    return Manifest.from_json(data, path)


def _manifest_checksum(data: dict[str, Any]) -> str:
    # over a canonical serialisation, so the manifest's own layout does not matter
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


def write_manifest(index_dir: Path, manifest: Manifest) -> None:
    """Atomically replace the manifest: the commit point of every write. The manifest carries a checksum of
    its own content (manifests written before it had one are read without)."""
    data = manifest.to_json()
    data["checksum"] = _manifest_checksum(data)
    write_bytes_atomic(index_dir / MANIFEST, orjson.dumps(data, option=orjson.OPT_INDENT_2))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


@contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """A binary file to stream into that appears at ``path`` only when the block ends without an error
    (written beside it under a per-process name, fsynced, renamed); on an error nothing is left behind."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    """Size and checksum of a file just written, for the manifest."""
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def verify_file(path: Path, record: dict[str, Any], full: bool = False) -> None:
    """Raise IndexFormatError if ``path`` is missing or differs from its manifest record.

    The size is always checked; the checksum when the file is small or ``full`` is asked for.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise IndexFormatError(f"index file {path} is missing.") from None
    if size != record["size"]:
        raise IndexFormatError(f"index file {path} has {size} bytes, the manifest says {record['size']}.")
    if (full or size <= VERIFY_AT_OPEN_BYTES) and sha256_file(path) != record["sha256"]:
        raise IndexFormatError(f"index file {path} is corrupt (checksum mismatch).")


class WriterLock:
    """One writer per index: an O_EXCL lock file holding the writer's pid; a dead pid's lock is stale.
    A held lock is waited for up to ``wait_s`` seconds. Released explicitly (or moved with its folder)."""

    def __init__(self, index_dir: Path, wait_s: float = 0.0, name: str = LOCK):
        self.path = index_dir / name
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if _lock_is_stale(self.path):
                    self.path.unlink(missing_ok=True)
                    continue
                if time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                holder = "writer" if name == LOCK else "merger"
                raise IndexLockedError(
                    f"{index_dir} is locked by another {holder} ({self.path}); wait for it or remove the lock if "
                    "it died."
                ) from None
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            self.held = True
            return

    def moved_to(self, index_dir: Path) -> None:
        """The folder holding the lock was renamed (a new index published): the lock went with it."""
        self.path = index_dir / LOCK

    def release(self) -> None:
        if self.held:
            self.held = False
            self.path.unlink(missing_ok=True)


# A lock file is created empty and then gets its pid: one read between the two sees no pid. Only a lock that
# stays without one this long belongs to a process that died in between.
EMPTY_LOCK_GRACE_S = 10.0


def _lock_is_stale(lock: Path) -> bool:
    try:
        text = lock.read_text().strip()
        if not text:
            return time.time() - lock.stat().st_mtime > EMPTY_LOCK_GRACE_S
        pid = int(text)
    except FileNotFoundError:
        return False  # released meanwhile: try again to take it
    except (OSError, ValueError):
        return True
    return not pid_alive(pid)


def pid_alive(pid: int) -> bool:
    """A running process has this pid (a zombie -- killed, not yet reaped -- counts as dead: it will never
    release a lock or finish a file)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def merging_dir_owner_alive(name: str) -> bool:
    """A ``.merging-<pid>-…`` directory belongs to a live merger, so writers must not remove it."""
    try:
        pid = int(name[len(MERGING_PREFIX):].split("-", 1)[0])
    except ValueError:
        return False
    return pid_alive(pid)


def remove_garbage(index_dir: Path, manifest: Manifest) -> None:
    """Delete files and segment directories that the current manifest does not name (a merge in progress in
    a live process is left alone)."""
    keep = {MANIFEST, LOCK, *manifest.files, *(s.name for s in manifest.segments)}
    if manifest.tombstones is not None:
        keep.add(manifest.tombstones["file"])
    for entry in index_dir.iterdir():
        if entry.name in keep or (entry.name.startswith(MERGING_PREFIX) and merging_dir_owner_alive(entry.name)):
            continue
        if entry.name == MERGE_LOCK and not _lock_is_stale(entry):
            continue
        log.debug("removing unreferenced %s", entry)
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
