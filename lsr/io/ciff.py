"""CIFF (Common Index File Format) interchange: the one place lsr reads and writes CIFF.

CIFF is a stream of length-prefixed protobuf messages: one ``Header``, ``num_postings_lists``
``PostingsList`` messages (a term, then doc-id gaps with an integer ``tf``), then ``num_docs``
``DocRecord`` messages whose position is the CIFF doc id and whose ``collection_docid`` is the external id.
Learned sparse indexes carry their quantised impacts in ``tf`` (Anserini, PISA, BMP all read it that way).
Messages are read and written with the ``ciff-toolkit`` package (optional extra ``lsr-search[ciff]``); lsr
holds no protobuf code of its own.

Export (:func:`export_ciff`): live documents only, renumbered densely in index order; one posting list per
term with at least one live posting (PISA's and BMP's converters expect non-empty lists, and an empty
list carries nothing a reader could use); impacts are the stored integers of a uint8/uint16 index, or a
float32 index's weights quantised with ``scale`` (``rint(w * scale)``, at least 1 so that no posting
vanishes). ``doclength`` is the sum of a document's impacts. CIFF has no scale field, so lsr records its
scale as JSON in the header's ``description``.

Import (:func:`import_ciff`): an index of integer impacts (uint8 when all fit, else uint16) with the scale
lsr recorded (1.0 for CIFF from other tools), the posting-list terms as vocabulary, and no encoder unless a
model over the same tokens is named.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from tqdm import tqdm

from lsr.errors import InvalidInputError, MissingDependencyError
from lsr.index.format import fsync_dir

__all__ = ["export_ciff", "import_ciff", "CIFF_VERSION", "DESCRIPTION_KEY"]

log = logging.getLogger(__name__)

CIFF_VERSION = 1  # the only version of the CIFF spec; 0 is what a writer that never sets it leaves
SUPPORTED_VERSIONS = (0, 1)
DESCRIPTION_KEY = "lsr"  # description = {"lsr": {"scale": ..., "weights": ..., "doclength": "sum of impacts"}}
INT32_MAX = 2**31 - 1
_DOC_CHUNK = 65_536  # documents per step of the passes over forward vectors
_POSTING_CHUNK = 1 << 22  # postings per step of the import's counting sort


def _toolkit():  # noqa: ANN202 - the ciff_toolkit modules
    try:
        from ciff_toolkit import ciff_pb2, read, write
    except ImportError:
        raise MissingDependencyError("CIFF needs ciff-toolkit: pip install 'lsr-search[ciff]'.") from None
    return ciff_pb2, read, write


# ---------------------------------------------------------------------------------------------- export
def export_ciff(index_path: str | os.PathLike[str], out_path: str | os.PathLike[str], scale: float | None = None,
                show_progress: bool = True) -> dict[str, Any]:
    """Write the live documents of the index at ``index_path`` as CIFF to ``out_path`` (atomically: a hidden
    temporary file renamed into place). Returns the header's fields. ``scale`` quantises a float32 index
    (default: the largest weight maps to 255); an integer index exports its stored impacts and its scale."""
    from lsr.index import open_index

    pb, _, write = _toolkit()
    index = open_index(index_path)
    out_path = Path(out_path)
    dtype = index.manifest.weights["dtype"]
    if dtype != "float32":
        if scale is not None and float(scale) != float(index.manifest.weights["scale"]):
            raise InvalidInputError(f"{index_path} stores {dtype} impacts at scale {index.manifest.weights['scale']};"
                                    f" it exports them as they are and cannot take --scale {scale}.")
        scale = float(index.manifest.weights["scale"])
    else:
        largest = max((float(np.max(s.fwd_values)) for s in index.segments if s.info.nnz), default=1.0)
        if scale is None:
            scale = 255.0 / largest
        elif not scale > 0:
            raise InvalidInputError(f"--scale must be > 0, got {scale}.")
        elif largest * scale > INT32_MAX:
            raise InvalidInputError(f"--scale {scale:g} maps weight {largest:g} past CIFF's 32-bit impacts.")
    scale = float(scale)

    def impacts(values: np.ndarray) -> np.ndarray:
        """Stored weights -> CIFF integer impacts (int64)."""
        if dtype != "float32":
            return np.asarray(values, np.int64)
        return np.maximum(np.rint(np.asarray(values, np.float64) * scale), 1).astype(np.int64)

    # Pass 1 over the forward vectors: dense new ids for live documents, document frequencies and lengths
    # (the header comes first in the file and needs the counts). Memory: O(documents + vocabulary).
    new_id = np.full(index.n_docs, -1, np.int64)
    df = np.zeros(index.dim, np.int64)
    doclength = np.zeros(index.n_live, np.int64)
    n_live = 0
    for seg in index.segments:
        dead = index.deleted_mask(seg)
        for start in range(0, seg.info.n_docs, _DOC_CHUNK):
            stop = min(start + _DOC_CHUNK, seg.info.n_docs)
            live = np.ones(stop - start, bool) if dead is None else dead[start:stop] == 0
            ids = np.flatnonzero(live)
            new_id[seg.info.doc_base + start + ids] = n_live + np.arange(len(ids))
            indptr = np.asarray(seg.fwd_indptr[start : stop + 1])
            lengths = np.diff(indptr)
            rows = np.repeat(np.arange(stop - start), lengths)
            keep = live[rows]
            terms = np.asarray(seg.fwd_indices[indptr[0] : indptr[-1]])[keep]
            values = impacts(seg.fwd_values[indptr[0] : indptr[-1]])[keep]
            df += np.bincount(terms, minlength=index.dim)
            doclength[n_live : n_live + len(ids)] = np.bincount(rows[keep], weights=values,
                                                                minlength=stop - start)[ids].astype(np.int64)
            n_live += len(ids)
    if n_live > INT32_MAX or (doclength.size and doclength.max() > INT32_MAX):
        raise InvalidInputError(f"{index_path} is too large for CIFF's 32-bit document ids and lengths.")
    vocabulary = index.vocabulary
    header = pb.Header(
        version=CIFF_VERSION, num_postings_lists=int(np.count_nonzero(df)), num_docs=n_live,
        total_postings_lists=int(np.count_nonzero(df)), total_docs=n_live,
        total_terms_in_collection=int(doclength.sum()),
        average_doclength=float(doclength.sum() / n_live) if n_live else 0.0,
        description=orjson.dumps({DESCRIPTION_KEY: {
            "scale": scale, "weights": dtype, "doclength": "sum of impacts", "index": str(Path(index_path).name),
            "vocabulary": index.manifest.vocabulary.get("source")}}).decode(),
    )

    def postings_lists() -> Iterator[Any]:
        # One term at a time across segments: postings of a term are ascending within a segment and
        # segments have ascending doc bases, so the concatenation is in doc order (and so is new_id).
        for term in tqdm(np.flatnonzero(df).tolist(), disable=not show_progress, desc="exporting CIFF",
                         unit="term"):
            docs, tfs = [], []
            for seg in index.segments:
                lo, hi = int(seg.postings.offsets[term]), int(seg.postings.offsets[term + 1])
                if lo == hi:
                    continue
                ids = new_id[seg.info.doc_base + seg.postings.doc_ids(term, term + 1).astype(np.int64)]
                keep = ids >= 0
                docs.append(ids[keep])
                tfs.append(impacts(seg.postings.weights[lo:hi])[keep])
            doc_ids, values = np.concatenate(docs), np.concatenate(tfs)
            gaps = np.diff(doc_ids, prepend=0)
            pl = pb.PostingsList(term=vocabulary[term], df=len(doc_ids), cf=int(values.sum()))
            pl.postings.extend(pb.Posting(docid=g, tf=t) for g, t in zip(gaps.tolist(), values.tolist(),
                                                                          strict=True))
            yield pl

    def doc_records() -> Iterator[Any]:
        number = 0
        for seg in index.segments:
            dead = index.deleted_mask(seg)
            for local in range(seg.info.n_docs):
                if dead is None or not dead[local]:
                    yield pb.DocRecord(docid=number, collection_docid=seg.external_id(local),
                                       doclength=int(doclength[number]))
                    number += 1

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.parent / f".{out_path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as fh:
            sink = gzip.GzipFile(fileobj=fh, mode="wb") if out_path.suffix == ".gz" else fh
            writer = write.CiffWriter(sink)
            writer.write_header(header)
            writer.write_postings_lists(postings_lists())
            writer.write_documents(doc_records())
            writer.flush()
            if sink is not fh:
                sink.close()  # writes the gzip trailer; fh stays open
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out_path)
        fsync_dir(out_path.parent)  # the rename itself survives a power loss
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("exported %d documents, %d terms from %s to %s (scale %.6g)", n_live, header.num_postings_lists,
             index_path, out_path, scale)
    return {"num_docs": n_live, "num_postings_lists": header.num_postings_lists,
            "total_terms_in_collection": header.total_terms_in_collection, "scale": scale, "weights": dtype}


# ---------------------------------------------------------------------------------------------- import
def _strict_reader(read):  # noqa: ANN001, ANN202 - ciff_toolkit.read
    class StrictCiffReader(read.CiffReader):
        """ciff_toolkit's reader, refusing a message cut short (it would otherwise parse a prefix)."""

        def read_serialized(self) -> bytes:
            size = self.read_varint()
            data = self.fp.read(size)
            if len(data) != size:
                raise EOFError("truncated message")
            return data

        def read_varint(self) -> int:
            if not self.fp.peek(1):
                raise EOFError("unexpected end of file")
            return super().read_varint()

        def at_end(self) -> bool:
            return not self.fp.peek(1)

    return StrictCiffReader


def import_ciff(ciff_path: str | os.PathLike[str], index_path: str | os.PathLike[str], overwrite: bool = False,
                show_progress: bool = True, model: str | None = None, block_size: int | None = None,
                segment_docs: int | None = None) -> dict[str, Any]:
    """Build an lsr index at ``index_path`` from the CIFF file ``ciff_path`` (``.gz`` is read as gzip).

    Nothing appears at ``index_path`` unless the whole file is valid. With ``model`` (a model whose
    vocabulary holds every CIFF term), the index records that model so that text queries work; without,
    it is searched with query vectors over the CIFF terms.
    """
    from lsr.index import IndexWriter, Vocabulary
    from lsr.index import format as fmt
    from lsr.index.writer import DEFAULT_SEGMENT_DOCS
    from lsr.types import SparseBatch

    pb, read, _ = _toolkit()
    from google.protobuf.message import DecodeError
    ciff_path, index_path = Path(ciff_path), Path(index_path)
    if not ciff_path.is_file():
        raise InvalidInputError(f"{ciff_path} is not a file.")
    if index_path.exists() and not overwrite:
        raise InvalidInputError(f"{index_path} already exists; pass overwrite=True (CLI: --overwrite) to replace it.")
    where = str(ciff_path)
    # Postings arrive term by term but the writer takes documents. Bounded memory: stream (doc, term, tf)
    # triples to raw files on disk, then a counting sort by document over memory maps gives each
    # document's terms in ascending term id (terms are numbered in file order), one chunk at a time.
    index_path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{index_path.name}.ciff-", dir=index_path.parent))
    try:
        # gzip seeks backwards by rewinding; a buffer over it keeps the reader's one-varint look-backs cheap
        source = (io.BufferedReader(gzip.open(ciff_path, "rb"), 1 << 16) if ciff_path.suffix == ".gz"
                  else open(ciff_path, "rb"))
        reader = _strict_reader(read)(source)
        with reader:
            try:
                header, terms, n_postings, max_tf = _read_postings(reader, pb, where, scratch, show_progress)
                external_ids = _read_docs(reader, pb, header, where)
                if not reader.at_end():
                    raise InvalidInputError(f"{where}: data after the last DocRecord; not a CIFF file?")
            except (DecodeError, EOFError, IndexError, ValueError, OSError, UnicodeDecodeError) as exc:
                if isinstance(exc, InvalidInputError):
                    raise
                raise InvalidInputError(f"{where}: not a valid CIFF file ({type(exc).__name__}: "
                                        f"{str(exc).splitlines()[0] if str(exc) else 'malformed'}).") from None
        if not external_ids:
            raise InvalidInputError(f"{where}: holds no documents.")
        scale, recorded = _scale_from_description(header.description)
        weight_dtype = "uint8" if max_tf <= 255 else "uint16"
        if max_tf > 65535:
            raise InvalidInputError(f"{where}: impact {max_tf} exceeds lsr's largest integer type (uint16).")
        encoder_config = None
        if model is not None:
            from lsr.encoders import load_encoder

            encoder = load_encoder(model)
            vocabulary, encoder_config = encoder.vocabulary, encoder.config()
            token_ids = vocabulary.token_ids()
            missing = [t for t in terms if t not in token_ids]
            if missing:
                raise InvalidInputError(f"{where}: term {missing[0]!r} (and {len(missing) - 1} more) is not in the "
                                        f"vocabulary of {model}; import without --model.")
            term_map = np.array([token_ids[t] for t in terms], np.int64)
        else:
            vocabulary = Vocabulary.from_tokens(terms, source=f"ciff:{ciff_path.name}")
            term_map = None
        provenance = {"source": "ciff", "file": ciff_path.name, "weights": "integer impacts from CIFF",
                      "scale_recorded": recorded, "ciff_version": int(header.version),
                      "description": header.description[:1000]}
        options = {"block_size": block_size or fmt.DEFAULT_BLOCK_SIZE,
                   "segment_docs": segment_docs or DEFAULT_SEGMENT_DOCS}
        with IndexWriter.create(index_path, vocabulary, encoder_config, overwrite=overwrite, weight_dtype=weight_dtype,
                                scale=scale, provenance=provenance, **options) as writer:
            for ids, (indptr, indices, tfs) in _documents(scratch, n_postings, external_ids, show_progress):
                if term_map is not None:  # model ids are not in CIFF order: sort each row's terms again
                    indices = term_map[indices]
                    rows = np.repeat(np.arange(len(ids)), np.diff(indptr))
                    order = np.lexsort((indices, rows))
                    indices, tfs = indices[order], tfs[order]
                # float32(tf / scale) * scale rounds back to tf exactly (relative error 6e-8, tf <= 65535)
                values = (tfs.astype(np.float64) / scale).astype(np.float32)
                writer.add(ids, SparseBatch(indptr, indices, values, vocabulary.size))
            manifest = writer.commit()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("imported %s into %s: %d documents, %d terms, %s impacts at scale %.6g", ciff_path, index_path,
             manifest.n_docs, len(terms), weight_dtype, scale)
    return {"num_docs": manifest.n_docs, "terms": len(terms), "postings": n_postings, "weights": weight_dtype,
            "scale": scale}


def _read_postings(reader, pb, where: str, scratch: Path, show_progress: bool):  # noqa: ANN001, ANN202
    header = reader.read_header()
    if header.version not in SUPPORTED_VERSIONS:
        raise InvalidInputError(f"{where}: CIFF version {header.version} is not supported (this lsr reads "
                                f"version {CIFF_VERSION}).")
    if header.num_postings_lists < 0 or header.num_docs < 0:
        raise InvalidInputError(f"{where}: header has negative counts; not a CIFF file?")
    n_docs = header.num_docs
    terms: list[str] = []
    seen: set[str] = set()
    n_postings, max_tf = 0, 0
    with open(scratch / "docs.bin", "wb") as f_docs, open(scratch / "terms.bin", "wb") as f_terms, \
            open(scratch / "tfs.bin", "wb") as f_tfs:
        for pl in tqdm(reader.read_postings_lists(), disable=not show_progress, desc="reading CIFF postings",
                       unit="term"):
            if not pl.term or pl.term in seen:
                raise InvalidInputError(f"{where}: posting list {len(terms)} has an empty or repeated term "
                                        f"{pl.term!r}.")
            seen.add(pl.term)
            count = len(pl.postings)
            if count == 0:
                continue  # carries nothing; the term need not be in the vocabulary
            gaps = np.fromiter((p.docid for p in pl.postings), np.int64, count)
            tfs = np.fromiter((p.tf for p in pl.postings), np.int64, count)
            docs = np.cumsum(gaps)
            if gaps[0] < 0 or np.any(gaps[1:] <= 0) or docs[-1] >= n_docs:
                raise InvalidInputError(f"{where}: postings of term {pl.term!r} are not ascending document ids "
                                        f"below num_docs={n_docs}.")
            if tfs.min() < 1:
                raise InvalidInputError(f"{where}: term {pl.term!r} has an impact {int(tfs.min())} < 1.")
            max_tf = max(max_tf, int(tfs.max()))
            f_docs.write(docs.astype(np.int32).tobytes())
            f_terms.write(np.full(count, len(terms), np.int32).tobytes())
            f_tfs.write(np.minimum(tfs, 2**31 - 1).astype(np.int32).tobytes())
            terms.append(pl.term)
            n_postings += count
    if not terms:
        raise InvalidInputError(f"{where}: holds no postings.")
    return header, terms, n_postings, max_tf


def _read_docs(reader, pb, header, where: str) -> list[str]:  # noqa: ANN001
    ids: list[str] = []
    seen: set[str] = set()
    for number, doc in enumerate(reader.read_documents()):
        if doc.docid != number:
            raise InvalidInputError(f"{where}: DocRecord {number} has docid {doc.docid}; CIFF doc ids must be "
                                    f"0..num_docs-1 in order.")
        if not doc.collection_docid:
            raise InvalidInputError(f"{where}: document {number} has an empty collection_docid.")
        if doc.collection_docid in seen:
            raise InvalidInputError(f"{where}: collection_docid {doc.collection_docid!r} occurs twice.")
        seen.add(doc.collection_docid)
        ids.append(doc.collection_docid)
    return ids


def _scale_from_description(description: str) -> tuple[float, bool]:
    """lsr's scale when lsr wrote the file, else 1.0 (impacts are then the weights)."""
    try:
        scale = orjson.loads(description)[DESCRIPTION_KEY]["scale"]
    except (orjson.JSONDecodeError, TypeError, KeyError):
        return 1.0, False
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
        return 1.0, False
    return float(scale), True


def _documents(scratch: Path, n_postings: int, external_ids: list[str], show_progress: bool,
               batch_docs: int = _DOC_CHUNK) -> Iterator[tuple[list[str], tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Counting sort of the term-ordered triples by document (stable, so each row's terms stay ascending),
    then rows in batches of ``batch_docs``."""
    n_docs = len(external_ids)
    docs = np.memmap(scratch / "docs.bin", np.int32, "r", shape=(n_postings,))
    terms = np.memmap(scratch / "terms.bin", np.int32, "r", shape=(n_postings,))
    tfs = np.memmap(scratch / "tfs.bin", np.int32, "r", shape=(n_postings,))
    counts = np.zeros(n_docs, np.int64)
    for lo in range(0, n_postings, _POSTING_CHUNK):
        counts += np.bincount(docs[lo : lo + _POSTING_CHUNK], minlength=n_docs)
    indptr = np.zeros(n_docs + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    fwd_terms = np.memmap(scratch / "fwd_terms.bin", np.int32, "w+", shape=(max(n_postings, 1),))
    fwd_tfs = np.memmap(scratch / "fwd_tfs.bin", np.int32, "w+", shape=(max(n_postings, 1),))
    fill = indptr[:-1].copy()
    for lo in range(0, n_postings, _POSTING_CHUNK):
        d = np.asarray(docs[lo : lo + _POSTING_CHUNK], np.int64)
        order = np.argsort(d, kind="stable")
        d_sorted = d[order]
        starts = np.flatnonzero(np.r_[True, d_sorted[1:] != d_sorted[:-1]])
        group_sizes = np.diff(np.r_[starts, len(d_sorted)])
        rank = np.arange(len(d_sorted)) - np.repeat(starts, group_sizes)
        positions = fill[d_sorted] + rank
        fwd_terms[positions] = terms[lo : lo + _POSTING_CHUNK][order]
        fwd_tfs[positions] = tfs[lo : lo + _POSTING_CHUNK][order]
        fill[d_sorted[starts]] += group_sizes
    for start in tqdm(range(0, n_docs, batch_docs), disable=not show_progress, desc="writing index",
                      unit="batch"):
        stop = min(start + batch_docs, n_docs)
        lo, hi = indptr[start], indptr[stop]
        yield external_ids[start:stop], (indptr[start : stop + 1] - lo, np.array(fwd_terms[lo:hi], np.int64),
                                         np.array(fwd_tfs[lo:hi], np.int64))
    del fwd_terms, fwd_tfs, docs, terms, tfs
