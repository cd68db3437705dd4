"""The default pipeline against BM25: splade+bm25 in one index (+ dense), tuned on train/dev, reported on test.

    python benchmarks/bm25_fusion.py [--datasets scifact,nfcorpus] [--index NAME=PATH ...]

For each dataset one index is built with ``--encoder splade+bm25`` and all-MiniLM-L6-v2 dense vectors (cached
under $LSR_BENCH_DIR/bm25_fusion). One setting for all collections is chosen on the tuning splits only
(SciFact train, NFCorpus dev; the mean nDCG@10 over them): the BM25 part's query weight w in
``splade + w * bm25`` and then the convex fusion weight of that sparse side against the dense one. Every row
is then evaluated once on test. Writes benchmarks/results/bm25_fusion.json and the README table between
``<!-- bm25:begin -->`` and ``<!-- bm25:end -->``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import hybrid_prf  # noqa: E402
from hybrid_prf import TUNE_SPLIT, dataset  # noqa: E402
from prepare_enwiki import bench_dir  # noqa: E402
from scale import machine, machine_line  # noqa: E402
from tables import replace_section  # noqa: E402

from lsr.eval.metrics import evaluate_run  # noqa: E402
from lsr.eval.runner import run_from_hits  # noqa: E402
from lsr.search import SearchPipeline, SparseRetriever  # noqa: E402

log = logging.getLogger("bm25_fusion")
MEASURES = ("nDCG@10", "R@100")
BM25_WEIGHTS = (0.1, 0.3, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0)
DENSE_ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def build(name: str) -> Path:
    from lsr.jobs.build import build_index

    index = bench_dir() / "bm25_fusion" / name / "index"
    if not (index / "manifest.json").exists():
        build_index(dataset(name), index, model="splade-tiny", overwrite=True,
                    work_dir=bench_dir() / "bm25_fusion" / name / "encoded",
                    encoder_options={"type": "splade+bm25"}, dense_model="all-MiniLM-L6-v2")
    return index


class Evaluator(hybrid_prf.Evaluator):
    """nDCG@10 / R@100 and ms per query of a pipeline config on one split; one sparse retriever per set of
    query weights, kept between configs."""

    def __init__(self, index: Path, folder: Path, split: str):
        super().__init__(index, folder, split)
        self.sparse: dict[tuple, SparseRetriever] = {}

    def __call__(self, config: dict) -> tuple[dict[str, float], float]:
        weights = tuple(config.get("query_weights", ()))
        if weights not in self.sparse:
            self.sparse[weights] = SparseRetriever(self.index, query_weights=weights or None)
        pipeline = SearchPipeline(self.index, config, sparse=self.sparse[weights], dense=self.dense)
        if config.get("retriever", "sparse") != "sparse":
            self.dense = pipeline.dense
        started = time.perf_counter()
        hits = pipeline.search(self.texts, 100)
        ms = 1000 * (time.perf_counter() - started) / len(self.ids)
        return evaluate_run(self.qrels, run_from_hits(pipeline.index, self.ids, hits), MEASURES), ms


def tune(tuners: list[Evaluator], candidates: list[dict]) -> tuple[dict, list[dict]]:
    """The candidate with the best mean nDCG@10 over the tuning splits, and every candidate's scores."""
    scored = []
    for config in candidates:
        scores = [t(config)[0]["nDCG@10"] for t in tuners]
        scored.append({"config": config, "nDCG@10": scores, "mean": sum(scores) / len(scores)})
        log.info("tune %.4f %s", scored[-1]["mean"], json.dumps(config))
    return max(scored, key=lambda s: s["mean"])["config"], scored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="scifact,nfcorpus")
    parser.add_argument("--index", action="append", default=[], metavar="NAME=PATH",
                        help="use this splade+bm25 index with dense vectors (e.g. from lsr eval --encoder "
                             "splade+bm25 --dense all-MiniLM-L6-v2) instead of building one")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    names = args.datasets.split(",")
    given = dict(item.split("=", 1) for item in args.index)
    indexes = {name: Path(given[name]) if name in given else build(name) for name in names}
    tuners = [Evaluator(indexes[n], dataset(n), TUNE_SPLIT[n]) for n in names]
    sparse, sparse_grid = tune(tuners, [{"query_weights": [1.0, w]} for w in BM25_WEIGHTS])
    three_way, dense_grid = tune(tuners, [{**sparse, "retriever": "hybrid",
                                           "fusion": {"method": "convex", "alpha": a, "normalization": "minmax"}}
                                          for a in DENSE_ALPHAS])
    rows = {
        "BM25 (lsr, no Java)": {"query_weights": [0.0, 1.0]},
        "SPLADE-tiny": {"query_weights": [1.0, 0.0]},
        "dense (MiniLM)": {"retriever": "dense"},
        f"splade + {sparse['query_weights'][1]:g}·bm25 (one index)": sparse,
        f"splade + bm25 + dense (convex, alpha {three_way['fusion']['alpha']:g})": three_way,
    }
    results = {"machine": machine(),
               "date": time.strftime("%Y-%m-%d"), "tuning": {n: TUNE_SPLIT[n] for n in names},
               "grid": {"bm25_weight": sparse_grid, "dense_alpha": dense_grid}, "rows": {}}
    for label, config in rows.items():
        results["rows"][label] = {"config": config}
        for name in names:
            metrics, ms = Evaluator(indexes[name], dataset(name), "test")(config)
            results["rows"][label][name] = {**metrics, "ms_per_query": ms}
            log.info("%s %s %s %.2f ms", label, name, metrics, ms)
    (HERE / "results" / "bm25_fusion.json").write_text(json.dumps(results, indent=1))
    write_readme(results, names)


def write_readme(results: dict, names: list[str]) -> None:
    """The table into README.md and, with the machine it ran on, into benchmarks/README.md."""
    lines = ["| pipeline | " + " | ".join(f"{n} nDCG@10 | {n} R@100 | {n} ms/query" for n in names) + " |",
             "|---|" + "---|---|---|" * len(names)]
    for label, row in results["rows"].items():
        cells = [f"{row[n]['nDCG@10']:.4f} | {row[n]['R@100']:.4f} | {row[n]['ms_per_query']:.2f}" for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    m = results["machine"]
    replace_section(REPO / "README.md", "bm25", "\n".join(lines))
    replace_section(HERE / "README.md", "bm25", "\n".join([f"{machine_line(m)} Date {results['date']}.", "", *lines]))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
