"""The encoder commands end to end on a tiny model: `lsr idf`, inference-free and pruned indexes,
`lsr explain`, and their one-line errors."""

from __future__ import annotations

import json

import pytest

from lsr.search import SparseRetriever
from tests.conftest import one_line, write_corpus
from tests.test_cli import run


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("enc-cli") / "corpus.jsonl", 30, seed=3)


def test_idf_then_inference_free_index_search_and_explain(corpus, tiny_model, capsys, tmp_path):
    idf = tmp_path / "idf.json"
    code, out, _ = run(capsys, "idf", corpus, "--model", tiny_model, "--out", idf)
    assert code == 0 and "30 documents" in out
    table = json.loads(idf.read_text())
    assert "cell" in table and "[CLS]" not in table

    code, _, err = run(capsys, "index", corpus, tmp_path / "idx", "--model", tiny_model, "--encoder",
                       "inference-free", "--idf", idf, "--prune", "top_k=40")
    assert code == 0, err
    code, out, _ = run(capsys, "info", tmp_path / "idx")
    encoder = json.loads(out)["encoder"]
    assert encoder["type"] == "inference-free" and encoder["pruning"] == {"type": "top_k", "value": 40}
    index = SparseRetriever(tmp_path / "idx").index
    assert max(index.document_vector(d).nnz for d in range(index.n_docs)) <= 40

    code, out, _ = run(capsys, "search", tmp_path / "idx", "cell protein", "-k", "3", "--json")
    hits = json.loads(out)["results"][0]["hits"]
    assert code == 0 and hits
    top = hits[0]
    code, out, _ = run(capsys, "explain", tmp_path / "idx", "cell protein", top["id"], "--json")
    why = json.loads(out)
    assert code == 0 and why["score"] == pytest.approx(top["score"], rel=1e-6)
    assert sum(t["contribution"] for t in why["terms"]) == pytest.approx(why["score"], rel=1e-5)
    assert {t["term"] for t in why["terms"]} <= {"cell", "protein"}  # the query side is its own tokens only
    code, out, _ = run(capsys, "explain", tmp_path / "idx", "cell protein", top["id"])
    assert code == 0 and "score" in out.splitlines()[0]

    idf.write_text(json.dumps({"cell": 9.0}))  # the weights the index was built with are gone
    code, _, err = run(capsys, "search", tmp_path / "idx", "cell")
    assert code == 1 and one_line(err) and "not the ones this index was built with" in err


@pytest.mark.parametrize("argv, message", [
    (["--prune", "top_k"], "top_k must be a positive integer"),
    (["--prune", "top_k=x"], "--prune takes TYPE=VALUE"),
    (["--prune", "max_ratio=1.5"], "in [0, 1)"),
    (["--encoder", "magic"], "unknown encoder type"),
    (["--encoder", "inference-free"], "lsr idf"),
])
def test_bad_encoder_options_are_one_line(corpus, tiny_model, capsys, tmp_path, argv, message):
    code, _, err = run(capsys, "index", corpus, tmp_path / "idx", "--model", tiny_model, *argv)
    assert code in (1, 2) and one_line(err) and message in err, err
    assert not (tmp_path / "idx").exists()


def test_explain_unknown_document(corpus, tiny_model, capsys, tmp_path):
    assert run(capsys, "index", corpus, tmp_path / "idx", "--model", tiny_model)[0] == 0
    code, _, err = run(capsys, "explain", tmp_path / "idx", "cell", "no-such-doc")
    assert code == 1 and one_line(err) and "no-such-doc" in err


def test_encoder_options_json(corpus, tiny_model, capsys, tmp_path):
    code, _, err = run(capsys, "index", corpus, tmp_path / "a", "--model", tiny_model,
                       "--encoder-options", '{"zero_special_tokens": false}')
    assert code == 0, err
    assert SparseRetriever(tmp_path / "a").index.encoder_config["zero_special_tokens"] is False
    for options, message in (('{"nope": 1}', "has no option 'nope'"), ("[1]", "JSON object"), ("{", "not JSON")):
        code, _, err = run(capsys, "index", corpus, tmp_path / "b", "--model", tiny_model, "--encoder-options", options)
        assert code in (1, 2) and one_line(err) and message in err, err
