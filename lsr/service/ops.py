"""Operations endpoints: liveness, readiness, Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

import os
import time

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from lsr.service.openapi import openapi_document

__all__ = ["bp", "install_metrics"]

bp = Blueprint("ops", __name__)

_REGISTRY = CollectorRegistry()
REQUESTS = Counter("lsr_requests_total", "HTTP requests", ["endpoint", "status"], registry=_REGISTRY)
LATENCY = Histogram("lsr_request_seconds", "Request latency", ["endpoint"], registry=_REGISTRY,
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
DOCUMENTS = Gauge("lsr_index_documents", "Live documents in the served snapshot", registry=_REGISTRY,
                  multiprocess_mode="max")
GENERATION = Gauge("lsr_index_generation", "Manifest generation of the served snapshot", registry=_REGISTRY,
                   multiprocess_mode="max")


def install_metrics(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count(response):
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        REQUESTS.labels(endpoint, str(response.status_code)).inc()
        if "metrics_started" in g:
            LATENCY.labels(endpoint).observe(time.perf_counter() - g.metrics_started)
        return response


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    try:
        snap = current_app.extensions["lsr"].snapshot()
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure
        return jsonify({"status": "not_ready", "reason": str(exc)}), 503
    return jsonify({"status": "ready", "generation": snap.generation, "documents": snap.index.n_live})


@bp.get("/metrics")
def metrics():
    snap = current_app.extensions["lsr"].snapshot()
    DOCUMENTS.set(snap.index.n_live)
    GENERATION.set(snap.generation)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = _REGISTRY
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document(current_app.config["LSR_LIMITS"]))
