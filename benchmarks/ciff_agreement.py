"""Does a CIFF that lsr writes rank the same in BMP, and does a CIFF that PISA writes rank the same in lsr?

    python benchmarks/ciff_agreement.py --data ~/.cache/lsr-bench/scifact --index ~/.cache/lsr-bench/scifact-index \
        --work /tmp/ciff-scifact --out benchmarks/results/ciff.json [--name scifact] [--scales default,fit]

1. lsr index -> ``export_ciff`` (uint8 impacts; float32 indexes quantised at each ``--scales`` entry:
   ``default`` = largest weight -> 255, ``fit`` = the largest scale at which no query's exact top score passes
   65,535, or a number) -> ``import_ciff`` back into lsr.
2. BMP (its own venv) converts the same file with ``bmp.ciff2bmp`` and searches with alpha = beta = 1.
3. Queries are integers so that both engines are exact over the same integer weights: BMP rescales a query
   to ``ceil(w x 32 / max w)``, so each query is quantised here to integers in 1..32 whose maximum is 32,
   which BMP's rescaling leaves unchanged. lsr scores ``sum q x impact / scale`` in float32; ``rint(score x
   scale)`` is then the integer score BMP computes (BMP accumulates in u16 and wraps past 65,535: those
   queries are counted and reported apart).
4. Another writer: when the PISA venv has pyciff, PISA indexes the same integer impacts (toks indexer,
   scale 1) and writes CIFF with ``PisaIndex.to_ciff``; lsr imports it and must rank exactly as the index
   imported from its own CIFF. Without pyciff, that step is reported as skipped.

Without ``--index`` an lsr uint8 index is built from the exchange folder's docs.npz first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lsr.index import IndexWriter, Searcher, Vocabulary, open_index
from lsr.io.ciff import export_ciff, import_ciff
from lsr.kernels import quantize
from lsr.types import SparseBatch

VENVS = Path.home() / ".cache" / "lsr-bench" / "venvs"
K = 10

BMP_SIDE = r"""
import json, sys, time
import bmp
ciff, out_bmp, queries_file, k, result_file = sys.argv[1:6]
t = time.perf_counter()
bmp.ciff2bmp(ciff, out_bmp, 32, False)
convert_s = time.perf_counter() - t
searcher = bmp.Searcher(out_bmp)
queries = json.load(open(queries_file))
results = []
for q in queries:
    try:
        ids, scores = searcher.search(q, k=int(k), alpha=1.0, beta=1.0)
        results.append([list(map(str, ids)), [float(s) for s in scores]])
    except BaseException as exc:  # pyo3 panics are BaseExceptions
        results.append(None)
json.dump({"convert_s": convert_s, "results": results}, open(result_file, "w"))
"""

PISA_SIDE = r"""
import json, sys
import numpy as np
import pyterrier_pisa
index_dir, docs_json, ciff = sys.argv[1:4]
docs = json.load(open(docs_json))
index = pyterrier_pisa.PisaIndex(index_dir, stemmer="none", stops="none", threads=1)
index.toks_indexer(scale=1.0).index({"docno": d, "toks": toks} for d, toks in docs)
index.to_ciff(ciff, description="from pyterrier_pisa")
"""


def integer_queries(data: Path, vocabulary: list[str]) -> list[dict[str, int]]:
    """Exchange-folder queries as integers in 1..32 with maximum 32 (BMP's own rescaling is then the identity),
    restricted to terms the CIFF holds."""
    q = np.load(data / "queries.npz")
    tokens = json.loads((data / "vocab.json").read_text())
    held = set(vocabulary)
    out = []
    for i in range(len(q["indptr"]) - 1):
        a, b = int(q["indptr"][i]), int(q["indptr"][i + 1])
        idx, w = q["indices"][a:b], q["values"][a:b].astype(np.float64)
        keep = [j for j in range(len(idx)) if tokens[idx[j]] in held]
        if not keep:
            out.append({})
            continue
        w = w[keep]
        levels = np.maximum(np.rint(w * 32.0 / w.max()), 1).astype(int)
        out.append({tokens[idx[j]]: int(v) for j, v in zip(keep, levels, strict=True)})
    return out


def lsr_search(index_path: Path, queries: list[dict[str, int]]) -> list[tuple[list[str], list[float]]]:
    index = open_index(index_path)
    tok = index.token_ids
    rows = [{tok[t]: float(v) for t, v in q.items()} for q in queries]
    hits = Searcher(index, "auto").search(SparseBatch.from_dicts(rows, index.dim), K, algorithm="exhaustive")
    out = []
    for i in range(len(queries)):
        ids = index.external_ids(hits.ids[i])
        out.append(([e for e in ids if e is not None], [float(s) for s, e in zip(hits.scores[i], ids, strict=True)
                                                        if e is not None]))
    return out


def same_up_to_ties(a_ids: list[str], a_ints: list[int], b_ids: list[str], b_ints: list[int]) -> bool:
    """Same integer scores, and the same documents at each score except the lowest (cut at k: any of the
    tied documents may fill the last places)."""
    if a_ints != b_ints:
        return False
    last = a_ints[-1] if a_ints else None
    groups = {}
    for ids, ints, side in ((a_ids, a_ints, 0), (b_ids, b_ints, 1)):
        for e, s in zip(ids, ints, strict=True):
            if s != last:
                groups.setdefault((s, side), set()).add(e)
    return all(groups.get((s, 0)) == groups.get((s, 1)) for s, _ in groups)


def compare(lsr: list, bmp: list, scale: float, queries: list[dict[str, int]]) -> dict:
    overlaps, same_ids, same_scores, wrapped, failed, compared, same_ties = [], 0, 0, 0, 0, 0, 0
    for q, (l_ids, l_scores), b in zip(queries, lsr, bmp, strict=True):
        if not q:
            continue
        ints = [int(np.rint(s * scale)) for s in l_scores]
        if ints and ints[0] > 65535:
            wrapped += 1
            continue
        if b is None:
            failed += 1
            continue
        b_ids, b_scores = b
        compared += 1
        overlaps.append(len(set(l_ids) & set(b_ids)) / max(len(l_ids), 1))
        same_ids += l_ids == b_ids
        same_scores += ints == [int(s) for s in b_scores]
        same_ties += same_up_to_ties(l_ids, ints, b_ids, [int(s) for s in b_scores])
    return {"queries_compared": compared, "queries_u16_wrapped": wrapped, "bmp_failed": failed,
            "top10_overlap_mean": float(np.mean(overlaps)) if overlaps else None,
            "top10_overlap_min": float(np.min(overlaps)) if overlaps else None,
            "identical_ranking": same_ids, "identical_integer_scores": same_scores,
            "identical_ranking_up_to_ties": same_ties}


def build_uint8(data: Path, path: Path) -> Path:
    d = np.load(data / "docs.npz")
    tokens = json.loads((data / "vocab.json").read_text())
    ids = (data / "doc_ids.txt").read_text().split()
    with IndexWriter.create(path, Vocabulary.from_tokens(tokens, source=f"exchange:{data.name}"), None,
                            overwrite=True, weight_dtype="uint8") as w:
        step = 20_000
        for lo in range(0, len(ids), step):
            hi = min(lo + step, len(ids))
            a, b = int(d["indptr"][lo]), int(d["indptr"][hi])
            w.add(ids[lo:hi], SparseBatch(d["indptr"][lo : hi + 1] - a, d["indices"][a:b], d["values"][a:b],
                                          len(tokens)))
    return path


def pisa_round(work: Path, imported: Path, queries: list[dict[str, int]], own: list) -> dict:
    python = VENVS / "pisa" / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import pyciff"], capture_output=True)
    if probe.returncode:
        return {"skipped": "pyciff (PISA's CIFF exporter) is not in the PISA venv; its sdist builds with cargo, "
                           "which needs crates.io (offline here)"}
    index = open_index(imported)
    docs = []
    for seg in index.segments:
        for local in range(seg.info.n_docs):
            lo, hi = int(seg.fwd_indptr[local]), int(seg.fwd_indptr[local + 1])
            docs.append((seg.external_id(local), {index.vocabulary[t]: int(v) for t, v in
                                                  zip(seg.fwd_indices[lo:hi].tolist(), seg.fwd_values[lo:hi].tolist(),
                                                      strict=True)}))
    (work / "pisa_docs.json").write_text(json.dumps(docs))
    ciff = work / "pisa.ciff"
    run = subprocess.run([str(python), "-c", PISA_SIDE, str(work / "pisa_index"), str(work / "pisa_docs.json"),
                          str(ciff)], capture_output=True, text=True)
    if run.returncode:
        return {"failed": run.stderr.strip().splitlines()[-1] if run.stderr.strip() else "PISA side failed"}
    import_ciff(ciff, work / "from_pisa", overwrite=True, show_progress=False)
    theirs = lsr_search(work / "from_pisa", queries)
    # PISA's CIFF carries no lsr scale (1.0): lsr's scores there are the integer scores themselves.
    scale = open_index(imported).manifest.weights["scale"]
    same = sum(a[0] == b[0] and [int(np.rint(s * scale)) for s in a[1]] == [int(s) for s in b[1]]
               for q, a, b in zip(queries, own, theirs, strict=True) if q)
    return {"queries": sum(bool(q) for q in queries), "identical_ranking_and_scores": same,
            "pisa_ciff_bytes": ciff.stat().st_size}


def foreign_round(data: Path, work: Path, scale: float, queries: list[dict[str, int]], own: list,
                  stored_uint8: bool) -> dict:
    """A CIFF written straight from the exchange vectors with ciff-toolkit, the way another tool would: terms in
    token (string) order rather than lsr's term-id order, no lsr description (so lsr reads scale 1.0),
    impacts quantised as the lsr index did (see below), so both files should hold the same integers."""
    from ciff_toolkit.ciff_pb2 import DocRecord, Header, Posting, PostingsList
    from ciff_toolkit.write import CiffWriter

    d = np.load(data / "docs.npz")
    tokens = json.loads((data / "vocab.json").read_text())
    ids = (data / "doc_ids.txt").read_text().split()
    indptr, indices = d["indptr"], d["indices"]
    rows = np.repeat(np.arange(len(ids)), np.diff(indptr))
    if stored_uint8:  # as lsr's writer stored them: rint, clipped to 255, weights rounding to 0 dropped
        impacts = quantize(d["values"], "uint8", scale).astype(np.int64)
        keep = impacts > 0
        impacts, indices, rows = impacts[keep], indices[keep], rows[keep]
    else:  # as export_ciff quantises a float32 index
        impacts = np.maximum(np.rint(d["values"].astype(np.float64) * scale), 1).astype(np.int64)
    order = np.lexsort((rows, indices))  # postings grouped by term, ascending doc within a term
    starts = np.searchsorted(indices[order], np.arange(len(tokens) + 1))
    used = [t for t in range(len(tokens)) if starts[t + 1] > starts[t]]
    used.sort(key=lambda t: tokens[t])
    lengths = np.bincount(rows, weights=impacts, minlength=len(ids)).astype(np.int64)
    ciff = work / "foreign.ciff"
    with open(ciff, "wb") as fh:
        w = CiffWriter(fh)
        w.write_header(Header(version=1, num_postings_lists=len(used), num_docs=len(ids),
                              total_postings_lists=len(used), total_docs=len(ids),
                              total_terms_in_collection=int(lengths.sum()),
                              average_doclength=float(lengths.mean()), description="ciff-toolkit, from docs.npz"))

        def lists():
            for t in used:
                sel = order[starts[t] : starts[t + 1]]
                gaps, tfs = np.diff(rows[sel], prepend=0).tolist(), impacts[sel].tolist()
                yield PostingsList(term=tokens[t], df=len(sel), cf=int(sum(tfs)),
                                   postings=[Posting(docid=g, tf=f) for g, f in zip(gaps, tfs, strict=True)])
        w.write_postings_lists(lists())
        w.write_documents(DocRecord(docid=i, collection_docid=e, doclength=int(n))
                          for i, (e, n) in enumerate(zip(ids, lengths.tolist(), strict=True)))
        w.flush()
    import_ciff(ciff, work / "from_foreign", overwrite=True, show_progress=False)
    theirs = lsr_search(work / "from_foreign", queries)
    # scale 1.0 there: lsr's scores are the integer scores themselves
    pairs = [(a[0], [int(np.rint(s * scale)) for s in a[1]], b[0], [int(s) for s in b[1]])
             for q, a, b in zip(queries, own, theirs, strict=True) if q]
    return {"writer": "ciff-toolkit from docs.npz (terms in string order, no lsr scale)",
            "queries": len(pairs), "identical_ranking_and_integer_scores": sum(p[0] == p[2] and p[1] == p[3]
                                                                               for p in pairs),
            "identical_integer_scores": sum(p[1] == p[3] for p in pairs),
            "identical_ranking_up_to_ties": sum(same_up_to_ties(*p) for p in pairs)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="exchange folder (docs.npz, queries.npz, vocab.json)")
    p.add_argument("--index", type=Path, default=None, help="lsr index [built from docs.npz as uint8]")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="results JSON (a dataset's entry is replaced)")
    p.add_argument("--name", default=None)
    p.add_argument("--scales", default="default,fit")
    p.add_argument("--pisa", action="store_true", help="also import a CIFF written by PISA (pyciff)")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    name = args.name or args.data.name
    index = args.index or build_uint8(args.data, args.work / "lsr_uint8")
    entries = []
    fit_scale = None
    for rule in args.scales.split(","):
        if rule == "fit" and fit_scale is None:
            continue
        scale = None if rule == "default" else (fit_scale if rule == "fit" else float(rule))
        ciff = args.work / f"{name}-{rule}.ciff"
        t = time.perf_counter()
        exported = export_ciff(index, ciff, scale=scale, show_progress=False)
        export_s = time.perf_counter() - t
        t = time.perf_counter()
        imported = args.work / f"imported-{rule}"
        import_ciff(ciff, imported, overwrite=True, show_progress=False)
        import_s = time.perf_counter() - t
        queries = integer_queries(args.data, open_index(imported).vocabulary)
        own = lsr_search(imported, queries)
        (args.work / "queries.json").write_text(json.dumps(queries))
        res = args.work / "bmp.json"
        run = subprocess.run([str(VENVS / "bmp" / "bin" / "python"), "-c", BMP_SIDE, str(ciff),
                              str(args.work / f"{name}-{rule}.bmp"), str(args.work / "queries.json"), str(K),
                              str(res)], capture_output=True, text=True)
        if run.returncode:
            raise SystemExit(f"BMP side failed: {run.stderr.strip()[-500:]}")
        bmp_out = json.loads(res.read_text())
        entry = {"scale_rule": rule, "scale": exported["scale"], "ciff_bytes": ciff.stat().st_size,
                 "export_s": round(export_s, 2), "import_s": round(import_s, 2),
                 "bmp_convert_s": round(bmp_out["convert_s"], 2), "docs": exported["num_docs"],
                 "terms": exported["num_postings_lists"],
                 **compare(own, bmp_out["results"], exported["scale"], queries)}
        entries.append(entry)
        print(json.dumps(entry), file=sys.stderr)
        last = (exported["scale"], imported, queries, own, exported["weights"] == "uint8")
        if rule == "default":
            # the scale at which the largest exact integer top score of these queries just fits u16; only
            # needed when some query wraps, and only possible for a float32 index (integers export as stored)
            top = max((s[0] for _, s in own if s), default=0.0) * exported["scale"]
            if top > 65535 and exported["weights"] == "float32":
                fit_scale = exported["scale"] * 65535.0 / top * 0.995
    scale, imported, queries, own, stored_uint8 = last
    entries[-1]["foreign_ciff_into_lsr"] = foreign_round(args.data, args.work, scale, queries, own, stored_uint8)
    if args.pisa:
        entries[-1]["pisa_ciff_into_lsr"] = pisa_round(args.work, imported, queries, own)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[name] = {"k": K, "bmp": "bmp 0.2.8 ciff2bmp, bsize 32, alpha = beta = 1", "runs": entries}
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
