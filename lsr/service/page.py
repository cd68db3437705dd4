"""The search page: ``GET /`` (a plain GET form and its results) and ``GET /about`` (the index), in HTML.

Read-only by construction: no write forms, and the ``/v1`` write endpoints keep requiring the API key.
Works without JavaScript (``page.js`` only adds niceties); every value reaches the HTML through Jinja's
autoescape, and a Content-Security-Policy keeps the page to its own origin with no inline script.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flask import Blueprint, current_app, g, render_template, request

from lsr.errors import InvalidInputError, LsrError
from lsr.search.explain import explain
from lsr.service.errors import ApiError
from lsr.service.pageform import MODES, PLACEMENTS, PageError, PageQuery, parse_page_query
from lsr.service.snippets import Marker, Piece, query_tokens, snippet
from lsr.service.state import Snapshot
from lsr.service.texts import texts_for

__all__ = ["bp"]

bp = Blueprint("page", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static/page")

EXPANDED_TERMS = 30  # query-vector terms listed (the rest are counted)

# 'self' only: no inline script or style, no third-party origin, forms post nowhere else, no framing.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


@bp.after_request
def _headers(response):
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"  # queries live in the URL
    return response


@bp.errorhandler(PageError)
def _page_error(exc: PageError):
    return render_template("lsr_error.html", status=exc.status, message=exc.message), exc.status


@bp.errorhandler(LsrError)
def _lsr_error(exc: LsrError):
    status = 400 if isinstance(exc, InvalidInputError) else 503
    return render_template("lsr_error.html", status=status, message=str(exc)), status


def _snapshot() -> Snapshot:
    from lsr.service.api import _check_key

    try:  # a server that wants a key for reads wants it here too (a proxy may add the header)
        _check_key(current_app.config.get("LSR_READ_KEY_REQUIRED", False))
    except ApiError as exc:
        raise PageError(exc.status, f"{exc.message} The search page sends no key, so it is not usable on this "
                                    "server.") from None
    if "snapshot" not in g:
        g.snapshot = current_app.extensions["lsr"].snapshot()
    return g.snapshot


@dataclass
class Term:
    token: str
    weight: float
    expansion: bool


@dataclass
class Why:
    terms: list[Any]  # lsr.search.explain.TermContribution, largest first
    total: float


@dataclass
class Hit:
    rank: int
    id: str
    score: float
    title: list[Piece] = field(default_factory=list)
    text: list[Piece] = field(default_factory=list)
    has_text: bool = False
    why: Why | None = None
    terms: list[Term] = field(default_factory=list)  # the document's top terms, when there is no text


def _tokenizer(encoder):  # noqa: ANN001, ANN202 - text -> vocabulary tokens, or None (no tokenizer exposed)
    return getattr(getattr(encoder, "tokenizer", None), "tokenize", None)


def _expanded_query(snap: Snapshot, query_text: str, vector, tokenize) -> tuple[list[Term], int]:  # noqa: ANN001
    terms, weights = vector.row(0)
    own = query_tokens(query_text, tokenize)
    vocab = snap.index.vocabulary
    order = np.argsort(-weights, kind="stable")[:EXPANDED_TERMS]
    out = [Term(vocab[int(terms[j])], float(weights[j]), vocab[int(terms[j])] not in own) for j in order]
    return out, int(terms.size)


def _document_terms(snap: Snapshot, internal: int, top: int = 12) -> list[Term]:
    terms, weights = snap.index.document_vector(internal).row(0)
    order = np.argsort(-weights, kind="stable")[:top]
    return [Term(snap.index.vocabulary[int(terms[j])], float(weights[j]), False) for j in order]


def _run(snap: Snapshot, query: PageQuery) -> dict[str, Any]:
    """Retrieve ``query.depth`` hits, cut out the page, dress its hits; timings per stage in ms."""
    timings: dict[str, float] = {}
    vector = None
    tokenize = None
    if query.mode != "dense":
        started = time.perf_counter()
        try:
            encoder = snap.retriever.encoder
        except InvalidInputError as exc:  # an index of pre-encoded vectors has no model for texts
            raise PageError(400, str(exc)) from None
        vector = snap.retriever.encode([query.q])  # memoised: a pipeline below reuses it instead of re-encoding
        tokenize = _tokenizer(encoder)
        timings["encode"] = 1000 * (time.perf_counter() - started)
    if query.plain_sparse:
        started = time.perf_counter()
        hits = snap.retriever.searcher.search(vector, query.depth)
        timings["search"] = 1000 * (time.perf_counter() - started)
    else:
        from lsr.search import SearchPipeline

        if query.mode != "sparse" and snap.dense is None:
            raise PageError(400, "this index has no dense part, so dense and hybrid search are not available.")
        pipeline = SearchPipeline(snap.index, query.pipeline_config(), sparse=snap.retriever, dense=snap.dense)
        hits = pipeline.search([query.q], query.depth)
        timings.update({f"pipeline {stage}": 1000 * s for stage, s in pipeline.timings.items()})
    ids, scores = hits.row(0)
    keep = ids >= 0
    ids, scores = ids[keep], scores[keep]
    first = (query.page - 1) * query.k
    page_ids, page_scores = ids[first:first + query.k], scores[first:first + query.k]
    started = time.perf_counter()
    texts = texts_for(snap.index)  # read once per process: the first query pays for it, as its own stage
    if time.perf_counter() - started > 0.001:
        timings["load texts"] = 1000 * (time.perf_counter() - started)
    started = time.perf_counter()
    results = []
    for rank, (internal, ext, score) in enumerate(
            zip(page_ids.tolist(), snap.index.external_ids(page_ids), page_scores.tolist(), strict=True), first + 1):
        hit = Hit(rank, ext, score)
        matched: list[str] = []
        if query.plain_sparse:
            why = explain(snap.index, vector, internal)  # its score: the terms summed in the kernels' order
            hit.why = Why(why.terms, why.score)
            matched = [t.token for t in why.terms]
        doc = texts.get(ext, internal)
        if doc is not None:
            marker = Marker(matched, tokenize)
            hit.title = snippet(doc.title, marker, None)[0] if doc.title else []
            hit.text = snippet(doc.text, marker)[0]
            hit.has_text = True
        else:
            hit.terms = _document_terms(snap, internal)
        results.append(hit)
    timings["explain + snippets"] = 1000 * (time.perf_counter() - started)
    expanded, n_terms = _expanded_query(snap, query.q, vector, tokenize) if vector is not None else ([], 0)
    return {"hits": results, "timings": timings, "retrieved": int(ids.size), "first": first,
            "expanded": expanded, "n_query_terms": n_terms, "texts": texts}


@bp.get("/")
def search():
    limits = current_app.config["LSR_LIMITS"]
    started = time.perf_counter()
    snap = _snapshot()
    query = parse_page_query(request.args, limits.max_k, limits.max_text_chars)
    has_dense = snap.dense is not None
    if query.mode != "sparse" and not has_dense:
        raise PageError(400, f"mode={query.mode} needs an index with a dense part (lsr index --dense MODEL); "
                             "this one has none, so only sparse search is available.")
    context: dict[str, Any] = {"query": query, "has_dense": has_dense, "modes": MODES, "placements": PLACEMENTS,
                               "max_k": limits.max_k, "documents": snap.index.n_live}
    if query.q:
        context.update(_run(snap, query))
        more = context["retrieved"] >= query.depth and query.depth + query.k <= limits.max_k
        context["next_url"] = _url(query, page=query.page + 1) if more else None
        context["prev_url"] = _url(query, page=query.page - 1) if query.page > 1 else None
        context["timings"]["total"] = 1000 * (time.perf_counter() - started)
    return render_template("lsr_search.html", **context)


def _url(query: PageQuery, **changes: Any) -> str:
    from flask import url_for

    return url_for("page.search", **query.params(**changes))


@bp.get("/about")
def about():
    snap = _snapshot()
    index = snap.index
    manifest = index.manifest
    segments = [{"name": s.name, "n_docs": s.n_docs, "nnz": s.nnz, "doc_base": s.doc_base,
                 "bytes": sum(int(f.get("size", 0)) for f in s.files.values())} for s in manifest.segments]
    root_bytes = sum(int(f.get("size", 0)) for f in (manifest.files or {}).values())
    texts = texts_for(index)
    return render_template(
        "lsr_about.html", path=str(index.path), manifest=manifest, n_live=index.n_live, segments=segments,
        total_bytes=root_bytes + sum(s["bytes"] for s in segments), nnz=sum(s.nnz for s in manifest.segments),
        texts=texts, dense_loaded=snap.dense is not None)
