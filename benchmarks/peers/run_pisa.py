"""PISA through pyterrier-pisa 0.4.9: compressed inverted index, dynamic pruning, "quantized" (dot-product) scorer.

    python run_pisa.py --data DIR --work WORK --k 10 --out result.json \
        [--variant maxscore|block_max_wand|block_max_maxscore|wand|ranked_or|...[,more]] [--threads 2]
        [--encoding block_simdbp] [--wand-block-size 64] [--scale 100]

--variant is PISA's query algorithm; several, comma-separated, run on the same build (the JSON is then a
list). maxscore, block_max_wand and block_max_maxscore are rank-safe: exact on the quantised weights.
Quantisation (Anserini's convention): documents and queries are both round(100 x w) integers (--scale);
weights that round to 0 are dropped. PISA's "quantized" scorer scores a posting by its stored integer
impact, and pyterrier-pisa turns a query weight w into floor(w) repeats of the term, which PISA's weighted
query mode counts back into a weight, so scores are exactly sum(q x d) on these integers (float32, exact
below 2^24). The toks indexer would truncate (int(w x scale)); we hand it integers with scale 1.
Indexing uses the toks (pre-tokenised dict) indexer with stemmer='none' and the retrieval context with
stops='none': the default Terrier stop list would silently drop terms. Term tokens are "t<id>" rather than
the wordpieces, which PISA's term processor could split, lower-case or stop ("##ing", "[SEP]", "the").
Documents are indexed under their row number. We drive the compiled module (_pisathon.retrieve) directly,
as PisaRetrieve.transform does minus the pandas frames, so that the timed call is the search only; the
batch run is the same call on all queries with --threads TBB threads. pyterrier_pisa.log_level() is never
called (broken in 0.4.9).
build_s covers the toks indexer (Python inversion, PISA merge) and the first retrieval context, which
compresses the index (--encoding) and builds the block-max (wand) data. index_bytes is the whole index
folder, which keeps the uncompressed inv.docs/inv.freqs; extra.searched_bytes counts only the compressed
index, the wand data and the lexicons.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pyterrier_pisa
from pyterrier_pisa import _pisathon

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SAFE = ("maxscore", "block_max_wand", "block_max_maxscore", "wand", "ranked_or")


def main() -> None:
    p = C.make_parser("pisa", __doc__)
    p.add_argument("--encoding", default="block_simdbp", help="PISA index encoding")
    p.add_argument("--wand-block-size", type=int, default=64, help="postings per block of the block-max data")
    p.add_argument("--scale", type=float, default=100.0, help="quantisation: round(scale x w) for docs and queries")
    args = C.finish_args(p.parse_args())
    algorithms = (args.variant or "maxscore").split(",")
    for a in algorithms:
        pyterrier_pisa.PisaQueryAlgorithm(a)  # validates the name
    data = C.load_exchange(args.data, args.max_queries)
    d, q = data.docs, data.queries
    quant = {"kind": "round", "doc_scale": args.scale, "query_scale": args.scale}
    tokens = [C.term_token(t) for t in range(max(d.dim, q.dim))]
    path = args.work / f"pisa_s{args.scale:g}"
    if path.exists():
        shutil.rmtree(path)

    def docs_iter():
        qd = C.round_scale(d.values, args.scale)
        for i in range(d.n):
            a, b = int(d.indptr[i]), int(d.indptr[i + 1])
            yield {"docno": str(i),
                   "toks": {tokens[t]: v for t, v in zip(d.indices[a:b].tolist(), qd[a:b].tolist()) if v > 0}}

    def build():
        index = pyterrier_pisa.PisaIndex(str(path), stemmer="none", stops="none", threads=args.build_threads,
                                         index_encoding=args.encoding)
        index.toks_indexer(scale=1.0).index(docs_iter())
        # PisaRetrieve's constructor prepares the retrieval context: compression + block-max data.
        retr = pyterrier_pisa.PisaRetrieve(index, scorer="quantized", num_results=args.k, threads=1, stops="none",
                                           query_algorithm=algorithms[0], query_weighted=True, toks_scale=1.0,
                                           block_size=args.wand_block_size)
        return index, retr

    with C.engine_output(args):
        (index, retr), build_s = C.timed_build(build)
    ctxt = retr._ctxt
    index_bytes = C.dir_bytes(path)
    searched = sum(f.stat().st_size for f in path.iterdir()
                   if f.name.startswith("quantized.") or f.name.startswith("fwd.") and f.name.endswith("lex"))

    qvals = [C.round_scale(q.row(i)[1], args.scale) for i in range(q.n)]
    queries = [
        {tokens[t]: float(v) for t, v in zip(q.row(i)[0].tolist(), qvals[i].tolist()) if v > 0} for i in range(q.n)
    ]
    k = args.k

    def arrays(n):
        return (np.empty(n, dtype=np.int32), np.empty(n, dtype=object), np.empty(n, dtype=np.int32),
                np.empty(n, dtype=np.float32))

    objs = []
    for algorithm in algorithms:
        # Each prepared query carries its own result buffers, allocated before timing.
        prepared = [([(0, qd)], arrays(k)) for qd in queries]

        def search(pq, algorithm=algorithm):
            inp, (qi, dn, rk, sc) = pq
            n = _pisathon.retrieve(ctxt, algorithm, inp, k=k, threads=1, pretokenised=True, query_weighted=1,
                                   result_qidxs=qi, result_docnos=dn, result_ranks=rk, result_scores=sc)
            return n, dn, sc

        raw, lat = C.run_single(search, prepared, args.warmup)
        results = [[int(x) for x in dn[:n]] for n, dn, _ in raw]
        scores = [[float(x) for x in sc[:n]] for n, _, sc in raw]

        qps = None
        if not args.no_batch:
            batch_inp = list(enumerate(queries))

            def batch(algorithm=algorithm):
                qi, dn, rk, sc = arrays(len(batch_inp) * k)
                return _pisathon.retrieve(ctxt, algorithm, batch_inp, k=k, threads=args.threads, pretokenised=True,
                                          query_weighted=1, result_qidxs=qi, result_docnos=dn, result_ranks=rk,
                                          result_scores=sc)

            qps = C.run_batch(batch, q.n, args.batch_min_s)
        objs.append(C.result_object(
            args,
            variant=algorithm,
            params={"algorithm": algorithm, "encoding": args.encoding, "wand_block_size": args.wand_block_size,
                    "scale": args.scale, "rank_safe": algorithm in SAFE},
            build_s=build_s,
            index_bytes=index_bytes,
            latency_ms=lat,
            qps_threads=qps,
            results=results,
            scores=scores,
            data=data,
            quantisation=quant,
            extra={"searched_bytes": searched, "pyterrier_pisa": pyterrier_pisa.__version__},
        ))
    out = objs if len(objs) > 1 else objs[0]
    C.write_json(args.out, out)
    C.report(out)


if __name__ == "__main__":
    main()
