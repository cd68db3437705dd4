"""splade-index (PyPI ``splade-index``, https://github.com/rasyosef/splade-index): a SPLADE index in numba.

    python run_splade_index.py --data DIR --work WORK --k 10 --out result.json [--threads 2]

What it is: the document vectors as one float32 CSC matrix (a posting list per vocabulary term) and, per
query, term-at-a-time accumulation of every posting of the query's terms into a dense score array, then a
numba top-k (exact, no pruning). Its ``SPLADE.index`` encodes the texts with a sentence-transformers model;
here the exchange folder's vectors go in instead (as for every peer), laid out exactly as ``index`` lays
them out, and saved and loaded with its own ``save`` / ``load_scores`` (the on-disk size is its
``csc.index.npz``, which it writes compressed). Search is its own ``_retrieve_numba_functional``, the
function ``SPLADE.retrieve`` calls after encoding the queries: one query per call for latency, all queries
in one call on ``--threads`` numba threads for queries/s.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import splade_index
from splade_index.numba.retrieve_utils import _retrieve_numba_functional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def csc_scores(d: C.Csr) -> dict:
    """The docs as splade-index's ``scores`` dict: per term (column of the n x dim matrix) its doc rows."""
    order = np.argsort(d.indices, kind="stable")  # rows are in doc order, so each term's docs stay ascending
    counts = np.bincount(d.indices, minlength=d.dim)
    indptr = np.zeros(d.dim + 1, dtype=np.int32)
    np.cumsum(counts, out=indptr[1:])
    rows = np.repeat(np.arange(d.n, dtype=np.int32), np.diff(d.indptr))
    return {"data": d.values[order].astype(np.float32), "indices": rows[order], "indptr": indptr,
            "num_docs": d.n}


def main() -> None:
    p = C.make_parser("splade-index", __doc__)
    args = C.finish_args(p.parse_args())
    data = C.load_exchange(args.data, args.max_queries)
    d, q, k = data.docs, data.queries, args.k
    index_dir = args.work / "splade-index"

    def build():
        model = splade_index.SPLADE(backend="numba")
        model.scores = csc_scores(d)
        model.document_ids = np.arange(d.n)
        model.vocab_dict = {}
        model.save(index_dir)
        loaded = splade_index.SPLADE(backend="numba")
        loaded.load_scores(index_dir, num_docs=d.n)
        return loaded

    index, build_s = C.timed_build(build)
    scores = index.scores

    def run(ids: list[np.ndarray], weights: list[np.ndarray], threads: int):
        return _retrieve_numba_functional(ids, weights, scores, k=k, sorted=True, return_as="tuple",
                                          show_progress=False, n_threads=threads, dtype="float32",
                                          int_dtype="int32")

    rows = [q.row(i) for i in range(q.n)]

    def search(row):
        docs, vals = run([row[0]], [row[1]], 1)
        docs, vals = docs[0], vals[0]
        keep = vals > 0  # it pads with zero-score documents when fewer than k match
        return docs[keep], vals[keep]

    raw, lat = C.run_single(search, rows, args.warmup)
    qps = None
    if not args.no_batch:
        qps = C.run_batch(lambda: run([r[0] for r in rows], [r[1] for r in rows], args.threads), q.n,
                          args.batch_min_s)
    C.write_result(
        args,
        raw,
        variant="numba",
        params={"dtype": "float32", "splade_index": splade_index.__version__},
        build_s=build_s,
        index_bytes=C.dir_bytes(index_dir),
        latency_ms=lat,
        qps_threads=qps,
        data=data,
        quantisation=None,
    )


if __name__ == "__main__":
    main()
