"""Ray scale-out on one machine: encoding throughput with 1 vs 2 Ray workers (against the local encode job),
and search latency of sharded search (shard actors + exact merge) against the single index.

    python benchmarks/ray_bench.py encode --docs 1000          # SciFact sample, SPLADE-tiny
    python benchmarks/ray_bench.py search --data ~/.cache/lsr-bench/enwiki-100k --shards 1 2 4
    python benchmarks/ray_bench.py all --out benchmarks/results/ray.json

The search part reads the benchmark exchange folders (``benchmarks/vectors.py``: the same SPLADE-tiny
vectors every engine gets) and builds its indexes in a temporary folder. Never run in CI.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.vectors import load_exchange  # noqa: E402
from lsr.datasets import __path__ as _datasets_path  # noqa: E402
from lsr.index import IndexWriter, Searcher, Vocabulary, open_index  # noqa: E402
from lsr.types import SparseBatch  # noqa: E402

SCIFACT = Path(_datasets_path[0]) / "scifact"
BENCH_DIR = Path(os.environ.get("LSR_BENCH_DIR", Path.home() / ".cache" / "lsr-bench"))


def _ray_init():
    import ray

    ray.init(num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False, object_store_memory=200 * 1024**2,
             log_to_driver=False)
    return ray


# ---------------------------------------------------------------------------------------------- encoding
def bench_encode(n_docs: int, shard_size: int, repeat: int, root: Path) -> list[dict]:
    from lsr.distributed.encode import RayJobStats, ray_encode_corpus
    from lsr.encoders import load_encoder

    with gzip.open(SCIFACT / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        lines = fh.readlines()
    keep = sorted(random.Random(0).sample(range(len(lines)), min(n_docs, len(lines))))
    root.mkdir(parents=True, exist_ok=True)
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(lines[i] for i in keep), encoding="utf-8")
    encoder = load_encoder("splade-tiny")
    # the machine is shared: the three setups take turns, `repeat` rounds, and each reports its median
    times: dict[str, list[float]] = {"local": [], "ray1": [], "ray2": []}
    ray = _ray_init()
    try:
        for round_ in range(repeat):
            # in a process of its own, as a user runs it: torch in a process that also hosts a Ray driver
            # runs ~2.5x slower on this box, and the Ray side pays its own process and model start-up too
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "lsr.cli", "-q", "encode", str(corpus), str(root / f"local{round_}"),
                            "--shard-size", str(shard_size)], check=True, cwd=REPO)
            times["local"].append(time.perf_counter() - started)
            for workers in (1, 2):
                started = time.perf_counter()
                ray_encode_corpus(corpus, root / f"ray{workers}-{round_}", encoder, shard_size, workers,
                                  show_progress=False, stats=RayJobStats())
                times[f"ray{workers}"].append(time.perf_counter() - started)
    finally:
        ray.shutdown()
    rows = [{"path": "local process (`lsr encode`, workers=1)", "workers": 1, "docs": len(keep),
             "seconds": float(np.median(times["local"])), "runs": times["local"]}]
    rows += [{"path": "Ray Data actors (ray_encode_corpus)", "workers": w, "docs": len(keep),
              "seconds": float(np.median(times[f"ray{w}"])), "runs": times[f"ray{w}"]} for w in (1, 2)]
    for row in rows:
        row["docs_per_s"] = row["docs"] / row["seconds"]
        print(f"{row['path']:45s} workers={row['workers']}  {row['docs']} docs  median {row['seconds']:.1f}s "
              f"of {[round(t, 1) for t in row['runs']]}  {row['docs_per_s']:.1f} docs/s", flush=True)
    return rows


# ---------------------------------------------------------------------------------------------- search
def _build(path: Path, doc_ids: list[str], docs: SparseBatch, vocab: list[str], segments: int) -> None:
    per = -(-docs.n // segments)
    with IndexWriter.create(path, Vocabulary.from_tokens(vocab, source="bench"), None, segment_docs=per) as w:
        for start in range(0, docs.n, per):
            stop = min(docs.n, start + per)
            w.add(doc_ids[start:stop], docs.slice(start, stop))


def _latencies(search, queries: SparseBatch, k: int, n: int) -> np.ndarray:
    out = []
    for i in range(min(n, queries.n)):
        one = queries.slice(i, i + 1)
        started = time.perf_counter()
        search(one, k)
        out.append(time.perf_counter() - started)
    return np.array(out) * 1000


def bench_search(data: Path, shard_counts: list[int], k: int, n_single: int, root: Path) -> list[dict]:
    from lsr.distributed.sharded import ShardedSearcher

    doc_ids, docs, _, queries = load_exchange(data)
    vocab = orjson.loads((data / "vocab.json").read_bytes())
    segments = max(shard_counts)
    _build(root / "one", doc_ids, docs, vocab, 1)
    _build(root / "seg", doc_ids, docs, vocab, segments)
    one, seg = open_index(root / "one"), open_index(root / "seg")
    reference = Searcher(one).search(queries, k)
    setups = [("single index, 1 segment (Searcher)", Searcher(one), 0),
              (f"single index, {segments} segments (Searcher)", Searcher(seg), 0)]
    ray = _ray_init()
    rows = []
    try:
        setups += [(f"sharded, {n} shard actor(s) over {segments} segments", ShardedSearcher(seg, n), n)
                   for n in shard_counts]
        for name, searcher, shards in setups:
            searcher.warm_up()
            hits = searcher.search(queries, k)
            exact = bool(np.array_equal(hits.ids, reference.ids) and np.array_equal(hits.scores, reference.scores))
            runs = []
            for _ in range(5):  # the whole query set as one batch; median of 5
                started = time.perf_counter()
                searcher.search(queries, k)
                runs.append(time.perf_counter() - started)
            batch_s = float(np.median(runs))
            lat = _latencies(searcher.search, queries, k, n_single)
            rows.append({"setup": name, "shards": shards, "docs": docs.n, "queries": queries.n, "k": k,
                         "batch_qps": queries.n / batch_s, "p50_ms": float(np.percentile(lat, 50)),
                         "p99_ms": float(np.percentile(lat, 99)), "single_queries": len(lat), "exact": exact})
            print(f"{name:48s} batch {rows[-1]['batch_qps']:8.0f} q/s  p50 {rows[-1]['p50_ms']:.3f} ms  "
                  f"p99 {rows[-1]['p99_ms']:.3f} ms  same as single index: {exact}", flush=True)
            if shards:
                searcher.close()
    finally:
        ray.shutdown()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["encode", "search", "all"])
    parser.add_argument("--docs", type=int, default=1000, help="SciFact documents to encode [1000]")
    parser.add_argument("--shard-size", type=int, default=100, help="documents per chunk [100]")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the encoding runs [3]")
    parser.add_argument("--data", type=Path, nargs="+", default=[BENCH_DIR / "scifact", BENCH_DIR / "enwiki-100k"],
                        help="benchmark exchange folders for the search part")
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--single", type=int, default=300, help="queries timed one at a time [300]")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    report = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": len(os.sched_getaffinity(0)),
                          "platform": platform.platform()}, "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory(prefix="lsr-ray-bench-") as tmp:
        if args.what in ("encode", "all"):
            report["encode"] = bench_encode(args.docs, args.shard_size, args.repeat, Path(tmp) / "encode")
        if args.what in ("search", "all"):
            report["search"] = {}
            for i, data in enumerate(args.data):
                print(f"--- {data}", flush=True)
                (Path(tmp) / f"search{i}").mkdir(parents=True)
                report["search"][data.name] = bench_search(data, args.shards, args.k, args.single,
                                                           Path(tmp) / f"search{i}")
    if args.out:  # the parts not run this time are kept from the file's previous contents
        previous = orjson.loads(args.out.read_bytes()) if args.out.exists() else {}
        args.out.write_bytes(orjson.dumps({**previous, **report}, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
