"""The training path on real data and real models: SciFact's train split, negatives mined by SPLADE-tiny,
an all-MiniLM-L6-v2 + SPLADE-tiny teacher ensemble, and SPLADE-tiny fine-tuned as an inference-free document
encoder (slow: CI runs it)."""

from __future__ import annotations

import gzip
import itertools

import numpy as np
import orjson
import pytest

from lsr.cli import main
from lsr.io.beir import read_qrels
from lsr.train.data import read_examples
from tests.conftest import SCIFACT

pytestmark = pytest.mark.slow
N_QUERIES, N_DOCS = 24, 400


@pytest.fixture(scope="module")
def scifact_subset(tmp_path_factory, splade_tiny):
    """24 SciFact train queries, their relevant abstracts and the first 400 others, indexed with SPLADE-tiny."""
    root = tmp_path_factory.mktemp("train-real")
    folder = root / "beir"
    (folder / "qrels").mkdir(parents=True)
    qrels = dict(itertools.islice(read_qrels(SCIFACT, "train").items(), N_QUERIES))
    relevant = {d for judged in qrels.values() for d in judged}
    with gzip.open(SCIFACT / "corpus.jsonl.gz", "rb") as src:
        lines = [line for number, line in enumerate(src) if number < N_DOCS or orjson.loads(line)["_id"] in relevant]
    (folder / "corpus.jsonl").write_bytes(b"".join(lines))
    with gzip.open(SCIFACT / "queries.jsonl.gz", "rb") as src:
        (folder / "queries.jsonl").write_bytes(b"".join(line for line in src if orjson.loads(line)["_id"] in qrels))
    (folder / "qrels" / "train.tsv").write_text("".join(f"{q}\t{d}\t{r}\n" for q, judged in qrels.items()
                                                       for d, r in judged.items()))
    assert main(["-q", "index", str(folder), str(root / "index"), "--model", splade_tiny]) == 0
    return folder, root / "index"


def test_fine_tuning_fits_the_ensemble_and_saves_an_inference_free_model(tmp_path, scifact_subset, splade_tiny):
    from lsr.encoders import InferenceFreeEncoder

    folder, index = scifact_subset
    train_file = tmp_path / "train.jsonl"
    assert main(["-q", "train-data", str(folder), str(index), "--out", str(train_file), "--negatives", "7",
                 "--teachers", "dense=0.5,sparse=0.5"]) == 0
    examples = read_examples(train_file)
    assert len(examples) == N_QUERIES and all(len(e.negatives) == 7 for e in examples)
    # the ensemble does not simply copy either teacher: for some query the two rank the candidates differently
    cache_file = train_file.with_name("train.jsonl.teachers.jsonl")
    cache = [orjson.loads(line) for line in cache_file.read_bytes().splitlines()]
    by_teacher = {(c["teacher"], c["qid"]): c["scores"] for c in cache}
    assert any(max(by_teacher["dense", e.qid], key=by_teacher["dense", e.qid].get)
               != max(by_teacher["sparse", e.qid], key=by_teacher["sparse", e.qid].get) for e in examples)

    out = tmp_path / "run"
    assert main(["-q", "train", str(train_file), "--corpus", str(folder), "--out", str(out), "--model", splade_tiny,
                 "--steps", "30", "--batch-size", "8", "--negatives", "7", "--lr", "1e-4", "--doc-lambda", "1e-2",
                 "--lambda-warmup", "10", "--checkpoint-every", "10"]) == 0
    log = [orjson.loads(line) for line in (out / "train_log.jsonl").read_bytes().splitlines()]
    first, last = np.mean([r["kl"] for r in log[:3]]), np.mean([r["kl"] for r in log[-3:]])
    assert last < 0.7 * first, (first, last)  # ten passes over the same 24 queries: the student fits them
    assert log[-1]["doc_nnz"] < log[0]["doc_nnz"]  # and the FLOPS pressure sparsifies the documents

    encoder = InferenceFreeEncoder(model=str(out / "model"))
    doc = encoder.encode_documents(["Vitamin D deficiency is associated with an increased risk of fractures."])
    query = encoder.encode_queries(["vitamin D and fractures"])
    assert doc.nnz > 0 and query.nnz > 0
    assert set(query.indices) & set(doc.indices)
