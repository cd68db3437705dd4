"""Exact routes per query class (issue 21): measure exhaustive scoring and block-max per query, fit the cost model
that ``auto`` decides with (lsr/kernels/cost_model.py), and check ``auto`` against the fastest route per class.

    python benchmarks/routes.py                                  # measure, fit, check; results/routes.json
    python benchmarks/routes.py --collections scifact --queries 100 --ks 10   # a quick look
    python benchmarks/routes.py --render-only                    # the table again from results/routes.json

Collections: exchange folders of benchmarks/run.py under $LSR_BENCH_DIR (SPLADE-tiny vectors, float32 weights,
one segment built in memory with the index's own codec): small (scifact 5.2k, nfcorpus 3.6k documents) and
large (enwiki-100k, the seeded 100k-passage sample). Queries per collection: its own queries (enwiki titles,
SciFact claims, NFCorpus questions) and long queries, a seeded sample of another collection's *documents*
encoded as queries (the shape of ArguAna's argument queries, ~200 terms). Classes by the query's term count:
short (< 24 terms), medium (24-95), long (>= 96).

Per query, k and route, the kernel call alone (``lsr.kernels.topk``, C backend, one thread) is timed
``--repeats`` times, routes interleaved, and the minimum kept (the noise on a shared 2-core VM is one-sided);
a query whose guarded time is past 1.5x its exhaustive time is timed ``RETIME_REPEATS`` more times on those
two routes (``retimed`` in its row), so that the worst-query column measures the route, not one slow repeat.
Routes: ``exhaustive``; ``blockmax`` never giving up (the cost model's PURE_BLOCKMAX, with its per-query
counters: seeds, candidates and candidates scored); ``guarded`` block-max (hands over at guard x exhaustive);
``auto``.

The fit (``fit``): non-negative least squares of the per-query times against the cost model's counts, rows
weighted by 1 / time (relative error, so that short queries count as much as long ones), one constant per
route for the per-call overhead (dropped afterwards: it is the same for every route); the share of candidate
blocks block-max ends up scoring is fitted as a power law of the candidate count (log-log least squares).
The fitted model is printed as a ``CostModel(...)`` line for lsr/kernels/cost_model.py and stored in the
results; ``--check-model fitted`` reruns the check with it without editing the library.

The check: per class (collection size x query length x k), the mean time of each route; ``auto`` should be
within 5% of the fastest exact route, and guarded block-max within 1.5x exhaustive on every query.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))

import _common as C  # noqa: E402
from prepare_enwiki import bench_dir  # noqa: E402
from scale import machine, machine_line  # noqa: E402
from tables import replace_section  # noqa: E402

from lsr.kernels import PostingArrays, set_threads, topk  # noqa: E402

# the kernels' own heap term (numba's mirror of the C kernel's), so the fit prices what they predict
from lsr.kernels._numba import heap_work, offered_docs, prefilter_scan  # noqa: E402
from lsr.kernels.cost_model import FITTED, CostModel  # noqa: E402
from lsr.types import SparseBatch  # noqa: E402

log = logging.getLogger("routes")
RESULTS = HERE / "results" / "routes.json"
README = HERE / "README.md"
LONG_SOURCE = {"scifact": "nfcorpus", "nfcorpus": "scifact", "enwiki-100k": "scifact"}
SIZE = {"scifact": "small", "nfcorpus": "small", "enwiki-100k": "large"}
GUARDED_GOAL = 1.5  # guarded block-max's worst query against exhaustive scoring (issue 21)
RETIME_REPEATS = 10  # further repeats of a query past that goal
ROUTES = ("exhaustive", "blockmax", "guarded", "auto")


def length_class(n_terms: int) -> str:
    return "short" if n_terms < 24 else "medium" if n_terms < 96 else "long"


def batch_of(csr: C.Csr) -> SparseBatch:
    return SparseBatch(csr.indptr, csr.indices, csr.values, csr.dim)


def query_pool(name: str, n_queries: int, n_long: int, seed: int) -> list[tuple[str, SparseBatch]]:
    """(source, one-query batch) for the collection's own queries and long queries from another's documents."""
    own = C.load_exchange(bench_dir() / name).queries
    other = C.load_exchange(bench_dir() / LONG_SOURCE[name]).docs
    rng = np.random.default_rng(seed)
    picks = [("own", own, i) for i in rng.permutation(own.n)[:n_queries]]
    picks += [("docs", other, i) for i in rng.permutation(other.n)[:n_long]]
    pool = []
    for source, csr, i in picks:
        idx, val = csr.row(int(i))
        if len(idx):
            pool.append((source, SparseBatch(np.array([0, len(idx)]), idx.copy(), val.copy(), csr.dim)))
    return pool


def counts(p: PostingArrays, q: SparseBatch) -> dict:
    """The cost model's inputs for one query, as the C kernel computes them."""
    t = q.indices
    postings = int((p.offsets[t + 1] - p.offsets[t]).sum())
    b = p.blocks
    dense = b.dense_rows[t] >= 0 if len(b.dense_rows) else np.zeros(len(t), bool)
    entries = int((b.offsets[t + 1] - b.offsets[t])[~dense].sum())
    n_blocks = -(-p.n_docs // b.block_size)
    scanned = p.n_docs if postings * 4 >= p.n_docs else min(postings, p.n_docs)
    return {"terms": len(t), "postings": postings, "scanned": scanned, "entries": entries,
            "rows": int(dense.sum()), "blocks": n_blocks, "block_size": b.block_size}


def route_models(model: CostModel) -> dict[str, tuple[str, CostModel]]:
    """(algorithm, cost model) of each route, made once: a model made per call would time its making too."""
    return {"exhaustive": ("exhaustive", model), "blockmax": ("blockmax", replace(model, guard=math.inf)),
            "guarded": ("blockmax", model), "auto": ("auto", model)}


def time_query(p: PostingArrays, q: SparseBatch, k: int, route: str, models: dict[str, tuple[str, CostModel]],
               stats: np.ndarray | None = None) -> float:
    algorithm, cost = models[route]
    cost.as_array()  # cached on the model: not timed
    t0 = time.perf_counter_ns()
    topk(p, q, k, backend="c", algorithm=algorithm, cost_model=cost, stats=stats)
    return (time.perf_counter_ns() - t0) / 1e3  # microseconds


def measure(name: str, args: argparse.Namespace, model: CostModel) -> list[dict]:
    ex = C.load_exchange(bench_dir() / name)
    if args.weights == "uint8":  # what `lsr index` stores by default: uint8 at SPLADE-tiny's proven bound
        from lsr.encoders import load_encoder

        scale = 255.0 / load_encoder("splade-tiny").weight_bound()
        p = PostingArrays.from_documents(batch_of(ex.docs), weight_dtype="uint8", scale=scale)
    else:
        p = PostingArrays.from_documents(batch_of(ex.docs))
    rows = []
    pool = query_pool(name, args.queries, args.long, args.seed)
    log.info("%s: %d documents, %d postings, %d queries", name, p.n_docs, p.nnz, len(pool))
    models = route_models(model)
    for k in args.ks:
        for source, q in pool:
            topk(p, q, k, backend="c", algorithm="exhaustive")  # warm the query's postings
            best = dict.fromkeys(ROUTES, math.inf)
            stats = np.zeros((1, 4), np.int64)
            for _ in range(args.repeats):
                for route in ROUTES:
                    st = stats if route == "blockmax" else None
                    best[route] = min(best[route], time_query(p, q, k, route, models, st))
            # a query past the guarded goal is timed again, more often, on the two routes compared: one slow
            # repeat of a ~20 µs call on a shared VM is enough to cross the line
            retimed = best["guarded"] > GUARDED_GOAL * best["exhaustive"]
            if retimed:
                for _ in range(RETIME_REPEATS):
                    for route in ("exhaustive", "guarded"):
                        best[route] = min(best[route], time_query(p, q, k, route, models))
            route_stats = np.zeros((1, 4), np.int64)
            topk(p, q, k, backend="c", algorithm="auto", cost_model=model, stats=route_stats)
            rows.append({"collection": name, "size": SIZE.get(name, "large"), "n_docs": p.n_docs, "k": k,
                         "source": source, **counts(p, q), "us": best,
                         "seeds": int(stats[0, 1]), "candidates": int(stats[0, 2]), "scored": int(stats[0, 3]),
                         "auto_route": int(route_stats[0, 0]), "retimed": retimed})
        log.info("%s k=%d done", name, k)
    return rows


# ------------------------------------------------------------------------------------------- the fit

def design(rows: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Feature rows of exhaustive and block-max times, the times, and the heap work of block-max's scored
    blocks (their documents offered to the top-k heap; its constant is exhaustive's, see ``fit``)."""
    ex, bm, y_ex, y_bm, heap_bm = [], [], [], [], []
    for r in rows:
        ex.append([r["postings"], r["scanned"], r["terms"],
                   heap_work(r["k"], offered_docs(r["k"], min(r["postings"], r["n_docs"]))),
                   prefilter_scan(r["k"], r["scanned"])])
        scored = r["seeds"] + r["scored"]
        c = r["candidates"]
        bm.append([r["entries"], r["rows"] * r["blocks"], r["blocks"], r["terms"] * scored,
                   r["terms"] * scored * math.log2(max(r["blocks"], 2)), c * math.log2(max(c, 2))])
        heap_bm.append(heap_work(r["k"], r.get("block_size", 8) * scored))
        y_ex.append(r["us"]["exhaustive"])
        y_bm.append(r["us"]["blockmax"])
    return np.array(ex, float), np.array(bm, float), np.array(y_ex), np.array(y_bm), np.array(heap_bm)


def guess_features(r: dict) -> list[float]:
    """What auto's up-front guess of the blocks scored is a linear function of (the C kernel's predicted_blocks)."""
    lk, lb, lt = math.log(r["k"]), math.log(max(r["blocks"], 1)), math.log(max(r["terms"], 1))
    return [1, lk, lb, lt, math.log(max(r["postings"], 1)), lk * lb, lk * lt]


def nnls_relative(x: np.ndarray, y: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
    """Non-negative coefficients of y ~ [x, 1] (+ ``known``, a part of y already accounted for), rows weighted
    by 1 / y (relative error); the last is the per-call overhead."""
    a = np.hstack([x, np.ones((len(x), 1))]) / y[:, None]
    rest = np.ones(len(y)) - (0 if known is None else known / y)
    coef, _ = nnls(a, rest)
    return coef


def fit(rows: list[dict], guard: float) -> tuple[CostModel, dict]:
    x_ex, x_bm, y_ex, y_bm, heap_bm = design(rows)
    c_ex = nnls_relative(x_ex, y_ex)
    # block-max offers its scored blocks' documents to the same heap: exhaustive's heap constant prices them
    c_bm = nnls_relative(x_bm, y_bm, known=c_ex[3] * heap_bm)
    # the share of candidate blocks scored: scored ~ ratio * candidates ** exponent, over queries with both > 0
    cand = np.array([r["candidates"] for r in rows], float)
    scored = np.array([r["scored"] for r in rows], float)
    ok = (cand > 0) & (scored > 0)
    exponent, log_ratio = np.polyfit(np.log(cand[ok]), np.log(scored[ok]), 1) if ok.sum() > 2 else (1.0, 0.0)
    # auto's up-front guess of the blocks scored (seeds + candidates): log-log least squares on what is known
    # before the bounds (k, blocks, terms, postings)
    blocks = np.array([guess_features(r) for r in rows])
    scored_blocks = np.array([max(r["seeds"] + r["scored"], 1) for r in rows], float)
    guess, *_ = np.linalg.lstsq(blocks, np.log(scored_blocks), rcond=None)
    ns_per_us = 1e3
    model = CostModel(posting=c_ex[0] * ns_per_us, scan_doc=c_ex[1] * ns_per_us, term=c_ex[2] * ns_per_us,
                      heap=c_ex[3] * ns_per_us, prefilter_scan=c_ex[4] * ns_per_us,
                      entry=c_bm[0] * ns_per_us, row_block=c_bm[1] * ns_per_us, block=c_bm[2] * ns_per_us,
                      block_term=c_bm[3] * ns_per_us, block_term_log=c_bm[4] * ns_per_us,
                      cand_sort=c_bm[5] * ns_per_us,
                      scored_ratio=float(np.exp(log_ratio)), scored_exponent=float(exponent), guard=guard,
                      blocks_const=guess[0], blocks_k=guess[1], blocks_blocks=guess[2], blocks_terms=guess[3],
                      blocks_postings=guess[4], blocks_k_blocks=guess[5], blocks_k_terms=guess[6])
    pred_ex = x_ex @ c_ex[:-1] + c_ex[-1]
    pred_bm = x_bm @ c_bm[:-1] + c_bm[-1] + c_ex[3] * heap_bm
    quality = {"overhead_us": {"exhaustive": c_ex[-1], "blockmax": c_bm[-1]},
               "median_rel_error": {"exhaustive": float(np.median(np.abs(pred_ex / y_ex - 1))),
                                    "blockmax": float(np.median(np.abs(pred_bm / y_bm - 1))),
                                    "blocks_scored_guess": float(np.median(np.abs(np.exp(blocks @ guess)
                                                                                  / scored_blocks - 1)))}}
    return model, quality


def model_line(m: CostModel) -> str:
    return "CostModel(" + ", ".join(f"{k}={float(v):.4g}" for k, v in asdict(m).items()) + ")"


# ------------------------------------------------------------------------------------------- the check

def summarise(rows: list[dict]) -> list[dict]:
    """Per class: mean time of each route, the fastest exact route, auto's ratio to it, and guarded block-max's
    worst ratio to exhaustive on a single query."""
    classes: dict[tuple, list[dict]] = {}
    for r in rows:
        classes.setdefault((r["size"], length_class(r["terms"]), r["k"]), []).append(r)
    out = []
    for (size, length, k), rs in sorted(classes.items()):
        mean = {route: float(np.mean([r["us"][route] for r in rs])) for route in ROUTES}
        best = min(("exhaustive", "blockmax", "guarded"), key=mean.get)
        guarded = np.array([r["us"]["guarded"] / r["us"]["exhaustive"] for r in rs])
        out.append({"size": size, "length": length, "k": k, "queries": len(rs),
                    "mean_terms": float(np.mean([r["terms"] for r in rs])), "mean_us": mean, "best": best,
                    "auto_ratio": mean["auto"] / mean[best], "guarded_worst_ratio": float(guarded.max()),
                    "guarded_past_goal": int((guarded > GUARDED_GOAL).sum())})
    return out


def render(summary: list[dict], meta: dict) -> str:
    lines = [machine_line(meta["machine"]) + f" Cost model checked: {meta['model']}.", "",
             "| collections | queries | k | n | terms | exhaustive µs | block-max µs | guarded µs | auto µs "
             "| auto / best | guarded worst / exhaustive | queries past 1.5x |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        m = s["mean_us"]
        lines.append(f"| {s['size']} | {s['length']} | {s['k']} | {s['queries']} | {s['mean_terms']:.0f} "
                     f"| {m['exhaustive']:.0f} | {m['blockmax']:.0f} | {m['guarded']:.0f} | {m['auto']:.0f} "
                     f"| {s['auto_ratio']:.2f} ({s['best']}) | {s['guarded_worst_ratio']:.2f} "
                     f"| {s.get('guarded_past_goal', '–')} |")
    return "\n".join(lines)


def write_readme(saved: dict, weights: str = "float32") -> None:
    quality = saved["fit_quality"]["median_rel_error"]
    if weights != "float32":  # a second table, same columns: the model fitted on float32, checked on these
        replace_section(README, f"routes-{weights}", render(saved["summary"], saved),
                        f"### The same check on {weights} impacts (`--weights {weights}`: the default storage of "
                        "`lsr index`; cost model unchanged, fitted on float32)")
        return
    replace_section(README, "routes", render(saved["summary"], saved) + "\n\nMean µs per kernel call (one thread, "
                    "min of the repeats per query). This run's own fit: median relative error "
                    f"{quality['exhaustive']:.0%} (exhaustive), {quality['blockmax']:.0%} (block-max), "
                    f"{quality['blocks_scored_guess']:.0%} (auto's up-front guess of the blocks scored).",
                    "## Exact routes: auto against the fastest route per query class (issue 21)\n\n"
                    "`python benchmarks/routes.py` (see its docstring): small = SciFact + NFCorpus, large = "
                    "enwiki-100k; short < 24 terms, medium 24-95, long >= 96 (another collection's documents as "
                    "queries). `auto / best`: auto's mean time over the fastest route's (goal <= 1.05); `guarded "
                    "worst`: forced block-max's worst single query against exhaustive (goal <= 1.5; a query past it "
                    "is timed 10 more times on both routes first); `queries past 1.5x`: how many queries of the "
                    "class stay past it.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collections", default="scifact,nfcorpus,enwiki-100k")
    parser.add_argument("--ks", default="10,1000", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--queries", type=int, default=300, help="own queries per collection")
    parser.add_argument("--long", type=int, default=150, help="long queries (another collection's documents)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guard", type=float, default=FITTED.guard)
    parser.add_argument("--check-model", choices=["library", "fitted"], default="library",
                        help="which model auto and guarded run with: lsr's FITTED, or one fitted from a first pass")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--render-only", action="store_true")
    parser.add_argument("--weights", choices=["float32", "uint8"], default="float32",
                        help="stored weights of the measured segments (uint8: at SPLADE-tiny's proven bound, as "
                             "`lsr index` stores by default); uint8 writes results/routes-uint8.json")
    args = parser.parse_args()
    if args.weights != "float32" and args.out == RESULTS:
        args.out = RESULTS.with_name(f"routes-{args.weights}.json")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.render_only:
        saved = json.loads(args.out.read_text())
        print(render(saved["summary"], saved))
        write_readme(saved, args.weights)
        return
    set_threads(1)
    collections = args.collections.split(",")
    model, label = replace(FITTED, guard=args.guard), "lsr.kernels.cost_model.FITTED"
    if args.check_model == "fitted":
        first = [r for name in collections for r in measure(name, args, model)]
        model, _ = fit(first, args.guard)
        label = "fitted by this run's first pass: " + model_line(model)
    rows = [r for name in collections for r in measure(name, args, model)]
    fitted, quality = fit(rows, args.guard)
    summary = summarise(rows)
    meta = {"machine": machine(), "model": label, "date": time.strftime("%Y-%m-%d %H:%M"),
            "fitted": asdict(fitted), "fit_quality": quality, "args": {k: str(v) for k, v in vars(args).items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**meta, "summary": summary, "rows": rows}, indent=1))
    print(render(summary, meta))
    print("\nfitted:", model_line(fitted))
    print("fit quality:", json.dumps(quality))
    if args.out == RESULTS.with_name(RESULTS.name if args.weights == "float32" else f"routes-{args.weights}.json"):
        write_readme({**meta, "summary": summary}, args.weights)


if __name__ == "__main__":
    main()
