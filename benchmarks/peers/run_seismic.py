"""Seismic (pyseismic-lsr 0.5.4): approximate retrieval over blocked, summarised, statically pruned lists.

    python run_seismic.py --data DIR --work WORK --k 10 --out result.json \
        [--variant seismic|dotvbyte] [--threads 2] [--query-cut 10 --heap-factor 0.7 | --settings "10,0.7;20,0.9"]
        [--n-postings auto|N] [--centroid-fraction 0.1] [--summary-energy 0.4] [--min-cluster-size 2]
        [--max-fraction 1.5] [--doc-cut 15]

Build knobs (one build serves every search setting):
  --n-postings        static pruning: the index keeps about n_postings x dim postings overall (the largest
                      values; "GlobalThreshold"), and at most n_postings x max_fraction per list. Seismic's
                      default 3500 is tuned on MS MARCO (8.8M docs). "auto" (default) = min(3500, max(1000,
                      n_docs / 5)): 3500 from 17,500 docs up, less on tiny collections (SciFact: 1036).
  --max-fraction      cap of one list, in units of n_postings.
  --centroid-fraction blocks per list = centroid_fraction x list length (random k-means on the list's docs).
  --min-cluster-size  smallest block.
  --summary-energy    each block's summary keeps its largest max-weights up to this fraction of their sum
                      (summaries are 8-bit quantised).
  --doc-cut           documents are clustered on their top-doc_cut components only.
  --build-threads     Rayon threads of the build (summaries are built per list in parallel).
Search knobs:
  --query-cut         only the query's query_cut largest-weight terms walk their lists.
  --heap-factor       a block is skipped once k hits are held and its summary's dot product with the query is
                      < heap_factor x the current k-th score: higher = more skipping (faster, lower recall).
                      Summaries keep only part of each block's weights, so even 1.0 is not rank-safe.
  --settings          several "query_cut,heap_factor" pairs separated by ';': the JSON is then a list with
                      one result object per pair, all on the same build.
Variants: "seismic" (SeismicIndex: u16 components, f16 values in the forward index) or "dotvbyte"
(SeismicIndexDotVByte: the forward index compressed with DotVByte). Every candidate is scored exactly on
the forward index, so the final scores are dot products with f16-rounded document weights (query weights
stay f32): the result's quantisation record says "f16".
index_bytes is the size of the saved index file (Seismic searches in memory; --no-save skips saving).
The build prints Seismic's own progress lines on stdout.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import seismic

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

VARIANTS = {"seismic": "SeismicIndex", "dotvbyte": "SeismicIndexDotVByte"}


def parse_settings(text: str) -> list[tuple[int, float]]:
    out = []
    for part in text.replace(" ", "").split(";"):
        if part:
            qc, hf = part.split(",")
            out.append((int(qc), float(hf)))
    return out


def main() -> None:
    p = C.make_parser("seismic", __doc__)
    p.add_argument("--query-cut", type=int, default=10)
    p.add_argument("--heap-factor", type=float, default=0.7)
    p.add_argument("--settings", default=None, help='"qc,hf;qc,hf;..." (overrides --query-cut/--heap-factor)')
    p.add_argument("--n-postings", default="auto")
    p.add_argument("--max-fraction", type=float, default=1.5)
    p.add_argument("--centroid-fraction", type=float, default=0.1)
    p.add_argument("--min-cluster-size", type=int, default=2)
    p.add_argument("--summary-energy", type=float, default=0.4)
    p.add_argument("--doc-cut", type=int, default=15)
    p.add_argument("--no-save", action="store_true", help="do not save the index (index_bytes null)")
    args = C.finish_args(p.parse_args())
    variant = args.variant or "seismic"
    if variant not in VARIANTS:
        p.error(f"--variant must be one of {sorted(VARIANTS)}")
    settings = parse_settings(args.settings) if args.settings else [(args.query_cut, args.heap_factor)]
    data = C.load_exchange(args.data, args.max_queries)
    d, q = data.docs, data.queries
    n_postings = min(3500, max(1000, d.n // 5)) if args.n_postings == "auto" else int(args.n_postings)
    build_params = {
        "n_postings": n_postings,
        "max_fraction": args.max_fraction,
        "centroid_fraction": args.centroid_fraction,
        "min_cluster_size": args.min_cluster_size,
        "summary_energy": args.summary_energy,
        "doc_cut": args.doc_cut,
        "build_threads": args.build_threads,
    }
    index_cls = getattr(seismic, VARIANTS[variant])

    def build():
        # Components are the term ids themselves ("42" addresses term 42 at query time); document ids are
        # the row numbers, so a hit's id string is its row in docs.npz. Rows must be strictly increasing.
        dataset = seismic.SeismicDataset(dim=d.dim)
        dataset.add_documents_by_id([str(i) for i in range(d.n)], d.indices.astype(np.int64), d.values, d.indptr)
        return index_cls.build_from_dataset(
            dataset,
            n_postings=n_postings,
            centroid_fraction=args.centroid_fraction,
            min_cluster_size=args.min_cluster_size,
            summary_energy=args.summary_energy,
            max_fraction=args.max_fraction,
            doc_cut=args.doc_cut,
            num_threads=args.build_threads,
        )

    index_bytes, save_s = None, None
    with C.engine_output(args):
        index, build_s = C.timed_build(build)
        if not args.no_save:
            prefix = args.work / f"seismic_{variant}"
            _, save_s = C.timed(lambda: index.save(str(prefix)))
            index_bytes = C.dir_bytes(Path(str(prefix) + ".index.seismic"))

    S = seismic.get_seismic_string()
    qids = [str(i) for i in range(q.n)]
    comps = [np.array([str(t) for t in q.row(i)[0]], dtype=S) for i in range(q.n)]
    vals = [np.ascontiguousarray(q.row(i)[1], dtype=np.float32) for i in range(q.n)]
    prepared = list(zip(qids, comps, vals))
    qids_arr = np.array(qids, dtype=S)

    objs = []
    for query_cut, heap_factor in settings:
        def search(pq, query_cut=query_cut, heap_factor=heap_factor):
            return index.search(pq[0], pq[1], pq[2], args.k, query_cut, heap_factor)

        raw, lat = C.run_single(search, prepared, args.warmup)
        qps = None
        if not args.no_batch:
            qps = C.run_batch(
                lambda: index.batch_search(qids_arr, comps, vals, args.k, query_cut, heap_factor,
                                           num_threads=args.threads),
                q.n, args.batch_min_s)
        results = [[int(doc) for _, _, doc in r] for r in raw]
        scores = [[float(s) for _, s, _ in r] for r in raw]
        objs.append(C.result_object(
            args,
            variant=variant,
            params={"query_cut": query_cut, "heap_factor": heap_factor, **build_params},
            build_s=build_s,
            index_bytes=index_bytes,
            latency_ms=lat,
            qps_threads=qps,
            results=results,
            scores=scores,
            data=data,
            quantisation={"kind": "f16"},
            extra={"save_s": save_s, "seismic_class": VARIANTS[variant]},
        ))
    out = objs if args.settings else objs[0]
    C.write_json(args.out, out)
    C.report(out)


if __name__ == "__main__":
    main()
