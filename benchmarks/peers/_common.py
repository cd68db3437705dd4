"""Shared helpers of the peer-engine runners: CLI, exchange-folder loading, quantisation, timing, JSON output.

Depends on numpy only (and the standard library), so that every peer's own virtual environment can load
it; never imports lsr. Runners put this folder on sys.path and ``import _common``.

The exchange folder (see benchmarks/vectors.py): docs.npz / queries.npz hold CSR arrays ``indptr``
(int64), ``indices`` (int32), ``values`` (float32, > 0), ``dim``; doc_ids.txt / query_ids.txt one id a
line; vocab.json the token of each term id.

Every runner indexes document *row numbers* (``"0"``, ``"1"``, ...) as the engine's document ids, so an
engine's docid string maps straight back to the row index in docs.npz; the external ids in doc_ids.txt are
only needed to map rows to qrels, which the runners do not do.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import struct
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np


# ----------------------------------------------------------------------------------------------- data


@dataclass
class Csr:
    indptr: np.ndarray  # int64 [n + 1]
    indices: np.ndarray  # int32 [nnz]
    values: np.ndarray  # float32 [nnz]
    dim: int

    @property
    def n(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = int(self.indptr[i]), int(self.indptr[i + 1])
        return self.indices[a:b], self.values[a:b]

    def head(self, n: int) -> "Csr":
        n = min(n, self.n)
        end = int(self.indptr[n])
        return Csr(self.indptr[: n + 1].copy(), self.indices[:end], self.values[:end], self.dim)


@dataclass
class Exchange:
    folder: Path
    doc_ids: list[str]
    docs: Csr
    query_ids: list[str]
    queries: Csr


def npz_member(path: Path, key: str) -> np.ndarray:
    """One array of an .npz without reading it into memory: a read-only memmap when the member is stored
    uncompressed (np.savez, and docs.npz written here), else the array itself (np.load)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(key + ".npy")
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as fh:
            fh.seek(info.header_offset)
            head = fh.read(30)
            if head[:4] == b"PK\x03\x04":
                name_len, extra_len = struct.unpack("<HH", head[26:30])
                fh.seek(info.header_offset + 30 + name_len + extra_len)
                version = np.lib.format.read_magic(fh)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read_header is not None:
                    shape, fortran, dtype = read_header(fh)
                    offset = fh.tell()
                    if shape and not dtype.hasobject:
                        return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset,
                                         order="F" if fortran else "C")
    with np.load(path, allow_pickle=False) as data:
        return data[key]


def load_csr(path: Path, mmap: bool = False) -> Csr:
    """A CSR matrix of the exchange format; with ``mmap`` its arrays are read-only memmaps where they are stored
    uncompressed in the right dtype (a collection larger than memory is then read only where it is used)."""
    if mmap:
        with np.load(path, allow_pickle=False) as data:
            dim = int(data["dim"])
        arrays = [npz_member(path, key) for key in ("indptr", "indices", "values")]
        return Csr(*(a if a.dtype == t else np.ascontiguousarray(a, dtype=t)
                     for a, t in zip(arrays, (np.int64, np.int32, np.float32), strict=True)), dim)
    with np.load(path, allow_pickle=False) as data:
        return Csr(
            np.ascontiguousarray(data["indptr"], dtype=np.int64),
            np.ascontiguousarray(data["indices"], dtype=np.int32),
            np.ascontiguousarray(data["values"], dtype=np.float32),
            int(data["dim"]),
        )


def load_exchange(folder: Path | str, max_queries: int | None = None, mmap_docs: bool = False) -> Exchange:
    folder = Path(folder)
    doc_ids = (folder / "doc_ids.txt").read_text(encoding="utf-8").splitlines()
    query_ids = (folder / "query_ids.txt").read_text(encoding="utf-8").splitlines()
    docs = load_csr(folder / "docs.npz", mmap=mmap_docs)
    queries = load_csr(folder / "queries.npz")
    if len(doc_ids) != docs.n or len(query_ids) != queries.n:
        raise ValueError(f"{folder}: id files and CSR rows disagree ({len(doc_ids)}/{docs.n} docs, "
                         f"{len(query_ids)}/{queries.n} queries)")
    if max_queries is not None and max_queries < queries.n:
        queries = queries.head(max_queries)
        query_ids = query_ids[:max_queries]
    return Exchange(folder, doc_ids, docs, query_ids, queries)


def term_token(term_id: int) -> str:
    """The token string an engine sees for a term id: ``t<id>``.

    Text engines (PISA, Lucene, BMP's string lexicon) get ``t123`` rather than the wordpiece itself: word
    pieces such as ``##ing``, ``[unused0]`` or ``the`` would be split, lower-cased, dropped as stop words or
    mangled by the engine's tokeniser; ``t<digits>`` is a plain alphanumeric word every tokeniser keeps as is.
    """
    return f"t{term_id}"


# --------------------------------------------------------------------------------------- quantisation
#
# The same functions serve the runners (to feed the engines) and check_results.py (to compute the exact
# top-k on the weights the engine actually saw), so the two cannot drift apart. A "quantisation" record
# is stored in each result JSON and understood by ``quantise_docs`` / ``quantise_queries``.


def round_scale(values: np.ndarray, scale: float) -> np.ndarray:
    """round(scale * w) as int64 (numpy rounds halves to even, like Python's round)."""
    return np.rint(values.astype(np.float64) * scale).astype(np.int64)


def u8_doc_scale(docs: Csr) -> float:
    """BMP: 255 / max doc weight, so the largest weight maps to 255 and nothing exceeds a u8."""
    return 255.0 / float(docs.values.max())


def quantise_u8(values: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(round_scale(values, scale), 0, 255)


BMP_MAX_TERM_WEIGHT = 32


def bmp_query_weights(values: np.ndarray) -> np.ndarray:
    """What bmp 0.2.8's ``Searcher.search`` does to float query weights (python/src/lib.rs):
    scale = 32 / max weight (f32), q = ceil(w * scale) (f32), then used as u8; scores accumulate
    sum(q * doc_u8) in u16 (wrapping past 65,535 in a release build)."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    v = values.astype(np.float32)
    scale = np.float32(BMP_MAX_TERM_WEIGHT) / np.float32(v.max())
    return np.ceil(v * scale).astype(np.int64)


def quantise_docs(docs: Csr, q: dict | None) -> Csr:
    """Documents as the engine scores them, given a result's "quantisation" record (None = float)."""
    if not q:
        return docs
    kind = q["kind"]
    if kind == "f16":
        vals = docs.values.astype(np.float16).astype(np.float64)
    elif kind == "impact":  # lsr: round(w x scale) clipped to [0, doc_max], dequantised by 1 / scale
        vals = np.clip(round_scale(docs.values, q["doc_scale"]), 0, q["doc_max"]) / q["doc_scale"]
    elif kind in ("round", "u8"):
        vals = round_scale(docs.values, q["doc_scale"])
        if kind == "u8":
            vals = np.clip(vals, 0, 255)
        vals = vals.astype(np.float64)
    else:
        raise ValueError(f"unknown quantisation {kind!r}")
    return Csr(docs.indptr, docs.indices, vals, docs.dim)


def quantised_scores(scores: np.ndarray, q: dict | None) -> np.ndarray:
    """Exact scores as the engine's arithmetic would hold them (BMP: u16 accumulators wrap)."""
    if q and q.get("score_mod"):
        return np.mod(scores, q["score_mod"])
    return scores


def quantise_query(indices: np.ndarray, values: np.ndarray, q: dict | None) -> tuple[np.ndarray, np.ndarray]:
    if not q:
        return indices, values.astype(np.float64)
    kind = q["kind"]
    if kind in ("f16", "impact"):
        return indices, values.astype(np.float64)  # Seismic and lsr keep query weights in f32
    if kind == "round":
        v = round_scale(values, q["query_scale"])
    elif kind == "u8":
        v = bmp_query_weights(values)
    else:
        raise ValueError(f"unknown quantisation {kind!r}")
    keep = v > 0
    return indices[keep], v[keep].astype(np.float64)


# ------------------------------------------------------------------------------------------ exact top-k


class ExactScorer:
    """Exhaustive term-at-a-time scoring in float64 over a CSC copy of the documents (numpy only)."""

    def __init__(self, docs: Csr):
        order = np.argsort(docs.indices, kind="stable")
        self.n = docs.n
        self.doc_of = np.repeat(np.arange(docs.n, dtype=np.int64), np.diff(docs.indptr))[order]
        self.val = np.asarray(docs.values, dtype=np.float64)[order]
        counts = np.bincount(docs.indices, minlength=docs.dim)
        self.colptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def scores(self, q_idx: np.ndarray, q_val: np.ndarray) -> np.ndarray:
        acc = np.zeros(self.n, dtype=np.float64)
        for t, w in zip(q_idx.tolist(), q_val.tolist()):
            if t >= len(self.colptr) - 1:
                continue
            a, b = self.colptr[t], self.colptr[t + 1]
            acc[self.doc_of[a:b]] += w * self.val[a:b]  # one posting per (doc, term): no duplicates
        return acc


def topk_of(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows with a positive score, best first (ties by row)."""
    pos = np.flatnonzero(scores > 0)
    if len(pos) > k:
        part = np.argpartition(-scores[pos], k - 1)[:k]
        pos = pos[part]
    order = np.lexsort((pos, -scores[pos]))
    return pos[order], scores[pos[order]]


# ------------------------------------------------------------------------------------------------- CLI


def make_parser(engine: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="exchange folder (docs.npz, queries.npz, ...)")
    p.add_argument("--work", type=Path, required=True, help="work folder for the engine's index files")
    p.add_argument("--k", type=int, default=10, help="hits per query")
    p.add_argument("--out", type=Path, required=True, help="result JSON to write")
    p.add_argument("--variant", default=None, help="engine variant (see the runner's --help)")
    p.add_argument("--threads", type=int, default=2, help="threads of the batch run (and of the build)")
    p.add_argument("--build-threads", type=int, default=None, help="threads of the build (default --threads)")
    p.add_argument("--max-queries", type=int, default=None, help="only the first N queries")
    p.add_argument("--warmup", type=int, default=5, help="queries run untimed before the timed pass")
    p.add_argument("--batch-min-s", type=float, default=1.0,
                   help="repeat the multi-threaded batch until it has run this long (for a stable q/s)")
    p.add_argument("--no-batch", action="store_true", help="skip the multi-threaded batch run")
    p.add_argument("--verbose", action="store_true",
                   help="let the engine's build output through (default: it goes to WORK/build.log)")
    p.set_defaults(engine=engine)
    return p


def finish_args(args: argparse.Namespace) -> argparse.Namespace:
    if args.build_threads is None:
        args.build_threads = args.threads
    args.work.mkdir(parents=True, exist_ok=True)
    return args


# ---------------------------------------------------------------------------------------------- timing


@contextlib.contextmanager
def engine_output(args: argparse.Namespace):
    """Send what the engine prints (Rust println, C++ spdlog, Java log4j: all on file descriptors 1 and 2)
    to WORK/build.log unless --verbose."""
    if args.verbose:
        yield
        return
    log = open(args.work / "build.log", "ab")
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        log.close()



def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_single(search: Callable[[Any], Any], prepared: Sequence[Any], warmup: int) -> tuple[list[Any], list[float]]:
    """One query at a time on the calling thread: ``search(prepared[i])`` is the only thing timed.

    ``warmup`` queries (cycling through the queries when there are fewer) are run untimed first; then every
    query is run and timed once."""
    for i in range(warmup if prepared else 0):
        search(prepared[i % len(prepared)])
    raw, lat = [], []
    clock = time.perf_counter
    for p in prepared:
        t0 = clock()
        r = search(p)
        t1 = clock()
        raw.append(r)
        lat.append((t1 - t0) * 1000.0)
    return raw, lat


def run_batch(batch: Callable[[], Any], n_queries: int, min_s: float) -> float:
    """Queries/s of ``batch()`` (which runs all queries once): repeated until ``min_s`` seconds passed."""
    batch()  # warm-up
    runs, total = 0, 0.0
    while runs == 0 or total < min_s:
        _, dt = timed(batch)
        runs += 1
        total += dt
    return n_queries * runs / total


def dir_bytes(path: Path | str) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            fp = os.path.join(root, f)
            if not os.path.islink(fp):
                total += os.path.getsize(fp)
    return total


def peak_rss_mb() -> float:
    """Peak RSS of this process so far, including any peak before a ``timed_build`` reset.

    On Linux this is VmHWM (/proc/self/status), the high-water mark of this program's own memory: ru_maxrss
    also carries the peak of the parent process this one was forked from across the exec (a runner started by
    a 1 GB driver would report at least 1 GB). Elsewhere ru_maxrss."""
    hwm = _status_kb().get("VmHWM")
    if hwm is None:
        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(_PEAK_BEFORE_RESET_KB, hwm) / 1024.0


# --------------------------------------------------------------------------------------- build memory
#
# Linux keeps a per-process high-water mark of the RSS (VmHWM, also behind ru_maxrss); writing "5" to
# /proc/self/clear_refs resets it to the current RSS. timed_build resets it just before the build and reads it
# just after, so the build's peak is measured on its own, not confused with loading the exchange folder
# earlier. The reset also lowers VmHWM for good, so the process peak from before is kept in
# _PEAK_BEFORE_RESET_KB for peak_rss_mb.

_PEAK_BEFORE_RESET_KB = 0
BUILD_MEMORY: dict | None = None  # set by timed_build, written by result_object


def _status_kb() -> dict[str, int]:
    out = {}
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    out[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def _reset_peak_rss() -> bool:
    global _PEAK_BEFORE_RESET_KB
    _PEAK_BEFORE_RESET_KB = max(_PEAK_BEFORE_RESET_KB, peak_rss_mb() * 1024)
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    s = _status_kb()
    return "VmHWM" in s and s["VmHWM"] <= s.get("VmRSS", 0) + 1024


def timed_build(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``timed(fn)`` for an index build, also recording the memory the build took in ``BUILD_MEMORY`` (added
    to the result JSON by ``result_object``): ``peak_rss_mb`` is this process's peak RSS during the build (the
    exchange arrays the runner already holds included; the engine's threads included; file pages it maps
    too), ``rss_before_mb`` the RSS just before, ``rss_after_mb``/``anon_after_mb`` just after, and
    ``children_peak_rss_mb`` the largest child process the build waited for (0 if none). ``method`` says
    how the peak was taken: ``VmHWM reset`` (Linux) or ``process peak so far`` (loading included, where the
    high-water mark cannot be reset)."""
    global BUILD_MEMORY
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    before = _status_kb()
    reset = _reset_peak_rss()
    out, seconds = timed(fn)
    after = _status_kb()
    peak_kb = after.get("VmHWM") if reset and "VmHWM" in after else peak_rss_mb() * 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    BUILD_MEMORY = {
        "peak_rss_mb": peak_kb / 1024.0,
        "rss_before_mb": before.get("VmRSS", 0) / 1024.0,
        "rss_after_mb": after.get("VmRSS", 0) / 1024.0,
        "anon_after_mb": after.get("RssAnon", 0) / 1024.0,
        "children_peak_rss_mb": children / 1024.0 if children > children_before else 0.0,
        "method": "VmHWM reset" if reset else "process peak so far",
    }
    return out, seconds


def latency_summary(lat: Sequence[float]) -> dict[str, float]:
    if not lat:
        return {}
    a = np.asarray(lat)
    return {
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
    }


def result_object(
    args: argparse.Namespace,
    *,
    variant: str,
    params: dict,
    build_s: float,
    index_bytes: int | None,
    latency_ms: list[float],
    qps_threads: float | None,
    results: list[list[int]],
    scores: list[list[float]],
    data: Exchange,
    quantisation: dict | None = None,
    extra: dict | None = None,
) -> dict:
    obj = {
        "engine": args.engine,
        "variant": variant,
        "params": params,
        "k": args.k,
        "build_s": build_s,
        "index_bytes": index_bytes,
        "peak_rss_mb": peak_rss_mb(),
        "latency_ms": latency_ms,
        "qps_threads": qps_threads,
        "threads": args.threads,
        "results": [[int(r) for r in row] for row in results],
        "scores": [[float(s) for s in row] for row in scores],
        # extras beyond the common schema
        "latency_summary_ms": latency_summary(latency_ms),
        "quantisation": quantisation,
        "data": str(data.folder),
        "n_docs": data.docs.n,
        "n_queries": data.queries.n,
        "query_ids": data.query_ids,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()},
    }
    if BUILD_MEMORY is not None:
        obj["build_peak_rss_mb"] = BUILD_MEMORY["peak_rss_mb"]
        obj["build_memory"] = BUILD_MEMORY
    if extra:
        obj["extra"] = extra
    return obj


def write_result(args: argparse.Namespace, raw: list[tuple[Any, Any]], **fields: Any) -> dict:
    """The result object of one run from its (ids, scores) per query (``run_single``'s), written to
    ``args.out`` and reported; ``fields`` are :func:`result_object`'s other arguments."""
    obj = result_object(args, results=[r[0] for r in raw], scores=[r[1] for r in raw], **fields)
    write_json(args.out, obj)
    report(obj)
    return obj


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1), encoding="utf-8")
    tmp.replace(path)


def report(obj: dict | list) -> None:
    """One line per result object on stderr."""
    for o in obj if isinstance(obj, list) else [obj]:
        s = o.get("latency_summary_ms") or {}
        qps = o["qps_threads"]
        size = "in memory" if o["index_bytes"] is None else f"{o['index_bytes'] / 2**20:.1f} MiB"
        print(
            f"{o['engine']}/{o['variant']}: build {o['build_s']:.2f}s, index "
            f"{size}, p50 {s.get('p50', float('nan')):.3f} ms, "
            f"p99 {s.get('p99', float('nan')):.3f} ms, q/s@{o['threads']}t "
            f"{'n/a' if qps is None else f'{qps:.0f}'}, peak RSS {o['peak_rss_mb']:.0f} MiB",
            file=sys.stderr,
        )


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")
