"""Load test of `lsr serve` with wrk on loopback, beside the library alone on the same cores.

    python benchmarks/load.py [--duration 15] [--connections 1,8,32] [--workers 2]

Serves the SciFact index (built from the benchmark's cached SPLADE-tiny vectors if needed), then for each
concurrency runs wrk with a Lua script that cycles through the 300 SciFact test queries, as texts
(`POST /v1/search {"query": ..., "k": 10}`: the server encodes them) and as pre-encoded vectors
(`{"vectors": [{token: weight}], "k": 10}`: HTTP + search only); reports requests/s, p50/p99 latency and
errors (non-2xx and socket errors). "library alone" is the same work in-process, one query per call, from
as many threads as the server has workers (torch limited to one thread each, as in the workers).
Writes benchmarks/results/load.json and the load table in benchmarks/README.md. Needs Debian's `wrk`
(`apt-get install wrk`). Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

from prepare_enwiki import bench_dir  # noqa: E402

LUA = """
local queries = {}
for line in io.lines("%s") do queries[#queries + 1] = line end
local i = 0
request = function()
  i = i %% #queries + 1
  return wrk.format("POST", "/v1/search", {["Content-Type"] = "application/json"}, queries[i])
end
"""


def cpu_name() -> str:
    """The CPU and the features its speed depends on, as the other tables name them."""
    from scale import features_text, machine

    m = machine()
    return f"{m['cpu']} ({features_text(m)})"


def scifact_index() -> Path:
    """The bundled SciFact encoded once into the benchmark cache (resumable) and indexed."""
    index = bench_dir() / "scifact-index"
    if not (index / "manifest.json").exists():
        subprocess.run([sys.executable, "-m", "lsr.cli", "-q", "index", str(REPO / "lsr" / "datasets" / "scifact"),
                        str(index), "--overwrite", "--work-dir", str(bench_dir() / "scifact-encoded")], check=True)
    return index


def queries() -> list[str]:
    from lsr.io.beir import read_qrels, read_queries, resolve_dataset, split_queries

    folder = resolve_dataset("scifact")
    return list(split_queries(read_queries(folder), read_qrels(folder, "test")).values())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index: Path, workers: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LSR_TORCH_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lsr.cli", "-q", "serve", str(index), "--port", str(port),
                             "--workers", str(workers)], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("the server did not start")


def run_wrk(port: int, connections: int, duration: int, script: Path) -> dict:
    out = subprocess.run(["wrk", "-t", str(min(connections, 2)), "-c", str(connections), "-d", f"{duration}s",
                          "--latency", "-s", str(script), f"http://127.0.0.1:{port}"],
                         check=True, capture_output=True, text=True).stdout
    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"connections": connections, "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": ms("50"), "p99_ms": ms("99"), "requests": requests,
            "errors": (int(non_2xx.group(1)) if non_2xx else 0)
            + (sum(map(int, socket_errors.groups())) if socket_errors else 0)}


def library_alone(index: Path, texts: list[str], threads: int, duration: float, vectors: bool = False) -> float:
    """Queries/s of SparseRetriever.search, one query per call, from ``threads`` threads."""
    import torch

    from lsr.kernels import set_threads
    from lsr.search import SparseRetriever

    torch.set_num_threads(1)
    set_threads(1)
    retriever = SparseRetriever(index)
    retriever.search(texts[:2], 10)
    queries = [retriever.encode([t]) for t in texts] if vectors else [[t] for t in texts]
    done = [0] * threads
    stop = time.monotonic() + duration

    def work(t: int) -> None:
        i = t
        while time.monotonic() < stop:
            retriever.search(queries[i % len(queries)], 10)
            done[t] += 1
            i += threads

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    started = time.monotonic()
    for p in pool:
        p.start()
    for p in pool:
        p.join()
    return sum(done) / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", default="1,8,32")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    index = scifact_index()
    texts = queries()
    from lsr.search import SparseRetriever

    encoder = SparseRetriever(index).encoder
    vocab = encoder.vocabulary.tokens
    bodies = {"texts": [{"query": t, "k": 10} for t in texts], "vectors": []}
    for t in texts:
        terms, weights = encoder.encode_queries([t]).row(0)
        bodies["vectors"].append({"vectors": [{vocab[i]: float(w) for i, w in zip(terms, weights, strict=True)}],
                                  "k": 10})
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_server(index, args.workers)
        try:
            for mode, items in bodies.items():
                lines = Path(tmp) / f"{mode}.txt"
                lines.write_text("\n".join(json.dumps(b) for b in items) + "\n")
                script = Path(tmp) / f"{mode}.lua"
                script.write_text(LUA % lines)
                run_wrk(port, 2, 3, script)  # warm-up
                rows[mode] = [run_wrk(port, c, args.duration, script) for c in map(int, args.connections.split(","))]
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    alone = {mode: library_alone(index, texts, args.workers, args.duration, vectors=mode == "vectors")
             for mode in bodies}
    report = {"index": str(index), "workers": args.workers, "duration_s": args.duration, "modes": rows,
              "library_alone_qps": alone, "date": time.strftime("%Y-%m-%d"), "cpu": cpu_name()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "load.json").write_text(json.dumps(report, indent=1))
    for mode, mode_rows in rows.items():
        for row in mode_rows:
            print(f"{mode:>7} {row['connections']:>3} connections: {row['requests_per_s']:.0f} req/s, "
                  f"p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, errors {row['errors']}")
        print(f"{mode:>7} library alone, {args.workers} threads: {alone[mode]:.0f} queries/s")
    from tables import write_readme

    write_readme()


if __name__ == "__main__":
    main()
