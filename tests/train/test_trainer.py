"""`lsr train` end to end on the tiny random model: logs, saved folder, determinism, resume after kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import orjson
import pytest
from safetensors.numpy import load_file

from lsr.cli import main
from lsr.train.data import TrainingExample, read_examples, write_examples
from tests.conftest import one_line, write_corpus


@pytest.fixture()
def train_data(tmp_path):
    """A random corpus and 12 examples whose 'teacher' prefers documents sharing more words with the query."""
    corpus = write_corpus(tmp_path / "corpus.jsonl", 60)
    docs = [orjson.loads(line) for line in corpus.read_bytes().splitlines()]
    rng = np.random.default_rng(0)
    examples = []
    for q in range(12):
        ids = rng.choice(len(docs), 5, replace=False)
        query = " ".join(docs[ids[0]]["text"].split()[:4])
        words = set(query.split())
        scores = {f"doc{i}": float(len(words & set(docs[i]["text"].split()))) for i in ids}
        examples.append(TrainingExample(f"q{q}", query, [f"doc{ids[0]}"], [f"doc{i}" for i in ids[1:]], scores))
    return write_examples(tmp_path / "train.jsonl", examples), corpus


def _train_args(train_file, corpus, out, model, *extra):
    return ["-q", "train", str(train_file), "--corpus", str(corpus), "--out", str(out), "--model", str(model),
            "--batch-size", "4", "--negatives", "3", "--max-length", "32", "--steps", "6",
            "--checkpoint-every", "2", "--lr", "1e-3", "--lambda-warmup", "3", "--doc-lambda", "0.01",
            "--threads", "1", *extra]


def test_train_logs_every_term_and_saves_a_model_every_encoder_loads(tmp_path, tiny_model, train_data):
    from lsr.encoders import InferenceFreeEncoder, SpladeEncoder

    train_file, corpus = train_data
    out = tmp_path / "run"
    assert main(_train_args(train_file, corpus, out, tiny_model)) == 0
    log = [orjson.loads(line) for line in (out / "train_log.jsonl").read_bytes().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    for key in ("kl", "doc_flops_idf", "doc_lambda", "loss", "query_nnz", "doc_nnz", "flops", "lr"):
        assert all(np.isfinite(r[key]) for r in log), key
    assert [r["doc_lambda"] for r in log] == pytest.approx([0.0, 0.01 / 9, 0.04 / 9, 0.01, 0.01, 0.01])
    model = out / "model"
    assert (model / "idf.json").is_file() and (model / "lsr-train.json").is_file()
    before, after = load_file(tiny_model / "model.safetensors"), load_file(model / "model.safetensors")
    assert any(not np.array_equal(before[k], after[k]) for k in before if k in after)
    text = ["the cell protein gene of mice"]
    encoder = InferenceFreeEncoder(model=str(model))
    assert encoder.encode_documents(text).nnz > 0
    assert encoder.encode_queries(text).nnz == 6  # idf.json ships the query weights it was trained with
    ours = SpladeEncoder(str(model)).encode_documents(text)
    assert ours.nnz > 0
    # sentence-transformers loads the folder as a SPLADE model too, with the same vectors (special tokens
    # aside: lsr zeroes them)
    from sentence_transformers import SparseEncoder

    theirs = SparseEncoder(str(model), device="cpu").encode_document(text, convert_to_tensor=True).to_dense()
    theirs[:, sorted(encoder.tokenizer.all_special_ids)] = 0
    np.testing.assert_allclose(ours.to_scipy().toarray(), theirs.numpy(), rtol=1e-5, atol=1e-6)
    # a finished run is not trained again
    assert main(_train_args(train_file, corpus, out, tiny_model)) == 0
    assert len((out / "train_log.jsonl").read_bytes().splitlines()) == 6


def test_plain_flops_trains_against_binary_queries(tmp_path, tiny_model, train_data):
    train_file, corpus = train_data
    out = tmp_path / "plain"
    assert main(_train_args(train_file, corpus, out, tiny_model, "--flops", "plain")) == 0
    weights = set(orjson.loads((out / "model" / "idf.json").read_bytes()).values())
    assert weights == {1.0}
    assert "doc_flops" in orjson.loads((out / "train_log.jsonl").read_bytes().splitlines()[0])


def test_splade_with_infonce_regularises_both_sides(tmp_path, tiny_model, train_data):
    train_file, corpus = train_data
    out = tmp_path / "splade"
    assert main(_train_args(train_file, corpus, out, tiny_model, "--encoder", "splade", "--loss", "infonce")) == 0
    last = orjson.loads((out / "train_log.jsonl").read_bytes().splitlines()[-1])
    assert {"infonce", "doc_flops", "query_l1", "query_lambda"} <= last.keys()
    assert not (out / "model" / "idf.json").exists()


def test_bad_inputs_are_one_line_errors(tmp_path, tiny_model, train_data, capsys):
    train_file, corpus = train_data
    bare = [e for e in read_examples(train_file)]
    for e in bare:
        e.teacher_scores = None
    write_examples(tmp_path / "bare.jsonl", bare)
    assert main(_train_args(tmp_path / "bare.jsonl", corpus, tmp_path / "a", tiny_model)) == 1
    assert "teacher scores" in capsys.readouterr().err
    assert main(_train_args(train_file, corpus, tmp_path / "b", tiny_model, "--negatives", "9")) == 1
    assert "lower --negatives" in capsys.readouterr().err
    (tmp_path / "broken.jsonl").write_text('{"query": "x", "positives": []}\n')
    assert main(_train_args(tmp_path / "broken.jsonl", corpus, tmp_path / "c", tiny_model)) == 1
    err = capsys.readouterr().err
    assert "positives" in err and one_line(err)
    assert main(_train_args(train_file, corpus, tmp_path / "d", tiny_model, "--loss", "flops")) == 1
    assert "loss must be one of" in capsys.readouterr().err
    out = tmp_path / "e"
    assert main(_train_args(train_file, corpus, out, tiny_model, "--steps", "1")) == 0
    assert main(_train_args(train_file, corpus, out, tiny_model, "--steps", "2")) == 1
    assert "other settings" in capsys.readouterr().err


def _cmd(train_file, corpus, out, model):
    return [sys.executable, "-m", "lsr.cli", *_train_args(train_file, corpus, out, model, "--steps", "10")]


def test_resume_after_kill_9_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, tiny_model, train_data):
    train_file, corpus = train_data
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(train_file, corpus, out, tiny_model), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    alive = proc.poll() is None
    if alive:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert alive, "lsr train finished before it could be killed"
    assert not (out / "model").exists()
    subprocess.run(_cmd(train_file, corpus, out, tiny_model), check=True, capture_output=True)
    reference = tmp_path / "reference"
    subprocess.run(_cmd(train_file, corpus, reference, tiny_model), check=True, capture_output=True)
    got, expected = load_file(out / "model" / "model.safetensors"), load_file(reference / "model" / "model.safetensors")
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    log = [orjson.loads(line) for line in (out / "train_log.jsonl").read_bytes().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 11))
    assert log == [orjson.loads(line) for line in (reference / "train_log.jsonl").read_bytes().splitlines()]


def test_calibrated_temperature_fits_the_untrained_student_and_survives_resume(tmp_path, tiny_model, train_data):
    train_file, corpus = train_data
    out = tmp_path / "calibrated"
    args = _train_args(train_file, corpus, out, tiny_model, "--temperature", "0", "--checkpoint-every", "3")
    assert main(args) == 0
    log = [orjson.loads(line) for line in (out / "train_log.jsonl").read_bytes().splitlines()]
    temperatures = {r["temperature"] for r in log}
    assert len(temperatures) == 1
    chosen = temperatures.pop()
    assert np.log2(chosen) * 4 == round(np.log2(chosen) * 4)  # a point of the 2^(k/4) grid
    # the checkpoint carries it, so a resumed run goes on with the temperature it started with
    import torch

    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["temperature"] == chosen


def test_both_forms_of_the_idf_aware_flops_train_the_same_model(tmp_path, tiny_model, train_data):
    train_file, corpus = train_data
    runs = {}
    for form in ("match", "weighted"):
        assert main(_train_args(train_file, corpus, tmp_path / form, tiny_model, "--idf-form", form)) == 0
        runs[form] = load_file(tmp_path / form / "model" / "model.safetensors")
    for key, value in runs["match"].items():
        np.testing.assert_allclose(runs["weighted"][key], value, rtol=1e-4, atol=1e-6, err_msg=key)
