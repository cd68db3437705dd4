"""A synthetic SPLADE-like collection of any size, made from a real encoded one, in the exchange format of
benchmarks/vectors.py (docs.npz, doc_ids.txt, queries.npz, query_ids.txt, vocab.json).

    python benchmarks/synthetic.py --docs 1m                     # -> $LSR_BENCH_DIR/synth-1m
    python benchmarks/synthetic.py --docs 20k --source enwiki-100k --resample 0.5 --order source --seed 0

Source: an exchange folder of real vectors, by default $LSR_BENCH_DIR/enwiki-493k (SPLADE-tiny on all 493,983
enwiki-2015 passages; scale.py exports it from its encode), or e.g. enwiki-100k (the seeded 100k sample).
Output: $LSR_BENCH_DIR/synth-<size> (never in the repository), or --out.

How a document is made. Synthetic document i takes a real "template" document j:
  - its length is the template's length (so lengths follow the real length distribution exactly);
  - each of the template's (term, weight) pairs is kept with probability 1 - resample (default 0.5), with its
    real weight;
  - the rest of the slots are filled with terms drawn from the corpus document-frequency distribution
    (P(t) proportional to df(t), times a calibration factor, below), each with a weight drawn from that term's
    own real weights (a uniformly drawn real posting of the term); a term already in the document is
    redrawn, so a document never holds a term twice.
  - templates: --order source (default) walks the source in its own order, pass after pass (document i uses
    template i mod N), so that neighbouring document ids come from neighbouring real documents, as in the
    real collection (enwiki passages are in page order: a page's passages are adjacent, which block-max
    pruning profits from); --order random draws templates uniformly (no document-id locality at all).
  - calibration: a term that is in most documents is often drawn when already kept, and redraws then
    favour rarer terms, so without a correction the most frequent terms end up below their real document
    frequency (enwiki-100k: the most frequent term, in 70% of the passages, reached 0.78 of its df). The drawing
    probability of each term is corrected analytically (calibrate()), then --calibrate (1) empirical rounds on
    a pilot of 20,000 documents adjust the terms expected >= 500 times in it: the 15 most frequent terms then
    land within about 2% of their real document frequency.

What is preserved (checked after generation; the numbers are in meta.json "check"):
  - the document-length distribution (exactly, through the templates) and so the postings per document;
  - each term's document frequency as a fraction of the collection (in expectation; after calibration within a
    few per cent for frequent terms; rare terms are noisy by nature), so posting-list lengths grow linearly
    with the collection, and the postings a query touches grow linearly too;
  - each term's weight distribution (kept postings carry their real weight, drawn ones a real weight of the
    same term);
  - the co-occurrence of the kept part: any two terms of a template are both kept with probability
    (1 - resample)^2 (0.25 by default), with their joint weights; a query that matched a real document well
    still finds its kept part, so top-k score distributions keep a realistic head;
  - document-id locality of the source (with --order source).
What is not preserved:
  - co-occurrence of the drawn part: drawn terms are independent of each other and of the kept ones (topic
    coherence is diluted, so real collections of this size may prune better or worse than this one);
  - a larger collection is not a larger sample of Wikipedia: with N source documents, each template serves
    about docs / N synthetic documents, which share about (1 - resample)^2 of their terms (near-duplicate
    "families"); the best-scoring documents of a query are then often siblings of the same template;
  - the maximum weight of a term over a bigger collection grows only as more of its real weights are drawn
    (no new extremes beyond the source's);
  - the queries are the source's real queries (the 1,000 enwiki title queries): they match this collection's
    term statistics, not any relevance judgements (there are none).

Everything is seeded (each chunk of --chunk documents has its own generator seeded by (seed, chunk number)),
so a generation interrupted mid-way resumes from its last finished chunk (the work folder is
<out>.partial) and gives the same bytes as an uninterrupted one. Memory stays bounded by the chunk size plus
the source (~12 bytes per source posting): the output arrays are memory-mapped .npy files, zipped into
docs.npz at the end, and the folder is renamed into place only when complete, so an existing output folder
is always whole; it is reused as it is when its parameters match (meta.json) and refused otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from prepare_enwiki import bench_dir  # noqa: E402

sys.path.insert(0, str(HERE / "peers"))
from _common import npz_member  # noqa: E402

log = logging.getLogger("synthetic")

VERSION = 2  # bump when the generation changes (the parameters in meta.json then no longer match)
PILOT_DOCS = 20_000
MAX_ROUNDS = 30


# ---------------------------------------------------------------------------------------------- helpers


def parse_count(text: str | int) -> int:
    """'20k' -> 20000, '1m' -> 1000000, '493983' -> 493983."""
    if isinstance(text, int):
        return text
    t = text.strip().lower().replace("_", "").replace(",", "")
    mult = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    return int(float(t[:-1] if mult > 1 else t) * mult)


def size_label(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


def write_npz(path: Path, members: dict[str, Path]) -> None:
    """Zip .npy files into an uncompressed .npz (what np.savez writes), streamed: never in memory at once."""
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, npy in members.items():
            with open(npy, "rb") as src, zf.open(key + ".npy", "w", force_zip64=True) as dst:
                shutil.copyfileobj(src, dst, 64 << 20)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1), encoding="utf-8")
    tmp.replace(path)


# ----------------------------------------------------------------------------------------------- source


class Source:
    """The real collection: CSR (memory-mapped), document frequencies and per-term weights (CSC order)."""

    def __init__(self, folder: Path):
        self.folder = folder
        docs = folder / "docs.npz"
        if not docs.exists():
            raise SystemExit(f"source exchange folder {folder} has no docs.npz (run benchmarks/scale.py "
                             "--prepare-only for it, or benchmarks/run.py)")
        self.indptr = np.asarray(npz_member(docs, "indptr"), dtype=np.int64)
        self.indices = npz_member(docs, "indices")
        self.values = npz_member(docs, "values")
        with np.load(docs, allow_pickle=False) as data:
            self.dim = int(data["dim"])
        self.n = len(self.indptr) - 1
        self.nnz = int(self.indptr[-1])
        self.lengths = np.diff(self.indptr)
        self.df = np.bincount(np.asarray(self.indices), minlength=self.dim).astype(np.int64)
        self.colptr = np.concatenate([[0], np.cumsum(self.df)]).astype(np.int64)
        order = np.argsort(np.asarray(self.indices), kind="stable")
        self.csc_values = np.asarray(self.values)[order]  # each term's real weights, term after term
        del order

    def identity(self) -> dict:
        st = (self.folder / "docs.npz").stat()
        return {"folder": str(self.folder), "docs_bytes": st.st_size, "docs_mtime_ns": st.st_mtime_ns,
                "n_docs": self.n, "nnz": self.nnz}


# ------------------------------------------------------------------------------------------- generation


def templates_for(n: int, n_src: int, order: str, seed: int) -> np.ndarray:
    if order == "source":
        return np.arange(n, dtype=np.int64) % n_src
    if order == "random":
        return np.random.default_rng([seed, 7919]).integers(0, n_src, size=n, dtype=np.int64)
    raise ValueError(f"unknown order {order!r}")


def make_chunk(src: Source, tpl: np.ndarray, resample: float, cum_weight: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """The documents built on templates ``tpl``: (indices int32, values float32) in CSR order (each row's
    terms ascending), row lengths = the templates' lengths."""
    dim = src.dim
    B = len(tpl)
    L = src.lengths[tpl]
    T = int(L.sum())
    out_start = np.cumsum(L) - L
    pos = np.repeat(src.indptr[tpl] - out_start, L) + np.arange(T, dtype=np.int64)
    doc = np.repeat(np.arange(B, dtype=np.int64), L)
    keep = rng.random(T) >= resample
    doc = doc[keep]
    term = np.asarray(src.indices[pos[keep]]).astype(np.int64)
    weight = np.asarray(src.values[pos[keep]])
    prio = np.zeros(len(doc), dtype=np.int64)  # 0: kept from the template (never displaced)
    kept = len(doc)
    deficit = L - np.bincount(doc, minlength=B)
    drawn = rounds = 0
    total_w = float(cum_weight[-1])
    while deficit.any() and rounds < MAX_ROUNDS:
        rounds += 1
        m = np.where(deficit > 0, np.ceil(deficit * 1.25).astype(np.int64) + 2, 0)
        M = int(m.sum())
        drawn += M
        cdoc = np.repeat(np.arange(B, dtype=np.int64), m)
        cterm = np.minimum(np.searchsorted(cum_weight, rng.random(M) * total_w, side="right"), dim - 1)
        pick = src.colptr[cterm] + (rng.random(M) * src.df[cterm]).astype(np.int64)
        cweight = src.csc_values[pick]
        cprio = rng.integers(1, 1 << 20, size=M)
        doc = np.concatenate([doc, cdoc])
        term = np.concatenate([term, cterm])
        weight = np.concatenate([weight, cweight])
        prio = np.concatenate([prio, cprio])
        # one posting per (doc, term): the lowest priority wins (a kept posting over any drawn one)
        key = (doc * dim + term) << 21 | prio
        o = np.argsort(key)
        ks = key[o] >> 21
        first = np.ones(len(o), dtype=bool)
        first[1:] = ks[1:] != ks[:-1]
        o = o[first]
        # at most L postings per document: kept ones first, then drawn ones in random order
        key2 = doc[o] << 21 | prio[o]
        o = o[np.argsort(key2)]
        ds = doc[o]
        rank = np.arange(len(o)) - np.searchsorted(ds, ds, side="left")
        o = o[rank < L[ds]]
        doc, term, weight, prio = doc[o], term[o], weight[o], prio[o]
        deficit = L - np.bincount(doc, minlength=B)
    o = np.argsort(doc * dim + term)
    stats = {"kept": kept, "drawn": drawn, "rounds": rounds, "short_docs": int((deficit > 0).sum()),
             "missing_postings": int(deficit.sum())}
    return term[o].astype(np.int32), weight[o].astype(np.float32), stats


def calibrate(src: Source, resample: float, rounds: int, seed: int) -> np.ndarray:
    """Per-term factors on the df-proportional drawing probability, so that frequent terms reach their real
    document frequency despite redraws (see the module docstring).

    Analytic start: a term in a fraction f of the documents is kept in (1 - r) f of them (r = resample); the
    rest must draw it, i.e. a document without it must draw it with probability r f / (1 - (1 - r) f), which
    with D = r x mean length draws per document needs a per-draw probability -ln(1 - that) / D (instead of
    f / mean length). Then ``rounds`` empirical corrections on a pilot of up to 20,000 documents, for the terms
    expected at least 500 times in it (so that the correction is not fitting sampling noise)."""
    adj = np.ones(src.dim)
    if resample <= 0:
        return adj
    f = src.df / src.n
    mean_len = src.nnz / src.n
    need = np.clip(resample * f / (1 - (1 - resample) * f), 0, 0.999)
    base = src.df / src.nnz
    used = src.df > 0
    adj[used] = -np.log1p(-need[used]) / (resample * mean_len) / base[used]
    n = min(PILOT_DOCS, src.n)
    tpl = np.sort(np.random.default_rng([seed, 104729]).choice(src.n, size=n, replace=False))
    expected = src.df * (n / src.n)
    frequent = expected >= 500
    for r in range(rounds):
        cum = np.cumsum(src.df * adj)
        idx, _, _ = make_chunk(src, tpl, resample, cum, np.random.default_rng([seed, 104729, r]))
        got = np.bincount(idx, minlength=src.dim)
        ratio = got[frequent] / expected[frequent]
        log.info("calibration round %d: %d frequent terms' df ratio before: min %.3f, median %.3f, max %.3f",
                 r + 1, frequent.sum(), ratio.min(), np.median(ratio), ratio.max())
        adj[frequent] *= np.clip(1 / np.maximum(ratio, 1e-3), 0.5, 2.0)
    return adj


def params_of(n: int, source: Source, resample: float, order: str, seed: int, chunk: int, calib: int) -> dict:
    return {"version": VERSION, "n_docs": n, "source": source.identity(), "resample": resample, "order": order,
            "seed": seed, "chunk_docs": chunk, "calibrate_rounds": calib}


def same_params(a: dict, b: dict) -> bool:
    strip = lambda p: {**p, "source": {k: v for k, v in p["source"].items() if k != "folder"}}  # noqa: E731
    return strip(a) == strip(b)


def generate(n_docs: int, source: Path | str | None = None, out: Path | None = None, resample: float = 0.5,
             order: str = "source", seed: int = 0, chunk: int = 20_000, calib: int = 1) -> Path:
    """Make (or reuse) the synthetic exchange folder; returns its path."""
    source = Path(source) if source is not None else bench_dir() / "enwiki-493k"
    if not source.is_absolute() and not source.exists():
        source = bench_dir() / source
    out = Path(out) if out is not None else bench_dir() / f"synth-{size_label(n_docs)}"
    src = Source(source)
    params = params_of(n_docs, src, resample, order, seed, chunk, calib)
    if (out / "meta.json").exists():
        meta = json.loads((out / "meta.json").read_text())
        if same_params(meta["params"], params):
            log.info("%s exists with the same parameters: reused", out)
            return out
        raise SystemExit(f"{out} exists with other parameters ({meta['params']}); remove it or pass --out")
    tpl = templates_for(n_docs, src.n, order, seed)
    lengths = src.lengths[tpl]
    nnz = int(lengths.sum())
    work = out.with_name(out.name + ".partial")
    need = 2 * nnz * 8 + (64 << 20)
    progress_file = work / "progress.json"
    progress = json.loads(progress_file.read_text()) if progress_file.exists() else None
    if progress is None or not same_params(progress["params"], params):
        shutil.rmtree(work, ignore_errors=True)
        free = shutil.disk_usage(out.parent if out.parent.exists() else bench_dir()).free
        if free < need:
            raise SystemExit(f"not enough disk for {n_docs:,} documents ({nnz:,} postings): need "
                             f"{need / 2**30:.1f} GiB under {out.parent}, {free / 2**30:.1f} GiB free")
        work.mkdir(parents=True)
        adj = calibrate(src, resample, calib, seed)
        np.save(work / "adj.npy", adj)
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        np.save(work / "indptr.npy", indptr)
        np.lib.format.open_memmap(work / "indices.npy", mode="w+", dtype=np.int32, shape=(nnz,)).flush()
        np.lib.format.open_memmap(work / "values.npy", mode="w+", dtype=np.float32, shape=(nnz,)).flush()
        progress = {"params": params, "chunks_done": 0, "stats": {}}
        write_json_atomic(progress_file, progress)
    adj = np.load(work / "adj.npy")
    indptr = np.load(work / "indptr.npy")
    cum = np.cumsum(src.df * adj)
    indices = np.lib.format.open_memmap(work / "indices.npy", mode="r+")
    values = np.lib.format.open_memmap(work / "values.npy", mode="r+")
    n_chunks = (n_docs + chunk - 1) // chunk
    totals = progress["stats"]
    started = time.perf_counter()
    for c in range(progress["chunks_done"], n_chunks):
        a, b = c * chunk, min(n_docs, (c + 1) * chunk)
        idx, val, st = make_chunk(src, tpl[a:b], resample, cum, np.random.default_rng([seed, c]))
        if len(idx) != indptr[b] - indptr[a]:  # only if a document could not be filled (never seen)
            raise SystemExit(f"chunk {c}: {st['missing_postings']} postings could not be drawn")
        indices[indptr[a]:indptr[b]] = idx
        values[indptr[a]:indptr[b]] = val
        indices.flush()
        values.flush()
        for key, v in st.items():
            totals[key] = totals.get(key, 0) + v if key != "rounds" else max(totals.get(key, 0), v)
        progress["chunks_done"] = c + 1
        write_json_atomic(progress_file, progress)
        if (c + 1) % 10 == 0 or c + 1 == n_chunks:
            log.info("%s: %d/%d chunks (%.0f s)", out.name, c + 1, n_chunks, time.perf_counter() - started)
    del indices, values
    finish(work, out, src, tpl, params, totals, adj)
    return out


def finish(work: Path, out: Path, src: Source, tpl: np.ndarray, params: dict, totals: dict,
           adj: np.ndarray) -> None:
    np.save(work / "dim.npy", np.int64(src.dim))
    write_npz(work / "docs.npz", {k: work / f"{k}.npy" for k in ("indptr", "indices", "values", "dim")})
    for k in ("indptr", "indices", "values", "dim"):
        (work / f"{k}.npy").unlink()
    src_ids = (src.folder / "doc_ids.txt").read_text(encoding="utf-8").splitlines()
    with open(work / "doc_ids.txt", "w", encoding="utf-8") as fh:
        for a in range(0, len(tpl), 100_000):
            part = tpl[a:a + 100_000]
            fh.write("".join(f"syn{a + i:08d}:{src_ids[j]}\n" for i, j in enumerate(part.tolist())))
    for name in ("queries.npz", "query_ids.txt", "vocab.json"):
        if (src.folder / name).exists():
            shutil.copyfile(src.folder / name, work / name)
    meta = {"params": params, "generation": totals, "calibrated_terms": int((adj != 1).sum()),
            "check": check(work, src), "written": time.strftime("%Y-%m-%d %H:%M"),
            "doc_ids": "syn<8-digit row>:<template's source id>"}
    write_json_atomic(work / "meta.json", meta)
    (work / "progress.json").unlink()
    (work / "adj.npy").unlink()
    if out.exists():
        shutil.rmtree(out)
    work.rename(out)
    log.info("wrote %s: %s", out, json.dumps(meta["check"]["summary"]))


# ------------------------------------------------------------------------------------------------ check


def check(folder: Path, src: Source, block: int = 20_000_000) -> dict:
    """How closely the synthetic collection follows the source's statistics (scaled to its size)."""
    docs = folder / "docs.npz"
    indptr = np.asarray(npz_member(docs, "indptr"))
    indices = npz_member(docs, "indices")
    values = npz_member(docs, "values")
    n, nnz = len(indptr) - 1, int(indptr[-1])
    df = np.zeros(src.dim, dtype=np.int64)
    for a in range(0, nnz, block):
        df += np.bincount(np.asarray(indices[a:a + block]), minlength=src.dim)
    scale = n / src.n
    expected = src.df * scale
    frequent = expected >= 100
    ratio = df[frequent] / expected[frequent]
    top = np.argsort(-src.df)[:100]
    rng = np.random.default_rng(0)
    sample = lambda arr, size: np.asarray(arr[np.sort(rng.integers(0, len(arr), size=min(size, len(arr))))])  # noqa: E731
    qs = [1, 10, 50, 90, 99, 99.9]
    w_syn, w_src = np.percentile(sample(values, 2_000_000), qs), np.percentile(sample(src.values, 2_000_000), qs)
    len_qs = [1, 10, 50, 90, 99]
    lengths = np.diff(indptr)
    touched = {}
    qfile = folder / "queries.npz"
    if qfile.exists():
        qi = np.asarray(npz_member(qfile, "indptr"))
        qx = np.asarray(npz_member(qfile, "indices"))
        per_q = lambda d: np.add.reduceat(d[qx], qi[:-1])[np.diff(qi) > 0]  # noqa: E731
        touched = {"synthetic": float(per_q(df).mean()), "source_scaled": float(per_q(expected).mean())}
    return {
        "summary": {"docs": n, "postings": nnz, "avg_len": round(nnz / n, 2),
                    "source_avg_len": round(src.nnz / src.n, 2),
                    "df_ratio_p50": round(float(np.median(ratio)), 4),
                    "df_ratio_top100_min": round(float((df[top] / expected[top]).min()), 4),
                    "df_ratio_top100_max": round(float((df[top] / expected[top]).max()), 4),
                    "postings_per_query": round(touched.get("synthetic", float("nan")), 1),
                    "postings_per_query_source_scaled": round(touched.get("source_scaled", float("nan")), 1)},
        "df_ratio_frequent_terms": {"terms": int(frequent.sum()),
                                    "what": "synthetic df / (source df x docs / source docs), "
                                            "terms expected >= 100 times",
                                    **{f"p{q:g}": float(np.percentile(ratio, q)) for q in (1, 10, 50, 90, 99)}},
        "df_ratio_top100": {"min": float((df[top] / expected[top]).min()),
                            "max": float((df[top] / expected[top]).max())},
        "distinct_terms": {"synthetic": int((df > 0).sum()), "source": int((src.df > 0).sum())},
        "weights_percentiles": {"q": qs, "synthetic": w_syn.tolist(), "source": w_src.tolist()},
        "length_percentiles": {"q": len_qs, "synthetic": np.percentile(lengths, len_qs).tolist(),
                               "source": np.percentile(src.lengths, len_qs).tolist()},
        "postings_per_query": touched,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--docs", required=True, help="number of documents: 20k, 1m, 493983, ...")
    p.add_argument("--source", default="enwiki-493k", help="exchange folder (or its name under $LSR_BENCH_DIR)")
    p.add_argument("--out", type=Path, default=None, help="default $LSR_BENCH_DIR/synth-<size>")
    p.add_argument("--resample", type=float, default=0.5, help="share of a template's postings redrawn")
    p.add_argument("--order", choices=["source", "random"], default="source")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=20_000, help="documents per generation chunk")
    p.add_argument("--calibrate", type=int, default=1,
                   help="empirical rounds of the df correction after the analytic one (see calibrate())")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not 0 <= args.resample <= 1:
        p.error("--resample must be in [0, 1]")
    print(generate(parse_count(args.docs), args.source, args.out, args.resample, args.order, args.seed, args.chunk,
                   args.calibrate))


if __name__ == "__main__":
    main()
