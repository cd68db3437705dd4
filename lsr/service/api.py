"""The /v1 API: search, encode, documents. Handlers parse, call the library, format; nothing more."""

from __future__ import annotations

import hmac
import time
from typing import Any

import numpy as np
from flask import Blueprint, current_app, g, jsonify, request

from lsr.index import IndexWriter
from lsr.kernels import check_queries
from lsr.search.explain import explain
from lsr.service.errors import ApiError
from lsr.service.requests import parse_documents, parse_encode, parse_json, parse_search
from lsr.service.state import IndexHolder, Snapshot
from lsr.types import SparseBatch

__all__ = ["bp"]

bp = Blueprint("v1", __name__, url_prefix="/v1")


def holder() -> IndexHolder:
    return current_app.extensions["lsr"]


def snapshot() -> Snapshot:
    """One snapshot per request, taken once (a commit during the request is not half-seen)."""
    if "snapshot" not in g:
        g.snapshot = holder().snapshot()
    return g.snapshot


def _check_key(required: bool) -> None:
    key = current_app.config.get("LSR_API_KEY")
    if not required:
        return
    if not key:
        raise ApiError(403, "writes_disabled", "this server has no API key configured, so writes are disabled.")
    given = request.headers.get("X-API-Key") or ""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        given = auth[len("Bearer "):]
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise ApiError(401, "unauthorized", "a valid API key is required (header X-API-Key or Authorization: "
                                            "Bearer).")


@bp.before_request
def _reads_may_need_a_key() -> None:
    if request.method == "GET" or request.endpoint in ("v1.search", "v1.encode"):
        _check_key(current_app.config.get("LSR_READ_KEY_REQUIRED", False))
    g.started = time.perf_counter()


def _deadline(stage: str) -> None:
    limit = current_app.config["LSR_REQUEST_TIMEOUT_S"]
    if time.perf_counter() - g.started > limit:
        raise ApiError(408, "timeout", f"the request took longer than {limit} s (at {stage}); send fewer or "
                                       "shorter queries.")


def _encoder(snap: Snapshot):
    try:
        return snap.retriever.encoder
    except ValueError as exc:  # pre-encoded index without a model
        raise ApiError(400, "no_encoder", str(exc)) from None


def _vectors_from_tokens(snap: Snapshot, vectors: list[dict[str, float]]) -> SparseBatch:
    ids = snap.index.token_ids
    rows = []
    for i, vec in enumerate(vectors):
        unknown = [t for t in vec if t not in ids]
        if unknown:
            raise ApiError(400, "unknown_token", f"vectors[{i}] uses token {unknown[0]!r}, which is not in the "
                                                 "index vocabulary.")
        rows.append({ids[t]: w for t, w in vec.items()})
    # checked in one C pass where built (numpy's validate took ~35 us of a ~1 ms request); the same errors
    return check_queries(SparseBatch.from_dicts(rows, snap.index.dim, validate=False))


def _check_storable(snap: Snapshot, batch: SparseBatch) -> None:
    """A 400 for a document weight an integer-weight index cannot hold: the writer would clip it, and a
    document added through the API is stored as given or not at all."""
    weights = snap.index.manifest.weights
    if weights["dtype"] == "float32" or not batch.nnz or weights.get("scale") is None:
        return
    largest = float(np.iinfo(weights["dtype"]).max) / weights["scale"]
    worst = float(batch.values.max())
    if worst > largest * (1 + 1e-6):
        raise ApiError(400, "weight_out_of_range",
                       f"a document weight of {worst:.6g} is above {largest:.6g}, the largest this index stores "
                       f"({weights['dtype']} impacts at scale {weights['scale']:.6g}); scale the vectors down, "
                       "or index them with --weights float32.")


def _token_weights(snap: Snapshot, batch: SparseBatch, top: int | None = None) -> list[dict[str, float]]:
    vocab = snap.index.vocabulary
    out = []
    for i in range(batch.n):
        terms, weights = batch.row(i)
        order = np.argsort(-weights, kind="stable")[:top]
        out.append({vocab[int(terms[j])]: round(float(weights[j]), 6) for j in order})
    return out


@bp.post("/search")
def search():
    limits = current_app.config["LSR_LIMITS"]
    req = parse_search(parse_json(request), limits)
    snap = snapshot()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if req.pipeline is not None:
        return _search_pipeline(snap, req)
    if req.texts is not None:
        queries = _encoder(snap).encode_queries(req.texts)
        timings["encode_ms"] = 1000 * (time.perf_counter() - started)
        _deadline("encoding")
    else:
        queries = _vectors_from_tokens(snap, req.vectors)
    started = time.perf_counter()
    hits = snap.retriever.searcher.search(queries, req.k, algorithm=req.algorithm, alpha=req.alpha,
                                          query_cut=req.query_cut, query_mass=req.query_mass)
    timings["search_ms"] = 1000 * (time.perf_counter() - started)
    _deadline("search")
    started = time.perf_counter()
    results = []
    for i in range(hits.n):
        ids, scores = hits.row(i)
        external = snap.index.external_ids(ids)
        entries: list[dict[str, Any]] = []
        for rank, (doc, ext, score) in enumerate(zip(ids.tolist(), external, scores.tolist(), strict=True), 1):
            entry: dict[str, Any] = {"rank": rank, "id": ext, "score": score}
            if req.explain:
                why = explain(snap.index, queries.slice(i, i + 1), doc)
                entry["explanation"] = [{"token": t.token, "query_weight": t.query_weight,
                                         "document_weight": t.document_weight, "contribution": t.contribution}
                                        for t in why.terms]
            entries.append(entry)
        results.append({"query": req.texts[i] if req.texts else None, "hits": entries})
    timings["resolve_ms"] = 1000 * (time.perf_counter() - started)
    timings["total_ms"] = 1000 * (time.perf_counter() - g.started)
    return jsonify({"results": results, "timings": timings,
                    "index": {"generation": snap.generation, "documents": snap.index.n_live}})


def _search_pipeline(snap: Snapshot, req) -> Any:  # noqa: ANN001
    """Dense, hybrid and PRF search through a SearchPipeline over this snapshot's retrievers."""
    from lsr.search import SearchPipeline

    needs_dense = req.pipeline["retriever"] not in ("sparse", "default")  # default: dense only where there is
    if needs_dense and snap.dense is None:
        raise ApiError(400, "unsupported", "this index has no dense part (build it with lsr index --dense MODEL), "
                                           "so dense and hybrid search are not available.")
    if req.explain:
        raise ApiError(400, "unsupported", "explanations are available for plain sparse search only.")
    pipeline = SearchPipeline(snap.index, req.pipeline, sparse=snap.retriever, dense=snap.dense)
    hits = pipeline.search(req.texts, req.k)
    _deadline("search")
    results = []
    for i in range(hits.n):
        ids, scores = hits.row(i)
        results.append({"query": req.texts[i], "hits": [
            {"rank": r, "id": ext, "score": s}
            for r, (ext, s) in enumerate(zip(snap.index.external_ids(ids), scores.tolist(), strict=True), 1)]})
    timings = {f"{stage}_ms": 1000 * seconds for stage, seconds in pipeline.timings.items()}
    timings["total_ms"] = 1000 * (time.perf_counter() - g.started)
    return jsonify({"results": results, "timings": timings, "pipeline": pipeline.config,
                    "index": {"generation": snap.generation, "documents": snap.index.n_live}})


@bp.post("/encode")
def encode():
    texts, kind, top = parse_encode(parse_json(request), current_app.config["LSR_LIMITS"])
    snap = snapshot()
    encoder = _encoder(snap)
    batch = encoder.encode_queries(texts) if kind == "query" else encoder.encode_documents(texts)
    return jsonify({"vectors": _token_weights(snap, batch, top), "dim": batch.dim})


@bp.get("/documents/<path:doc_id>")
def get_document(doc_id: str):
    snap = snapshot()
    internal = snap.index.internal_id(doc_id)
    if internal is None:
        raise ApiError(404, "not_found", f"no document with id {doc_id!r}.")
    vector = snap.index.document_vector(internal)
    return jsonify({"id": doc_id, "vector": _token_weights(snap, vector)[0], "nnz": vector.nnz})


def _writer() -> IndexWriter:
    # no merging inside the request: the background merger does it (lsr.service.merging)
    return IndexWriter.open(holder().path, lock_wait_s=current_app.config["LSR_WRITE_LOCK_WAIT_S"],
                            merge_policy=None)


def _committed() -> Snapshot:
    merger = current_app.extensions.get("lsr_merger")
    if merger is not None:
        merger.notify()
    return holder().refresh()


@bp.post("/documents")
def add_documents():
    _check_key(True)
    docs = parse_documents(parse_json(request), current_app.config["LSR_LIMITS"])
    snap = snapshot()
    texts = [d for d in docs if "text" in d]
    vectors = [d for d in docs if "vector" in d]
    parts = []
    if texts:
        parts.append(([d["id"] for d in texts], _encoder(snap).encode_documents([d["text"] for d in texts])))
    if vectors:
        batch = _vectors_from_tokens(snap, [d["vector"] for d in vectors])
        _check_storable(snap, batch)
        parts.append(([d["id"] for d in vectors], batch))
    with _writer() as writer:
        for ids, batch in parts:
            writer.add(ids, batch)
    fresh = _committed()
    return jsonify({"added": len(docs), "generation": fresh.generation}), 201


@bp.delete("/documents/<path:doc_id>")
def delete_document(doc_id: str):
    _check_key(True)
    with _writer() as writer:
        found = writer.delete([doc_id])
    if not found:
        raise ApiError(404, "not_found", f"no document with id {doc_id!r}.")
    fresh = _committed()
    return jsonify({"deleted": doc_id, "generation": fresh.generation})
