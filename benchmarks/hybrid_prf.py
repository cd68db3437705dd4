"""Dense, sparse, hybrid and PRF on SciFact and NFCorpus: tune on train/dev, report test, plot.

    python benchmarks/hybrid_prf.py [--datasets scifact,nfcorpus]

For each dataset: one index with SPLADE-tiny and all-MiniLM-L6-v2 vectors (cached under $LSR_BENCH_DIR);
fusion alphas and PRF parameters are chosen by nDCG@10 on the tuning split (SciFact train, NFCorpus dev),
never on test; every configuration is then run once on test. Writes benchmarks/results/hybrid_prf.json,
the table in docs/hybrid_prf.md and the plot docs/hybrid_prf.png.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from prepare_enwiki import bench_dir  # noqa: E402

from lsr.eval.metrics import evaluate_run  # noqa: E402
from lsr.eval.runner import run_from_hits  # noqa: E402
from lsr.io.beir import read_qrels, read_queries, resolve_dataset, split_queries  # noqa: E402
from lsr.search import SearchPipeline  # noqa: E402

log = logging.getLogger("hybrid_prf")
SHARED = REPO.parent / "shared" / "data" / "beir"
TUNE_SPLIT = {"scifact": "train", "nfcorpus": "dev"}
MEASURES = ("nDCG@10", "R@100")


def dataset(name: str) -> Path:
    return resolve_dataset("scifact") if name == "scifact" else SHARED / name


def build(name: str) -> Path:
    from lsr.jobs.build import build_index

    index = bench_dir() / "hybrid" / name / "index"
    if not (index / "manifest.json").exists():
        build_index(dataset(name), index, model="splade-tiny", overwrite=True,
                    work_dir=bench_dir() / "hybrid" / name / "encoded", dense_model="all-MiniLM-L6-v2")
    return index


class Evaluator:
    def __init__(self, index: Path, folder: Path, split: str):
        self.index = index
        self.qrels = read_qrels(folder, split)
        queries = split_queries(read_queries(folder), self.qrels)
        self.ids = list(queries)
        self.texts = [queries[q] for q in self.ids]
        self.sparse = self.dense = None

    def __call__(self, config: dict) -> tuple[dict[str, float], dict[str, float]]:
        pipeline = SearchPipeline(self.index, config, sparse=self.sparse, dense=self.dense)
        if config.get("retriever") != "dense":
            self.sparse = pipeline.sparse  # reuse the loaded models between configurations
        if config.get("retriever") != "sparse":
            self.dense = pipeline.dense
        hits = pipeline.search(self.texts, 100)
        metrics = evaluate_run(self.qrels, run_from_hits(pipeline.index, self.ids, hits), MEASURES)
        per_query = {stage: 1000 * seconds / len(self.ids) for stage, seconds in pipeline.timings.items()}
        return metrics, per_query


def tune(evaluate: Evaluator, candidates: list[dict]) -> dict:
    best, best_score = None, -1.0
    for config in candidates:
        score = evaluate(config)[0]["nDCG@10"]
        log.info("tune %.4f %s", score, json.dumps(config))
        if score > best_score:
            best, best_score = config, score
    return best


def configurations(tuner: Evaluator) -> dict[str, dict]:
    """Every row of the table, with its parameters chosen on the tuning split."""
    rows = {"sparse (SPLADE-tiny)": {"retriever": "sparse"}, "dense (MiniLM)": {"retriever": "dense"}}
    fusion = {
        "pyserini": tune(tuner, [{"retriever": "hybrid", "fusion": {"method": "pyserini", "alpha": a}}
                                 for a in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)]),
        "convex": tune(tuner, [{"retriever": "hybrid", "fusion": {"method": "convex", "alpha": a,
                                                                  "normalization": n}}
                               for a, n in itertools.product((0.2, 0.3, 0.4, 0.5, 0.6, 0.7), ("minmax", "zscore"))]),
        "rrf": {"retriever": "hybrid", "fusion": {"method": "rrf"}},
    }
    for method, config in fusion.items():
        rows[f"hybrid {method}"] = config
    best_fusion = tune(tuner, list(fusion.values()))["fusion"]
    sparse_prf = tune(tuner, [{"retriever": "sparse", "prf": {"sparse": {"method": m, "fb_docs": d, "fb_terms": t,
                                                                          **({"beta": b} if m == "rocchio" else
                                                                             {"lam": b})}}}
                              for m, d, t, b in itertools.product(("rocchio", "rm3"), (3, 10), (10, 30),
                                                                  (0.25, 0.5))])["prf"]["sparse"]
    dense_prf = tune(tuner, [{"retriever": "dense", "prf": {"dense": {"method": "average", "depth": 3}}},
                             {"retriever": "dense", "prf": {"dense": {"method": "rocchio", "depth": 5, "alpha": 0.4,
                                                                      "beta": 0.6}}}])["prf"]["dense"]
    rows["sparse + PRF"] = {"retriever": "sparse", "prf": {"sparse": sparse_prf}}
    rows["dense + Vector-PRF"] = {"retriever": "dense", "prf": {"dense": dense_prf}}
    prf = {"sparse": sparse_prf, "dense": dense_prf}
    for placement, side in (("before", "sparse"), ("before", "dense"), ("after", None), ("both", None)):
        label = f"hybrid, PRF {placement}" + (f" ({side} side)" if side else "")
        rows[label] = {"retriever": "hybrid", "fusion": best_fusion,
                       "prf": {"placement": placement, **({"side": side} if side else {}), **prf}}
    return rows


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(next(iter(results.values()))["rows"])
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 6), sharey=False)
    axes = axes if len(results) > 1 else [axes]
    for ax, (dataset_name, result) in zip(axes, results.items(), strict=True):
        values = [result["rows"][n]["test"]["nDCG@10"] for n in names]
        colours = ["#888" if n.startswith(("sparse", "dense")) else "#3a7" if "PRF" not in n else "#37a" for n in names]
        ax.barh(range(len(names)), values, color=colours)
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.set_xlim(min(values) - 0.05, max(values) + 0.02)
        ax.set_title(f"{dataset_name} test, nDCG@10")
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:.3f}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(results: dict) -> str:
    datasets = list(results)
    lines = ["| configuration | " + " | ".join(f"{d} nDCG@10 | {d} R@100 | {d} ms/query" for d in datasets) + " |",
             "|---|" + "---|---|---|" * len(datasets)]
    for name in next(iter(results.values()))["rows"]:
        cells = []
        for d in datasets:
            row = results[d]["rows"][name]
            cells += [f"{row['test']['nDCG@10']:.4f}", f"{row['test']['R@100']:.4f}", f"{row['ms_per_query']:.1f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="scifact,nfcorpus")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    results = {}
    for name in args.datasets.split(","):
        index = build(name)
        tuner = Evaluator(index, dataset(name), TUNE_SPLIT[name])
        rows = configurations(tuner)
        tester = Evaluator(index, dataset(name), "test")
        tester.sparse, tester.dense = tuner.sparse, tuner.dense
        out = {}
        for label, config in rows.items():
            for side in (tester.sparse, tester.dense):  # time query encoding too: forget memoised encodings
                if side is not None:
                    side._last = None
            started = time.perf_counter()
            metrics, stages = tester(config)
            out[label] = {"config": config, "test": metrics, "stages_ms_per_query": stages,
                          "ms_per_query": stages.get("total", 1000 * (time.perf_counter() - started))}
            log.info("%s %s: %s", name, label, metrics)
        results[name] = {"tuned_on": TUNE_SPLIT[name], "rows": out}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "hybrid_prf.json").write_text(json.dumps(results, indent=1))
    docs = REPO / "docs"
    docs.mkdir(exist_ok=True)
    plot(results, docs / "hybrid_prf.png")
    text = (docs / "hybrid_prf.md").read_text() if (docs / "hybrid_prf.md").exists() else ""
    begin, end = "<!-- table:begin -->", "<!-- table:end -->"
    if begin not in text:
        text += f"\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    (docs / "hybrid_prf.md").write_text(f"{head}{begin}\n{table(results)}\n{end}{rest.split(end, 1)[1]}")
    print(table(results))


if __name__ == "__main__":
    main()
