"""Formats users already have: lsr's TREC runs and qrels read by the standard tools (ir_measures, PyTerrier),
and runs from elsewhere evaluated by lsr, with ir_measures measure strings throughout."""

from __future__ import annotations

import importlib.util

import ir_measures
import pytest

from lsr.cli import main
from lsr.eval.metrics import evaluate_run, parse_measures
from lsr.io.beir import read_qrels
from lsr.io.trec import read_run, write_run
from tests.conftest import write_corpus

MEASURES = ["nDCG@10", "R@100", "RR@10", "P(rel=1)@5", "AP@100"]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_model):
    """`lsr eval` of a tiny BEIR folder (corpus, queries, TREC-style qrels) through --index."""
    import orjson

    root = tmp_path_factory.mktemp("formats")
    write_corpus(root / "corpus.jsonl", 80, seed=2)
    queries = {"q1": "cancer cells", "q2": "water river city", "q3": "sleep diet heart", "q4": "music"}
    (root / "queries.jsonl").write_bytes(b"".join(orjson.dumps({"_id": q, "text": t}) + b"\n"
                                                 for q, t in queries.items()))
    assert main(["-q", "index", str(root / "corpus.jsonl"), str(root / "idx"), "--model", str(tiny_model)]) == 0
    # TREC qrels (qid 0 docid rel), what trec_eval and ir_measures read: judged so that every measure is
    # neither 0 nor 1 (documents at ranks 2 and 5 relevant, grades 1 and 2, and one never retrieved)
    from lsr.search import SparseRetriever

    retriever = SparseRetriever(root / "idx")
    hits = retriever.search(list(queries.values()), 10)
    lines = []
    for i, qid in enumerate(queries):
        ids = retriever.index.external_ids(hits.row(i)[0])
        lines += [f"{qid} 0 {ids[1]} 1", f"{qid} 0 {ids[4]} 2", f"{qid} 0 nowhere 1"]
    (root / "qrels.txt").write_text("\n".join(lines) + "\n")
    assert main(["-q", "eval", "--index", str(root / "idx"), "--queries", str(root / "queries.jsonl"), "--qrels",
                 str(root / "qrels.txt"), "--out", str(root / "eval"), "--measures", *MEASURES, "-k", "100"]) == 0
    return root


def test_lsr_run_files_are_what_ir_measures_reads(evaluated):
    import json

    report = json.loads((evaluated / "eval" / "report.json").read_text())
    assert list(report["metrics"]) == [str(m) for m in parse_measures(MEASURES)]  # P(rel=1)@5 prints as P@5
    assert all(0 < v < 1 for v in report["metrics"].values()), report["metrics"]
    run_file = evaluated / "eval" / "run.trec"
    theirs = {}
    for row in ir_measures.read_trec_run(str(run_file)):
        theirs.setdefault(row.query_id, {})[row.doc_id] = row.score
    ours = read_run(run_file)
    assert theirs.keys() == ours.keys() == {"q1", "q2", "q3", "q4"}
    for qid in ours:
        assert theirs[qid] == pytest.approx(ours[qid], abs=1e-6)
    qrels = list(ir_measures.read_trec_qrels(str(evaluated / "qrels.txt")))
    computed = ir_measures.calc_aggregate(parse_measures(MEASURES), qrels, ir_measures.read_trec_run(str(run_file)))
    assert len(computed) == len(MEASURES)
    for measure, value in computed.items():  # every judged query is in this run, so no -c difference
        assert report["metrics"][str(measure)] == pytest.approx(value, abs=1e-6), measure


def test_runs_from_elsewhere_are_evaluated_alike(tmp_path):
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tdoc1\t1\nq2\tdoc7\t1\nq3\tdoc9\t1\n"
                                        "q4\tdoc3\t1\n")  # BEIR's qrels form, header and all
    qrels = read_qrels(tmp_path / "qrels.tsv")
    foreign = tmp_path / "other.run"
    # another system's run: unsorted lines, its own tag, scores as printed by trec tools
    foreign.write_text("q1 Q0 doc5 2 3.5 bm25\nq1 Q0 doc1 1 7.25 bm25\nq2 Q0 doc2 1 1.0 bm25\n")
    run = read_run(foreign)
    assert run == {"q1": {"doc5": 3.5, "doc1": 7.25}, "q2": {"doc2": 1.0}}
    metrics = evaluate_run(qrels, run, ["nDCG@10", "RR@10"])
    assert metrics["RR@10"] == pytest.approx((1 + 0 + 0 + 0) / 4)  # q3, q4 absent from the run count 0
    write_run(tmp_path / "again.trec", run, tag="x")
    lines = (tmp_path / "again.trec").read_text().splitlines()
    assert lines[0] == "q1 Q0 doc1 1 7.250000 x" and read_run(tmp_path / "again.trec") == run


def test_pyterrier_reads_lsr_runs(evaluated):
    if importlib.util.find_spec("pyterrier") is None:
        pytest.skip("PyTerrier is not installed (pip install 'lsr-search[pyterrier]'; CI installs it with dev)")
    import pyterrier as pt

    frame = pt.io.read_results(str(evaluated / "eval" / "run.trec"))
    ours = read_run(evaluated / "eval" / "run.trec")
    assert len(frame) == sum(len(r) for r in ours.values())
    for row in frame.itertuples():
        assert ours[row.qid][row.docno] == pytest.approx(row.score, abs=1e-6)
