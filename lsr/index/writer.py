"""Writing an index: buffered documents become immutable segments; a commit publishes them atomically.

A new index is built in a hidden sibling directory and renamed into place at its first commit, so a
failed or interrupted build leaves nothing at the target path. An existing index gets new segment
directories and a new manifest; everything the manifest does not name is garbage and is removed when the
next writer opens the index.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from lsr import __version__
from lsr.errors import IndexFormatError, InvalidInputError, VocabularyMismatchError
from lsr.index import format as fmt
from lsr.index.merge import DEFAULT_POLICY, MergePolicy, maybe_merge
from lsr.index.reader import open_index
from lsr.index.segment_files import SegmentBuilder, save_array
from lsr.index.vocabulary import Vocabulary
from lsr.kernels import WEIGHT_DTYPES, quantize
from lsr.types import SparseBatch

__all__ = ["IndexWriter"]

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_DOCS = 1_000_000
# Buffered postings that make a segment (about 16 bytes each while buffered and inverted): the writer's memory
# stays bounded whatever the number of documents; the merge policy then merges these runs, streamed.
DEFAULT_FLUSH_POSTINGS = 16_000_000


class IndexWriter:
    """Adds and deletes documents; nothing is visible to readers until :meth:`commit`.

    Use as a context manager: leaving the block commits, an exception discards everything uncommitted
    (and, for a new index, the whole directory)::

        with IndexWriter.create("my_index", vocabulary, encoder_config) as writer:
            writer.add(["d1", "d2"], vectors)
    """

    def __init__(self, path: Path, work_dir: Path, manifest: fmt.Manifest, is_new: bool,
                 segment_docs: int = DEFAULT_SEGMENT_DOCS, lock_wait_s: float = 0.0,
                 dense_builder: Callable[[np.ndarray], bytes] | None = None,
                 flush_postings: int = DEFAULT_FLUSH_POSTINGS, merge_policy: MergePolicy | None = DEFAULT_POLICY):
        self.path = path
        self._work_dir = work_dir
        self._manifest = manifest
        self._is_new = is_new
        self._segment_docs = segment_docs
        self._pending_ids: list[str] = []
        self._pending_vectors: list[SparseBatch] = []
        self._pending_dense: list[np.ndarray] = []
        self._dense_builder = dense_builder
        self._pending_count = 0
        self._pending_postings = 0
        self._flush_postings = flush_postings
        self._merge_policy = merge_policy
        self._new_segments: list[fmt.SegmentInfo] = []
        self._deleted: set[int] = set()
        self._id_lookup: dict[str, int] = {}
        self._lock = fmt.WriterLock(work_dir, lock_wait_s)
        self._closed = False
        self._dirty = is_new  # a new index must be committed even before anything is added
        if not is_new:
            try:
                # re-read under the lock: another writer may have committed since the caller read it
                self._manifest = manifest = fmt.read_manifest(path)
                existing = open_index(path)
                self._deleted = set(existing.deleted_ids.tolist())
                self._id_lookup = dict(existing._id_lookup)
                fmt.remove_garbage(path, manifest)
            except BaseException:
                self._lock.release()
                raise

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(cls, path: str | os.PathLike[str], vocabulary: Vocabulary, encoder: dict[str, Any] | None,
               overwrite: bool = False, segment_docs: int = DEFAULT_SEGMENT_DOCS, weight_dtype: str = "float32",
               scale: float | None = None, block_size: int = fmt.DEFAULT_BLOCK_SIZE,
               reorder: str | None = None, provenance: dict[str, Any] | None = None,
               dense: dict[str, Any] | None = None,
               dense_builder: Callable[[np.ndarray], bytes] | None = None,
               flush_postings: int = DEFAULT_FLUSH_POSTINGS,
               merge_policy: MergePolicy | None = DEFAULT_POLICY,
               weight_bound: float | None = None) -> IndexWriter:
        """Start a new index at ``path`` (which must not exist unless ``overwrite``).

        ``weight_dtype`` ``uint8``/``uint16`` stores ``round(weight * scale)``; without a ``scale`` the
        first segment's largest weight is mapped to the type's maximum (later, larger weights are clipped).
        ``weight_bound``, the encoder's proven largest weight the scale was chosen from (see
        :mod:`lsr.index.weight_policy`), is recorded in the manifest.
        ``block_size`` documents share one block maximum per term (the unit of block-max pruning).
        ``reorder="bp"`` orders each segment's documents by graph bisection so that neighbours share terms,
        which tightens block maxima (slower builds, faster block-max search on unclustered collections).
        ``dense`` (``{"model", "dim", "factory"}``) gives every document a dense vector too, stored per
        segment with the search structure ``dense_builder`` makes of them (see :mod:`lsr.dense`).
        """
        path = Path(path)
        if weight_dtype not in WEIGHT_DTYPES:
            raise InvalidInputError(f"weight dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {weight_dtype!r}.")
        if scale is not None and not scale > 0:
            raise InvalidInputError(f"quantisation scale must be > 0, got {scale}.")
        if weight_bound is not None and not weight_bound > 0:
            raise InvalidInputError(f"weight_bound must be > 0, got {weight_bound}.")
        if not isinstance(block_size, int) or not 1 <= block_size <= 4096:
            raise InvalidInputError(f"block_size must be an integer in [1, 4096], got {block_size!r}.")
        if reorder not in (None, "bp"):
            raise InvalidInputError(f"reorder must be None or 'bp', got {reorder!r}.")
        if (dense is None) != (dense_builder is None):
            raise InvalidInputError("a dense index needs both its description and a dense_builder.")
        if path.exists() and not overwrite:
            raise InvalidInputError(f"{path} already exists; pass overwrite=True (CLI: --overwrite) to replace it.")
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_work(path)
        work_dir = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        work_dir.mkdir()
        try:
            vocab_file = work_dir / fmt.VOCAB
            vocabulary.write(vocab_file)
            manifest = fmt.Manifest(
                dim=vocabulary.size,
                vocabulary=vocabulary.identity(),
                encoder=encoder,
                files={fmt.VOCAB: fmt.file_record(vocab_file)},
                created_by=f"lsr {__version__}",
                weights={"dtype": weight_dtype,
                         "scale": 1.0 if weight_dtype == "float32" else (None if scale is None else float(scale)),
                         **({} if weight_bound is None else {"bound": float(weight_bound)})},
                block_size=block_size,
                reorder=reorder,
                provenance=provenance,
                dense=dense,
            )
            return cls(path, work_dir, manifest, is_new=True, segment_docs=segment_docs, dense_builder=dense_builder,
                       flush_postings=flush_postings, merge_policy=merge_policy)
        except BaseException:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise

    @classmethod
    def open(cls, path: str | os.PathLike[str], segment_docs: int = DEFAULT_SEGMENT_DOCS,
             lock_wait_s: float = 0.0, dense_builder: Callable[[np.ndarray], bytes] | None = None,
             flush_postings: int = DEFAULT_FLUSH_POSTINGS,
             merge_policy: MergePolicy | None = DEFAULT_POLICY) -> IndexWriter:
        """Append to (or delete from) an existing index; another writer's lock is waited for up to
        ``lock_wait_s`` seconds."""
        path = Path(path)
        manifest = fmt.read_manifest(path)
        if manifest.format_version != fmt.FORMAT_VERSION:
            raise IndexFormatError(
                f"{path} has index format version {manifest.format_version}, which this lsr reads but does not "
                f"extend; upgrade it with `lsr optimize {path}` (or rebuild it) to add documents."
            )
        return cls(path, path, manifest, is_new=False, segment_docs=segment_docs, lock_wait_s=lock_wait_s,
                   dense_builder=dense_builder, flush_postings=flush_postings, merge_policy=merge_policy)

    @property
    def dim(self) -> int:
        return self._manifest.dim

    @property
    def vocabulary_hash(self) -> str:
        return self._manifest.vocabulary["sha256"]

    # ------------------------------------------------------------------ changes
    def add(self, ids: Sequence[str], vectors: SparseBatch, dense: np.ndarray | None = None) -> None:
        """Buffer documents. An id that already exists replaces the earlier document. An index with a dense
        part needs ``dense``, one float32 row per document."""
        self._check_open()
        spec = self._manifest.dense
        if spec is not None:
            if dense is None or self._dense_builder is None:
                raise InvalidInputError("this index has a dense part: add documents with their dense vectors "
                                        "(and open the writer with a dense_builder).")
            dense = np.ascontiguousarray(dense, dtype=np.float32)
            if dense.shape != (vectors.n, int(spec["dim"])):
                raise InvalidInputError(f"dense vectors must have shape ({vectors.n}, {spec['dim']}), got "
                                        f"{dense.shape}.")
            if not np.all(np.isfinite(dense)):
                raise InvalidInputError("dense vectors must be finite.")
        elif dense is not None:
            raise InvalidInputError("this index has no dense part; build it with a dense model to add vectors.")
        if len(ids) != vectors.n:
            raise InvalidInputError(f"got {len(ids)} ids for {vectors.n} vectors.")
        if vectors.dim != self.dim:
            raise VocabularyMismatchError(
                f"vectors have dimension {vectors.dim} but the index vocabulary has {self.dim} terms."
            )
        vectors.validate()
        for ext in ids:
            if not isinstance(ext, str) or not ext:
                raise InvalidInputError(f"document ids must be non-empty strings, got {ext!r}.")
        next_id = self._manifest.n_docs + sum(s.n_docs for s in self._new_segments) + self._pending_count
        for offset, ext in enumerate(ids):
            previous = self._id_lookup.get(ext)
            if previous is not None:
                self._deleted.add(previous)
            self._id_lookup[ext] = next_id + offset
        self._pending_ids.extend(ids)
        self._pending_vectors.append(vectors)
        if dense is not None:
            self._pending_dense.append(dense)
        self._pending_count += vectors.n
        self._dirty = True
        self._pending_postings += vectors.nnz
        if self._pending_count >= self._segment_docs or self._pending_postings >= self._flush_postings:
            self._flush()

    def adopt(self, part: str | os.PathLike[str]) -> int:
        """Add every segment of ``part``, a complete index written elsewhere (a distributed worker's output),
        by moving its segment directories in; returns the number of documents adopted.

        The part must share this index's vocabulary and storage settings (weight type and scale, block size,
        reordering, dense part). Its documents take the next global ids in the part's order, and an external
        id seen before replaces the earlier document, as :meth:`add` does. Nothing is visible until
        :meth:`commit`; a part that is never adopted is simply never published.
        """
        self._check_open()
        self._flush()  # documents added earlier keep the lower ids
        part = Path(part)
        other = open_index(part)
        theirs, ours = other.manifest, self._manifest
        if theirs.vocabulary["sha256"] != ours.vocabulary["sha256"]:
            raise VocabularyMismatchError(f"{part} was written over another vocabulary than {self.path}.")
        if ours.weights["scale"] is None and not ours.segments and not self._new_segments:
            ours.weights["scale"] = theirs.weights["scale"]  # the first part fixes a scale not given up front
        for key in ("weights", "block_size", "reorder", "dense"):
            if getattr(theirs, key) != getattr(ours, key):
                raise InvalidInputError(f"{part} has {key} {getattr(theirs, key)!r}, but {self.path} has "
                                        f"{getattr(ours, key)!r}; write every part with the same settings.")
        base = ours.n_docs + sum(s.n_docs for s in self._new_segments)
        adopted = 0
        for seg in other.segments:
            name = fmt.segment_dir_name(ours.next_segment)
            ours.next_segment += 1
            _move_dir(part / seg.info.name, self._work_dir / name)
            for local in range(seg.info.n_docs):
                previous = self._id_lookup.get(ext := seg.external_id(local))
                if previous is not None:
                    self._deleted.add(previous)
                self._id_lookup[ext] = base + local
            dead = other.deleted_mask(seg)
            if dead is not None:  # the part's own replaced documents stay deleted
                self._deleted.update((base + np.flatnonzero(dead)).tolist())
            self._new_segments.append(fmt.SegmentInfo(name=name, n_docs=seg.info.n_docs, nnz=seg.info.nnz,
                                                      doc_base=base, files=seg.info.files))
            base += seg.info.n_docs
            adopted += seg.info.n_docs
        fmt.fsync_dir(self._work_dir)
        self._dirty = self._dirty or adopted > 0
        return adopted

    def delete(self, ids: Sequence[str]) -> int:
        """Tombstone documents by external id; returns how many existed."""
        self._check_open()
        found = 0
        for ext in ids:
            internal = self._id_lookup.pop(ext, None)
            if internal is not None:
                self._deleted.add(internal)
                found += 1
        self._dirty = self._dirty or found > 0
        return found

    # ------------------------------------------------------------------ commit
    def commit(self) -> fmt.Manifest:
        """Publish everything added and deleted so far as one new generation."""
        self._check_open()
        self._flush()
        manifest = self._manifest
        manifest.segments = manifest.segments + self._new_segments
        if manifest.n_docs == 0:
            raise InvalidInputError("nothing to index: no documents were added.")
        manifest.generation += 1
        if self._is_new and manifest.provenance and manifest.provenance.get("corpus"):
            # the build's corpus documents hold the global ids below this bound (merges keep it true)
            manifest.provenance["corpus_id_bound"] = manifest.n_docs
        if self._deleted or manifest.tombstones is not None:
            manifest.tombstones = self._write_tombstones(manifest.generation)
        fmt.write_manifest(self._work_dir, manifest)
        self._new_segments = []
        self._dirty = False
        if self._is_new:
            self._publish_new_index()
        log.info("committed %s: generation %d, %d documents (%d deleted), %d segments", self.path,
                 manifest.generation, manifest.n_docs, manifest.n_deleted, len(manifest.segments))
        if self._merge_policy is not None and maybe_merge(self.path, self._merge_policy, hold_lock=True):
            manifest = self._reload()
        return manifest

    def _reload(self) -> fmt.Manifest:
        """Merges renumbered documents: take the committed state again."""
        self._manifest = fmt.read_manifest(self.path)
        existing = open_index(self.path)
        self._deleted = set(existing.deleted_ids.tolist())
        self._id_lookup = dict(existing._id_lookup)
        return self._manifest

    def _publish_new_index(self) -> None:
        # The work dir holds a complete index; swap it in (our lock file moves with it). With --overwrite the
        # old index is moved aside first and removed only once the new one is in place.
        old = None
        if self.path.exists():
            old = self.path.parent / f".{self.path.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.path, old)
        os.replace(self._work_dir, self.path)
        fmt.fsync_dir(self.path.parent)
        self._lock.moved_to(self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self._work_dir = self.path
        self._is_new = False

    def close(self, commit: bool = False) -> None:
        if self._closed:
            return
        try:
            if commit and self._dirty:
                self.commit()
        finally:
            self._closed = True
            # Cleanup is best effort: whatever it leaves (a temporary file, a lock whose process is gone) is
            # garbage the next writer removes, and failing here would hide whether the commit happened.
            try:
                if self._is_new:
                    shutil.rmtree(self._work_dir, ignore_errors=True)
                else:
                    fmt.remove_garbage(self.path, fmt.read_manifest(self.path))
            except OSError as exc:
                log.warning("could not remove temporary files from %s: %s", self.path, exc)
            try:
                self._lock.release()
            except OSError as exc:
                log.warning("could not remove the write lock %s: %s", self._lock.path, exc)

    def __enter__(self) -> IndexWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(commit=exc_type is None)

    def _check_open(self) -> None:
        if self._closed:
            raise IndexFormatError("this IndexWriter is closed.")

    # ------------------------------------------------------------------ segment files
    def _flush(self) -> None:
        if not self._pending_count:
            return
        vectors = SparseBatch.concat(self._pending_vectors)
        dense = np.concatenate(self._pending_dense) if self._pending_dense else None
        info = self._write_segment(self._pending_ids, vectors, dense)
        self._new_segments.append(info)
        self._pending_ids, self._pending_vectors, self._pending_dense, self._pending_count = [], [], [], 0
        self._pending_postings = 0

    def _write_segment(self, ids: list[str], vectors: SparseBatch, dense: np.ndarray | None) -> fmt.SegmentInfo:
        number = self._manifest.next_segment
        self._manifest.next_segment += 1
        name = fmt.segment_dir_name(number)
        tmp_dir = self._work_dir / f"{name}.tmp"
        shutil.rmtree(tmp_dir, ignore_errors=True)
        tmp_dir.mkdir()
        base = self._manifest.n_docs + sum(s.n_docs for s in self._new_segments)
        if self._manifest.reorder == "bp":
            from lsr.index.reorder import bp_order

            order = bp_order(vectors.indptr, vectors.indices, vectors.dim)
            ids, vectors = [ids[i] for i in order], vectors.take(order)
            dense = None if dense is None else dense[order]
            self._renumber(base, order)
        forward = self._stored_weights(vectors)
        inverted = forward.to_scipy().tocsc()  # term-major; the builder codes the doc ids and block maxima
        inverted.sort_indices()
        spec = self._manifest.dense
        builder = SegmentBuilder(tmp_dir, self.dim, vectors.n, self._manifest.weights["dtype"],
                                 self._manifest.block_size, None if spec is None else int(spec["dim"]))
        try:
            builder.add_documents([ext.encode("utf-8") for ext in ids], np.diff(forward.indptr), forward.indices,
                                  forward.values, dense)
            builder.add_postings(0, self.dim, np.diff(inverted.indptr), inverted.indices, inverted.data)
            files, nnz = builder.finish(None if dense is None else self._dense_builder(dense))
        except BaseException:
            builder.abandon()
            raise
        fmt.fsync_dir(tmp_dir)
        os.replace(tmp_dir, self._work_dir / name)
        fmt.fsync_dir(self._work_dir)
        return fmt.SegmentInfo(name=name, n_docs=vectors.n, nnz=nnz, doc_base=base, files=files)

    def _renumber(self, base: int, order: np.ndarray) -> None:
        """Internal ids of the segment being written follow its new document order."""
        new_position = np.empty(len(order), np.int64)
        new_position[order] = np.arange(len(order))

        def moved(internal: int) -> int:
            return base + int(new_position[internal - base]) if base <= internal < base + len(order) else internal

        self._id_lookup = {ext: moved(i) for ext, i in self._id_lookup.items()}
        self._deleted = {moved(i) for i in self._deleted}

    def _stored_weights(self, vectors: SparseBatch) -> _StoredVectors:
        """The vectors as stored: quantised to the index's weight type (entries that round to 0 dropped)."""
        weights = self._manifest.weights
        if weights["dtype"] == "float32":
            return _StoredVectors(vectors.indptr, vectors.indices, vectors.values, vectors.n, vectors.dim)
        top = float(np.iinfo(weights["dtype"]).max)
        if weights["scale"] is None:
            largest = float(vectors.values.max()) if vectors.nnz else 1.0
            weights["scale"] = top / largest
            log.info("quantising to %s with scale %.6g (largest weight %.4g -> %d)", weights["dtype"],
                     weights["scale"], largest, int(top))
        clipped = int(np.count_nonzero(vectors.values * weights["scale"] > top + 0.5))
        if clipped:
            log.warning("%d weights exceed the %s range at scale %.6g and are clipped", clipped, weights["dtype"],
                        weights["scale"])
        stored = quantize(vectors.values, weights["dtype"], weights["scale"])
        keep = stored > 0
        rows = np.repeat(np.arange(vectors.n), vectors.row_nnz())[keep]
        indptr = np.zeros(vectors.n + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=vectors.n), out=indptr[1:])
        return _StoredVectors(indptr, vectors.indices[keep], stored[keep], vectors.n, vectors.dim)

    def _write_tombstones(self, generation: int) -> dict[str, Any]:
        name = fmt.tombstone_file_name(generation)
        ids = np.array(sorted(self._deleted), dtype=np.int64)
        record = save_array(self._work_dir / name, ids)
        fmt.fsync_dir(self._work_dir)
        return {"file": name, "count": len(ids), **record}


class _StoredVectors(NamedTuple):
    """Document vectors in CSR with stored (possibly integer) weights."""

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    n: int
    dim: int

    def to_scipy(self):  # noqa: ANN201
        return sp.csr_matrix((self.values, self.indices, self.indptr), shape=(self.n, self.dim))


def _move_dir(src: Path, dst: Path) -> None:
    """Rename a complete segment directory into place; across file systems copy it under a temporary name
    first, so that ``dst`` never exists half-written."""
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        for entry in tmp.iterdir():
            with open(entry, "rb") as fh:
                os.fsync(fh.fileno())
        fmt.fsync_dir(tmp)
        os.replace(tmp, dst)


def _remove_abandoned_work(path: Path) -> None:
    """Hidden build folders of ``path`` left by killed builds (their writer's lock is stale or absent).
    A previous index moved aside by an interrupted ``--overwrite`` (``.name.old-*``) is kept: it may be the
    only copy of the user's data; the reader's error points at it."""
    for entry in path.parent.glob(f".{path.name}.tmp-*"):
        if not entry.is_dir():
            continue
        lock = entry / fmt.LOCK
        if lock.exists() and not fmt._lock_is_stale(lock):
            continue  # another build is running right now
        log.info("removing %s, left by an interrupted build", entry)
        shutil.rmtree(entry, ignore_errors=True)
