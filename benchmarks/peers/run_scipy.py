"""Plain baseline: exhaustive float32 sparse products with scipy, top-k by argpartition.

    python run_scipy.py --data DIR --work WORK --k 10 --out result.json [--variant qdt|dq] [--threads 2]

Variants:
  qdt (default)  q (1 x dim CSR) @ D^T (dim x n CSR, built once = "index"): touches only the posting lists of
                 the query's terms (term-at-a-time), result is a sparse 1 x n row.
  dq             D (n x dim CSR) @ q^T (dim x 1 CSC): walks every document row (document-at-a-time).
Both are exact on the float32 weights (float32 accumulation). In memory only: index_bytes is null.
The batch run maps the queries over a ThreadPoolExecutor of --threads workers (scipy's sparse kernels
release the GIL for the product itself).
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import scipy
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def topk(row: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of a sparse 1 x n score row (only stored, i.e. matching, documents)."""
    idx, val = row.indices, row.data
    keep = val > 0
    idx, val = idx[keep], val[keep]
    if len(val) > k:
        part = np.argpartition(-val, k - 1)[:k]
        idx, val = idx[part], val[part]
    order = np.lexsort((idx, -val))
    return idx[order], val[order]


def topk_dense(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if k < len(scores):
        part = np.argpartition(-scores, k - 1)[:k]
    else:
        part = np.arange(len(scores))
    part = part[scores[part] > 0]
    order = np.lexsort((part, -scores[part]))
    return part[order], scores[part[order]]


def main() -> None:
    p = C.make_parser("scipy", __doc__)
    args = C.finish_args(p.parse_args())
    variant = args.variant or "qdt"
    if variant not in ("qdt", "dq"):
        p.error("--variant must be qdt or dq")
    data = C.load_exchange(args.data, args.max_queries)
    d, q = data.docs, data.queries
    k = args.k

    def build():
        docs = sp.csr_matrix((d.values, d.indices, d.indptr), shape=(d.n, d.dim), dtype=np.float32)
        if variant == "qdt":
            return docs.T.tocsr()  # dim x n: one row per term = a posting list
        return docs

    index, build_s = C.timed_build(build)

    # Query objects are prepared before timing (the engine's input format, not part of the search).
    if variant == "qdt":
        prepared = [
            sp.csr_matrix((q.row(i)[1], q.row(i)[0], np.array([0, len(q.row(i)[0])])), shape=(1, q.dim),
                          dtype=np.float32)
            for i in range(q.n)
        ]

        def search(qm):
            return topk(qm @ index, k)
    else:
        prepared = [
            sp.csc_matrix((q.row(i)[1], q.row(i)[0], np.array([0, len(q.row(i)[0])])), shape=(q.dim, 1),
                          dtype=np.float32)
            for i in range(q.n)
        ]

        def search(qm):
            return topk_dense((index @ qm).toarray().ravel(), k)

    raw, lat = C.run_single(search, prepared, args.warmup)

    qps = None
    if not args.no_batch:
        pool = ThreadPoolExecutor(max_workers=args.threads)
        qps = C.run_batch(lambda: list(pool.map(search, prepared)), q.n, args.batch_min_s)
        pool.shutdown()

    C.write_result(
        args,
        raw,
        variant=variant,
        params={"dtype": "float32", "scipy": scipy.__version__},
        build_s=build_s,
        index_bytes=None,
        latency_ms=lat,
        qps_threads=qps,
        data=data,
        quantisation=None,
    )


if __name__ == "__main__":
    main()
