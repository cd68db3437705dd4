"""The CLI end to end on a tiny model, and its bad-input contract: one line on stderr, non-zero exit code,
nothing half-written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from lsr.cli import main
from lsr.errors import VocabularyMismatchError
from lsr.search import SparseRetriever
from tests.conftest import one_line, write_corpus


def run(capsys, *argv):
    code = main(["-q", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("cli")
    corpus = write_corpus(root / "corpus.jsonl", 40)
    assert main(["-q", "index", str(corpus), str(root / "idx"), "--model", str(tiny_model), "--shard-size", "16"]) == 0
    return root


def test_index_search_and_info(built, capsys):
    assert not (built / "idx.encoding").exists()  # the work folder is removed after a successful build
    code, out, _ = run(capsys, "search", built / "idx", "cell protein gene", "-k", "3")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 3 and lines[0].split()[0] == "1"
    code, out, _ = run(capsys, "search", built / "idx", "cell", "virus", "-k", "2", "--json")
    payload = json.loads(out)
    assert [r["query"] for r in payload["results"]] == ["cell", "virus"]
    assert all(len(r["hits"]) == 2 for r in payload["results"])
    code, out, _ = run(capsys, "info", built / "idx")
    info = json.loads(out)
    assert info["documents"] == 40 and info["encoder"]["type"] == "splade"


def test_eval_existing_index(built, capsys, tmp_path):
    queries = tmp_path / "queries.tsv"
    queries.write_text("q1\tcell protein\nq2\tvirus disease\n")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\r\nq1\tdoc1\t1\r\nq2\tdoc2\t1\r\n")
    code, out, err = run(capsys, "eval", "--index", built / "idx", "--queries", queries, "--qrels", qrels,
                         "--out", tmp_path / "ev", "-k", "20", "--check-exact")
    assert code == 0, err
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert set(report["metrics"]) == {"nDCG@10", "R@100", "RR@10"}
    assert report["exact_check"]["brute_force_metrics"] == report["metrics"]
    assert report["n_queries"] == 2 and (tmp_path / "ev" / "run.trec").exists()


@pytest.mark.parametrize("k", ["0", "-3", "100000"])
def test_bad_k(built, capsys, k):
    code, _, err = run(capsys, "search", built / "idx", "cell", "-k", k)
    assert code == 1 and one_line(err) and "k must be" in err


def test_missing_index(capsys, tmp_path):
    code, _, err = run(capsys, "search", tmp_path / "nope", "cell")
    assert code == 1 and one_line(err) and "no index" in err


def test_corrupt_index(built, capsys, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(built / "idx", broken)
    postings = broken / "seg-000001" / "postings.weights.npy"
    postings.write_bytes(postings.read_bytes()[:-8])
    code, _, err = run(capsys, "search", broken, "cell")
    assert code == 1 and one_line(err) and "postings.weights.npy" in err


def test_empty_corpus_leaves_nothing(capsys, tmp_path, tiny_model):
    (tmp_path / "corpus.jsonl").write_text("")
    code, _, err = run(capsys, "index", tmp_path / "corpus.jsonl", tmp_path / "idx", "--model", tiny_model)
    assert code == 1 and one_line(err) and "no documents" in err
    assert sorted(os.listdir(tmp_path)) == ["corpus.jsonl"]


def test_malformed_corpus_line(capsys, tmp_path, tiny_model):
    (tmp_path / "corpus.jsonl").write_text('{"_id": "a", "text": "cell"}\n{"_id": "b", "text": \n')
    code, _, err = run(capsys, "index", tmp_path / "corpus.jsonl", tmp_path / "idx", "--model", tiny_model)
    assert code == 1 and one_line(err) and "corpus.jsonl:2" in err
    assert not (tmp_path / "idx").exists()


def test_existing_index_needs_overwrite(built, capsys):
    code, _, err = run(capsys, "index", built / "corpus.jsonl", built / "idx")
    assert code == 1 and one_line(err) and "--overwrite" in err


def test_unknown_model(capsys, tmp_path):
    write_corpus(tmp_path / "corpus.jsonl", 3)
    corpus = tmp_path / "corpus.jsonl"
    code, _, err = run(capsys, "index", corpus, tmp_path / "idx", "--model", corpus)
    assert code == 1 and one_line(err) and "model" in err
    assert sorted(os.listdir(tmp_path)) == ["corpus.jsonl"]


def test_vectors_index_and_vocabulary_mismatch(capsys, tmp_path, tiny_encoder):
    """JsonVectorCollection input gets the collection's own vocabulary; a model over another vocabulary is
    refused at query time, and text queries without a model get a clear error."""
    vectors = tmp_path / "vectors.jsonl"
    vectors.write_text('{"id": "a", "vector": {"alpha": 1.5, "beta": 2}}\n{"id": "b", "vector": {"beta": 1}}\n')
    code, out, err = run(capsys, "index", vectors, tmp_path / "idx")
    assert code == 0, err
    with pytest.raises(VocabularyMismatchError, match="different vocabulary"):
        SparseRetriever(tmp_path / "idx", encoder=tiny_encoder)
    code, _, err = run(capsys, "search", tmp_path / "idx", "alpha")
    assert code == 1 and one_line(err) and "without a model" in err


def test_vectors_over_a_model_vocabulary(capsys, tmp_path, tiny_model, tiny_encoder):
    vectors = tmp_path / "vectors.jsonl"
    vectors.write_text('{"id": "a", "vector": {"cell": 1.5, "protein": 2}}\n{"id": "b", "vector": {"virus": 1}}\n')
    code, _, err = run(capsys, "index", vectors, tmp_path / "idx", "--model", tiny_model)
    assert code == 0, err
    hits = SparseRetriever(tmp_path / "idx", encoder=tiny_encoder).search(["protein"], 2)
    assert hits.ids[0, 0] == 0
    vectors.write_text('{"id": "a", "vector": {"notaword": 1.0}}\n')
    code, _, err = run(capsys, "index", vectors, tmp_path / "idx2", "--model", tiny_model)
    assert code == 1 and one_line(err) and "notaword" in err and not (tmp_path / "idx2").exists()


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "lsr.cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("lsr ")


@pytest.fixture(scope="module")
def quantised(built, tiny_model):
    assert main(["-q", "index", str(built / "corpus.jsonl"), str(built / "q8"), "--model", str(tiny_model),
                 "--weights", "uint8", "--block-size", "4"]) == 0
    return built / "q8"


def test_quantised_index_reports_its_storage(quantised, capsys):
    code, out, _ = run(capsys, "info", quantised)
    info = json.loads(out)
    assert info["weights"]["dtype"] == "uint8" and info["weights"]["scale"] > 0 and info["block_size"] == 4
    assert info["size_bytes"] > 0


def test_default_storage_is_uint8_scaled_by_the_encoders_bound(built, tiny_encoder, capsys):
    """--weights auto (the default): the model proves its largest weight, so uint8 at 255 / bound, recorded;
    no document can be clipped. The manifest says where the scale came from."""
    code, out, _ = run(capsys, "info", built / "idx")
    weights = json.loads(out)["weights"]
    assert weights["dtype"] == "uint8" and weights["bound"] == pytest.approx(tiny_encoder.weight_bound())
    assert weights["scale"] == pytest.approx(255 / weights["bound"])


def test_float32_on_request(built, tiny_model, capsys):
    assert main(["-q", "index", str(built / "corpus.jsonl"), str(built / "f32"), "--model", str(tiny_model),
                 "--weights", "float32"]) == 0
    capsys.readouterr()
    code, out, _ = run(capsys, "info", built / "f32")
    assert json.loads(out)["weights"] == {"dtype": "float32", "scale": 1.0}


@pytest.mark.parametrize("options", [["--algorithm", "exhaustive"], ["--algorithm", "blockmax"],
                                     ["--backend", "numpy", "--algorithm", "exhaustive"], ["--search-threads", "1"]])
def test_exact_search_options_agree(quantised, capsys, options):
    _, reference, _ = run(capsys, "search", quantised, "cell protein", "virus", "-k", "5", "--json")
    code, out, err = run(capsys, "search", quantised, "cell protein", "virus", "-k", "5", "--json", *options)
    assert code == 0, err
    assert json.loads(out)["results"] == json.loads(reference)["results"]


def test_approximate_options_and_bad_values(quantised, capsys):
    code, out, _ = run(capsys, "search", quantised, "cell protein", "-k", "5", "--alpha", "0.5", "--query-cut", "2")
    assert code == 0 and out.strip()
    code, out, _ = run(capsys, "search", quantised, "cell protein", "-k", "5", "--query-mass", "0.6")
    assert code == 0 and out.strip()
    for bad, message in ((["--alpha", "0"], "alpha"), (["--query-cut", "0"], "query_cut"),
                         (["--query-mass", "0"], "query_mass"), (["--query-mass", "2"], "query_mass"),
                         (["--backend", "numpy", "--algorithm", "blockmax"], "numpy backend")):
        code, _, err = run(capsys, "search", quantised, "cell", *bad)
        assert code == 1 and one_line(err) and message in err
