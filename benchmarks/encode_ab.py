"""Interleaved A/B of lsr's encoding routes, robust to a machine whose speed drifts by up to 2x within minutes.

``queries``: one query per call (the single-text route), two worker processes pinned to the same core, each
running a checkout of lsr (its C extensions built) under a screen-kernel cap (``LSR_SCREEN_ISA``), answering
the same queries in alternating batches; p50/p99 per side and the ratio B / A, and whether every vector has the
same non-zeros on both sides. ``documents``: the batched route on documents, the int8 screen's kernels (AVX2
and, where the CPU has it, AVX-512 VNNI) alternating batch by batch in one process; docs/s per kernel and
whether the vectors are bit-identical. These are the measurements behind benchmarks/README.md's single-text
and VNNI paragraphs.

    python benchmarks/encode_ab.py queries --a /path/to/old/checkout --b .            # old route vs this one
    python benchmarks/encode_ab.py queries --a .@avx2 --b .@auto                       # AVX2 vs VNNI screen
    python benchmarks/encode_ab.py queries --queries scifact                           # SciFact claims
    python benchmarks/encode_ab.py documents --n 600

A side is ``CHECKOUT[@ISA]`` (ISA: auto, avx2 or plain; default auto). Queries: enwiki titles (the benchmark's
seeded sample, $LSR_BENCH_DIR/enwiki-100k) or the bundled SciFact claims; documents: the enwiki sample's
passages. Nothing is written; not run in CI.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from prepare_enwiki import bench_dir  # noqa: E402

WORKER = """
import json, sys, time
import torch
torch.set_num_threads(1)
from lsr.encoders import load_encoder
encoder = load_encoder("splade-tiny")
texts = json.loads(sys.stdin.readline())
for text in texts[:20]:
    encoder.encode_queries([text])
screened = encoder._single.screened  # (checkouts before the kernel's name had none)
print("ready", type(encoder._single.body).__name__,
      getattr(screened.screen, "kernel_name", "int8 screen") if screened else "no screen", flush=True)
for line in sys.stdin:
    lo, hi = map(int, line.split())
    out = []
    for text in texts[lo:hi]:
        started = time.perf_counter()
        batch = encoder.encode_queries([text])
        out.append([time.perf_counter() - started, batch.indices.tolist()])
    print(json.dumps(out), flush=True)
"""


def query_texts(name: str, n: int) -> list[str]:
    if name == "scifact":
        path = REPO / "lsr" / "datasets" / "scifact" / "queries.jsonl.gz"
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return [json.loads(line)["text"] for line in fh][:n]
    with open(bench_dir() / "enwiki-100k" / "queries.jsonl", encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh][:n]


def start_worker(side: str, texts: list[str]) -> subprocess.Popen:
    checkout, _, isa = side.partition("@")
    env = {**os.environ, "PYTHONPATH": str(Path(checkout).resolve()), "OMP_NUM_THREADS": "1",
           "LSR_SCREEN_ISA": isa or "auto"}
    proc = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", WORKER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd="/tmp")
    proc.stdin.write(json.dumps(texts) + "\n")
    proc.stdin.flush()
    print(f"{side}: {proc.stdout.readline().strip()}")
    return proc


def ask(proc: subprocess.Popen, lo: int, hi: int) -> list:
    proc.stdin.write(f"{lo} {hi}\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def queries(args: argparse.Namespace) -> None:
    texts = query_texts(args.queries, args.n)
    os.sched_setaffinity(0, {0})  # the workers share core 1; this process waits on core 0
    a, b = start_worker(args.a, texts), start_worker(args.b, texts)
    times: dict[str, list[float]] = {"a": [], "b": []}
    differ = 0
    for rnd in range(args.rounds):
        for turn, lo in enumerate(range(0, len(texts), args.batch)):
            hi = min(len(texts), lo + args.batch)
            first, second = (a, b) if (turn + rnd) % 2 == 0 else (b, a)
            got = {id(first): ask(first, lo, hi), id(second): ask(second, lo, hi)}
            for side, proc in (("a", a), ("b", b)):
                times[side] += [t for t, _ in got[id(proc)]]
            differ += sum(x[1] != y[1] for x, y in zip(got[id(a)], got[id(b)], strict=True))
    ta, tb = np.array(times["a"]) * 1e3, np.array(times["b"]) * 1e3
    print(f"{args.queries} ({len(texts)} queries x {args.rounds} rounds): A p50 {np.median(ta):.3f} p99 "
          f"{np.percentile(ta, 99):.3f} ms | B p50 {np.median(tb):.3f} p99 {np.percentile(tb, 99):.3f} ms | "
          f"B/A p50 {np.median(tb) / np.median(ta):.3f}, mean {tb.mean() / ta.mean():.3f} | vectors with other "
          f"non-zeros: {differ}")


def documents(args: argparse.Namespace) -> None:
    import torch

    from lsr.encoders import load_encoder

    torch.set_num_threads(args.threads)
    with open(bench_dir() / "enwiki-100k" / "corpus.jsonl", encoding="utf-8") as fh:
        lines = [json.loads(line) for line in fh]
    random.Random(args.seed).shuffle(lines)
    docs = [f"{d.get('title', '')} {d['text']}".strip() for d in lines[:args.n]]
    encoder = load_encoder("splade-tiny")
    screen = getattr(encoder._projection, "int8", None)
    if screen is None:
        raise SystemExit(f"no int8 screen on this CPU's route: {encoder.route}")
    kernels = ["avx2", "auto"] if screen.kernel.has_vnni() else ["avx2", "plain"]
    encoder.encode_documents(docs[:32])
    seconds = dict.fromkeys(kernels, 0.0)
    identical = True
    for turn, lo in enumerate(range(0, len(docs), args.batch)):
        chunk, out = docs[lo:lo + args.batch], {}
        for isa in kernels if turn % 2 == 0 else kernels[::-1]:
            screen.isa = isa
            started = time.perf_counter()
            out[isa] = encoder.encode_documents(chunk)
            seconds[isa] += time.perf_counter() - started
        x, y = out.values()
        identical &= bool(np.array_equal(x.indptr, y.indptr) and np.array_equal(x.indices, y.indices)
                          and np.array_equal(x.values, y.values))
    rates = {isa: len(docs) / s for isa, s in seconds.items()}
    names = {"auto": "AVX-512 VNNI", "avx2": "AVX2", "plain": "plain C"}
    print(" | ".join(f"{names[isa]} {rate:.1f} docs/s" for isa, rate in rates.items())
          + f" | ratio {rates[kernels[1]] / rates[kernels[0]]:.2f} | bit-identical vectors: {identical}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    q = sub.add_parser("queries")
    q.add_argument("--a", default=str(REPO) + "@avx2")
    q.add_argument("--b", default=str(REPO) + "@auto")
    q.add_argument("--queries", choices=["enwiki", "scifact"], default="enwiki")
    q.add_argument("--n", type=int, default=300)
    q.add_argument("--rounds", type=int, default=3)
    q.add_argument("--batch", type=int, default=20)
    d = sub.add_parser("documents")
    d.add_argument("--n", type=int, default=600)
    d.add_argument("--batch", type=int, default=64)
    d.add_argument("--threads", type=int, default=2)
    d.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    queries(args) if args.what == "queries" else documents(args)


if __name__ == "__main__":
    main()
