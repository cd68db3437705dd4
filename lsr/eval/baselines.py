"""Baselines that ``lsr eval --baseline`` puts beside lsr's numbers: BM25 through Pyserini's Lucene.

BM25 is Pyserini's BEIR "flat" baseline: one ``contents`` field holding ``title + " " + text``, Anserini's
default analyzer (Porter stemmer, Lucene's English stop words), ``k1=0.9, b=0.4``, the same queries, depth
and ir_measures as the lsr run. The Lucene index lives in ``OUT/bm25/index`` and is reused while the corpus
file is unchanged. Needs the extra ``lsr-search[pyserini]`` (Java 21 comes with it, see :mod:`lsr.pyserini`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from lsr.errors import InvalidInputError
from lsr.eval.metrics import DEFAULT_MEASURES, evaluate_run
from lsr.index.format import write_bytes_atomic
from lsr.io.beir import find_corpus_file, iter_corpus, read_qrels, read_queries, resolve_dataset, split_queries
from lsr.io.trec import write_run

__all__ = ["BASELINES", "bm25_baseline", "add_baselines", "check_baselines"]

log = logging.getLogger(__name__)

BASELINES = ("bm25",)


def _corpus_stamp(corpus: Path) -> dict[str, Any]:
    st = corpus.stat()
    return {"corpus": str(corpus.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def bm25_baseline(dataset: str | os.PathLike[str], out_dir: str | os.PathLike[str], queries: dict[str, str],
                  qrels: dict[str, dict[str, int]], split: str = "test", k: int = 1000,
                  measures: Sequence[str] = DEFAULT_MEASURES, k1: float = 0.9, b: float = 0.4, threads: int = 2,
                  rebuild: bool = False) -> dict[str, Any]:
    """Index ``dataset``'s corpus with Lucene (or reuse ``out_dir/index``), search ``queries`` with BM25,
    write the run and return ``{"label", "engine", "params", "metrics", "run_file", "timings"}``."""
    from lsr.pyserini import BM25Searcher, index_texts

    corpus = find_corpus_file(resolve_dataset(dataset))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index_dir, stamp_file = out / "index", out / "index.json"
    stamp = _corpus_stamp(corpus)
    timings: dict[str, float] = {}
    reusable = (not rebuild and stamp_file.exists() and any(index_dir.glob("segments_*"))
                and orjson.loads(stamp_file.read_bytes()) == stamp)
    if reusable:
        log.info("reusing the BM25 index in %s", index_dir)
    else:
        stamp_file.unlink(missing_ok=True)  # written last: a half-built index is never reused
        started = time.perf_counter()
        index_texts(((d.id, d.full_text) for d in iter_corpus(corpus)), index_dir, threads=threads)
        timings["index_s"] = time.perf_counter() - started
        write_bytes_atomic(stamp_file, orjson.dumps(stamp))
    searcher = BM25Searcher(index_dir, k1=k1, b=b)
    started = time.perf_counter()
    run = searcher.search(queries, k=k, threads=threads)
    timings["search_s"] = time.perf_counter() - started
    searcher.close()
    run_file = out / f"run.{split}.trec"
    write_run(run_file, run, tag="bm25")
    return {
        "label": "BM25",
        "engine": f"Pyserini {metadata.version('pyserini')} (Anserini Lucene)",
        "params": {"k1": k1, "b": b, "k": k, "fields": "title + text", "analyzer": "Anserini default (Porter)"},
        "n_docs": searcher.n_docs,
        "metrics": evaluate_run(qrels, run, measures),
        "run_file": str(run_file),
        "timings": timings,
    }


def check_baselines(names: Sequence[str]) -> None:
    """Fail fast (before an evaluation that may take minutes) on an unknown baseline or a missing extra."""
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise InvalidInputError(f"unknown baseline {unknown[0]!r}; known: {', '.join(BASELINES)}.")
    from lsr.pyserini import check_installed

    check_installed()


def add_baselines(report: dict[str, Any], names: Sequence[str], out_dir: str | os.PathLike[str],
                  dataset: str | os.PathLike[str], split: str = "test", queries: dict[str, str] | None = None,
                  qrels: dict[str, dict[str, int]] | None = None, k: int = 1000,
                  measures: Sequence[str] = DEFAULT_MEASURES, rebuild: bool = False) -> dict[str, Any]:
    """Run each baseline on the queries and qrels the report was made with (``dataset``'s ``split`` unless
    given), add them under ``report["baselines"]`` and rewrite ``out_dir/report.json``."""
    check_baselines(names)
    if qrels is None:
        folder = resolve_dataset(dataset)
        qrels = read_qrels(folder, split)
        queries = split_queries(read_queries(folder), qrels)
    if queries is None:
        raise InvalidInputError("baselines need the queries that were evaluated.")
    out = Path(out_dir)
    baselines = dict(report.get("baselines", {}))
    for name in dict.fromkeys(names):
        baselines[name] = bm25_baseline(dataset, out / name, queries, qrels, split, k, measures, rebuild=rebuild)
    report["baselines"] = baselines
    write_bytes_atomic(out / "report.json", orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return report
