"""BMP (bmp 0.2.8): block-max pruning over a block forward index (Mallia, Suel, Tonellotto, SIGIR 2024).

    python run_bmp.py --data DIR --work WORK --k 10 --out result.json [--alpha 1.0 --beta 1.0 | --settings "1,1;0.9,1"]
        [--bsize 32] [--compress-range]

Quantisation (BMP stores u8 impacts; values above 255 would wrap, so we quantise ourselves):
  documents  d = clip(round(w x s), 0, 255); weights rounding to 0 are dropped. --doc-scale picks s:
               max  (default) s = 255 / (largest document weight in the collection): the largest weight
                    maps to 255, the full u8 range is used;
               fit  the largest s <= 255/max such that no query of this run scores any document above
                    65,535 (see "scores"); uses the queries, so it is an oracle choice of scale;
               safe s such that no query at all can pass 65,535: 65,535 / (33 x largest document L1);
                    very coarse (SciFact: ~20 levels);
               or a number.
  queries    passed as float32; BMP's Searcher rescales them itself: q = ceil(w x 32 / max query weight),
             i.e. at most 32 levels (replicated in _common.bmp_query_weights for the recall check).
  scores     sum(q x d) accumulated in u16 and WRAPPING past 65,535 (Rust release build): with s = max, long
             queries (SciFact: 52 terms on average) push the best documents past 65,535 and BMP then ranks
             them by score mod 65,536, i.e. loses them. extra.u16_wrapped_queries counts the queries whose
             exact quantised top score passes 65,535; the quantisation record carries score_mod = 65536 so
             that check_results.py models the wrap in its "quant" recall.
alpha = beta = 1 is exact on this quantisation (wrap included); R@k against float is capped by the 32 query
levels and by the wrap.
Knobs:
  --alpha     a block is scored only while its upper bound x alpha >= the k-th score: < 1 prunes harder.
  --beta      keep only the ceil(beta x |q|) largest-weight query terms: < 1 approximates the scores.
  --settings  several "alpha,beta" pairs separated by ';' on one build: the JSON is then a list.
  --bsize     documents per block (<= 256; BMP stores in-block doc ids as u8).
  --compress-range  compress the block upper bounds (smaller index, a little slower).
BMP 0.2.8 panics (a Rust Option::unwrap in b_search) when no block's upper bound exceeds its initial
threshold, e.g. for a query none of whose terms is indexed: such queries are not sent (empty result,
extra.unsearchable_queries), and any other panic is caught, answered empty and counted
(extra.panicked_queries; the Rust backtrace goes to stderr).
Term tokens are "t<id>" (BMP's Python Indexer takes a str -> u32 dict and numbers terms itself, in u16:
at most 65,536 distinct terms). Documents are indexed under their row number. BMP's Python Searcher has
no multi-threaded batch search (and holds the GIL), so qps_threads is null.
"""

from __future__ import annotations

import sys
from pathlib import Path

import bmp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def parse_settings(text: str) -> list[tuple[float, float]]:
    out = []
    for part in text.replace(" ", "").split(";"):
        if part:
            a, b = part.split(",")
            out.append((float(a), float(b)))
    return out


def top_scores(d: C.Csr, q: C.Csr, scale: float, scorer: C.ExactScorer | None = None) -> np.ndarray:
    """Each query's exact top score on BMP's quantisation at this doc scale (u8 docs, 32-level queries)."""
    scorer = scorer or C.ExactScorer(C.Csr(d.indptr, d.indices, C.quantise_u8(d.values, scale).astype(np.float64),
                                           d.dim))
    out = np.zeros(q.n)
    for i in range(q.n):
        idx, w = q.row(i)
        if len(idx):
            out[i] = scorer.scores(idx, C.bmp_query_weights(w).astype(np.float64)).max()
    return out


def choose_scale(rule: str, d: C.Csr, q: C.Csr) -> tuple[float, np.ndarray | None]:
    full = C.u8_doc_scale(d)
    if rule == "max":
        return full, None
    if rule == "safe":
        l1 = np.add.reduceat(d.values.astype(np.float64), d.indptr[:-1])[np.diff(d.indptr) > 0]
        return min(full, 65535.0 / (33.0 * float(l1.max()))), None
    if rule == "fit":
        # Float top scores with BMP's query levels bound the quantised ones up to rounding: shrink from there.
        fscorer = C.ExactScorer(d)
        top = max(float(fscorer.scores(*_qrow(q, i)).max()) for i in range(q.n) if len(q.row(i)[0]))
        scale = min(full, 65535.0 / top)
        while True:
            tops = top_scores(d, q, scale)
            if tops.max() <= 65535:
                return scale, tops
            scale *= 0.99
    return float(rule), None


def _qrow(q: C.Csr, i: int) -> tuple[np.ndarray, np.ndarray]:
    idx, w = q.row(i)
    return idx, C.bmp_query_weights(w).astype(np.float64)


def main() -> None:
    p = C.make_parser("bmp", __doc__)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--settings", default=None, help='"alpha,beta;alpha,beta;..." (overrides --alpha/--beta)')
    p.add_argument("--bsize", type=int, default=32)
    p.add_argument("--compress-range", action="store_true")
    p.add_argument("--doc-scale", default="max", help="max (255/max weight), fit, safe, or a number")
    args = C.finish_args(p.parse_args())
    if not 1 <= args.bsize <= 256:
        p.error("--bsize must be in 1..256")
    settings = parse_settings(args.settings) if args.settings else [(args.alpha, args.beta)]
    data = C.load_exchange(args.data, args.max_queries)
    d, q = data.docs, data.queries
    used_terms = np.unique(d.indices)
    if len(used_terms) > 65536:
        raise SystemExit(f"BMP keeps term ids in u16: {len(used_terms)} distinct document terms > 65,536")

    # Choosing the scale is a quantisation decision taken before the build (not part of build_s).
    doc_scale, top_quant_scores = choose_scale(args.doc_scale, d, q)
    quant = {"kind": "u8", "doc_scale": doc_scale, "doc_clip": 255, "query": "ceil(w*32/max_q)", "score_mod": 65536,
             "doc_scale_rule": args.doc_scale}
    tokens = [C.term_token(t) for t in range(d.dim)]
    index_path = args.work / f"bmp_b{args.bsize}{'_cr' if args.compress_range else ''}.bmp"

    def build():
        qd = C.quantise_u8(d.values, doc_scale)
        indexer = bmp.Indexer(str(index_path), bsize=args.bsize, compress_range=args.compress_range)
        for i in range(d.n):
            a, b = int(d.indptr[i]), int(d.indptr[i + 1])
            idx, w = d.indices[a:b].tolist(), qd[a:b].tolist()
            indexer.add_document(str(i), {tokens[t]: v for t, v in zip(idx, w) if v > 0})
        indexer.finish()
        return bmp.Searcher(str(index_path))

    with C.engine_output(args):
        searcher, build_s = C.timed_build(build)
    index_bytes = C.dir_bytes(index_path)

    # Queries: dicts of float weights (BMP quantises them). A query none of whose terms is indexed would
    # make BMP panic (no cursor / no block above threshold): it is answered empty without calling BMP.
    qd_all = C.quantise_u8(d.values, doc_scale)
    max_impact = np.zeros(d.dim, dtype=np.int64)
    np.maximum.at(max_impact, d.indices, qd_all)
    prepared = []
    for i in range(q.n):
        idx, w = q.row(i)
        searchable = bool(len(idx)) and bool((max_impact[idx] > 0).any())
        prepared.append({tokens[t]: float(v) for t, v in zip(idx.tolist(), w.tolist())} if searchable else None)
    wrapped = top_quant_scores if top_quant_scores is not None else top_scores(d, q, doc_scale)
    wrapped = int((wrapped > 65535).sum())
    if wrapped:
        print(f"bmp: {wrapped} of {q.n} queries score a document past 65,535 (u16 wrap): try --doc-scale fit",
              file=sys.stderr)

    objs = []
    for alpha, beta in settings:
        panics = set()

        def search(pq, alpha=alpha, beta=beta, panics=panics):
            if pq is None:
                return [], []
            try:
                return searcher.search(pq, k=args.k, alpha=alpha, beta=beta)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException:  # pyo3's PanicException is a BaseException
                # bmp panics (Option::unwrap in b_search) when no block's bound exceeds the initial threshold,
                # e.g. a query none of whose terms is indexed: answered empty and counted.
                panics.add(id(pq))
                return [], []

        raw, lat = C.run_single(search, prepared, args.warmup)
        objs.append(C.result_object(
            args,
            variant=args.variant or f"alpha={alpha:g},beta={beta:g}",
            params={"alpha": alpha, "beta": beta, "bsize": args.bsize, "compress_range": args.compress_range},
            build_s=build_s,
            index_bytes=index_bytes,
            latency_ms=lat,
            qps_threads=None,
            results=[[int(doc) for doc in r[0]] for r in raw],
            scores=[list(r[1]) for r in raw],
            data=data,
            quantisation=quant,
            extra={"u16_wrapped_queries": wrapped, "unsearchable_queries": sum(p is None for p in prepared),
                   "panicked_queries": len(panics)},
        ))
    out = objs if args.settings else objs[0]
    C.write_json(args.out, out)
    C.report(out)


if __name__ == "__main__":
    main()
