"""SPLADE encoding throughput: lsr against sentence-transformers on the same model, texts and threads.

    python benchmarks/encode.py [--n 1000] [--threads 2] [--repeats 2] [--workers-docs 4000] [--isa avx2]

Seeded samples: ``--n`` enwiki-2015 passages and ``--n`` SciFact documents (``title + " " + text``), at most
256 tokens, SPLADE-tiny from lsr's model cache, ``--threads`` torch threads for everyone. Rows:
- sentence-transformers ``SparseEncoder.encode_document`` (its batch size tuned on the first 200 texts);
- lsr through the model's full logits (the route of unknown architectures, and lsr's encoder before the
  fused projection), the fused float32 projection without a screen, with the exact int8 screen (the default
  where bfloat16 is not native) and with the exact bfloat16 screen (the default where it is),
  ``dtype="bfloat16"`` and the opt-in ``dtype="int8"`` (dynamic quantisation, approximate);
- ``lsr encode`` (``encode_corpus``) of an enwiki sample as one process with ``--threads`` threads against
  ``--threads`` worker processes of one thread each, with and without the workers' start-up.
- one query per call (the service's case): p50/p99 ms of lsr and of sentence-transformers' ``encode_query`` on
  300 enwiki title queries and 300 SciFact claims, with 1 and ``--threads`` threads; lsr also through its
  batched route (what a batch of one took before the single-text route). The rows take turns on every query
  (a drifting machine slows all alike); ``--queries-only`` reruns just these rows into the machine's file.
``--isa avx2`` measures an ordinary CPU on any machine: the script reruns itself with oneDNN, ATen and MKL
capped at AVX2 (``ONEDNN_MAX_CPU_ISA``, ``ATEN_CPU_CAPABILITY``, ``MKL_ENABLE_INSTRUCTIONS``), which also
switches lsr's bfloat16 screen off. Rows whose bfloat16 products would be emulated (no fast bfloat16, native
or capped) are not run. Results go to ``results/encode-bf16.json`` (a run with fast bfloat16) or
``results/encode-avx2-<vendor>.json`` (one per CPU vendor: AVX2-only runs differ most between them); the
README shows every file.
Each timing is the best of ``--repeats`` interleaved runs (other jobs may share the machine: the load average
and this process's share of its threads' CPU time are recorded with every row). Exactness is measured against
sentence-transformers on every dimension but the special tokens', which lsr zeroes on purpose.
Writes benchmarks/results/encode-*.json and the "Encoding" section of benchmarks/README.md. Not run in CI.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results"
README = HERE / "README.md"
ENWIKI = REPO.parent / "shared" / "data" / "corpora" / "enwiki-2015" / "corpus.jsonl.gz"
SCIFACT = REPO / "lsr" / "datasets" / "scifact" / "corpus.jsonl.gz"
QUERIES = {"enwiki titles": ENWIKI.with_name("queries.jsonl.gz"),
           "scifact claims": SCIFACT.with_name("queries.jsonl.gz")}
AVX2_CAP = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
            "LSR_SCREEN_ISA": "avx2"}


def sample(path: Path, n: int, seed: int) -> list[dict]:
    """A seeded uniform sample of n documents in file order (two streaming passes: no prefix, little memory)."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        total = sum(1 for _ in fh)
    keep = set(random.Random(seed).sample(range(total), min(n, total)))
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for i, line in enumerate(fh) if i in keep]


def full_text(doc: dict) -> str:
    return f"{doc.get('title') or ''} {doc['text']}".strip()


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown")
    import torch

    from lsr.encoders.pooling import fast_bfloat16

    flags = {name: bool(getattr(torch.cpu, f"_is_{name}_supported", lambda: False)())
             for name in ("amx_tile", "avx512_bf16", "avx512", "avx2")}
    cap = {k: os.environ[k] for k in AVX2_CAP if k in os.environ}
    return {"cpu": cpu, "cores": os.cpu_count(), **flags, "torch": torch.__version__, "isa_cap": cap,
            "fast_bfloat16": fast_bfloat16(torch.device("cpu"))}


class Timer:
    """Wall time, and the CPU time this process got per thread-second (1.0 = its threads never waited)."""

    def __init__(self, threads: int):
        self.threads = threads

    def __enter__(self):
        self.load = os.getloadavg()[0]
        self.cpu = _cpu_seconds()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        self.cpu_share = (_cpu_seconds() - self.cpu) / (self.seconds * self.threads)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def dense(batch) -> np.ndarray:  # noqa: ANN001 - SparseBatch
    return batch.to_scipy().toarray()


def compare(got: np.ndarray, expected: np.ndarray) -> dict:
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
    cosine = (got * expected).sum(1)[norms > 0] / norms[norms > 0]
    return {"max_abs_diff": float(np.abs(got - expected).max()),
            "support_differences": int(((got > 0) != (expected > 0)).sum()),
            "min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean())}


def encoders(folder: str, threads: int) -> dict:
    """name -> encode(texts) -> dense (n, vocab) array."""
    import torch
    from sentence_transformers import SparseEncoder

    from lsr.encoders.pooling import VocabProjection
    from lsr.encoders.splade import SpladeEncoder

    torch.set_num_threads(threads)
    st = SparseEncoder(folder, device="cpu")
    st.max_seq_length = 256

    def lsr_encoder(route: str):  # noqa: ANN202
        encoder = SpladeEncoder(folder, max_length=256, threads=threads,
                                dtype=route if route in ("bfloat16", "int8") else "float32")
        decoder = encoder.model.get_output_embeddings()
        if route == "full logits":
            encoder._projection = None
        elif route == "fused float32":
            encoder._projection = VocabProjection(decoder.weight, decoder.bias, screen=False)
        elif route == "fused float32 + bf16 screen":
            encoder._projection = VocabProjection(decoder.weight, decoder.bias, screen=True)
        elif route == "fused float32 + int8 screen":
            encoder._projection = VocabProjection(decoder.weight, decoder.bias, screen="int8")
        return lambda texts: dense(encoder.encode_documents(texts))

    from lsr.encoders.pooling import fast_bfloat16

    routes = ["full logits", "fused float32", "fused float32 + int8 screen", "int8"]
    if fast_bfloat16(torch.device("cpu")):  # elsewhere bfloat16 products are emulated, ~25x slower than float32
        routes += ["fused float32 + bf16 screen", "bfloat16"]
    rows = {"sentence-transformers": None}
    for route in routes:
        rows[f"lsr {route}"] = lsr_encoder(route)
    return rows, st


TURN = 20  # queries each row answers in a row before the next row's turn (query_latency)


def query_latency(folder: str, st, threads: int, n: int = 300) -> dict:  # noqa: ANN001
    """p50/p99 ms of one query per call, per query set and thread count."""
    import torch

    from lsr.encoders.splade import SpladeEncoder

    encoder = SpladeEncoder(folder, max_length=256)

    def batched_route(text: str):  # noqa: ANN202 - the batched code on a batch of one (lsr before the single route)
        batch = encoder.tokenizer([text], truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            return encoder._pool(dict(batch))

    calls = {"lsr": lambda q: encoder.encode_queries([q]), "lsr batched route": batched_route,
             "sentence-transformers": lambda q: st.encode_query([q], convert_to_tensor=True)}
    out = {}
    for name, path in QUERIES.items():
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            queries = [json.loads(line)["text"] for _, line in zip(range(n), fh, strict=False)]
        tokens = float(np.mean([len(encoder.tokenizer(q)["input_ids"]) for q in queries]))
        out[name] = {"n_queries": len(queries), "mean_tokens": tokens, "rows": {}}
        for count in sorted({1, threads}):
            torch.set_num_threads(count)
            for call in calls.values():
                for q in queries[:20]:
                    call(q)  # warm-up
            # the rows take turns on blocks of TURN queries (the order rotating), so that a machine whose speed
            # drifts during the run slows every row alike, while each row answers a block back to back, as a
            # service answers a stream of queries (turns of one query each leave every row's weights evicted by
            # the others': on the Intel Xeon of 2026-12-07 lsr's single-text p50 on titles read 1.46 ms that
            # way, 0.95 ms in turns of 20)
            times = {row: [] for row in calls}
            for i, start in enumerate(range(0, len(queries), TURN)):
                rows = list(calls.items())
                for row, call in rows[i % len(rows):] + rows[: i % len(rows)]:
                    for q in queries[start:start + TURN]:
                        started = time.perf_counter()
                        call(q)
                        times[row].append(time.perf_counter() - started)
            for row, row_times in times.items():
                ms = np.array(row_times) * 1e3
                out[name]["rows"][f"{row}|{count}"] = {"p50_ms": float(np.percentile(ms, 50)),
                                                       "p99_ms": float(np.percentile(ms, 99))}
                print(f"  {name} {row} {count} threads: p50 {np.percentile(ms, 50):.3f} ms", flush=True)
    torch.set_num_threads(threads)
    return out


def st_encode(st, batch_size: int):  # noqa: ANN001, ANN201
    return lambda texts: st.encode_document(texts, batch_size=batch_size, convert_to_tensor=True).to_dense().numpy()


def run_corpus(name: str, texts: list[str], rows: dict, st, special: list[int], args) -> dict:  # noqa: ANN001
    # sentence-transformers' batch size, tuned fairly on the first 200 texts
    tuning = {}
    for batch_size in (16, 32, 64):
        with Timer(args.threads) as t:
            st_encode(st, batch_size)(texts[:200])
        tuning[batch_size] = t.seconds
    st_batch = min(tuning, key=tuning.get)
    rows = {**rows, "sentence-transformers": st_encode(st, st_batch)}
    for encode in rows.values():  # warm-up (oneDNN kernels, allocator)
        encode(texts[:16])
    best: dict[str, Timer] = {}
    outputs: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for row, encode in rows.items():
            with Timer(args.threads) as t:
                outputs[row] = encode(texts)
            if row not in best or t.seconds < best[row].seconds:
                best[row] = t
            print(f"  {name} {row}: {len(texts) / t.seconds:.1f} docs/s (load {t.load:.2f}, cpu share "
                  f"{t.cpu_share:.2f})", flush=True)
    reference = outputs["sentence-transformers"]
    reference[:, special] = 0  # lsr zeroes the special tokens' dimensions on purpose
    st_rate = len(texts) / best["sentence-transformers"].seconds
    result = {"n_texts": len(texts), "st_batch_size": st_batch, "rows": {}}
    for row, timer in best.items():
        rate = len(texts) / timer.seconds
        entry = {"docs_per_s": rate, "ratio_to_st": rate / st_rate, "load_1min": timer.load,
                 "cpu_share": timer.cpu_share}
        if row != "sentence-transformers":
            entry["vs_st"] = compare(outputs[row], reference)
            entry["vs_full_logits"] = compare(outputs[row], outputs["lsr full logits"])
        result["rows"][row] = entry
    return result


def run_workers(docs: list[dict], folder: str, args) -> dict:  # noqa: ANN001
    """encode_corpus: one process with all threads against one single-threaded process per thread."""
    import orjson

    from lsr.encoders.splade import SpladeEncoder
    from lsr.io.shards import list_shards, read_shard
    from lsr.jobs.encode import encode_corpus

    encoder = SpladeEncoder(folder, max_length=256, threads=args.threads)
    shard_size = max(1, len(docs) // 20)
    out = {"n_docs": len(docs), "shard_size": shard_size, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        corpus.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
        tiny = Path(tmp) / "tiny.jsonl"
        tiny.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs[:2]))
        for repeat in range(args.repeats):
            for workers in (1, args.threads):
                started = time.perf_counter()
                load = os.getloadavg()[0]
                encode_corpus(corpus, Path(tmp) / f"out-{workers}-{repeat}", encoder, shard_size,
                              show_progress=False, workers=workers)
                seconds = time.perf_counter() - started
                key = f"{workers} x {args.threads // workers} threads"
                print(f"  encode_corpus {key}: {len(docs) / seconds:.1f} docs/s (load {load:.2f})", flush=True)
                if key not in out["runs"] or seconds < out["runs"][key]["seconds"]:
                    out["runs"][key] = {"seconds": seconds, "docs_per_s": len(docs) / seconds, "load_1min": load}
        started = time.perf_counter()  # start-up alone: the same pool on a 2-document corpus
        encode_corpus(tiny, Path(tmp) / "startup", encoder, 1, show_progress=False, workers=args.threads)
        out["worker_startup_seconds"] = startup = time.perf_counter() - started
        for key, run in out["runs"].items():  # what a corpus long enough to hide the start-up would see
            paid = startup if not key.startswith("1 x") else 0.0
            run["docs_per_s_after_startup"] = len(docs) / max(run["seconds"] - paid, 1e-9)
        one, many = (sorted((Path(tmp) / f"out-{w}-0").glob("shard-*.npz")) for w in (1, args.threads))
        assert [p.name for p in one] == [p.name for p in many] == [p.name for p in list_shards(Path(tmp) / "out-1-0")]
        diff = 0.0
        for a, b in zip(one, many, strict=True):
            (ids_a, va), (ids_b, vb) = read_shard(a), read_shard(b)
            assert ids_a == ids_b and np.array_equal(va.indices, vb.indices)
            diff = max(diff, float(np.abs(va.values - vb.values).max(initial=0)))
        out["max_abs_diff_workers_vs_one"] = diff
    return out


def table(report: dict) -> str:
    m = report["machine"]
    features = ", ".join(f"{label}: {m[key]}" for key, label in (("avx2", "AVX2"), ("avx512", "AVX-512"),
                                                                 ("avx512_bf16", "AVX-512 BF16"), ("amx_tile", "AMX"))
                         if key in m)
    cap = m.get("isa_cap") or {}
    code = ("code paths capped at AVX2 (" + ", ".join(f"{k}={v}" for k, v in cap.items()) + ")") if cap \
        else "native code paths"
    lines = [f"Machine: {m['cpu']} (`lscpu`), {m['cores']} cores ({features}); {code}; fast bfloat16: "
             f"{m.get('fast_bfloat16', m['amx_tile'] or m['avx512_bf16'])}. torch {m['torch']}, {report['threads']} "
             f"torch threads, SPLADE-tiny, at most 256 tokens; best of {report['repeats']} runs. "
             f"Date {report['date']}.", ""]
    latency = report.get("queries")
    if latency:
        counts = sorted({int(key.split("|")[1]) for q in latency.values() for key in q["rows"]})
        when = f" (measured {report['queries_date']}, after the document rows)" if "queries_date" in report else ""
        turn = report.get("queries_turn", 1)  # runs before TURN existed took turns every query
        when += f"; the rows take turns every {f'{turn} queries' if turn > 1 else 'query'}"
        lines += [f"### One query per call (batch of one), p50 / p99 ms{when}", "",
                  "| query set | encoder | " + " | ".join(f"{c} thread{'s' * (c > 1)}" for c in counts) + " |",
                  "|---|---|" + "---|" * len(counts)]
        for name, q in latency.items():
            for row in dict.fromkeys(key.split("|")[0] for key in q["rows"]):
                cells = [q["rows"][f"{row}|{c}"] for c in counts]
                lines.append(f"| {name} ({q['n_queries']}, {q['mean_tokens']:.1f} tokens) | {row} | "
                             + " | ".join(f"{c['p50_ms']:.3f} / {c['p99_ms']:.3f}" for c in cells) + " |")
        lines.append("")
    for name, result in report["corpora"].items():
        lines += [f"### Encoding {result['n_texts']:,} {name} documents (seeded sample), {report['threads']} threads",
                  "", "| encoder | docs/s | × sentence-transformers | max abs diff vs ST | support diffs vs ST "
                  "| min cosine vs ST | load (1 min) | CPU share |", "|---|---|---|---|---|---|---|---|"]
        for row, r in result["rows"].items():
            vs = r.get("vs_st")
            label = row + (f" (batch {result['st_batch_size']})" if row == "sentence-transformers" else "")
            cells = ["–", "–", "–"] if vs is None else [f"{vs['max_abs_diff']:.1e}", str(vs["support_differences"]),
                                                        f"{vs['min_cosine']:.6f}"]
            lines.append(f"| {label} | {r['docs_per_s']:.1f} | {r['ratio_to_st']:.2f} | " + " | ".join(cells)
                         + f" | {r['load_1min']:.2f} | {r['cpu_share']:.2f} |")
        lines.append("")
    w = report.get("workers")
    if w:
        lines += [f"### `lsr encode` of {w['n_docs']:,} enwiki documents (seeded sample, shards of {w['shard_size']})",
                  "", "| processes × threads | docs/s (start-up included) | docs/s (start-up excluded) "
                  "| load (1 min) |", "|---|---|---|---|"]
        lines += [f"| {k} | {r['docs_per_s']:.1f} | {r['docs_per_s_after_startup']:.1f} | {r['load_1min']:.2f} |"
                  for k, r in w["runs"].items()]
        lines += ["", f"Worker start-up (spawn, import, load the model): {w['worker_startup_seconds']:.1f} s; "
                  f"max abs diff of the shards against one process: {w['max_abs_diff_workers_vs_one']:.1e}.", ""]
    return "\n".join(lines)


def write_readme() -> None:
    from tables import replace_section

    """Every results/encode-*.json (a run with fast bfloat16, AVX2-only ones), fast bfloat16 first."""
    reports = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("encode-*.json"), reverse=True)]
    replace_section(README, "encode", "\n".join(table(r) for r in reports),
                    "## Encoding\n\n`python benchmarks/encode.py`: see its docstring for what is measured. CPU "
                    "share is this process's CPU time over wall time × threads: below ~0.9 other jobs took cores "
                    "during the run (the load average includes this benchmark's own threads).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="documents per corpus sample [1000]")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers-docs", type=int, default=4000, help="enwiki documents for the workers rows [4000]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpora", default="enwiki,scifact")
    parser.add_argument("--isa", choices=["native", "avx2"], default="native",
                        help="avx2: rerun with oneDNN, ATen and MKL capped at AVX2 (an ordinary CPU) [native]")
    parser.add_argument("--query-latency", type=int, default=300, help="queries per set for the latency rows, 0: none")
    parser.add_argument("--queries-only", action="store_true",
                        help="rerun only the one-query-per-call rows, into this machine's existing results file")
    args = parser.parse_args()
    if args.isa == "avx2" and any(os.environ.get(k) != v for k, v in AVX2_CAP.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **AVX2_CAP})  # before torch starts

    from lsr.models import resolve_model

    folder = str(resolve_model("splade-tiny"))
    report = {"machine": machine(), "threads": args.threads, "repeats": args.repeats,
              "date": time.strftime("%Y-%m-%d"), "seed": args.seed, "corpora": {}}
    kind = "bf16" if report["machine"]["fast_bfloat16"] else "avx2"
    vendor = "amd" if "AMD" in report["machine"]["cpu"] else "intel" if "Intel" in report["machine"]["cpu"] else "cpu"
    target = RESULTS / f"encode-{kind}-{vendor}.json"
    if args.queries_only:  # the document rows stay those of the file's own run; the rows say their date
        from sentence_transformers import SparseEncoder

        report = json.loads(target.read_text())
        report["queries"] = query_latency(folder, SparseEncoder(folder, device="cpu"), args.threads,
                                          args.query_latency or 300)
        report["queries_date"] = time.strftime("%Y-%m-%d")
        report["queries_turn"] = TURN
        target.write_text(json.dumps(report, indent=2) + "\n")
        write_readme()
        return
    rows, st = encoders(folder, args.threads)
    special = sorted(set(st.tokenizer.all_special_ids))
    sources = {"enwiki": ENWIKI, "scifact": SCIFACT}
    for name in args.corpora.split(","):
        texts = [full_text(d) for d in sample(sources[name], args.n, args.seed)]
        print(f"{name}: {len(texts)} texts", flush=True)
        report["corpora"][name] = run_corpus(name, texts, rows, st, special, args)
    if args.workers_docs and args.threads > 1:
        docs = [{"_id": d["_id"], "title": d.get("title", ""), "text": d["text"]}
                for d in sample(ENWIKI, args.workers_docs, args.seed + 1)]
        report["workers"] = run_workers(docs, folder, args)
    if args.query_latency:
        report["queries"] = query_latency(folder, st, args.threads, args.query_latency)
        report["queries_turn"] = TURN
    RESULTS.mkdir(exist_ok=True)
    target.write_text(json.dumps(report, indent=2) + "\n")
    write_readme()
    print(table(report))


if __name__ == "__main__":
    main()
