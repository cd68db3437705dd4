"""Approximate search as a recall-latency curve (issue 21): lsr's two-step search (``query_mass``) against
Seismic's knobs, on the same vectors and queries, in one run; a table and a plot.

    python benchmarks/pareto.py                                  # the three query sets below, k = 10
    python benchmarks/pareto.py --datasets scifact --max-queries 100
    python benchmarks/pareto.py --render-only                    # table + plot again from results/pareto.json

Query sets (exchange folders of benchmarks/run.py under $LSR_BENCH_DIR, SPLADE-tiny vectors): ``enwiki-100k``
(the seeded 100k-passage sample, 1,000 title queries: short), ``scifact`` (5,183 abstracts, 300 claims:
medium) and ``scifact-longq`` (the same abstracts, queried with 500 seeded NFCorpus *documents* encoded as
queries: ~240 terms, the shape of ArguAna's argument queries).

Engines, each in its own process and virtual environment (benchmarks/run.py's runners): lsr (run_lsr.py,
float32 weights, the default ``auto`` route; exact, then two-step search at each ``--masses`` value) and
Seismic (run_seismic.py, one build, every ``query_cut,heap_factor`` of ``--seismic``). Latency: one query per
call on one thread, p50 over the queries, after a warm-up; recall: R@k against the exact top-k on the float
weights (tie-aware, benchmarks/peers/check_results.py).

Per query set and recall target (0.99, 0.97, 0.95), the table names the fastest lsr setting and the fastest
Seismic setting reaching it, and the two ratios the issue asks for: lsr exact / lsr approximate (goal >= 1.5)
and lsr approximate / Seismic (goal <= 0.5). The plot (docs/pareto.png) shows every setting's recall and p50.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))

import _common as C  # noqa: E402
from prepare_enwiki import bench_dir  # noqa: E402
from run import check, dataset_folder, run_engine  # noqa: E402
from scale import machine, machine_line  # noqa: E402
from tables import replace_section  # noqa: E402

log = logging.getLogger("pareto")
RESULTS = HERE / "results" / "pareto.json"
PLOT = REPO / "docs" / "pareto.png"
README = HERE / "README.md"
TARGETS = (0.99, 0.97, 0.95)
SEISMIC = ";".join(f"{qc},{hf}" for qc in (3, 5, 8, 12, 20, 40) for hf in (0.7, 0.8, 0.9, 1.0))


def long_query_folder(base: str = "scifact", source: str = "nfcorpus", n: int = 500, seed: int = 0) -> Path:
    """``<base>-longq``: base's documents, queried with n seeded documents of ``source`` as queries."""
    out = bench_dir() / f"{base}-longq"
    if (out / "queries.npz").exists():
        return out
    base_dir, source_dir = dataset_folder(base), dataset_folder(source)
    docs = C.load_exchange(source_dir).docs
    picks = np.sort(np.random.default_rng(seed).permutation(docs.n)[:n])
    rows = [docs.row(int(i)) for i in picks]
    indptr = np.zeros(len(rows) + 1, np.int64)
    np.cumsum([len(r[0]) for r in rows], out=indptr[1:])
    tmp = out.with_name(out.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    for name in ("docs.npz", "doc_ids.txt", "vocab.json"):
        (tmp / name).unlink(missing_ok=True)
        (tmp / name).symlink_to(base_dir / name)
    np.savez(tmp / "queries.npz", indptr=indptr, indices=np.concatenate([r[0] for r in rows]).astype(np.int32),
             values=np.concatenate([r[1] for r in rows]).astype(np.float32), dim=docs.dim)
    source_ids = (source_dir / "doc_ids.txt").read_text(encoding="utf-8").splitlines()
    (tmp / "query_ids.txt").write_text("".join(f"{source}:{source_ids[i]}\n" for i in picks), encoding="utf-8")
    tmp.rename(out)
    return out


def folder_of(name: str) -> Path:
    return long_query_folder() if name == "scifact-longq" else dataset_folder(name)


def label(row: dict) -> str:
    p = row.get("params") or {}
    if row["engine"] == "seismic":
        return f"query_cut={p['query_cut']}, heap_factor={p['heap_factor']}"
    return "exact" if p.get("query_mass", 1) == 1 else f"query_mass={p['query_mass']:g}"


def frontier(rows: list[dict], target: float) -> dict | None:
    """The fastest row whose tie-aware recall reaches the target."""
    ok = [r for r in rows if r["recall_float_ties"] >= target - 1e-9]
    return min(ok, key=lambda r: r["p50_ms"]) if ok else None


def summarise(name: str, rows: list[dict]) -> list[dict]:
    lsr = [r for r in rows if r["engine"] == "lsr"]
    exact = next(r for r in lsr if label(r) == "exact")
    approx = [r for r in lsr if r is not exact]
    seismic = [r for r in rows if r["engine"] == "seismic"]
    out = []
    for target in TARGETS:
        a, s = frontier(approx + [exact], target), frontier(seismic, target)
        out.append({"dataset": name, "target": target, "exact_p50_ms": exact["p50_ms"],
                    "lsr": a and {"setting": label(a), "recall": a["recall_float_ties"], "p50_ms": a["p50_ms"]},
                    "seismic": s and {"setting": label(s), "recall": s["recall_float_ties"], "p50_ms": s["p50_ms"]},
                    "speedup_over_exact": a and exact["p50_ms"] / a["p50_ms"],
                    "ratio_to_seismic": a and s and a["p50_ms"] / s["p50_ms"]})
    return out


def render(saved: dict) -> str:
    lines = [machine_line(saved["machine"]) + f" k = {saved['k']}, one thread, p50 over single-query calls.", "",
             "| queries | R@10 ≥ | lsr exact ms | lsr setting | R@10 | ms | exact / this (≥ 1.5) | Seismic setting "
             "| R@10 | ms | lsr / Seismic (≤ 0.5) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    f = lambda x, spec=".3f": "–" if x is None else format(x, spec)  # noqa: E731
    for s in saved["summary"]:
        a, p = s["lsr"] or {}, s["seismic"] or {}
        lines.append(f"| {s['dataset']} ({saved['sizes'][s['dataset']]}) | {s['target']} | {s['exact_p50_ms']:.3f} "
                     f"| {a.get('setting', 'none')} | {f(a.get('recall'))} | {f(a.get('p50_ms'))} "
                     f"| {f(s['speedup_over_exact'], '.2f')} | {p.get('setting', 'none reaches it')} "
                     f"| {f(p.get('recall'))} | {f(p.get('p50_ms'))} | {f(s['ratio_to_seismic'], '.2f')} |")
    return "\n".join(lines)


def plot(saved: dict) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(saved["rows"])
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        rows = saved["rows"][name]
        mass = lambda r: (r.get("params") or {}).get("query_mass", 1)  # noqa: E731
        two_step = sorted((r for r in rows if r["engine"] == "lsr" and mass(r) < 1), key=mass)
        exact = [r for r in rows if r["engine"] == "lsr" and mass(r) == 1]
        seismic = [r for r in rows if r["engine"] == "seismic"]
        for points, style, text in ((two_step, "o-", "lsr two-step, query_mass 0.4 ... 0.9"),
                                    (exact, "*", "lsr exact"), (seismic, "s", "Seismic (query_cut, heap_factor)")):
            ax.plot([r["p50_ms"] for r in points], [r["recall_float_ties"] for r in points], style, label=text,
                    alpha=0.8, markersize=12 if style == "*" else 6)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("p50 latency, ms (one thread)")
        ax.set_ylabel(f"R@{saved['k']} vs exact")
        ax.set_ylim(0.8, 1.005)
        ax.set_title(f"{name} ({saved['sizes'][name]})")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)


def write_readme(table: str) -> None:
    replace_section(README, "pareto", f"{table}\n\n![recall vs latency](../docs/pareto.png)",
                    "## Approximate search: recall against latency (issue 21)\n\n`python benchmarks/pareto.py` "
                    "(see its docstring).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="enwiki-100k,scifact,scifact-longq")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--masses", default="0.9,0.8,0.7,0.65,0.6,0.55,0.5,0.4")
    parser.add_argument("--seismic", default=SEISMIC)
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not args.render_only:
        saved = {"machine": machine(), "k": args.k, "date": time.strftime("%Y-%m-%d %H:%M"), "rows": {},
                 "sizes": {}, "summary": []}
        settings = ";".join(["1,0"] + [f"1,0,{m}" for m in args.masses.split(",")])
        for name in args.datasets.split(","):
            folder = folder_of(name)
            data = C.load_exchange(folder, args.max_queries)
            saved["sizes"][name] = (f"{data.docs.n:,} docs, {data.queries.n:,} queries of "
                                    f"{data.queries.nnz / max(data.queries.n, 1):.0f} terms")
            out = bench_dir() / "runs" / f"pareto-{name}"
            out.mkdir(parents=True, exist_ok=True)
            extra = ["--no-batch", "--warmup", "50"] + (["--max-queries", str(args.max_queries)]
                                                        if args.max_queries else [])
            results = [run_engine("lsr", folder, args.k, out, extra, ["--variant", "c-auto", "--settings", settings]),
                       run_engine("seismic", folder, args.k, out, extra, ["--settings", args.seismic, "--no-save"])]
            if None in results:
                raise SystemExit(f"a runner failed on {name} (see the log above)")
            rows = check(results, folder, out)
            saved["rows"][name] = rows
            saved["summary"] += summarise(name, rows)
        RESULTS.write_text(json.dumps(saved, indent=1), encoding="utf-8")
    saved = json.loads(RESULTS.read_text(encoding="utf-8"))
    table = render(saved)
    print(table)
    plot(saved)
    write_readme(table)


if __name__ == "__main__":
    main()
