"""Plain FLOPS vs IDF-aware FLOPS: fine-tune the inference-free document encoder from SPLADE-tiny, evaluate.

    python benchmarks/train_idf_flops.py [--datasets nfcorpus,scifact] [--lambdas 1e-3,1e-2,1e-1] [--steps 150]

For each dataset: training examples for its train split (negatives mined by lsr's SPLADE-tiny retrieval,
ensemble teacher scores from all-MiniLM-L6-v2 + SPLADE-tiny, `lsr train-data`), then for each arm and lambda
one `lsr train` run (KL distillation to the ensemble), and the resulting inference-free encoder is indexed
and evaluated on the test split. Nothing is tuned on test: lambdas, learning rate and steps are fixed here.

Arms: ``plain`` trains against binary queries (the tokenizer alone) with plain FLOPS on the documents;
``idf-aware`` trains against IDF-weighted queries (corpus IDF), i.e. the IDF-aware FLOPS. The zero-shot
baseline is SPLADE-tiny's documents with corpus-IDF queries (no training).

FLOPS per query-document pair = sum over the query's terms of the fraction of documents holding the term
(Paria et al.), averaged over the test queries; times the corpus size it is the postings a query touches.
Runs and caches live under $LSR_BENCH_DIR/train (default ~/.cache/lsr-bench/train). Writes
benchmarks/results/train_idf_flops_<dataset>.json and docs/training_flops.png, and prints the table of
docs/training_results.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from prepare_enwiki import bench_dir  # noqa: E402

from lsr.eval.runner import evaluate_beir  # noqa: E402
from lsr.index import open_index  # noqa: E402
from lsr.io.beir import read_qrels, read_queries, resolve_dataset, split_queries  # noqa: E402

log = logging.getLogger("train_idf_flops")
SHARED = REPO.parent / "shared" / "data" / "beir"


def dataset(name: str) -> Path:
    return resolve_dataset("scifact") if name == "scifact" else SHARED / name


def mining_index(name: str) -> Path:
    """SPLADE-tiny index of the corpus (shared with benchmarks/hybrid_prf.py when it exists)."""
    from lsr.jobs.build import build_index

    index = bench_dir() / "hybrid" / name / "index"
    if not (index / "manifest.json").exists():
        index = bench_dir() / "train" / name / "splade-tiny-index"
        if not (index / "manifest.json").exists():
            build_index(dataset(name), index, model="splade-tiny", overwrite=True)
    return index


def training_file(name: str) -> Path:
    from lsr.cli import main

    out = bench_dir() / "train" / name / "train.jsonl"
    if not out.exists():
        code = main(["train-data", str(dataset(name)), str(mining_index(name)), "--out", str(out),
                     "--negatives", "20", "--teachers", "dense=0.5,sparse=0.5"])
        if code:
            raise SystemExit(code)
    return out


def zero_shot_idf(name: str) -> Path:
    """Corpus IDF with SPLADE-tiny's tokenizer: the query side of the zero-shot baseline and the
    IDF-aware arm (the same table, so the arms differ only in training)."""
    from lsr.cli import main

    out = bench_dir() / "train" / name / "idf.json"
    if not out.exists():
        main(["-q", "idf", str(dataset(name)), "--model", "splade-tiny", "--out", str(out)])
    return out


def flops_per_query(index_dir: Path, query_vectors) -> tuple[float, float]:  # noqa: ANN001 - SparseBatch
    """(expected shared terms per query-document pair, postings per query) over the test queries."""
    index = open_index(index_dir)
    df = np.zeros(index.dim, np.int64)
    for segment in index.segments:
        df += np.bincount(segment.vectors(0, segment.info.n_docs).indices, minlength=index.dim)
    postings = np.array([df[query_vectors.indices[a:b]].sum()
                         for a, b in zip(query_vectors.indptr[:-1], query_vectors.indptr[1:], strict=True)])
    return float(postings.mean() / index.n_docs), float(postings.mean())


def evaluate(name: str, model: str, idf: Path | None, out: Path) -> dict:
    options = {"type": "inference-free", **({"idf": str(idf)} if idf is not None else {})}
    report = evaluate_beir(dataset(name), out, split="test", model=model, encoder_options=options,
                           show_progress=False)
    from lsr.search import SparseRetriever

    folder = dataset(name)
    qrels = read_qrels(folder, "test")
    queries = split_queries(read_queries(folder), qrels)
    vectors = SparseRetriever(out / "index").encode(list(queries.values()))
    pair, postings = flops_per_query(out / "index", vectors)
    return {"nDCG@10": report["metrics"]["nDCG@10"], "R@100": report["metrics"]["R@100"],
            "flops": pair, "postings_per_query": postings,
            "doc_nnz": report["sparsity"]["avg_nnz_doc"], "query_nnz": report["sparsity"]["avg_nnz_query"],
            "encode_docs_s": report["timings"].get("encode_docs_s")}


def run_arm(name: str, arm: str, lam: float, steps: int, temperature: float, train_file: Path) -> dict:
    from lsr.train import TrainConfig, train

    root = bench_dir() / "train" / name / (f"{arm}-{lam:g}" + ("" if temperature == 1 else f"-t{temperature:g}"))
    config = TrainConfig(str(train_file), str(dataset(name)), model="splade-tiny", encoder="inference-free",
                         flops=arm, idf=str(zero_shot_idf(name)) if arm == "idf-aware" else None, loss="kl",
                         doc_lambda=lam, steps=steps, batch_size=8, negatives=7, lr=3e-5,
                         lambda_warmup=50, checkpoint_every=25, seed=13, temperature=temperature)
    model = train(config, root / "run")
    summary = json.loads((model / "lsr-train.json").read_text())
    result = evaluate(name, str(model), None, root / "eval")
    last = [json.loads(line) for line in (root / "run" / "train_log.jsonl").read_text().splitlines()][-20:]
    first = json.loads((root / "run" / "train_log.jsonl").read_text().splitlines()[0])
    return {"arm": arm, "lambda": lam, "temperature": temperature, "student_temperature": first.get("temperature", 1.0),
            **result, "train_s": summary.get("seconds"),
            "train_steps": summary.get("steps"), "resumed_at": summary.get("resumed_at"),
            "train_doc_nnz_last20": float(np.mean([r["doc_nnz"] for r in last]))}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4.2), squeeze=False)
    for ax, (name, rows) in zip(axes[0], results.items(), strict=True):
        styles = {("plain", True): "s-", ("idf-aware", True): "o-", ("plain", False): "s:", ("idf-aware", False): "o:"}
        for (arm, calibrated), style in styles.items():
            points = sorted((r["flops"], r["nDCG@10"], r["lambda"]) for r in rows["runs"]
                            if r["arm"] == arm and (r.get("temperature", 1) == 0) == calibrated)
            if points:
                label = f"{arm} FLOPS" + (", τ calibrated" if calibrated else ", τ = 1")
                ax.plot([p[0] for p in points], [p[1] for p in points], style, label=label,
                        color="tab:orange" if arm == "plain" else "tab:blue", alpha=1.0 if calibrated else 0.45)
                for x, y, lam in points:
                    ax.annotate(f"λ={lam:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        base = rows["zero_shot"]
        ax.plot([base["flops"]], [base["nDCG@10"]], "k*", markersize=11, label="zero-shot (SPLADE-tiny docs, IDF)")
        ax.set_xscale("log")
        ax.set_xlabel("FLOPS per query-document pair (log)")
        ax.set_ylabel("nDCG@10 (test)")
        ax.set_title(f"{name}: inference-free, fine-tuned from SPLADE-tiny")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def table(results: dict) -> str:
    lines = []
    for name, rows in results.items():
        lines += [f"### {name} (test split)", "",
                  "| encoder | λ_d | student τ | nDCG@10 | R@100 | FLOPS/pair | postings/query | doc nnz | train s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        base = rows["zero_shot"]
        lines.append(f"| zero-shot (SPLADE-tiny docs, corpus IDF) | – | – | {base['nDCG@10']:.4f} "
                     f"| {base['R@100']:.4f} | {base['flops']:.2f} | {base['postings_per_query']:,.0f} "
                     f"| {base['doc_nnz']:.1f} | – |")
        for r in sorted(rows["runs"], key=lambda r: (-r.get("temperature", 1), r["arm"], r["lambda"])):
            tau = f"{r.get('student_temperature', 1):.3g}" + (" (calibrated)" if r.get("temperature", 1) == 0 else "")
            lines.append(f"| {r['arm']} FLOPS | {r['lambda']:g} | {tau} | {r['nDCG@10']:.4f} | {r['R@100']:.4f} | "
                         f"{r['flops']:.2f} | {r['postings_per_query']:,.0f} | {r['doc_nnz']:.1f} | "
                         f"{r['train_s'] or 0:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="nfcorpus,scifact")
    parser.add_argument("--lambdas", default="1e-3,1e-2,1e-1")
    parser.add_argument("--arms", default="plain,idf-aware")
    parser.add_argument("--tag", default="", help="results file suffix (e.g. -plain), for arms run in parallel")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="student temperature for the KL; 0 = calibrated on the first training batches")
    parser.add_argument("--steps", type=int, default=150, help="training steps of 8 queries x 8 documents")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in args.datasets.split(","):
        # one results file per dataset, so that datasets can run in parallel processes
        out_json = HERE / "results" / f"train_idf_flops_{name}{args.tag}.json"
        rows = json.loads(out_json.read_text()) if out_json.exists() else {"runs": []}
        train_file = training_file(name)
        if "zero_shot" not in rows:
            rows["zero_shot"] = evaluate(name, "splade-tiny", zero_shot_idf(name),
                                         bench_dir() / "train" / name / "zero-shot")
        for arm in args.arms.split(","):
            for lam in (float(x) for x in args.lambdas.split(",")):
                if any(r["arm"] == arm and r["lambda"] == lam and r.get("temperature", 1) == args.temperature
                       for r in rows["runs"]):
                    continue
                log.info("%s: %s FLOPS, lambda %g", name, arm, lam)
                rows["runs"].append(run_arm(name, arm, lam, args.steps, args.temperature, train_file))
                rows["machine"] = {"platform": platform.platform(), "cpus": 2}
                out_json.write_text(json.dumps(rows, indent=2))
                print(table({name: rows}), flush=True)
    results: dict[str, dict] = {}
    for path in sorted((HERE / "results").glob("train_idf_flops_*.json")):
        part = json.loads(path.read_text())
        name = path.stem.removeprefix("train_idf_flops_").split("-")[0]
        merged = results.setdefault(name, {"runs": [], "zero_shot": part["zero_shot"]})
        merged["runs"] += part["runs"]
    plot(results, REPO / "docs" / "training_flops.png")
    print(table(results))


if __name__ == "__main__":
    main()
