"""Latency growth of lsr from a small to a large collection, measured interleaved (robust to machine drift).

On a shared machine whose speed drifts by up to 2x within minutes, the ratio of two p50s measured minutes
apart (scale.py's table) can be off by as much. Here two worker processes -- one searching the small
collection's index, one the large one's -- are pinned to the same core and answer the same queries in
alternating batches, so both see the same drift; growth = p50(large) / p50(small). Each SIMD level of the
exhaustive kernel (``_csparse.set_simd``) that the CPU has is measured, and, with ``--baseline DIR``, another
checkout of lsr (its C extension built) beside this one.

    python benchmarks/growth.py --small enwiki-100k --large synth-1m --k 10,1000
    python benchmarks/growth.py --small enwiki-100k --large synth-1m --baseline /path/to/old/checkout

Indexes (uint8, as scale.py's lsr rows) are built once under $LSR_BENCH_DIR/growth/<collection> and reused.
Results go to results/growth.json and the README section ``growth``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))

from prepare_enwiki import bench_dir  # noqa: E402
from scale import machine, machine_line  # noqa: E402
from tables import replace_section  # noqa: E402

log = logging.getLogger("growth")
RESULTS_JSON = HERE / "results" / "growth.json"


def ensure_index(collection: str) -> Path:
    """The collection's uint8 lsr index, built by run_lsr.py (batches of 10,000 documents) unless it exists."""
    work = bench_dir() / "growth" / collection
    if not (work / "index" / "manifest.json").exists():
        log.info("%s: building the index", collection)
        subprocess.run([sys.executable, str(HERE / "run_lsr.py"), "--data", str(bench_dir() / collection),
                        "--work", str(work), "--k", "10", "--out", str(work / "build.json"), "--weights", "uint8",
                        "--add-batch", "10000", "--variant", "c-auto", "--max-queries", "5", "--no-batch"],
                       check=True)
    return work / "index"


def worker(index: str, data: str, simd: str) -> None:
    """Answer 'i0 i1 k' lines on stdin with the microseconds of each query i0..i1-1 (one call each)."""
    import _common as C

    from lsr.index import Searcher, open_index
    from lsr.kernels import _csparse, set_threads
    from lsr.types import SparseBatch

    q = C.load_exchange(data).queries
    queries = SparseBatch(q.indptr, q.indices, q.values, q.dim)
    singles = [queries.slice(i, i + 1) for i in range(queries.n)]
    level = _csparse.set_simd(simd) if hasattr(_csparse, "set_simd") else "none (before set_simd)"
    searcher = Searcher(open_index(index), "c")
    set_threads(1)
    print(json.dumps({"queries": queries.n, "simd": level}), flush=True)
    for line in sys.stdin:
        i0, i1, k = map(int, line.split())
        times = []
        for i in range(i0, i1):
            t = time.perf_counter()
            searcher.search(singles[i], k)
            times.append((time.perf_counter() - t) * 1e6)
        print(" ".join(f"{x:.1f}" for x in times), flush=True)


class Worker:
    def __init__(self, checkout: Path, index: Path, data: Path, simd: str, core: int):
        env = dict(os.environ, PYTHONPATH=str(checkout), OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(core), sys.executable, __file__, "--worker", str(index), str(data), simd],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=str(checkout))
        self.info = json.loads(self.proc.stdout.readline())

    def ask(self, i0: int, i1: int, k: int) -> list[float]:
        self.proc.stdin.write(f"{i0} {i1} {k}\n")
        self.proc.stdin.flush()
        return [float(x) for x in self.proc.stdout.readline().split()]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def measure(checkout: Path, simd: str, k: int, small: tuple[Path, Path], large: tuple[Path, Path], n: int,
            batch: int, core: int) -> dict:
    a, b = Worker(checkout, *small, simd, core), Worker(checkout, *large, simd, core)
    try:
        n = min(n, a.info["queries"], b.info["queries"])
        a.ask(0, 5, k), b.ask(0, 5, k)  # warm-up
        ts, tl = [], []
        for j, i0 in enumerate(range(0, n, batch)):
            i1 = min(n, i0 + batch)
            first, second = (a, b) if j % 2 == 0 else (b, a)
            x, y = first.ask(i0, i1, k), second.ask(i0, i1, k)
            ts += x if first is a else y
            tl += y if first is a else x
    finally:
        a.close(), b.close()
    ts, tl = np.array(ts), np.array(tl)
    return {"checkout": str(checkout), "simd": a.info["simd"], "k": k, "n_queries": n,
            "small_p50_us": float(np.median(ts)), "large_p50_us": float(np.median(tl)),
            "growth_p50": float(np.median(tl) / np.median(ts)), "growth_mean": float(tl.mean() / ts.mean())}


def render(report: dict) -> str:
    lines = [machine_line(report["machine"]) + f" Date {report['date']}.", "",
             f"{report['small']} -> {report['large']}, {report['rows'][0]['n_queries']:,} title queries, one thread, "
             f"single-query calls, both collections' workers pinned to one core and interleaved in batches of "
             f"{report['batch']}.", "",
             "| lsr | SIMD level | k | small p50 µs | large p50 µs | growth (p50) | growth (mean) |",
             "|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        who = "this checkout" if Path(r["checkout"]) == REPO else f"baseline ({Path(r['checkout']).name})"
        lines.append(f"| {who} | {r['simd']} | {r['k']} | {r['small_p50_us']:.0f} | {r['large_p50_us']:.0f} | "
                     f"{r['growth_p50']:.2f}x | {r['growth_mean']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:5])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", default="enwiki-100k", help="exchange folder under $LSR_BENCH_DIR (scale.py makes them)")
    p.add_argument("--large", default="synth-1m")
    p.add_argument("--k", default="1000,10")
    p.add_argument("--levels", default="avx512,avx2,none",
                   help="SIMD levels to measure (those the CPU lacks are skipped)")
    p.add_argument("--baseline", type=Path, default=None, help="another lsr checkout to measure beside this one")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--core", type=int, default=1, help="the core both workers are pinned to")
    p.add_argument("--json", type=Path, default=RESULTS_JSON)
    p.add_argument("--no-readme", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    small = (ensure_index(args.small), bench_dir() / args.small)
    large = (ensure_index(args.large), bench_dir() / args.large)
    runs = [(args.baseline, "avx512")] if args.baseline else []
    runs += [(REPO, level) for level in args.levels.split(",")]
    rows, seen = [], set()
    for k in map(int, args.k.split(",")):
        for checkout, level in runs:
            row = measure(checkout, level, k, small, large, args.queries, args.batch, args.core)
            if (row["checkout"], row["simd"], k) in seen:  # the CPU capped this level to one already measured
                continue
            seen.add((row["checkout"], row["simd"], k))
            log.info("%s %s k=%d: growth %.2fx (p50 %.0f -> %.0f us)", checkout, row["simd"], k, row["growth_p50"],
                     row["small_p50_us"], row["large_p50_us"])
            rows.append(row)
    report = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "small": args.small, "large": args.large,
              "batch": args.batch, "rows": rows}
    args.json.write_text(json.dumps(report, indent=1))
    text = render(report)
    print(text)
    if not args.no_readme:
        replace_section(HERE / "README.md", "growth", text, "### Latency growth, interleaved (`growth.py`)")


if __name__ == "__main__":
    main()
