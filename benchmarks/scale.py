"""The scale table (issue 18, index at scale): lsr and its peers at growing collection sizes, on the same vectors.

    python benchmarks/scale.py                                        # enwiki-100k, enwiki-493k, synth-1m
    python benchmarks/scale.py --sizes synth-20k --max-queries 50     # a quick end-to-end check
    python benchmarks/scale.py --sizes synth-10m --dry-run            # what would run, what would be skipped
    python benchmarks/scale.py --render-only                          # the table again from results/scale.json
    python benchmarks/scale.py --sizes enwiki-100k --engines lsr,pisa --json /tmp/s.json \
        --section NAME      # a run kept apart, in the README between <!-- NAME:begin --> and <!-- NAME:end -->

Sizes: ``enwiki-100k`` (the seeded 100k sample of benchmarks/run.py), ``enwiki-493k`` (the whole enwiki-2015
corpus, 493,983 passages, encoded by ``python benchmarks/prepare_enwiki.py --docs 493983``), ``synth-<n>``
(a synthetic SPLADE-like collection of n documents made from the enwiki-493k vectors by
benchmarks/synthetic.py; its docstring says what it preserves and what not). The queries are the same 1,000
encoded enwiki title queries everywhere. Exchange folders live under $LSR_BENCH_DIR (~/.cache/lsr-bench):
an enwiki folder is exported from its finished encode (the driver checks that the shards hold every
passage and stops with a message otherwise; it never starts an encode), a synthetic one is generated.

Engines (each runner in its own process and virtual environment, as in run.py; one build per k):
  lsr      run_lsr.py, c-auto, uint8 impacts (--lsr-weights): exact ("1,0") and one approximate setting
           (--lsr-approx, alpha,query_cut);
           the index is built by IndexWriter.add calls of --lsr-add-batch (10,000) documents, as `lsr index`
           adds shards, so the writer flushes bounded runs (one call with every document would hold them all)
  pisa     run_pisa.py, MaxScore (rank-safe on round(100 w) integers)
  seismic  run_seismic.py, one setting (--seismic, query_cut,heap_factor), n_postings auto (3500)
  bmp      run_bmp.py, alpha = beta = 1 (rank-safe on its u8 / 32-level quantisation)
  anserini run_anserini.py (not in the default list: slow to build and to query)
  splade-index run_splade_index.py (PyPI splade-index: exhaustive numba scoring of a float32 CSC matrix)
Measured per (size, engine, k): index size on disk, build time, the build's peak RSS (the runner's VmHWM over
the build, benchmarks/peers/_common.timed_build: the exchange arrays the runner holds are included, the RSS
before the build is recorded too), the whole run's peak anonymous memory (sampled from /proc by this driver),
single-thread p50/p99 latency (one query per call, after a warm-up), and recall@k against the exact top-k on
the float weights (computed here, term-at-a-time in float64 over chunks of documents, cached per size;
tie-aware: a hit whose exact score ties the k-th counts as right). The batch (queries/second) run is skipped
unless --qps.

Guard rails (a 2-core, 23.5 GiB machine): before each run the driver estimates the runner's peak memory and
its disk use from per-posting models (ENGINE_MODEL, from measured runs; a size measured earlier in the same
results file is extrapolated from instead when that predicts more) and skips the run, with the reason in the
table, when the estimate exceeds the memory available (MemAvailable less --reserve-gib) or the free disk;
while a runner runs, it is killed (its own process group) if MemAvailable falls below --min-free-gib, and
that is recorded too. Index folders are deleted after each run.

Output: benchmarks/results/scale.json (merged with earlier runs: a rerun replaces only its own sizes, engines
and ks), the table in benchmarks/README.md (between <!-- scale:begin --> and <!-- scale:end -->), and
docs/scale_latency.png (p50 against collection size, log-x, one line per engine, k = 10 and 1000).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))

from _common import npz_member  # noqa: E402
from prepare_enwiki import bench_dir  # noqa: E402
from synthetic import parse_count  # noqa: E402

log = logging.getLogger("scale")

RESULTS_JSON = HERE / "results" / "scale.json"
README = HERE / "README.md"
PLOT = REPO / "docs" / "scale_latency.png"
BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"
ENWIKI_DOCS = {"enwiki-100k": 100_000, "enwiki-493k": 493_983}
DEFAULT_SIZES = "enwiki-100k,enwiki-493k,synth-1m"
DEFAULT_ENGINES = "lsr,pisa,seismic,bmp,splade-index"
GIB = 2**30

# Per-engine resource model, linear in the number of postings P of the collection:
#   peak memory of the whole run  ~ mem_base_mb + mem_bytes * P   (anonymous memory: the runner's copy of
#                                   the vectors, 8 B/posting, plus the engine's build and search structures)
#   disk (index + work files)     ~ disk_bytes * P
# Fitted (rounded up) to the peak anonymous memory this driver sampled on this machine, 2026-12-04, 50 queries,
# k = 10: synth-20k (4.7M postings), enwiki-100k (23.8M) and, for lsr, synth-300k (71.4M):
#   lsr      2,128 MiB at 23.8M, 2,671 at 71.4M (bounded: the writer flushes runs of 16M postings; ~12 B/posting
#            beyond, of which 8 the runner's copy of the vectors); index 20.4 B/posting
#   pisa       326 MiB at 4.7M,  1,484 at 23.8M (64 B/posting); index folder 10.3 B/posting
#   seismic    670 MiB at 4.7M,  2,379 at 23.8M (94 B/posting; its static pruning may bend this above ~0.5M
#            documents, unmeasured); index file 67 B/posting at 23.8M (98 at 4.7M)
#   bmp        528 MiB at 4.7M,  2,454 at 23.8M (106 B/posting: the Indexer holds every document); index 10.3
#   anserini   not measured here (benchmarks/run.py: peak RSS 1,419 MiB at 23.8M, a ~1 GB JVM heap); a guess
# A size measured earlier (results JSON) takes over when it predicts more (see estimate()), and the driver
# adds SAFETY on top. The model only decides what is skipped; nothing in the table comes from it.
ENGINE_MODEL = {
    "lsr": {"mem_base_mb": 2200, "mem_bytes": 14, "disk_bytes": 22},  # disk: float32 format 3; uint8 v4 is 10
    "pisa": {"mem_base_mb": 100, "mem_bytes": 64, "disk_bytes": 12},
    "seismic": {"mem_base_mb": 250, "mem_bytes": 94, "disk_bytes": 70},
    "bmp": {"mem_base_mb": 60, "mem_bytes": 106, "disk_bytes": 12},
    "anserini": {"mem_base_mb": 1600, "mem_bytes": 40, "disk_bytes": 60},
    # the exchange arrays, its CSC copy and the argsort/row arrays that make it: ~36 B/posting (a guess
    # from the arrays' sizes until measured); the compressed .npz ~6
    "splade-index": {"mem_base_mb": 400, "mem_bytes": 36, "disk_bytes": 6},
}
SAFETY = 1.25


def engine_command(engine: str, args: argparse.Namespace) -> tuple[Path, list[str], str]:
    """(runner, knobs, python) of an engine."""
    venv = lambda e: str(bench_dir() / "venvs" / e / "bin" / "python")  # noqa: E731
    if engine == "lsr":
        knobs = ["--variant", "c-auto", "--settings", f"1,0;{args.lsr_approx}", "--weights", args.lsr_weights]
        if args.lsr_add_batch:
            knobs += ["--add-batch", str(args.lsr_add_batch)]
        if args.lsr_mmap:
            knobs.append("--mmap")
        return HERE / "run_lsr.py", knobs, sys.executable
    if engine == "pisa":
        return HERE / "peers" / "run_pisa.py", ["--variant", "maxscore"], venv("pisa")
    if engine == "seismic":
        return HERE / "peers" / "run_seismic.py", ["--settings", args.seismic], venv("seismic")
    if engine == "bmp":
        return HERE / "peers" / "run_bmp.py", ["--settings", "1,1"], venv("bmp")
    if engine == "anserini":
        return HERE / "peers" / "run_anserini.py", [], venv("anserini")
    if engine == "splade-index":
        return HERE / "peers" / "run_splade_index.py", [], venv("splade-index")
    raise SystemExit(f"unknown engine {engine!r} (lsr, pisa, seismic, bmp, anserini, splade-index)")


def row_label(obj: dict) -> tuple[str, bool]:
    """(label, approximate?) of a result object."""
    e, v, p = obj["engine"], str(obj["variant"]), obj.get("params") or {}
    if e == "lsr":
        approx = not (p.get("alpha", 1) == 1 and not p.get("query_cut"))
        return (f"lsr approx. ({v})" if approx else f"lsr exact ({v})"), approx
    if e == "pisa":
        return f"PISA {v}", not p.get("rank_safe", True)
    if e == "seismic":
        return f"Seismic (query_cut={p.get('query_cut')}, heap_factor={p.get('heap_factor')})", True
    if e == "bmp":
        return f"BMP ({v})", p.get("alpha", 1) != 1 or p.get("beta", 1) != 1
    if e == "anserini":
        return "Anserini impact", False
    if e == "splade-index":
        return "splade-index (numba, exhaustive)", False
    return f"{e}/{v}", False


# ---------------------------------------------------------------------------------------- collections


def size_docs(name: str) -> int:
    if name in ENWIKI_DOCS:
        return ENWIKI_DOCS[name]
    m = re.fullmatch(r"(enwiki|synth)-(\w+)", name)
    if not m:
        raise SystemExit(f"unknown size {name!r}: enwiki-100k, enwiki-493k or synth-<n> (synth-1m, synth-20k, ...)")
    return parse_count(m.group(2))


def ensure_enwiki(name: str) -> Path:
    """The exchange folder of an enwiki sample, exported from its encode once the encode is complete."""
    folder = bench_dir() / name
    expected = size_docs(name)
    if (folder / "queries.npz").exists() and (folder / "docs.npz").exists():
        n = len(npz_member(folder / "docs.npz", "indptr")) - 1
        if n != expected:
            raise SystemExit(f"{folder}/docs.npz holds {n:,} documents, expected {expected:,}")
        return folder
    encoded = folder / "encoded"
    if not (encoded / "job.json").exists():
        raise SystemExit(f"{name}: no encode at {encoded}; run `python benchmarks/prepare_enwiki.py --docs "
                         f"{expected}` first (hours on 2 cores)")
    job = json.loads((encoded / "job.json").read_text())
    shards = sorted(encoded.glob("shard-*.npz"))
    count = sum(len(npz_member(s, "indptr")) - 1 for s in shards)
    if not job.get("complete") or count < expected:
        raise SystemExit(f"{name}: the encode is not finished: {count:,} of {expected:,} documents in {len(shards)} "
                         f"shards (job.json complete: {bool(job.get('complete'))}). Let `benchmarks/prepare_enwiki.py "
                         f"--docs {expected}` finish, then rerun; nothing was changed.")
    if count != expected or job.get("n_docs", count) != expected:
        raise SystemExit(f"{name}: the encode holds {count:,} documents (job.json: {job.get('n_docs')}), expected "
                         f"{expected:,}")
    from vectors import export  # imports lsr (the query encoder): only needed here

    tmp = folder / ".exchange.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: exporting %d shards (%s documents) to the exchange format", name, len(shards), f"{count:,}")
    export(encoded, folder / "queries.jsonl", tmp)
    for f in ("docs.npz", "doc_ids.txt", "vocab.json", "query_ids.txt", "queries.npz"):  # queries.npz last
        os.replace(tmp / f, folder / f)
    shutil.rmtree(tmp)
    return folder


def ensure_collection(name: str, args: argparse.Namespace) -> Path:
    if name.startswith("enwiki-"):
        return ensure_enwiki(name)
    import synthetic

    source = ensure_enwiki(args.synthetic_source)
    return synthetic.generate(size_docs(name), source, bench_dir() / name, args.resample, args.order, args.seed)


def collection_stats(folder: Path, max_queries: int | None) -> dict:
    docs = folder / "docs.npz"
    indptr = npz_member(docs, "indptr")
    qptr = npz_member(folder / "queries.npz", "indptr")
    nq = len(qptr) - 1 if max_queries is None else min(max_queries, len(qptr) - 1)
    out = {"folder": str(folder), "n_docs": len(indptr) - 1, "postings": int(indptr[-1]),
           "avg_doc_terms": float(indptr[-1]) / (len(indptr) - 1), "n_queries": nq,
           "avg_query_terms": float(qptr[nq]) / max(nq, 1), "exchange_bytes": docs.stat().st_size}
    if (folder / "meta.json").exists():
        meta = json.loads((folder / "meta.json").read_text())
        out["synthetic"] = {"params": meta["params"], "check": meta["check"]["summary"]}
    return out


def planned_stats(name: str, args: argparse.Namespace) -> dict:
    """Size estimates for a collection that does not exist yet (--dry-run)."""
    n = size_docs(name)
    source = bench_dir() / (name if name.startswith("enwiki-") else args.synthetic_source)
    avg = 238.0  # enwiki SPLADE-tiny postings per passage, if the source is not there either
    if (source / "docs.npz").exists():
        ptr = npz_member(source / "docs.npz", "indptr")
        avg = float(ptr[-1]) / (len(ptr) - 1)
    return {"folder": None, "n_docs": n, "postings": int(n * avg), "avg_doc_terms": avg, "n_queries": None,
            "exchange_bytes": int(n * avg * 8), "planned": True}


# ---------------------------------------------------------------------------------- exact ground truth


def exact_topk(folder: Path, max_queries: int | None, kmax: int, cache_dir: Path,
               chunk_docs: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-kmax per query on the float weights (float64 term-at-a-time over chunks of documents, only
    the query terms' postings), best first, ties by row: (ids [nq, kmax] int64 with -1 padding, scores)."""
    docs = folder / "docs.npz"
    st = docs.stat()
    cache = cache_dir / f"exact-q{max_queries or 'all'}-k{kmax}-{st.st_size}-{st.st_mtime_ns}.npz"
    if cache.exists():
        with np.load(cache) as data:
            return data["ids"], data["scores"]
    qptr = np.asarray(npz_member(folder / "queries.npz", "indptr"))
    qidx = np.asarray(npz_member(folder / "queries.npz", "indices"))
    qval = np.asarray(npz_member(folder / "queries.npz", "values")).astype(np.float64)
    nq = len(qptr) - 1 if max_queries is None else min(max_queries, len(qptr) - 1)
    indptr = np.asarray(npz_member(docs, "indptr"), dtype=np.int64)
    indices, values = npz_member(docs, "indices"), npz_member(docs, "values")
    with np.load(docs) as data:
        dim = int(data["dim"])
    n = len(indptr) - 1
    wanted = np.zeros(max(dim, int(qidx.max()) + 1), dtype=bool)
    wanted[qidx[: qptr[nq]]] = True
    best_ids = [np.zeros(0, np.int64)] * nq
    best_sc = [np.zeros(0, np.float64)] * nq
    started = time.perf_counter()
    for a in range(0, n, chunk_docs):
        b = min(n, a + chunk_docs)
        s, e = indptr[a], indptr[b]
        idx = np.asarray(indices[s:e])
        keep = wanted[idx]
        doc = np.repeat(np.arange(b - a, dtype=np.int64), np.diff(indptr[a:b + 1]))[keep]
        idx, val = idx[keep], np.asarray(values[s:e])[keep].astype(np.float64)
        o = np.argsort(idx, kind="stable")
        idx, doc, val = idx[o], doc[o], val[o]
        colptr = np.searchsorted(idx, np.arange(len(wanted) + 1))
        acc = np.zeros(b - a, dtype=np.float64)
        for i in range(nq):
            acc[:] = 0.0
            for t, w in zip(qidx[qptr[i]:qptr[i + 1]].tolist(), qval[qptr[i]:qptr[i + 1]].tolist(), strict=True):
                lo, hi = colptr[t], colptr[t + 1]
                acc[doc[lo:hi]] += w * val[lo:hi]
            pos = np.flatnonzero(acc > 0)
            if len(pos) > kmax:
                pos = pos[np.argpartition(-acc[pos], kmax - 1)[:kmax]]
            ids = np.concatenate([best_ids[i], pos + a])
            sc = np.concatenate([best_sc[i], acc[pos]])
            o = np.lexsort((ids, -sc))[:kmax]
            best_ids[i], best_sc[i] = ids[o], sc[o]
        log.info("exact top-%d: %d/%d documents (%.0f s)", kmax, b, n, time.perf_counter() - started)
    ids = np.full((nq, kmax), -1, dtype=np.int64)
    scores = np.zeros((nq, kmax), dtype=np.float64)
    for i in range(nq):
        ids[i, :len(best_ids[i])] = best_ids[i]
        scores[i, :len(best_sc[i])] = best_sc[i]
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".tmp.npz")
    np.savez(tmp, ids=ids, scores=scores)
    tmp.replace(cache)
    return ids, scores


_member = functools.lru_cache(maxsize=16)(npz_member)


def doc_scores(folder: Path, q: int, hits: list[int]) -> np.ndarray:
    """Exact float64 scores of some documents for query q."""
    qptr = _member(folder / "queries.npz", "indptr")
    qidx = np.asarray(_member(folder / "queries.npz", "indices")[qptr[q]:qptr[q + 1]])
    qval = np.asarray(_member(folder / "queries.npz", "values")[qptr[q]:qptr[q + 1]]).astype(np.float64)
    indptr = _member(folder / "docs.npz", "indptr")
    indices, values = _member(folder / "docs.npz", "indices"), _member(folder / "docs.npz", "values")
    dense = np.zeros(max(int(qidx.max(initial=0)) + 1, 1))
    dense[qidx] = qval
    out = np.zeros(len(hits))
    for j, h in enumerate(hits):
        t = np.asarray(indices[indptr[h]:indptr[h + 1]])
        v = np.asarray(values[indptr[h]:indptr[h + 1]]).astype(np.float64)
        m = t < len(dense)
        out[j] = float((dense[t[m]] * v[m]).sum())
    return out


def recall(folder: Path, results: list[list[int]], k: int, ids: np.ndarray, scores: np.ndarray,
           rtol: float = 1e-6) -> dict:
    """Mean recall@k (strict, and tie-aware) of an engine's hits against the exact top-k."""
    strict, ties = [], []
    for q, hits in enumerate(results):
        valid = ids[q, :k] >= 0
        top = ids[q, :k][valid]
        if len(top) == 0:
            continue
        kth = scores[q, :k][valid][-1]
        hits = list(dict.fromkeys(int(h) for h in hits))[:k]
        top_set = set(top.tolist())
        inside = [h for h in hits if h in top_set]
        outside = [h for h in hits if h not in top_set]
        ok = len(inside)
        if outside:
            s = doc_scores(folder, q, outside)
            ok += int(((s > 0) & (s >= kth - rtol * abs(kth))).sum())
        strict.append(len(inside) / len(top))
        ties.append(min(ok, len(top)) / len(top))
    return {"recall": float(np.mean(strict)) if strict else None,
            "recall_ties": float(np.mean(ties)) if ties else None, "judged": len(strict)}


# --------------------------------------------------------------------------------------- guarded runs


def meminfo_gib(field: str = "MemAvailable") -> float:
    for line in open("/proc/meminfo"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in open(f"/proc/{p}/task/{task}/children").read().split()]
        except OSError:
            pass
    return out


def _status_kb(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in open(f"/proc/{pid}/status"):
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon"):
                out[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def run_guarded(cmd: list[str], log_path: Path, min_free_gib: float, timeout_s: float | None) -> dict:
    """Run a runner in its own process group, sampling its process tree's memory every 0.2 s; kill the group
    if MemAvailable drops below min_free_gib or the timeout passes."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    peak_anon = peak_rss = 0
    killed = None
    with open(log_path, "w") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while proc.poll() is None:
                statuses = [_status_kb(p) for p in _tree(proc.pid)]
                peak_anon = max(peak_anon, sum(s.get("RssAnon", 0) for s in statuses))
                peak_rss = max(peak_rss, sum(s.get("VmRSS", 0) for s in statuses))
                avail = meminfo_gib()
                if avail < min_free_gib:
                    killed = f"killed by the memory guard: MemAvailable {avail:.1f} GiB < {min_free_gib} GiB"
                elif timeout_s and time.perf_counter() - started > timeout_s:
                    killed = f"killed after the {timeout_s:.0f} s timeout"
                if killed:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    break
                time.sleep(0.2)
        except BaseException:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise
    return {"returncode": proc.returncode, "wall_s": time.perf_counter() - started, "killed": killed,
            "run_peak_anon_mb": peak_anon / 1024, "run_peak_rss_mb": peak_rss / 1024}


def estimate(engine: str, postings: int, measured: list[dict], mapped: bool = False) -> dict:
    """Estimated peak memory (MiB) and disk (bytes) of one run: ENGINE_MODEL, or, when this engine was measured
    at a smaller size (this invocation or an earlier one in the results JSON), the largest measured peak plus
    the per-posting slope beyond it (the steeper of the model's and the one fitted through the two largest
    measured sizes): builds with bounded buffers (lsr flushes every 16M postings) have a large constant part,
    which a proportional extrapolation from a small size would blow up. ``mapped``: the runner memory-maps the
    vectors instead of holding its copy (8 B/posting in every model and measurement)."""
    m = ENGINE_MODEL[engine]
    slope = m["mem_bytes"] / 2**20  # MiB per posting
    mem = m["mem_base_mb"] + slope * postings
    disk = m["disk_bytes"] * postings
    basis = "model"
    points = {}
    for r in measured:
        if r.get("engine") == engine and r.get("postings") and r.get("run_peak_anon_mb") and r["postings"] < postings:
            points[r["postings"]] = max(points.get(r["postings"], 0), r["run_peak_anon_mb"])
            if r.get("index_bytes"):
                disk = max(disk, r["index_bytes"] * 1.5 * postings / r["postings"])
    if points:
        big = sorted(points)
        p1 = big[-1]
        if len(big) >= 2 and p1 >= 2 * big[-2]:
            p0 = big[-2]
            slope = max(slope, (points[p1] - points[p0]) / (p1 - p0))
        anchored = points[p1] + slope * (postings - p1)
        if anchored > mem:
            mem, basis = anchored, f"measured at {p1 / 1e6:.1f}M postings + {slope * 2**20:.0f} B/posting"
    if mapped:
        mem, basis = mem - 8 * postings / 2**20, basis + ", vectors mapped"
    return {"mem_mb": mem * SAFETY, "disk_bytes": disk * SAFETY, "basis": basis}


# -------------------------------------------------------------------------------------------- machine


def machine() -> dict:
    cpu, flags = "unknown", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    wanted = ["avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"]
    return {"cpu": cpu, "flags": {f: f in flags for f in wanted}, "cores": os.cpu_count(),
            "memory_gib": round(mem, 1), "platform": platform.platform(), "python": platform.python_version(),
            "disk_free_gib": round(shutil.disk_usage(bench_dir()).free / GIB, 1)}


def features_text(m: dict) -> str:
    """The CPU features a speed figure depends on, e.g. ``AVX2 yes, AVX-512 yes, AVX-512 BF16 no, AMX no``."""
    flags = m.get("flags", {})
    named = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX-512 BF16", "amx_tile": "AMX"}
    return ", ".join(f"{label} {'yes' if flags.get(f) else 'no'}" for f, label in named.items())


def machine_line(m: dict) -> str:
    return (f"Machine: {m['cpu']} ({features_text(m)}), {m['cores']} cores, {m['memory_gib']} GiB RAM, "
            f"{m['platform']}.")


# ------------------------------------------------------------------------------------------- the runs


def run_one(name: str, folder: Path | None, stats: dict, engine: str, k: int, args: argparse.Namespace,
            measured: list[dict], plan_only: bool = False, pending_bytes: int = 0) -> list[dict]:
    """Rows of one (size, engine, k): one per result object, or one skip row (one "planned" row with
    ``plan_only``; ``pending_bytes``: disk the collection itself will still take)."""
    base = {"size": name, "engine": engine, "k": k, "n_docs": stats["n_docs"], "postings": stats["postings"],
            "date": time.strftime("%Y-%m-%d %H:%M")}
    runner, knobs, python = engine_command(engine, args)
    if not Path(python).exists():
        return [{**base, "status": "skipped", "reason": f"no venv at {python} (benchmarks/peers/setup_peers.sh)"}]
    est = estimate(engine, stats["postings"], measured, mapped=engine == "lsr" and args.lsr_mmap)
    avail_gib = meminfo_gib() - args.reserve_gib
    free_disk = shutil.disk_usage(bench_dir()).free - args.reserve_disk_gib * GIB - pending_bytes
    base["estimate"] = {"mem_gib": round(est["mem_mb"] / 1024, 1), "disk_gib": round(est["disk_bytes"] / GIB, 1),
                        "basis": est["basis"], "mem_available_gib": round(avail_gib, 1),
                        "disk_free_gib": round(free_disk / GIB, 1)}
    reasons = []
    if est["mem_mb"] / 1024 > avail_gib:
        reasons.append(f"estimated peak memory {est['mem_mb'] / 1024:.1f} GiB > {avail_gib:.1f} GiB available")
    if est["disk_bytes"] > free_disk:
        reasons.append(f"estimated index + work files {est['disk_bytes'] / GIB:.1f} GiB > {free_disk / GIB:.1f} GiB "
                       "free disk")
    if reasons and args.no_skip:
        log.warning("%s k=%d %s: running despite: %s", name, k, engine, "; ".join(reasons))
        base["estimate"]["overridden"] = "; ".join(reasons)
        reasons = []
    if reasons or plan_only or args.dry_run:
        return [{**base, "status": "skipped" if reasons else "planned", "reason": "; ".join(reasons) or None}]
    out_dir = bench_dir() / "runs" / "scale" / f"{name}-k{k}"
    work = out_dir / "work" / engine
    result = out_dir / f"{engine}.json"
    shutil.rmtree(work, ignore_errors=True)
    result.unlink(missing_ok=True)
    cmd = [python, str(runner), "--data", str(folder), "--work", str(work), "--k", str(k), "--out", str(result),
           "--threads", "2", *knobs]
    if args.max_queries:
        cmd += ["--max-queries", str(args.max_queries)]
    if not args.qps:
        cmd.append("--no-batch")
    log.info("%s k=%d %s: %s", name, k, engine, " ".join(cmd[1:]))
    guard = run_guarded(cmd, out_dir / f"{engine}.log", args.min_free_gib, args.timeout_s)
    shutil.rmtree(work, ignore_errors=True)
    if guard["killed"] or guard["returncode"] != 0 or not result.exists():
        tail = (out_dir / f"{engine}.log").read_text(errors="replace").strip().splitlines()[-3:]
        reason = guard["killed"] or f"runner failed (exit {guard['returncode']}): {' | '.join(tail)}"
        log.error("%s k=%d %s: %s", name, k, engine, reason)
        return [{**base, "status": "failed", "reason": reason, **guard}]
    loaded = json.loads(result.read_text())
    rows = []
    ids, scores = exact_topk(folder, args.max_queries, max(args.ks), out_dir.parent / name)
    for obj in loaded if isinstance(loaded, list) else [loaded]:
        label, approx = row_label(obj)
        summary = obj.get("latency_summary_ms") or {}
        bm = obj.get("build_memory") or {}
        rows.append({**base, "status": "ok", "label": label, "approximate": approx, "variant": obj["variant"],
                     "params": obj.get("params"), "index_bytes": obj.get("index_bytes"), "build_s": obj["build_s"],
                     "build_peak_rss_mb": obj.get("build_peak_rss_mb"), "build_memory": bm,
                     "p50_ms": summary.get("p50"), "p99_ms": summary.get("p99"), "mean_ms": summary.get("mean"),
                     "qps_threads": obj.get("qps_threads"), "n_queries": obj.get("n_queries"),
                     "quantisation": obj.get("quantisation"), "extra": obj.get("extra"),
                     **recall(folder, obj["results"], k, ids, scores), **guard})
        log.info("  %s: build %.1f s, index %s MiB, build peak RSS %s MiB, p50 %.3f ms, p99 %.3f ms, R@%d %.4f",
                 label, obj["build_s"], _f((obj.get("index_bytes") or 0) / 2**20, ".0f"),
                 _f(obj.get("build_peak_rss_mb"), ".0f"), summary.get("p50", float("nan")),
                 summary.get("p99", float("nan")), k, rows[-1]["recall_ties"] or float("nan"))
    return rows


def _f(x, spec: str = ".3f") -> str:
    return "–" if x is None else format(x, spec)


# -------------------------------------------------------------------------------------------- reports


def merge_report(old: dict | None, new: dict) -> dict:
    """Replace the old rows of the (size, engine, k) triples that were run again; keep the rest."""
    if not old:
        return new
    done = {(r["size"], r["engine"], r["k"]) for r in new["rows"]}
    rows = [r for r in old.get("rows", []) if (r["size"], r["engine"], r["k"]) not in done] + new["rows"]
    sizes = {**old.get("sizes", {}), **new["sizes"]}
    return {**old, **new, "rows": rows, "sizes": sizes}


ENGINE_ORDER = ["lsr", "pisa", "seismic", "bmp", "anserini", "splade-index"]


def render(report: dict) -> str:
    rows = report.get("rows", [])
    if not rows:
        return "(no results yet: run `python benchmarks/scale.py`)"
    sizes = sorted(report["sizes"].items(), key=lambda kv: kv[1]["n_docs"])
    lines = [machine_line(report["machine"]) + f" Date {report['date']}.", "",
             "| collection | docs | postings | engine / setting | index MiB | build s | build peak RSS MiB (before) "
             "| p50 / p99 ms, k=10 | p50 / p99 ms, k=1000 | R@10 | R@1000 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for name, st in sizes:
        here = [r for r in rows if r["size"] == name]
        labels = []
        for r in sorted(here, key=lambda r: (ENGINE_ORDER.index(r["engine"]) if r["engine"] in ENGINE_ORDER else 99,
                                             r.get("approximate", False), r["k"])):
            key = r.get("label") or r["engine"]
            if key not in labels:
                labels.append(key)
        first = True
        for label in labels:
            by_k = {r["k"]: r for r in here if (r.get("label") or r["engine"]) == label}
            any_r = by_k.get(10) or next(iter(by_k.values()))
            head = (f"| {name} | {st['n_docs']:,} | {st['postings'] / 1e6:.1f}M |" if first else "| | | |")
            first = False
            if any_r["status"] != "ok":
                groups: dict[str, list[int]] = {}
                for k, r in sorted(by_k.items()):
                    groups.setdefault(r["status"] + (f" ({r['reason']})" if r.get("reason") else ""), []).append(k)
                why = "; ".join(f"k={', '.join(map(str, ks))}: {what}" for what, ks in groups.items())
                lines.append(f"{head} {label} | {any_r['status']}: see below | | | | | | |")
                notes.append(f"- {name}, {label}: {why}")
                continue
            size = None if any_r.get("index_bytes") is None else any_r["index_bytes"] / 2**20
            bm = any_r.get("build_memory") or {}
            rss = f"{_f(any_r.get('build_peak_rss_mb'), '.0f')} ({_f(bm.get('rss_before_mb'), '.0f')})"
            lat = lambda r: "–" if r is None or r["status"] != "ok" else f"{r['p50_ms']:.3f} / {r['p99_ms']:.3f}"  # noqa: E731
            rec = lambda r: "–" if r is None or r["status"] != "ok" else _f(r.get("recall_ties"), ".4f")  # noqa: E731
            lines.append(f"{head} {label} | {_f(size, '.0f')} | {any_r['build_s']:.1f} | {rss} | "
                         f"{lat(by_k.get(10))} | {lat(by_k.get(1000))} | {rec(by_k.get(10))} | {rec(by_k.get(1000))} |")
    nq = sorted({st["n_queries"] for _, st in sizes if st.get("n_queries")})
    lines += ["", f"Queries: {' / '.join(f'{n:,}' for n in nq) or 'the'} encoded enwiki title queries, single thread, "
              "one query per call, after 5 warm-up queries. Index: on-disk size. Build columns: from the k=10 run "
              "(each k builds its own index); build peak RSS is the runner's peak during the build, with its RSS "
              "just before in brackets (the collection's vectors, which every runner holds in memory, ~8 B/posting). "
              "R@k: recall against the exact top-k on the float weights, a hit tying the k-th score counted as right "
              "(PISA and BMP are exact on their own integer quantisation, so theirs is quantisation loss; lsr exact "
              "is exact on the float weights)."]
    synth = [(n, st) for n, st in sizes if st.get("synthetic")]
    for name, st in synth:
        p, c = st["synthetic"]["params"], st["synthetic"]["check"]
        lines.append(f"{name}: synthetic from {Path(p['source']['folder']).name} ({p['source']['n_docs']:,} docs), "
                     f"resample {p['resample']}, order {p['order']}, seed {p['seed']}; average length {c['avg_len']} "
                     f"(source {c['source_avg_len']}), df ratio of the 100 most frequent terms "
                     f"{c['df_ratio_top100_min']:.3f}–{c['df_ratio_top100_max']:.3f}, postings per query "
                     f"{c['postings_per_query']:,.0f} (source scaled: {c['postings_per_query_source_scaled']:,.0f}).")
    if notes:
        lines += ["", "Not run:"] + notes
    return "\n".join(lines)


def save_json(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(path)


def write_readme(text: str, path: Path) -> None:
    content = path.read_text(encoding="utf-8")
    if BEGIN not in content:
        raise SystemExit(f"{path} has no {BEGIN} marker")
    head, rest = content.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}", encoding="utf-8")


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in report.get("rows", []) if r["status"] == "ok"]
    if not ok:
        return
    def order(r: dict) -> tuple:
        rank = ENGINE_ORDER.index(r["engine"]) if r["engine"] in ENGINE_ORDER else 99
        return rank, bool(r.get("approximate")), r["label"]

    labels = [r["label"] for r in sorted(ok, key=order)]
    labels = list(dict.fromkeys(labels))
    colours = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharey=True)
    for ax, k in zip(axes, (10, 1000), strict=True):
        for label in labels:
            pts = sorted((r["n_docs"], r["p50_ms"]) for r in ok if r["k"] == k and r["label"] == label)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=colours[label], label=label,
                        linestyle="--" if r_approx(ok, label) else "-")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"k = {k}")
        ax.set_xlabel("documents")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("p50 latency, ms (1 thread, one query per call)")
    handles = [plt.Line2D([], [], color=colours[lb], marker="o", linestyle="--" if r_approx(ok, lb) else "-")
               for lb in labels]
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle("p50 latency against collection size (dashed: approximate)", fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def r_approx(rows: list[dict], label: str) -> bool:
    return any(r.get("approximate") for r in rows if r["label"] == label)


def publish(report: dict, args: argparse.Namespace) -> None:
    text = render(report)
    if args.readme and not args.no_readme and args.section != "scale":  # a run apart from the main table
        from tables import replace_section

        engines = ", ".join(report.get("settings", {}).get("engines", []))
        replace_section(args.readme, args.section, text,
                        f"### {', '.join(report['sizes'])}: {engines} (`scale.py --section {args.section}`)")
    elif args.readme and not args.no_readme:
        write_readme(text, args.readme)
        log.info("wrote the table to %s", args.readme)
    if args.plot and not args.no_plot:
        plot(report, args.plot)
        log.info("wrote %s", args.plot)
    print(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=DEFAULT_SIZES, help=f"comma-separated (default {DEFAULT_SIZES})")
    p.add_argument("--engines", default=DEFAULT_ENGINES,
                   help=f"comma-separated (default {DEFAULT_ENGINES}; also: anserini)")
    p.add_argument("--ks", default="10,1000")
    p.add_argument("--max-queries", type=int, default=None)
    p.add_argument("--lsr-weights", default="uint8", choices=["float32", "uint8", "uint16"],
                   help="lsr's stored impacts (uint8, like PISA's and BMP's integer impacts)")
    p.add_argument("--lsr-approx", default="0.9,0", help="lsr's approximate setting: alpha,query_cut (0 = all terms)")
    p.add_argument("--seismic", default="10,0.7", help="Seismic's setting: query_cut,heap_factor")
    p.add_argument("--lsr-add-batch", type=int, default=10_000,
                   help="documents per IndexWriter.add call in lsr's build (0: all at once, as run.py does; that "
                        "holds the whole collection in the writer, ~120 B/posting)")
    p.add_argument("--lsr-mmap", action="store_true",
                   help="lsr's runner memory-maps the documents (run_lsr.py --mmap) instead of holding them: for "
                        "collections whose vectors do not fit in memory beside the build; its build peak RSS then "
                        "counts the mapped pages it read (run_peak_anon_mb does not)")
    p.add_argument("--qps", action="store_true", help="also run the 2-thread batch (queries/second)")
    p.add_argument("--synthetic-source", default="enwiki-493k", help="real collection the synth-* sizes are made from")
    p.add_argument("--resample", type=float, default=0.5, help="synthetic: share of a template's postings redrawn")
    p.add_argument("--order", default="source", choices=["source", "random"], help="synthetic: template order")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reserve-gib", type=float, default=2.0, help="memory left to the system when deciding to skip")
    p.add_argument("--reserve-disk-gib", type=float, default=5.0)
    p.add_argument("--min-free-gib", type=float, default=1.0, help="kill a runner if MemAvailable drops below this")
    p.add_argument("--no-skip", action="store_true",
                   help="run even where the estimate says it will not fit (the memory guard still kills it)")
    p.add_argument("--timeout-s", type=float, default=4 * 3600, help="kill a runner after this long")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the estimates; run and generate nothing")
    p.add_argument("--prepare-only", action="store_true", help="make the exchange folders, run nothing")
    p.add_argument("--render-only", action="store_true", help="rewrite the table and plot from the results JSON")
    p.add_argument("--json", type=Path, default=RESULTS_JSON)
    p.add_argument("--readme", type=Path, default=README)
    p.add_argument("--plot", type=Path, default=PLOT)
    p.add_argument("--no-readme", action="store_true")
    p.add_argument("--section", default="scale",
                   help="README section for the table: 'scale' (the main table) or a name of its own, for a run "
                        "apart from it (other engines, another machine) that must not be merged into it")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args()
    args.ks = [int(k) for k in args.ks.split(",")]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    old = json.loads(args.json.read_text()) if args.json.exists() else None
    if args.render_only:
        if not old:
            raise SystemExit(f"no {args.json}")
        publish(old, args)
        return
    engines = args.engines.split(",")
    for e in engines:
        engine_command(e, args)
    report = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "sizes": {}, "rows": [],
              "settings": {"ks": args.ks, "max_queries": args.max_queries, "lsr_approx": args.lsr_approx,
                           "seismic": args.seismic, "qps": args.qps, "engines": engines}}
    measured = [r for r in (old or {}).get("rows", []) if r.get("status") == "ok"]
    for name in args.sizes.split(","):
        folder = bench_dir() / name
        if not (folder / "queries.npz").exists():
            # Not made yet: decide from the planned size whether making it is worth it (and fits on disk).
            stats = planned_stats(name, args)
            synth = name.startswith("synth-")
            make_bytes = stats["exchange_bytes"] * (2 if synth else 1)  # synthetic: .npy parts + the zip
            free = shutil.disk_usage(bench_dir()).free - args.reserve_disk_gib * GIB
            plan = [r for k in args.ks for e in engines
                    for r in run_one(name, None, stats, e, k, args, measured, True, stats["exchange_bytes"])]
            stats["make_disk_gib"] = round(make_bytes / GIB, 1)
            report["sizes"][name] = stats
            why_not = None
            if make_bytes > free:
                why_not = (f"making the collection needs {make_bytes / GIB:.1f} GiB of disk, "
                           f"{free / GIB:.1f} GiB free")
            elif not args.prepare_only and not any(r["status"] == "planned" for r in plan):
                why_not = "no engine would fit, so the collection was not made"
            if args.dry_run or why_not:
                for r in plan:
                    if why_not and not args.dry_run:
                        r["reason"] = "; ".join(x for x in (r.get("reason"), why_not) if x)
                        r["status"] = "skipped"
                report["rows"] += plan
                if why_not:
                    log.warning("%s: %s", name, why_not)
                    stats["not_made"] = why_not
                continue
        folder = ensure_collection(name, args)
        stats = collection_stats(folder, args.max_queries)
        report["sizes"][name] = stats
        log.info("%s: %s documents, %s postings (%.0f per document)", name, f"{stats['n_docs']:,}",
                 f"{stats['postings']:,}", stats["avg_doc_terms"])
        if args.prepare_only:
            continue
        for k in args.ks:
            for engine in engines:
                rows = run_one(name, folder, stats, engine, k, args, measured)
                report["rows"] += rows
                measured += [r for r in rows if r["status"] == "ok"]
                if not args.dry_run:  # keep what was measured even if a later run is interrupted
                    save_json(merge_report(old, report), args.json)
    if not args.dry_run and not args.prepare_only:
        save_json(merge_report(old, report), args.json)
    if args.dry_run:
        for r in report["rows"]:
            e = r.get("estimate") or {}
            print(f"{r['size']:>12} k={r['k']:<5} {r['engine']:<9} {r['status']:<8} est. memory {e.get('mem_gib')} GiB "
                  f"(available {e.get('mem_available_gib')}), disk {e.get('disk_gib')} GiB (free "
                  f"{e.get('disk_free_gib')}) [{e.get('basis')}] {r.get('reason') or ''}")
        for name, st in report["sizes"].items():
            made = (f" (not made yet: needs {st['make_disk_gib']} GiB of disk while being made)"
                    if st.get("planned") else "")
            print(f"{name}: {st['n_docs']:,} docs, {st['postings']:,} postings, exchange folder "
                  f"{st['exchange_bytes'] / GIB:.1f} GiB{made}")
        return
    if args.prepare_only:
        return
    publish(merge_report(old, report), args)


if __name__ == "__main__":
    main()
