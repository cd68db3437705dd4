"""The OpenAPI 3.0 document of the service (served at /openapi.json; schemathesis fuzzes against it)."""

from __future__ import annotations

from typing import Any

from lsr import __version__

__all__ = ["openapi_document"]


def _error() -> dict[str, Any]:
    return {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def openapi_document(limits) -> dict[str, Any]:  # noqa: ANN001 - Limits
    text = {"type": "string", "minLength": 1, "maxLength": limits.max_text_chars}
    texts = {"oneOf": [text, {"type": "array", "items": text, "minItems": 1, "maxItems": limits.max_batch}]}
    vector = {"type": "object", "minProperties": 1, "maxProperties": limits.max_vector_terms,
              "additionalProperties": {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 1e6}}
    json_body = lambda ref: {"required": True, "content": {"application/json": {"schema": {"$ref": ref}}}}  # noqa: E731
    ok = lambda ref: {"description": "ok", "content": {"application/json": {"schema": {"$ref": ref}}}}  # noqa: E731
    errors = {str(code): _error() for code in (400, 401, 403, 404, 408, 413, 415, 503)}
    doc_id = {"name": "doc_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "lsr search service", "version": __version__,
                 "description": "Learned sparse retrieval over one index. Writes need an API key."},
        "paths": {
            "/v1/search": {"post": {
                "summary": "Search with query texts or pre-encoded vectors",
                "requestBody": json_body("#/components/schemas/SearchRequest"),
                "responses": {"200": ok("#/components/schemas/SearchResponse"), **errors}}},
            "/v1/encode": {"post": {
                "summary": "Encode texts into sparse vectors",
                "requestBody": json_body("#/components/schemas/EncodeRequest"),
                "responses": {"200": ok("#/components/schemas/EncodeResponse"), **errors}}},
            "/v1/documents": {"post": {
                "summary": "Add or replace documents (committed as a new segment)",
                "security": [{"apiKey": []}, {"bearer": []}],
                "requestBody": json_body("#/components/schemas/DocumentsRequest"),
                "responses": {"201": {"description": "committed"}, **errors}}},
            "/v1/documents/{doc_id}": {
                "get": {"summary": "A document's stored vector", "parameters": [doc_id],
                        "responses": {"200": {"description": "the document"}, **errors}},
                "delete": {"summary": "Delete a document (tombstone)", "parameters": [doc_id],
                           "security": [{"apiKey": []}, {"bearer": []}],
                           "responses": {"200": {"description": "deleted"}, **errors}}},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
            "/readyz": {"get": {"summary": "Readiness", "responses": {"200": {"description": "ready"},
                                                                      "503": {"description": "not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "metrics"}}}},
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                                "bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
                "SearchRequest": {"type": "object", "properties": {
                    "queries": texts, "query": text,
                    "vectors": {"type": "array", "items": vector, "minItems": 1, "maxItems": limits.max_batch},
                    "k": {"type": "integer", "minimum": 1, "maximum": limits.max_k, "default": 10},
                    "explain": {"type": "boolean", "default": False},
                    "algorithm": {"type": "string", "enum": ["auto", "exhaustive", "blockmax"]},
                    "alpha": {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 1},
                    "query_cut": {"type": "integer", "minimum": 1, "maximum": 4096},
                    "query_mass": {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 1,
                                   "default": 1, "description": "approximate two-step search: the share of each "
                                   "query's weight its candidates are found with (1 = exact)"},
                    "retriever": {"type": "string", "enum": ["sparse", "dense", "hybrid", "default"]},
                    "hybrid": {"type": "object", "properties": {
                        "method": {"type": "string", "enum": ["pyserini", "convex", "rrf"]},
                        "alpha": {"type": "number"},
                        "normalization": {"type": "string", "enum": ["none", "midrange", "minmax", "zscore"]},
                        "depth": {"type": "integer", "minimum": 1, "maximum": 1000}}},
                    "prf": {"oneOf": [{"type": "boolean"}, {"type": "object", "properties": {
                        "placement": {"type": "string", "enum": ["before", "after", "both"]},
                        "side": {"type": "string", "enum": ["sparse", "dense"]},
                        "sparse": {"type": "object"}, "dense": {"type": "object"}}}]}}},
                "SearchResponse": {"type": "object", "required": ["results", "timings", "index"], "properties": {
                    "results": {"type": "array", "items": {"type": "object", "properties": {
                        "query": {"type": "string", "nullable": True},
                        "hits": {"type": "array", "items": {"type": "object", "required": ["rank", "id", "score"],
                                                            "properties": {"rank": {"type": "integer"},
                                                                           "id": {"type": "string"},
                                                                           "score": {"type": "number"},
                                                                           "explanation": {"type": "array"}}}}}}},
                    "timings": {"type": "object", "additionalProperties": {"type": "number"}},
                    "index": {"type": "object"}}},
                "EncodeRequest": {"type": "object", "required": ["texts"], "properties": {
                    "texts": texts, "kind": {"type": "string", "enum": ["query", "document"]},
                    "top": {"type": "integer", "minimum": 1, "maximum": 100000}}},
                "EncodeResponse": {"type": "object", "required": ["vectors"], "properties": {
                    "vectors": {"type": "array", "items": {"type": "object"}}, "dim": {"type": "integer"}}},
                "DocumentsRequest": {"type": "object", "required": ["documents"], "properties": {
                    "documents": {"type": "array", "minItems": 1, "maxItems": limits.max_documents, "items": {
                        "type": "object", "required": ["id"], "properties": {
                            "id": {"type": "string", "minLength": 1, "maxLength": 512},
                            "title": {"type": "string"}, "text": {"type": "string"}, "vector": vector}}}}},
            },
        },
    }
