"""Metrics, run files, BEIR reading, and the full SciFact evaluation against brute force."""

from __future__ import annotations

import gzip

import ir_measures
import numpy as np
import pytest

from lsr.errors import InvalidInputError
from lsr.eval.metrics import evaluate_run
from lsr.io.beir import iter_corpus, read_qrels, read_queries, resolve_dataset, split_queries
from lsr.io.trec import read_run, write_run
from tests.conftest import SCIFACT

QRELS = {"q1": {"a": 1, "b": 0}, "q2": {"c": 2}, "q3": {"d": 1}}
RUN = {"q1": {"a": 2.0, "x": 3.0}, "q2": {"c": 1.0, "a": 0.5}}


def test_metrics_come_from_ir_measures_and_absent_queries_count_zero():
    got = evaluate_run(QRELS, RUN, ["nDCG@10", "RR@10"])
    per_query = {(m.query_id, str(m.measure)): m.value
                 for m in ir_measures.iter_calc([ir_measures.nDCG @ 10, ir_measures.RR @ 10], QRELS, RUN)}
    assert got["nDCG@10"] == pytest.approx((per_query[("q1", "nDCG@10")] + per_query[("q2", "nDCG@10")]) / 3)
    assert got["RR@10"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)


def test_unknown_measure_is_named():
    with pytest.raises(InvalidInputError, match="unknown measure 'nDGC@x'"):
        evaluate_run(QRELS, RUN, ["nDGC@x"])


def test_run_file_round_trip(tmp_path):
    write_run(tmp_path / "run.trec", RUN)
    assert read_run(tmp_path / "run.trec") == RUN
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert lines[0].split() == ["q1", "Q0", "x", "1", "3.000000", "lsr"]


def test_bundled_scifact_reads_as_beir():
    folder = resolve_dataset("scifact")
    assert folder == SCIFACT
    qrels = read_qrels(folder, "test")
    assert len(qrels) == 300 and sum(len(d) for d in qrels.values()) == 339
    assert not any("\r" in doc for docs in qrels.values() for doc in docs)  # CRLF stripped
    queries = split_queries(read_queries(folder), qrels)
    assert len(queries) == 300
    docs = list(iter_corpus(folder))
    assert len(docs) == 5183 and len({d.id for d in docs}) == 5183
    assert docs[0].full_text.startswith(docs[0].title + " ")


def test_shared_nfcorpus_reads_as_beir(shared_beir):
    folder = shared_beir / "nfcorpus"
    assert sum(1 for _ in iter_corpus(folder)) == 3633
    assert len(read_qrels(folder, "test")) == 323


def test_bad_files_give_located_errors(tmp_path):
    (tmp_path / "qrels.tsv").write_text("q1 d1\n")
    with pytest.raises(InvalidInputError, match="qrels.tsv:1"):
        read_qrels(tmp_path / "qrels.tsv")
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(b'{"_id": "a", "text": "x"}\n')[:-10])
    with pytest.raises(InvalidInputError, match="corrupt or truncated"):
        list(iter_corpus(tmp_path / "c.jsonl.gz"))
    with pytest.raises(InvalidInputError, match="not found"):
        resolve_dataset(tmp_path / "missing")


@pytest.mark.slow
def test_scifact_end_to_end_equals_brute_force(tmp_path, splade_tiny):
    """`lsr eval scifact` with the real SPLADE-tiny: its metrics equal those of scoring every document by
    a dense matrix product over the same vectors, computed here independently of lsr's kernels."""
    from lsr.cli import main
    from lsr.encoders.splade import SpladeEncoder
    from lsr.io.shards import list_shards, read_shard
    from lsr.types import SparseBatch

    out = tmp_path / "scifact"
    assert main(["-q", "eval", "scifact", "--encoder", "splade", "--out", str(out), "--check-exact"]) == 0
    import json

    report = json.loads((out / "report.json").read_text())
    assert report["n_docs"] == 5183 and report["n_queries"] == 300
    assert report["exact_check"]["identical_ids"]
    assert report["exact_check"]["brute_force_metrics"] == report["metrics"]
    assert 0.55 < report["metrics"]["nDCG@10"] < 0.75, report["metrics"]

    ids, parts = [], []
    for path in list_shards(out / "encoded"):
        shard_ids, vectors = read_shard(path)
        ids += shard_ids
        parts.append(vectors)
    docs = SparseBatch.concat(parts).to_scipy()
    # the weights the index stores (the default: uint8 at the encoder's bound scale), for the scale it records
    from lsr.index import open_index
    from lsr.kernels._arrays import quantize

    weights = open_index(report["index"]).manifest.weights
    assert weights["dtype"] == "uint8" and weights["bound"] == pytest.approx(255 / weights["scale"])
    docs.data = quantize(docs.data, weights["dtype"], weights["scale"]) / np.float64(weights["scale"])
    docs = docs.toarray()
    qrels = read_qrels(SCIFACT, "test")
    queries = split_queries(read_queries(SCIFACT), qrels)
    q = SpladeEncoder(splade_tiny).encode_queries(list(queries.values())).to_scipy().toarray()
    scores = q @ docs.T
    run = {}
    for qid, row in zip(queries, scores, strict=True):
        top = np.argsort(-row, kind="stable")[:1000]
        run[qid] = {ids[d]: float(row[d]) for d in top if row[d] > 0}
    brute = evaluate_run(qrels, run)
    for name, value in report["metrics"].items():
        assert value == pytest.approx(brute[name], abs=1e-6), name

    # The inference-free family over the same documents: queries are SciFact-corpus IDF over their tokens
    # (no network at query time). Measured with `lsr eval --encoder inference-free`: nDCG@10 0.6544.
    from lsr.encoders.idf import compute_idf, save_idf_json
    from lsr.encoders.inference_free import InferenceFreeEncoder
    from lsr.io.beir import iter_corpus

    tokenizer = SpladeEncoder(splade_tiny).tokenizer
    idf, n = compute_idf((doc.full_text for doc in iter_corpus(SCIFACT)), tokenizer, docs.shape[1])
    free = InferenceFreeEncoder(splade_tiny, idf=save_idf_json(idf, tokenizer, tmp_path / "idf.json"))
    q = free.encode_queries(list(queries.values())).to_scipy().toarray()
    run = {qid: {ids[d]: float(row[d]) for d in np.argsort(-row, kind="stable")[:1000] if row[d] > 0}
           for qid, row in zip(queries, q @ docs.T, strict=True)}
    assert 0.55 < evaluate_run(qrels, run)["nDCG@10"] < 0.75
