"""Training data: the JSONL format, negatives mined by lsr's retrieval, the ensemble teacher and its cache."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from lsr.cli import main
from lsr.errors import InvalidInputError
from lsr.train.data import read_examples
from lsr.train.teachers import combine_teacher_scores, minmax_per_query, score_with_teacher
from tests.conftest import write_corpus


@pytest.fixture()
def beir_folder(tmp_path, tiny_model):
    """A BEIR folder (random corpus, 8 train queries built from documents' words, graded qrels) and its index."""
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    corpus = write_corpus(folder / "corpus.jsonl", 80, seed=3)
    docs = [orjson.loads(line) for line in corpus.read_bytes().splitlines()]
    queries, qrels = [], ["query-id\tcorpus-id\tscore"]
    for q in range(8):
        queries.append(orjson.dumps({"_id": f"q{q}", "text": " ".join(docs[q]["text"].split()[:5])}))
        qrels += [f"q{q}\tdoc{q}\t2", f"q{q}\tdoc{q + 10}\t1", f"q{q}\tdoc{q + 20}\t0"]
    queries.append(orjson.dumps({"_id": "unjudged", "text": "water"}))
    (folder / "queries.jsonl").write_bytes(b"\n".join(queries) + b"\n")
    (folder / "qrels" / "train.tsv").write_text("\n".join(qrels) + "\n")
    assert main(["-q", "index", str(corpus), str(tmp_path / "index"), "--model", str(tiny_model)]) == 0
    return folder, tmp_path / "index"


def test_train_data_mines_unjudged_negatives_and_writes_ensemble_scores(tmp_path, beir_folder, tiny_model,
                                                                          tiny_dense_model):
    from lsr.encoders import SpladeEncoder

    folder, index = beir_folder
    out = tmp_path / "train.jsonl"
    args = ["-q", "train-data", str(folder), str(index), "--out", str(out), "--negatives", "6", "--depth", "20",
            "--teachers", "dense=0.3,sparse=0.7", "--teacher-scale", "5"]
    # the teachers' models: the tiny ones (the defaults are all-MiniLM-L6-v2 and SPLADE-tiny)
    from lsr.train import teachers

    original = dict(teachers.TEACHERS)
    teachers.TEACHERS.update(dense=str(tiny_dense_model), sparse=str(tiny_model))
    try:
        assert main(args) == 0
    finally:
        teachers.TEACHERS.update(original)
    examples = read_examples(out)
    assert [e.qid for e in examples] == [f"q{q}" for q in range(8)]
    for q, e in enumerate(examples):
        assert e.positives == [f"doc{q}"]  # the highest grade only
        assert len(e.negatives) == 6 and not {f"doc{q}", f"doc{q + 10}", f"doc{q + 20}"} & set(e.negatives)
        assert set(e.teacher_scores) == set(e.candidates())
        values = np.array(list(e.teacher_scores.values()))
        assert values.min() >= 0 and values.max() <= 5 + 1e-9
    # the sparse teacher's raw score is the SPLADE dot product, computed independently here
    cache = [orjson.loads(line) for line in out.with_name("train.jsonl.teachers.jsonl").read_bytes().splitlines()]
    assert sorted((c["teacher"], c["qid"]) for c in cache) == sorted(
        (t, f"q{q}") for t in ("dense", "sparse") for q in range(8))
    sparse = {c["qid"]: c["scores"] for c in cache if c["teacher"] == "sparse"}
    encoder = SpladeEncoder(str(tiny_model))
    first = examples[0]
    docs = [orjson.loads(line) for line in (folder / "corpus.jsonl").read_bytes().splitlines()]
    doc = next(d for d in docs if d["_id"] == first.negatives[0])
    full = f"{doc['title']} {doc['text']}" if doc["title"] else doc["text"]
    q_vec, d_vec = encoder.encode_queries([first.query]).to_scipy(), encoder.encode_documents([full]).to_scipy()
    assert sparse["q0"][first.negatives[0]] == pytest.approx(float((q_vec @ d_vec.T).toarray()[0, 0]), rel=1e-5)


def test_teacher_cache_resumes_after_a_torn_write(tmp_path, tiny_model):
    from lsr.train.data import TrainingExample

    texts = {f"d{i}": f"cell protein gene {'blood ' * i}" for i in range(6)}
    examples = [TrainingExample(f"q{i}", "blood cell", ["d0"], ["d1", "d2", f"d{3 + i % 3}"]) for i in range(5)]
    cache = tmp_path / "cache.jsonl"
    first = score_with_teacher("sparse", examples[:3], texts, cache, model=str(tiny_model), chunk=2)
    cache.write_bytes(cache.read_bytes() + b'{"qid": "q3", "teacher": "spa')  # killed mid-append
    calls = []

    import lsr.train.teachers as teachers

    real = teachers._SCORERS["sparse"]

    def counting(model, texts):  # noqa: ANN001, ANN202
        scorer = real(model, texts)
        original = scorer.__call__

        class Wrapped:
            def __call__(self, queries, doc_ids):  # noqa: ANN001, ANN204
                calls.append(len(queries))
                return original(queries, doc_ids)

        return Wrapped()

    teachers._SCORERS["sparse"] = counting
    try:
        done = score_with_teacher("sparse", examples, texts, cache, model=str(tiny_model), chunk=2)
    finally:
        teachers._SCORERS["sparse"] = real
    assert sum(calls) == 2  # only q3 and q4 were scored again
    assert {q: done[q] for q in first} == first
    assert set(done) == {e.qid for e in examples}


def test_minmax_and_combination():
    assert minmax_per_query({"a": 2.0, "b": 4.0, "c": 3.0}) == {"a": 0.0, "b": 1.0, "c": 0.5}
    assert minmax_per_query({"a": 1.0, "b": 1.0}) == {"a": 0.0, "b": 0.0}
    combined = combine_teacher_scores({"dense": {"a": 0.1, "b": 0.3}, "sparse": {"a": 20.0, "b": 10.0}},
                                      {"dense": 3.0, "sparse": 1.0}, scale=8.0)
    assert combined == pytest.approx({"a": 8 * 0.25, "b": 8 * 0.75})
    with pytest.raises(InvalidInputError):
        combine_teacher_scores({"dense": {"a": 1.0}}, {"dense": 0.0}, 1.0)


@pytest.mark.parametrize("line, message", [
    ('{"positives": ["d1"]}', "'query'"),
    ('{"query": "q", "positives": "d1"}', "list of document ids"),
    ('{"query": "q", "positives": ["d1"], "teacher_scores": {"d1": "high"}}', "teacher_scores"),
])
def test_bad_training_lines_name_the_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query": "fine", "positives": ["d0"]}\n' + line + "\n")
    with pytest.raises(InvalidInputError, match=message) as info:
        read_examples(path)
    assert ":2:" in str(info.value)
