"""Validation of request bodies at the boundary: every bad value becomes a 400 that names it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Request

from lsr.io.beir import Document
from lsr.service.errors import ApiError

__all__ = ["Limits", "SearchRequest", "parse_json", "parse_search", "parse_encode", "parse_documents"]

ALGORITHMS = ("auto", "exhaustive", "blockmax")


@dataclass(frozen=True)
class Limits:
    max_batch: int = 64  # queries per search request, texts per encode request
    max_k: int = 1000
    max_text_chars: int = 10_000
    max_documents: int = 1000  # documents per add request
    max_vector_terms: int = 4096


@dataclass(frozen=True)
class SearchRequest:
    texts: list[str] | None
    vectors: list[dict[str, float]] | None
    k: int
    explain: bool
    algorithm: str
    alpha: float
    query_cut: int | None
    pipeline: dict[str, Any] | None = None  # a SearchPipeline config, for dense / hybrid / PRF
    query_mass: float = 1.0


def bad(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def parse_json(request: Request) -> dict[str, Any]:
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send a JSON body with Content-Type: application/json.")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise bad("the body must be a JSON object.")
    return body


def _int(body: dict, key: str, default: int, lo: int, hi: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise bad(f"{key} must be an integer in [{lo}, {hi}], got {value!r}.")
    return value


def _share(body: dict, key: str) -> float:
    """A number in (0, 1], 1 by default (the exact search): alpha, query_mass."""
    value = body.get(key, 1.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise bad(f"{key} must be a number in (0, 1], got {value!r}.")
    return float(value)


def _texts(body: dict, key: str, limits: Limits) -> list[str]:
    texts = body[key]
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts:
        raise bad(f"{key} must be a non-empty string or list of strings.")
    if len(texts) > limits.max_batch:
        raise bad(f"at most {limits.max_batch} {key} per request, got {len(texts)}.")
    for text in texts:
        if not isinstance(text, str) or not text.strip():
            raise bad(f"every entry of {key} must be a non-empty string.")
        if len(text) > limits.max_text_chars:
            raise bad(f"texts are limited to {limits.max_text_chars} characters, got {len(text)}.")
    return texts


def _vector(value: Any, where: str, limits: Limits) -> dict[str, float]:
    if not isinstance(value, dict) or not value:
        raise bad(f"{where} must be a non-empty object mapping tokens to weights.")
    if len(value) > limits.max_vector_terms:
        raise bad(f"{where} has {len(value)} terms; the limit is {limits.max_vector_terms}.")
    for token, weight in value.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight < 1e6:
            raise bad(f"{where}: the weight of {token!r} must be a number in (0, 1e6), got {weight!r}.")
    return {str(t): float(w) for t, w in value.items()}


def parse_search(body: dict, limits: Limits) -> SearchRequest:
    has_text = "queries" in body or "query" in body
    if has_text == ("vectors" in body):
        raise bad("give either queries (texts) or vectors (pre-encoded {token: weight} objects).")
    texts = vectors = None
    if has_text:
        if "queries" in body and "query" in body:
            raise bad("give queries or query, not both.")
        texts = _texts(body, "queries" if "queries" in body else "query", limits)
    else:
        raw = body["vectors"]
        if isinstance(raw, dict):
            raw = [raw]
        if not isinstance(raw, list) or not raw or len(raw) > limits.max_batch:
            raise bad(f"vectors must be a list of 1 to {limits.max_batch} objects.")
        vectors = [_vector(v, f"vectors[{i}]", limits) for i, v in enumerate(raw)]
    pipeline = _pipeline(body)
    if pipeline is not None and vectors is not None:
        raise bad("dense, hybrid and PRF search take query texts, not vectors.")
    algorithm = body.get("algorithm", "auto")
    if algorithm not in ALGORITHMS:
        raise bad(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}.")
    alpha, query_mass = _share(body, "alpha"), _share(body, "query_mass")
    query_cut = body.get("query_cut")
    if query_cut is not None:
        query_cut = _int(body, "query_cut", 0, 1, 4096)
    explain = body.get("explain", False)
    if not isinstance(explain, bool):
        raise bad(f"explain must be true or false, got {explain!r}.")
    return SearchRequest(texts, vectors, _int(body, "k", 10, 1, limits.max_k), explain, algorithm, alpha,
                         query_cut, pipeline, query_mass)


def _pipeline(body: dict) -> dict[str, Any] | None:
    """``retriever`` / ``hybrid`` / ``prf`` fields -> a SearchPipeline config (validated by the pipeline)."""
    retriever, hybrid, prf = body.get("retriever"), body.get("hybrid"), body.get("prf")
    if retriever is None and not hybrid and not prf:
        return None
    if retriever is not None and retriever not in ("sparse", "dense", "hybrid", "default"):
        raise bad(f"retriever must be sparse, dense, hybrid or default, got {retriever!r}.")
    config: dict[str, Any] = {"retriever": retriever or ("hybrid" if hybrid else "sparse")}
    if hybrid:
        if not isinstance(hybrid, dict):
            raise bad("hybrid must be an object such as {\"method\": \"convex\", \"alpha\": 0.5}.")
        config["retriever"] = "hybrid"
        config["fusion"] = hybrid
    elif config["retriever"] == "hybrid":
        config["fusion"] = {"method": "convex"}
    if prf:
        if prf is True:
            prf = {}
        if not isinstance(prf, dict):
            raise bad("prf must be true or an object such as {\"placement\": \"after\"}.")
        config["prf"] = prf
    return config


def parse_encode(body: dict, limits: Limits) -> tuple[list[str], str, int | None]:
    texts = _texts(body, "texts", limits)
    kind = body.get("kind", "query")
    if kind not in ("query", "document"):
        raise bad(f"kind must be query or document, got {kind!r}.")
    top = body.get("top")
    if top is not None:
        top = _int(body, "top", 0, 1, 100_000)
    return texts, kind, top


def parse_documents(body: dict, limits: Limits) -> list[dict[str, Any]]:
    docs = body.get("documents")
    if not isinstance(docs, list) or not docs:
        raise bad("documents must be a non-empty list.")
    if len(docs) > limits.max_documents:
        raise bad(f"at most {limits.max_documents} documents per request, got {len(docs)}.")
    parsed, seen = [], set()
    for i, doc in enumerate(docs):
        where = f"documents[{i}]"
        if not isinstance(doc, dict):
            raise bad(f"{where} must be an object.")
        doc_id = doc.get("id")
        if not isinstance(doc_id, str) or not doc_id.strip() or len(doc_id) > 512:
            raise bad(f"{where}.id must be a non-empty string of at most 512 characters.")
        if doc_id in seen:
            raise bad(f"document id {doc_id!r} appears twice in the request.")
        seen.add(doc_id)
        if ("text" in doc) == ("vector" in doc):
            raise bad(f"{where} needs either text (with an optional title) or vector.")
        if "vector" in doc:
            parsed.append({"id": doc_id, "vector": _vector(doc["vector"], f"{where}.vector", limits)})
            continue
        title, text = doc.get("title", ""), doc["text"]
        if not isinstance(text, str) or not isinstance(title, str) or not (title + text).strip():
            raise bad(f"{where}.text (and title) must be strings, not both empty.")
        if len(title) + len(text) > limits.max_text_chars * 10:
            raise bad(f"{where} is longer than {limits.max_text_chars * 10} characters.")
        parsed.append({"id": doc_id, "text": Document(doc_id, title.strip(), text.strip()).full_text})
    return parsed
