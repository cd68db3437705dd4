"""Recall@k of a runner's result JSON against the exact top-k.

    python check_results.py RESULT.json DATA_DIR [--json OUT.json]

For every result object in RESULT.json (one object, or a list of them) it prints:
  R@k float     recall of the hits against the exact top-k on the float32 weights (scored in float64);
  R@k float~    the same, counting a hit as right when its exact score ties the k-th exact score
                (relative tolerance 1e-6), so that tie-breaking is not counted as a miss;
  R@k quant     against the exact top-k on the engine's own quantised weights (the result's
                "quantisation" record, the same functions the runner used), tie-aware as above
                (integer scores tie often), with the engine's own arithmetic (BMP's u16 scores wrap);
                shown when the engine quantises. Loss against "float" but
                not against "quant" is quantisation loss; loss against "quant" is the engine's pruning.
The exact top-k only holds documents with a positive score; a query with fewer than k such documents
is judged on those. Needs numpy only (any runner's venv will do).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TIE_RTOL = 1e-6


def recall(hits: list[int], scores: np.ndarray, k: int) -> tuple[float, float] | None:
    """(strict, tie-aware) recall of ``hits`` against the exact top-k of ``scores``; None if no doc scores."""
    top, top_scores = C.topk_of(scores, k)
    if len(top) == 0:
        return None
    hits = list(dict.fromkeys(hits))[:k]
    strict = len(set(hits) & set(top.tolist())) / len(top)
    kth = top_scores[-1]
    ok = sum(1 for h in hits if scores[h] > 0 and scores[h] >= kth - TIE_RTOL * abs(kth))
    return strict, min(ok, len(top)) / len(top)


def check(obj: dict, data: C.Exchange, float_scorer: C.ExactScorer, cache: dict) -> dict:
    k = obj["k"]
    results = obj["results"]
    nq = len(results)
    if obj.get("query_ids") and obj["query_ids"][:nq] != data.query_ids[:nq]:
        raise SystemExit("the result's query ids differ from the data folder's")
    quant = obj.get("quantisation")
    qscorer = None
    if quant:
        key = json.dumps(quant, sort_keys=True)
        if key not in cache:
            cache[key] = C.ExactScorer(C.quantise_docs(data.docs, quant))
        qscorer = cache[key]
    f_strict, f_tie, q_strict, q_tie, judged = [], [], [], [], 0
    for i in range(nq):
        idx, val = data.queries.row(i)
        r = recall(results[i], float_scorer.scores(idx, val.astype(np.float64)), k)
        if r is None:
            continue
        judged += 1
        f_strict.append(r[0])
        f_tie.append(r[1])
        if qscorer is not None:
            qi, qv = C.quantise_query(idx, val, quant)
            rq = recall(results[i], C.quantised_scores(qscorer.scores(qi, qv), quant), k)
            if rq is not None:
                q_strict.append(rq[0])
                q_tie.append(rq[1])
    mean = lambda xs: float(np.mean(xs)) if xs else None  # noqa: E731
    lat = obj.get("latency_ms") or []
    return {
        "engine": obj["engine"],
        "variant": obj["variant"],
        "params": obj.get("params"),
        "k": k,
        "queries": nq,
        "judged": judged,
        "recall_float": mean(f_strict),
        "recall_float_ties": mean(f_tie),
        "recall_quant": mean(q_strict),
        "recall_quant_ties": mean(q_tie),
        "p50_ms": float(np.median(lat)) if lat else None,
        "qps_threads": obj.get("qps_threads"),
        "build_s": obj.get("build_s"),
        "index_bytes": obj.get("index_bytes"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("result", type=Path, nargs="+", help="result JSON file(s)")
    p.add_argument("data", type=Path, help="exchange folder the results were computed on")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args()
    data = C.load_exchange(args.data)
    float_scorer = C.ExactScorer(data.docs)
    cache: dict = {}
    rows = []
    for path in args.result:
        loaded = json.loads(path.read_text(encoding="utf-8"))
        for obj in loaded if isinstance(loaded, list) else [loaded]:
            rows.append(check(obj, data, float_scorer, cache))
    fmt = lambda x, spec=".4f": "-" if x is None else format(x, spec)  # noqa: E731
    print(f"{'engine/variant':<34} {'params':<28} {'k':>4} {'nq':>5} {'R@k float':>9} {'float~':>7} "
          f"{'quant~':>7} {'quant':>7} {'p50 ms':>8} {'q/s':>8}")
    for r in rows:
        params = r["params"] or {}
        short = ",".join(f"{a}={b}" for a, b in params.items() if a in ("query_cut", "heap_factor", "alpha", "beta",
                                                                         "n_postings", "bsize"))
        print(f"{r['engine'] + '/' + str(r['variant']):<34} {short[:28]:<28} {r['k']:>4} {r['queries']:>5} "
              f"{fmt(r['recall_float']):>9} {fmt(r['recall_float_ties']):>7} {fmt(r['recall_quant_ties']):>7} "
              f"{fmt(r['recall_quant']):>7} {fmt(r['p50_ms'], '.3f'):>8} {fmt(r['qps_threads'], '.0f'):>8}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
