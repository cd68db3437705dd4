"""lsr in the benchmark: the same command line and result JSON as the peer runners (benchmarks/peers/).

    python benchmarks/run_lsr.py --data DIR --work WORK --k 10 --out result.json \
        [--weights float32|uint8|uint16] [--block-size 8] \
        [--variant c-auto,c-blockmax,c-exhaustive,numba-auto,...] [--settings "1,0;0.9,10"]

One index is built (timed: writing every file, fsyncs included; --add-batch N hands the writer N documents
per call, which keeps the build's memory bounded) and every variant searches it; the JSON is
a list with one result object per (variant, setting). A setting is ``alpha,query_cut[,query_mass]``
(query_cut 0 = all terms; query_mass < 1 is two-step search); "1,0", the default, is exact. Single-thread
latency runs one query per call through ``Searcher.search`` (the library's public path, Python overhead
included); the batch run passes all queries in one call, spread over --threads threads by the kernel.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
import _common as C  # noqa: E402

from lsr import __version__  # noqa: E402
from lsr.index import IndexWriter, Searcher, Vocabulary, open_index  # noqa: E402
from lsr.index.merge import compact  # noqa: E402
from lsr.kernels import set_threads  # noqa: E402
from lsr.types import SparseBatch  # noqa: E402


def parse_settings(text: str) -> list[tuple[float, int | None, float]]:
    out = []
    for part in text.replace(" ", "").split(";"):
        if part:
            alpha, cut, *mass = part.split(",")
            out.append((float(alpha), int(cut) or None, float(mass[0]) if mass else 1.0))
    return out


def main() -> None:
    p = C.make_parser("lsr", __doc__)
    p.add_argument("--weights", default="float32", choices=["float32", "uint8", "uint16"])
    p.add_argument("--scale", type=float, default=None)
    p.add_argument("--block-size", type=int, default=8)
    p.add_argument("--settings", default="1,0")
    p.add_argument("--reorder", choices=["none", "bp"], default="none")
    p.add_argument("--add-batch", type=int, default=0,
                   help="documents per IndexWriter.add call (0: all in one call); with a batch well under the "
                        "writer's flush threshold (16M postings) the build's memory stays bounded, as `lsr index` "
                        "adds an encode's shards")
    p.add_argument("--mmap", action="store_true",
                   help="memory-map the documents instead of reading them into memory; with --add-batch the build "
                        "then reads a batch at a time, so a collection larger than memory can be indexed")
    args = C.finish_args(p.parse_args())
    if args.mmap and not args.add_batch:
        p.error("--mmap needs --add-batch (one IndexWriter.add call would hold every document)")
    variants = (args.variant or "c-auto,c-blockmax,c-exhaustive").split(",")
    data = C.load_exchange(args.data, args.max_queries, mmap_docs=args.mmap)
    d = data.docs
    docs = SparseBatch(d.indptr, d.indices, d.values, d.dim)
    queries = SparseBatch(data.queries.indptr, data.queries.indices, data.queries.values, data.queries.dim)
    index_dir = args.work / "index"
    shutil.rmtree(index_dir, ignore_errors=True)
    vocabulary = Vocabulary.from_tokens([f"t{i}" for i in range(d.dim)], source="benchmark")

    scale = args.scale
    if scale is None and args.weights != "float32" and args.add_batch:
        # the writer fixes the scale at its first batch; with every document at hand, map the largest of all
        # to the type's maximum instead (as one call would), so that no later batch is clipped
        scale = float(np.iinfo(args.weights).max) / float(d.values.max())

    def build():
        with IndexWriter.create(index_dir, vocabulary, None, weight_dtype=args.weights, scale=scale,
                                block_size=args.block_size,
                                reorder=None if args.reorder == "none" else args.reorder) as writer:
            step = args.add_batch or d.n
            for a in range(0, d.n, step):
                b = min(d.n, a + step)
                writer.add([str(i) for i in range(a, b)], docs.slice(a, b))
        if args.add_batch:
            compact(index_dir)  # the flushed runs -> one segment, streamed, as `lsr index` ends (lsr.jobs.build)

    _, build_s = C.timed_build(build)
    index = open_index(index_dir)
    weights = index.manifest.weights
    quantisation = None if weights["dtype"] == "float32" else {
        "kind": "impact", "doc_scale": weights["scale"], "doc_max": int(np.iinfo(weights["dtype"]).max)}
    singles = [queries.slice(i, i + 1) for i in range(queries.n)]
    objects = []
    for variant in variants:
        backend, algorithm = variant.split("-")
        searcher = Searcher(index, backend)
        exact = [(1.0, None, 1.0)]
        for alpha, query_cut, mass in parse_settings(args.settings) if algorithm != "exhaustive" else exact:
            options = {"algorithm": algorithm, "alpha": alpha, "query_cut": query_cut, "query_mass": mass}
            set_threads(1)
            raw, lat = C.run_single(lambda q, o=options, s=searcher: s.search(q, args.k, **o), singles, args.warmup)
            qps = None
            if not args.no_batch:
                set_threads(args.threads)
                qps = C.run_batch(lambda o=options, s=searcher: s.search(queries, args.k, **o), queries.n,
                                  args.batch_min_s)
            objects.append(C.result_object(
                args, variant=f"{variant}" + ("" if args.weights == "float32" else f" {args.weights}")
                + ("" if args.reorder == "none" else f" {args.reorder}")
                + ("" if alpha == 1 and query_cut is None else f" alpha={alpha:g} cut={query_cut or 'all'}")
                + ("" if mass == 1 else f" mass={mass:g}"),
                params={"weights": weights, "block_size": args.block_size, "reorder": args.reorder, "alpha": alpha,
                        "add_batch": args.add_batch or None,
                        "query_cut": query_cut, "query_mass": mass, "lsr": __version__},
                build_s=build_s, index_bytes=C.dir_bytes(index_dir), latency_ms=lat, qps_threads=qps,
                results=[h.row(0)[0].tolist() for h in raw], scores=[h.row(0)[1].tolist() for h in raw],
                data=data, quantisation=quantisation,
            ))
    C.write_json(args.out, objects)
    C.report(objects)


if __name__ == "__main__":
    main()
