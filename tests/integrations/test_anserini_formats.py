"""lsr.io.anserini: JsonVectorCollection and impact-query files for Anserini/Pyserini (no Java needed)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from lsr.cli import main
from lsr.errors import InvalidInputError
from lsr.index import IndexWriter, open_index
from lsr.io.anserini import (
    export_index_vectors,
    queries_to_batch,
    read_impact_queries,
    write_impact_queries,
    write_vector_collection,
)
from lsr.types import SparseBatch
from tests.conftest import one_line, write_corpus


@pytest.fixture(scope="module")
def tiny_built(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("anserini-formats")
    corpus = write_corpus(root / "corpus.jsonl", 60, seed=5)
    assert main(["-q", "index", str(corpus), str(root / "idx"), "--model", str(tiny_model)]) == 0
    return root


def _stored(index) -> dict[str, dict[str, float]]:  # noqa: ANN001
    out = {}
    tokens = index.vocabulary
    for seg in index.segments:
        batch = seg.vectors(0, seg.info.n_docs)
        deleted = index.deleted_mask(seg)
        for local in range(seg.info.n_docs):
            if deleted is None or not deleted[local]:
                idx, w = batch.row(local)
                out[seg.external_id(local)] = {tokens[t]: float(v)
                                               for t, v in zip(idx.tolist(), w.tolist(), strict=True)}
    return out


def test_export_quantises_like_anserini_and_imports_back(tiny_built, tiny_model, tmp_path):
    index = open_index(tiny_built / "idx")
    stored = _stored(index)
    out = tmp_path / "docs.jsonl"
    assert export_index_vectors(index, out) == len(stored)
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [r["id"] for r in records] == list(stored)
    for r in records:
        assert r["contents"] == ""
        expected = {t: int(np.rint(np.float64(w) * 100)) for t, w in stored[r["id"]].items()}
        assert r["vector"] == {t: v for t, v in expected.items() if v > 0}
        assert all(isinstance(v, int) for v in r["vector"].values())  # Anserini casts to int: give it ints
    # `lsr index vectors.jsonl --model` reads them back over the model's vocabulary, weights as given
    assert main(["-q", "index", str(out), str(tmp_path / "back"), "--model", str(tiny_model)]) == 0
    back = _stored(open_index(tmp_path / "back"))
    assert back == {r["id"]: {t: float(v) for t, v in r["vector"].items()} for r in records}


def test_float_export_is_exact_and_skips_deleted(tiny_built, tmp_path):
    import shutil

    shutil.copytree(tiny_built / "idx", tmp_path / "idx")
    with IndexWriter.open(tmp_path / "idx") as writer:
        assert writer.delete(["doc3", "doc7"]) == 2
        writer.commit()
    index = open_index(tmp_path / "idx")
    out = tmp_path / "float.jsonl"
    export_index_vectors(index, out, scale=None)
    records = {r["id"]: r["vector"] for r in map(orjson.loads, out.read_bytes().splitlines())}
    assert "doc3" not in records and "doc7" not in records and len(records) == index.n_live
    assert records == _stored(index)  # float32 weights survive JSON exactly


def test_query_files_round_trip_in_both_forms(tmp_path):
    tokens = ["a", "##b", "c", "[CLS]"]
    batch = SparseBatch.from_dicts([{0: 1.234, 1: 0.004, 3: 0.5}, {2: 2.0}], 4)
    write_impact_queries(tmp_path / "q.tsv", ["q1", "q2"], batch, tokens)
    lines = (tmp_path / "q.tsv").read_text().splitlines()
    assert lines[1] == "q2\t" + " ".join(["c"] * 200)
    # Pyserini's TokFreqQueryEncoder / Anserini's pretokenized TSV: a token's weight is its count
    assert read_impact_queries(tmp_path / "q.tsv") == {"q1": {"a": 123.0, "[CLS]": 50.0}, "q2": {"c": 200.0}}
    write_impact_queries(tmp_path / "q.jsonl", ["q1", "q2"], batch, tokens, texts=["first", "second"])
    records = [orjson.loads(line) for line in (tmp_path / "q.jsonl").read_bytes().splitlines()]
    assert records[0] == {"id": "q1", "contents": "first", "vector": {"a": 123, "[CLS]": 50}}
    assert read_impact_queries(tmp_path / "q.jsonl") == read_impact_queries(tmp_path / "q.tsv")
    # tokens outside an index's vocabulary cannot match: dropped when mapped
    mapped = queries_to_batch([{"a": 3.0, "zz": 9.0}], {"a": 0, "c": 1}, 2)
    assert mapped.to_dicts() == [{0: 3.0}]


def test_tokens_with_whitespace_and_bad_ids_are_refused(tmp_path):
    batch = SparseBatch.from_dicts([{0: 1.0}], 2)
    with pytest.raises(InvalidInputError, match="whitespace") as exc:
        write_impact_queries(tmp_path / "q.tsv", ["q"], batch, ["two words", "x"])
    assert one_line(str(exc.value))
    with pytest.raises(InvalidInputError, match="tab"):
        write_impact_queries(tmp_path / "q.tsv", ["a\tb"], batch, ["x", "y"])
    (tmp_path / "bad.tsv").write_text("no tab here\n")
    with pytest.raises(InvalidInputError, match="qid"):
        read_impact_queries(tmp_path / "bad.tsv")
    write_vector_collection(tmp_path / "v.jsonl", [("d", {"a": 1})])
    assert orjson.loads((tmp_path / "v.jsonl").read_bytes()) == {"id": "d", "contents": "", "vector": {"a": 1}}


def test_cli_export_vectors_with_queries(tiny_built, tmp_path, capsys):
    queries = tmp_path / "queries.jsonl"
    queries.write_bytes(b'{"_id": "q1", "text": "cancer cells"}\n{"_id": "q2", "text": "river water"}\n')
    code = main(["-q", "export-vectors", str(tiny_built / "idx"), str(tmp_path / "docs.jsonl"),
                 "--queries", str(queries), "--queries-out", str(tmp_path / "q.tsv")])
    out = capsys.readouterr().out
    assert code == 0 and "exported 60 documents" in out and "exported 2 encoded queries" in out
    encoded = read_impact_queries(tmp_path / "q.tsv")
    assert list(encoded) == ["q1", "q2"] and all(encoded.values())
    code = main(["-q", "export-vectors", str(tiny_built / "idx"), str(tmp_path / "d.jsonl"), "--queries",
                 str(queries)])
    err = capsys.readouterr().err
    assert code != 0 and one_line(err) and "--queries-out" in err
