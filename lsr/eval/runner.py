"""End-to-end evaluation: (encode + index a BEIR corpus, or open an index) -> search a split -> TREC run ->
ir_measures metrics -> a JSON report with config, versions, timings and sparsity."""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from lsr import __version__
from lsr.encoders.base import built_with
from lsr.errors import InvalidInputError
from lsr.eval.metrics import DEFAULT_MEASURES, evaluate_run
from lsr.index import Index, open_index
from lsr.index.format import write_bytes_atomic
from lsr.index.weight_policy import AUTO
from lsr.io.beir import read_qrels, read_queries, resolve_dataset, split_queries
from lsr.io.trec import hits_to_run, write_run
from lsr.types import Hits, SparseBatch

__all__ = ["evaluate_beir", "evaluate_index", "run_from_hits", "versions"]

log = logging.getLogger(__name__)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "lsr": __version__}
    for dist in ("numpy", "scipy", "numba", "torch", "transformers", "ir_measures"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return found


def run_from_hits(index: Index, query_ids: Sequence[str], hits: Hits) -> dict[str, dict[str, float]]:
    external = [index.external_ids(hits.ids[i]) for i in range(hits.n)]
    return hits_to_run(query_ids, external, hits.scores)


def evaluate_index(index_dir: str | os.PathLike[str], queries: dict[str, str], qrels: dict[str, dict[str, int]],
                   out_dir: str | os.PathLike[str], k: int = 1000, measures: Sequence[str] = DEFAULT_MEASURES,
                   backend: str = "auto", check_exact: bool = False, run_name: str = "run",
                   extra: dict[str, Any] | None = None, show_progress: bool = True,
                   search_options: dict[str, Any] | None = None,
                   pipeline: dict[str, Any] | None = None) -> dict[str, Any]:
    """Search ``queries`` on an existing index, write ``<run_name>.trec`` and ``report.json`` into out_dir.
    With a ``pipeline`` config (:class:`lsr.search.SearchPipeline`) the queries go through it instead of
    the plain sparse retriever."""
    from lsr.search import SparseRetriever

    if pipeline is not None and pipeline != {"retriever": "sparse"}:
        return _evaluate_pipeline(index_dir, queries, qrels, out_dir, k, measures, backend, run_name, extra,
                                  pipeline)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    retriever = SparseRetriever(index_dir, backend=backend)
    query_ids = list(queries)
    if not query_ids:
        raise InvalidInputError("no queries to evaluate.")
    started = time.perf_counter()
    query_vectors = retriever.encode([queries[q] for q in query_ids], show_progress=show_progress)
    encode_seconds = time.perf_counter() - started
    retriever.searcher.warm_up()
    started = time.perf_counter()
    search_options = search_options or {}
    hits = retriever.search(query_vectors, k, **search_options)
    search_seconds = time.perf_counter() - started
    run = run_from_hits(retriever.index, query_ids, hits)
    run_file = out / f"{run_name}.trec"
    write_run(run_file, run)
    metrics = evaluate_run(qrels, run, measures)
    report: dict[str, Any] = {
        **(extra or {}),
        "index": str(Path(index_dir).resolve()),
        "encoder": retriever.index.encoder_config,
        "config": {"k": k, "backend": retriever.searcher.backend, "measures": list(measures), **search_options},
        "index_storage": {"weights": retriever.index.manifest.weights,
                          "block_size": retriever.index.manifest.block_size},
        "n_docs": retriever.index.n_live,
        "n_queries": len(query_ids),
        "metrics": metrics,
        "sparsity": {
            "avg_nnz_query": _avg_nnz(query_vectors),
            "avg_nnz_doc": float(sum(s.info.nnz for s in retriever.index.segments) / max(1, retriever.index.n_docs)),
        },
        "timings": {
            **(extra or {}).get("timings", {}),
            "encode_queries_s": encode_seconds,
            "search_s": search_seconds,
            "search_ms_per_query": 1000 * search_seconds / len(query_ids),
        },
        "run_file": str(run_file),
        "versions": versions(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    if check_exact:
        report["exact_check"] = _check_against_brute_force(retriever.index, query_ids, query_vectors, hits,
                                                           qrels, k, measures)
    write_bytes_atomic(out / "report.json", orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return report


def _evaluate_pipeline(index_dir, queries, qrels, out_dir, k, measures, backend, run_name, extra,  # noqa: ANN001
                       pipeline) -> dict[str, Any]:  # noqa: ANN001
    from lsr.search import SearchPipeline

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    searcher = SearchPipeline(index_dir, pipeline, backend=backend)
    query_ids = list(queries)
    if not query_ids:
        raise InvalidInputError("no queries to evaluate.")
    searcher.search([queries[query_ids[0]]], k)  # warm-up: loads the models and kernels
    started = time.perf_counter()
    hits = searcher.search([queries[q] for q in query_ids], k)
    seconds = time.perf_counter() - started
    run = run_from_hits(searcher.index, query_ids, hits)
    run_file = out / f"{run_name}.trec"
    write_run(run_file, run)
    report: dict[str, Any] = {
        **(extra or {}),
        "index": str(Path(index_dir).resolve()),
        "pipeline": searcher.config,
        "config": {"k": k, "backend": backend, "measures": list(measures)},
        "n_docs": searcher.index.n_live,
        "n_queries": len(query_ids),
        "metrics": evaluate_run(qrels, run, measures),
        "timings": {**(extra or {}).get("timings", {}), "pipeline_s": seconds,
                    "pipeline_ms_per_query": 1000 * seconds / len(query_ids),
                    **{f"{stage}_ms_per_query": 1000 * v / len(query_ids) for stage, v in searcher.timings.items()}},
        "run_file": str(run_file),
        "versions": versions(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    write_bytes_atomic(out / "report.json", orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return report


def evaluate_beir(dataset: str | os.PathLike[str], out_dir: str | os.PathLike[str], split: str = "test",
                  model: str = "splade-tiny", k: int = 1000, measures: Sequence[str] = DEFAULT_MEASURES,
                  backend: str = "auto", rebuild: bool = False, check_exact: bool = False,
                  encoder_options: dict[str, Any] | None = None, show_progress: bool = True,
                  search_options: dict[str, Any] | None = None,
                  storage: dict[str, Any] | None = None, pipeline: dict[str, Any] | None = None,
                  dense_model: str | None = None) -> dict[str, Any]:
    """Encode and index a BEIR folder's corpus into ``out_dir`` (reused when it is already there and was
    built with the same model), then evaluate ``split``."""
    from lsr.jobs.build import build_index

    folder = resolve_dataset(dataset)
    out = Path(out_dir)
    qrels = read_qrels(folder, split) if (folder / "qrels" / f"{split}.tsv").exists() else None
    if qrels is None:
        raise InvalidInputError(f"{folder} has no qrels for split {split!r} (looked for qrels/{split}.tsv).")
    queries = split_queries(read_queries(folder), qrels)
    index_dir = out / "index"
    timings: dict[str, float] = {}
    needs_dense = dense_model is not None or (pipeline or {}).get("retriever", "sparse") != "sparse"
    if needs_dense and dense_model is None:
        from lsr.models import DEFAULT_DENSE_MODEL

        dense_model = DEFAULT_DENSE_MODEL
    if rebuild or not _reusable(index_dir, model, storage, dense_model, encoder_options):
        result = build_index(folder, index_dir, model=model, overwrite=True, work_dir=out / "encoded",
                             encoder_options=encoder_options, show_progress=show_progress, storage=storage,
                             dense_model=dense_model)
        timings = {"encode_docs_s": result.encode_seconds, "index_s": result.seconds,
                   "encode_docs_per_s": result.n_docs / result.encode_seconds if result.encode_seconds else None}
    else:
        log.info("reusing the index in %s (pass --rebuild to rebuild it)", index_dir)
    extra = {"dataset": str(folder), "split": split, "timings": timings}
    return evaluate_index(index_dir, queries, qrels, out, k, measures, backend, check_exact,
                          run_name=f"run.{split}", extra=extra, show_progress=show_progress,
                          search_options=search_options, pipeline=pipeline)


def _reusable(index_dir: Path, model: str, storage: dict[str, Any] | None, dense_model: str | None = None,
              encoder_options: dict[str, Any] | None = None) -> bool:
    """An existing index can be reused when it was built with the same encoder and storage options."""
    try:
        index = open_index(index_dir)
    except (OSError, ValueError):
        return False
    storage = storage or {}
    manifest = index.manifest
    dtype = storage.get("weight_dtype") or AUTO
    # "auto" reuses an index whose weight type auto chose (it records the bound) or a float32 one (auto's
    # choice without a bound, and the default before auto: --rebuild rebuilds it); an explicit type must match
    same_dtype = ("bound" in manifest.weights or manifest.weights["dtype"] == "float32") if dtype == AUTO \
        else manifest.weights["dtype"] == dtype
    same_storage = (same_dtype
                    and (storage.get("scale") is None or manifest.weights["scale"] == storage["scale"])
                    and manifest.block_size == storage.get("block_size", manifest.block_size)
                    and manifest.reorder == storage.get("reorder"))
    has_dense = index.manifest.dense is not None and (dense_model is None
                                                     or index.manifest.dense.get("model") == dense_model)
    return (built_with(index.encoder_config, model, encoder_options) and same_storage
            and (dense_model is None or has_dense))


def _avg_nnz(batch: SparseBatch) -> float:
    return float(batch.nnz / batch.n) if batch.n else 0.0


def _check_against_brute_force(index: Index, query_ids: Sequence[str], queries: SparseBatch, hits: Hits,
                               qrels: dict[str, dict[str, int]], k: int, measures: Sequence[str]) -> dict[str, Any]:
    """Score every document with the scipy oracle and compare rankings and metrics with the kernel's."""
    from lsr.kernels import reference

    parts = [reference.topk(seg.postings, queries, k, index.deleted_mask(seg)) for seg in index.segments]
    for seg, part in zip(index.segments, parts, strict=True):
        part.ids[part.ids >= 0] += seg.info.doc_base
    oracle = parts[0] if len(parts) == 1 else Hits.merge(parts, k)
    oracle_metrics = evaluate_run(qrels, run_from_hits(index, query_ids, oracle), measures)
    return {
        "identical_ids": bool(np.array_equal(oracle.ids, hits.ids)),
        "max_score_diff": float(np.nanmax(np.abs(np.where(hits.ids >= 0, oracle.scores - hits.scores, 0.0)))),
        "brute_force_metrics": oracle_metrics,
    }
