"""The index in steady state: single-document adds through the REST API (gunicorn), merged in the background,
then search latency against a freshly built index of the same documents, and every id checked.

    python benchmarks/steady_state.py --base 5000 --adds 10000

Documents are real SPLADE-tiny vectors of the enwiki-2015 sample that ``prepare_enwiki.py`` encodes (sent
as ``{"id", "vector"}`` so that the run measures the index, not the encoder); queries are its title queries,
encoded once. Writes ``benchmarks/results/steady_state.json`` and the plot ``docs/steady_state.png``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import free_port  # noqa: E402
from prepare_enwiki import bench_dir  # noqa: E402

from lsr.index import IndexWriter, Searcher, open_index  # noqa: E402
from lsr.index.format import read_manifest  # noqa: E402
from lsr.io.shards import list_shards, read_shard  # noqa: E402
from lsr.jobs.encode import read_job, read_job_vocabulary  # noqa: E402
from lsr.types import SparseBatch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
API_KEY = "steady-state-benchmark-key"


def load_docs(encoded: Path, n: int) -> tuple[list[str], SparseBatch]:
    ids, batches = [], []
    for shard in list_shards(encoded):
        shard_ids, vectors = read_shard(shard)
        ids += shard_ids
        batches.append(vectors)
        if len(ids) >= n:
            break
    docs = SparseBatch.concat(batches)
    return ids[:n], docs.take(np.arange(n))


def encode_queries(sample: Path, n: int) -> SparseBatch:
    from lsr.encoders import load_encoder

    texts = [json.loads(line)["text"] for line in (sample / "queries.jsonl").read_text().splitlines()[:n]]
    return load_encoder("splade-tiny").encode_queries(texts)


def start_server(index: Path, workers: int, key_file: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LSR_TORCH_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lsr.cli", "-q", "serve", str(index), "--port", str(port),
                             "--workers", str(workers), "--api-key-file", str(key_file)], env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("the server did not start")


def add_one_at_a_time(port: int, index: Path, ids: list[str], docs: SparseBatch, vocab: list[str]) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "application/json", "X-API-Key": API_KEY}
    latencies, segments = [], []
    started = time.perf_counter()
    for i, ext in enumerate(ids):
        lo, hi = docs.indptr[i], docs.indptr[i + 1]
        vector = {vocab[t]: float(w) for t, w in zip(docs.indices[lo:hi].tolist(), docs.values[lo:hi].tolist(),
                                                     strict=True)}
        body = json.dumps({"documents": [{"id": ext, "vector": vector}]})
        t0 = time.perf_counter()
        conn.request("POST", "/v1/documents", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - t0)
        if response.status != 201:
            raise SystemExit(f"add {ext} answered {response.status}")
        if i % 50 == 0 or i == len(ids) - 1:
            segments.append((i + 1, len(read_manifest(index).segments)))
        if i % 1000 == 999:
            logging.info("%d adds, %d segments, p50 %.1f ms", i + 1, segments[-1][1],
                         1000 * statistics.median(latencies[-1000:]))
    return {"seconds": time.perf_counter() - started, "latencies": latencies, "segments": segments}


def wait_settled(index: Path, quiet_s: float = 5.0, limit_s: float = 600.0) -> float:
    """Until no merge runs and the manifest has not changed for ``quiet_s``."""
    started = time.perf_counter()
    last, since = None, time.perf_counter()
    while time.perf_counter() - started < limit_s:
        stamp = (index / "manifest.json").stat().st_mtime_ns
        busy = (index / "merge.lock").exists()
        if stamp != last or busy:
            last, since = stamp, time.perf_counter()
        elif time.perf_counter() - since >= quiet_s:
            return time.perf_counter() - started - quiet_s
        time.sleep(0.2)
    raise SystemExit("merges did not settle")


def p50_p99(index_path: Path, queries: SparseBatch, k: int, rounds: int = 3) -> tuple[float, float]:
    searcher = Searcher(open_index(index_path))
    searcher.warm_up()
    times = []
    for _ in range(rounds):
        for i in range(queries.n):
            one = queries.take(np.array([i]))
            t0 = time.perf_counter()
            searcher.search(one, k)
            times.append(time.perf_counter() - t0)
    return 1000 * float(np.percentile(times, 50)), 1000 * float(np.percentile(times, 99))


def rest_p50(port: int, texts: list[str], k: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    for text in texts * 2:
        body = json.dumps({"query": text, "k": k})
        t0 = time.perf_counter()
        conn.request("POST", "/v1/search", body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times[len(texts):])


def plot(segments: list[tuple[int, int]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot([a for a, _ in segments], [s for _, s in segments], lw=1)
    ax.set_xlabel("single-document adds through the REST API")
    ax.set_ylabel("segments")
    ax.set_title("Segments while writing (background merges, then settled)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, default=bench_dir() / "enwiki-100k")
    parser.add_argument("--base", type=int, default=5000, help="documents bulk-indexed first")
    parser.add_argument("--adds", type=int, default=10000, help="documents then added one per request")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=bench_dir() / "steady-state")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    encoded = args.sample / "encoded"
    vocabulary = read_job_vocabulary(encoded)
    ids, docs = load_docs(encoded, args.base + args.adds)
    job = read_job(encoded)
    args.work.mkdir(parents=True, exist_ok=True)
    served, fresh = args.work / "served", args.work / "fresh"
    with IndexWriter.create(served, vocabulary, job["encoder"], overwrite=True) as writer:
        writer.add(ids[: args.base], docs.take(np.arange(args.base)))
    key_file = args.work / "api.key"
    key_file.write_text(API_KEY)
    proc, port = start_server(served, args.workers, key_file)
    try:
        added = add_one_at_a_time(port, served, ids[args.base:], docs.take(np.arange(args.base, len(ids))),
                                  list(vocabulary.tokens))
        settle_s = wait_settled(served)
        added["segments"].append((args.adds, len(read_manifest(served).segments)))
        texts = [json.loads(line)["text"]
                 for line in (args.sample / "queries.jsonl").read_text().splitlines()[: args.queries]]
        rest_served = rest_p50(port, texts, 10)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    index = open_index(served)
    live = index.external_ids(np.setdiff1d(np.arange(index.n_docs), index.deleted_ids))
    lost = sorted(set(ids) - set(live))
    duplicated = len(live) - len(set(live))
    with IndexWriter.create(fresh, vocabulary, job["encoder"], overwrite=True, merge_policy=None) as writer:
        writer.add(ids, docs)
    queries = encode_queries(args.sample, args.queries)
    p = {"served": [], "fresh": []}
    for _ in range(2):  # interleaved, so that a noisy neighbour hits both alike
        p["served"].append(p50_p99(served, queries, 10))
        p["fresh"].append(p50_p99(fresh, queries, 10))
    best = {name: min(v) for name, v in p.items()}
    proc, port = start_server(fresh, args.workers, key_file)
    try:
        rest_fresh = rest_p50(port, texts, 10)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    lat = np.array(added["latencies"]) * 1000
    report = {
        "machine": {"cpu": _cpu(), "cores": os.cpu_count()},
        "sample": f"enwiki-2015, {args.base} documents bulk-indexed + {args.adds} single-document REST adds "
                  f"(seeded 100k sample), {args.queries} title queries, k=10, one thread",
        "adds": {"count": args.adds, "seconds": round(added["seconds"], 1),
                 "per_s": round(args.adds / added["seconds"], 1),
                 "p50_ms": round(float(np.percentile(lat, 50)), 2), "p99_ms": round(float(np.percentile(lat, 99)), 2),
                 "max_segments": max(s for _, s in added["segments"])},
        "settled_after_s": round(settle_s, 1),
        "final": {"segments": len(index.segments), "documents": index.n_live, "deleted": len(index.deleted_ids),
                  "generation": index.manifest.generation, "lost": len(lost), "duplicated": duplicated},
        "search_ms": {"served_p50": round(best["served"][0], 4), "served_p99": round(best["served"][1], 4),
                      "fresh_p50": round(best["fresh"][0], 4), "fresh_p99": round(best["fresh"][1], 4),
                      "ratio_p50": round(best["served"][0] / best["fresh"][0], 3)},
        "rest_search_p50_ms": {"served": round(rest_served, 3), "fresh": round(rest_fresh, 3),
                               "ratio": round(rest_served / rest_fresh, 3)},
    }
    (REPO / "benchmarks" / "results" / "steady_state.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(added["segments"], REPO / "docs" / "steady_state.png")
    print(json.dumps(report, indent=2))


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
