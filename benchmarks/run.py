"""The side-by-side benchmark in one command: lsr against Seismic, BMP, PISA, Anserini and scipy on the same
vectors (SPLADE-tiny, encoded by lsr), every engine in its own process and virtual environment.

    python benchmarks/run.py                                   # all datasets, all engines, k = 10 and 1000
    python benchmarks/run.py --datasets scifact --engines lsr,pisa --ks 10 --max-queries 100

Steps: set up the peers' venvs (benchmarks/peers/setup_peers.sh); encode each dataset once with `lsr encode`
(cached under $LSR_BENCH_DIR, default ~/.cache/lsr-bench) and export the exchange folder; run every runner;
check recall against exact float scoring and exact scoring on each engine's own quantisation
(benchmarks/peers/check_results.py); measure memory bandwidth for the exhaustive-scoring floor; write
benchmarks/results/<dataset>-k<k>.json and the tables in benchmarks/README.md (between the markers).
Timing runs belong here, never in CI.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared" / "data"
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

from prepare_enwiki import bench_dir, prepare  # noqa: E402
from scale import machine  # noqa: E402 - the CPU and its features (AVX2, AVX-512, BF16, AMX)
from vectors import export, load_exchange  # noqa: E402

log = logging.getLogger("benchmark")

# What each engine runs: (runner, extra arguments). Approximate settings span recall 0.9-1.0.
ENGINES = {
    "lsr": (HERE / "run_lsr.py", ["--variant", "c-auto,c-exhaustive,c-blockmax,numba-auto",
                                  "--settings", "1,0;0.9,0;0.8,0;1,12;0.9,12"]),
    "lsr-u8": (HERE / "run_lsr.py", ["--weights", "uint8", "--variant", "c-auto", "--settings", "1,0"]),
    "seismic": (HERE / "peers" / "run_seismic.py", ["--settings", "10,0.7;12,0.8;20,0.9;30,1.0"]),
    "bmp": (HERE / "peers" / "run_bmp.py", ["--settings", "1,1;0.9,1"]),
    "pisa": (HERE / "peers" / "run_pisa.py", ["--variant", "maxscore,block_max_maxscore,block_max_wand"]),
    "anserini": (HERE / "peers" / "run_anserini.py", []),
    "scipy": (HERE / "peers" / "run_scipy.py", ["--variant", "qdt"]),
    "splade-index": (HERE / "peers" / "run_splade_index.py", []),
}


def python_for(engine: str) -> str:
    if engine.startswith("lsr"):
        return sys.executable
    return str(bench_dir() / "venvs" / engine / "bin" / "python")


def dataset_folder(name: str) -> Path:
    """The exchange folder of a dataset, encoding it with lsr first if needed."""
    out = bench_dir() / name
    if (out / "queries.npz").exists():
        return out
    from lsr.encoders import load_encoder
    from lsr.jobs.encode import encode_corpus

    if name.startswith("enwiki-"):
        n_docs = int(name.split("-")[1].rstrip("k")) * 1000
        sample = prepare(n_docs, 1000)
        return export(sample / "encoded", sample / "queries.jsonl", out)
    beir = REPO / "lsr" / "datasets" / "scifact" if name == "scifact" else SHARED / "beir" / name
    if not beir.is_dir():
        raise SystemExit(f"dataset {name} not found at {beir}")
    encoded = bench_dir() / f"{name}-encoded"
    encode_corpus(beir, encoded, load_encoder("splade-tiny"), shard_size=2000)
    from lsr.io.beir import read_qrels

    return export(encoded, beir, out, list(read_qrels(beir, "test")))


BANDWIDTH_PROBE = """
import time, numpy as np
data = np.ones(1 << 28, np.float32)
best = float("inf")
for _ in range(5):
    started = time.perf_counter(); data.sum(); best = min(best, time.perf_counter() - started)
print(data.nbytes / best / 1e9)
"""


def memory_bandwidth_gbs() -> float:
    """Streaming read bandwidth of one core (sum of a 1 GiB float32 array, best of 5). Measured in a child
    process: a 1 GiB array in this one would be inherited as every runner's peak RSS."""
    out = subprocess.run([sys.executable, "-c", BANDWIDTH_PROBE], check=True, capture_output=True, text=True)
    return float(out.stdout.strip())


def exhaustive_floor(folder: Path, bandwidth: float, bytes_per_posting: int = 8) -> dict:
    """Postings an exhaustive scorer must read per query, and the time that takes at memory bandwidth."""
    _, docs, _, queries = load_exchange(folder)
    df = np.bincount(docs.indices, minlength=docs.dim)
    touched = np.array([df[queries.row(i)[0]].sum() for i in range(queries.n)], dtype=np.float64)
    return {"postings_per_query": float(touched.mean()), "bytes_per_posting": bytes_per_posting,
            "floor_ms": float(touched.mean() * bytes_per_posting / (bandwidth * 1e9) * 1000),
            "avg_query_terms": float(queries.nnz / queries.n), "avg_doc_terms": float(docs.nnz / docs.n),
            "n_docs": docs.n, "n_queries": queries.n}


def run_engine(engine: str, folder: Path, k: int, out: Path, extra: list[str],
               knobs: list[str] | None = None) -> Path | None:
    """Run one engine's runner (``knobs``: instead of ENGINES' own); None when its venv is missing or it fails."""
    runner, default_knobs = ENGINES[engine]
    knobs = default_knobs if knobs is None else knobs
    python = python_for(engine)
    if not Path(python).exists():
        log.warning("skipping %s: no venv at %s (run benchmarks/peers/setup_peers.sh)", engine, python)
        return None
    result = out / f"{engine}.json"
    cmd = [python, str(runner), "--data", str(folder), "--work", str(out / "work" / engine), "--k", str(k),
           "--out", str(result), "--threads", "2", *knobs, *extra]
    log.info("running %s", " ".join(cmd[1:]))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        log.error("%s failed: %s", engine, proc.stderr.strip().splitlines()[-1:] or proc.returncode)
        return None
    return result


def check(results: list[Path], folder: Path, out: Path) -> list[dict]:
    rows_file = out / "recall.json"
    cmd = [python_for("scipy"), str(HERE / "peers" / "check_results.py"), *map(str, results), str(folder),
           "--json", str(rows_file)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    rows = json.loads(rows_file.read_text())
    for path in results:  # add what the checker does not carry
        loaded = json.loads(path.read_text())
        for obj in loaded if isinstance(loaded, list) else [loaded]:
            for row in rows:
                same = (row["engine"], row["variant"], row["params"]) == (obj["engine"], obj["variant"], obj["params"])
                if same:
                    row.update(p99_ms=obj["latency_summary_ms"].get("p99"), peak_rss_mb=obj["peak_rss_mb"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="scifact,nfcorpus,enwiki-100k")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--ks", default="10,1000")
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--skip-setup", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not args.skip_setup:
        subprocess.run(["bash", str(HERE / "peers" / "setup_peers.sh")], check=True)
    extra = ["--max-queries", str(args.max_queries)] if args.max_queries else []
    bandwidth = memory_bandwidth_gbs()
    log.info("memory bandwidth %.1f GB/s", bandwidth)
    RESULTS.mkdir(exist_ok=True)
    for name in args.datasets.split(","):
        folder = dataset_folder(name)
        floor = exhaustive_floor(folder, bandwidth)
        for k in map(int, args.ks.split(",")):
            out = bench_dir() / "runs" / f"{name}-k{k}"
            out.mkdir(parents=True, exist_ok=True)
            results = [r for e in args.engines.split(",") if (r := run_engine(e, folder, k, out, extra))]
            rows = check(results, folder, out)
            report = {"dataset": name, "k": k, "machine": machine(), "memory_bandwidth_gbs": bandwidth,
                      "floor": floor, "rows": rows, "date": time.strftime("%Y-%m-%d")}
            (RESULTS / f"{name}-k{k}.json").write_text(json.dumps(report, indent=1))
            log.info("wrote %s", RESULTS / f"{name}-k{k}.json")
    from tables import write_readme

    write_readme()


if __name__ == "__main__":
    main()
