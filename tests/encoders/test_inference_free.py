"""Inference-free encoding: IDF from a corpus, its on-disk layouts, the query side against
sentence-transformers' SparseStaticEmbedding, and indexes that refuse the wrong query encoder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsr.encoders import load_encoder
from lsr.encoders.idf import compute_idf, idf_from_df, load_idf, save_idf_json
from lsr.encoders.inference_free import InferenceFreeEncoder
from lsr.encoders.splade import SpladeEncoder
from lsr.errors import InvalidInputError, InvalidQueryError, ModelNotFoundError
from tests.conftest import WORDS

CORPUS = ["the cell protein", "the cell cell dna", "blood pressure in the heart", "the"]


def test_idf_formula():
    got = idf_from_df(np.array([0, 1, 4]), 4)
    expected = [math.log(1 + (4 - df + 0.5) / (df + 0.5)) for df in (0, 1, 4)]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_compute_idf_counts_each_document_once(tiny_encoder):
    tok = tiny_encoder.tokenizer
    idf, n = compute_idf(iter(CORPUS), tok, tiny_encoder.dim, batch_size=3)
    assert n == 4
    vocab = tok.get_vocab()
    assert idf[vocab["cell"]] == pytest.approx(math.log(1 + (4 - 2 + 0.5) / 2.5))  # twice in one doc: df 2
    assert idf[vocab["the"]] == pytest.approx(math.log(1 + 0.5 / 4.5))
    assert idf[vocab["music"]] == pytest.approx(math.log(1 + 4.5 / 0.5))  # unseen: the largest weight
    assert all(idf[i] == 0 for i in tok.all_special_ids)
    with pytest.raises(InvalidInputError, match="empty corpus"):
        compute_idf(iter([]), tok, tiny_encoder.dim)


def test_idf_json_round_trip_and_bad_files(tiny_encoder, tmp_path):
    tok, dim = tiny_encoder.tokenizer, tiny_encoder.dim
    idf, _ = compute_idf(iter(CORPUS), tok, dim)
    path = save_idf_json(idf, tok, tmp_path / "idf.json")
    assert not list(tmp_path.glob(".*"))  # written through a temporary file, renamed into place
    loaded, source = load_idf(tmp_path, tok, dim)  # the folder finds its idf.json
    assert source == path
    np.testing.assert_allclose(loaded, idf, atol=1e-6)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        load_idf(tmp_path / "bad.json", tok, dim)
    (tmp_path / "foreign.json").write_text(json.dumps({"ĠThe": 1.0, "Ġcell": 2.0, "cell": 1.0}))
    with pytest.raises(InvalidInputError, match="another tokenizer"):
        load_idf(tmp_path / "foreign.json", tok, dim)
    (tmp_path / "negative.json").write_text(json.dumps({"cell": -1.0}))
    with pytest.raises(InvalidInputError, match="non-negative"):
        load_idf(tmp_path / "negative.json", tok, dim)
    (tmp_path / "empty-folder").mkdir()
    with pytest.raises(ModelNotFoundError, match="lsr idf"):
        load_idf(tmp_path / "empty-folder", tok, dim)


@pytest.fixture(scope="module")
def idf_file(tiny_encoder, tmp_path_factory) -> Path:
    idf, _ = compute_idf(iter(CORPUS), tiny_encoder.tokenizer, tiny_encoder.dim)
    return save_idf_json(idf, tiny_encoder.tokenizer, tmp_path_factory.mktemp("idf") / "idf.json")


def test_queries_are_token_presence_times_idf(tiny_model, idf_file):
    encoder = InferenceFreeEncoder(str(tiny_model), idf=idf_file, max_length=64)
    idf, _ = load_idf(idf_file, encoder.tokenizer, encoder.dim)
    vocab = encoder.tokenizer.get_vocab()
    got = encoder.encode_queries(["the cell cell protein [CLS]", "zzz", "dna"]).validate().to_dicts()
    assert got[0] == {vocab[t]: pytest.approx(float(idf[vocab[t]])) for t in ("the", "cell", "protein")}
    assert got[1] == {}  # only [UNK]: a special token, weight 0
    assert list(got[2]) == [vocab["dna"]]
    docs = encoder.encode_documents(CORPUS).to_dicts()
    assert docs == SpladeEncoder(str(tiny_model), max_length=64).encode_documents(CORPUS).to_dicts()


def test_config_round_trips_and_pins_the_idf_weights(tiny_model, idf_file, tmp_path):
    encoder = InferenceFreeEncoder(str(tiny_model), idf=idf_file, max_length=64)
    config = encoder.config()
    assert config["type"] == "inference-free" and len(config["idf_sha256"]) == 64
    again = load_encoder(config)
    assert again.config() == config
    other = tmp_path / "idf.json"
    other.write_text(json.dumps({"cell": 1.0}))
    with pytest.raises(InvalidInputError, match="not the ones this index was built with"):
        load_encoder({**config, "idf": str(other)})
    with pytest.raises(ModelNotFoundError, match="lsr idf"):
        InferenceFreeEncoder(str(tiny_model))  # no idf.json in the model folder


def test_an_index_refuses_the_other_query_encoder(tiny_model, idf_file, tmp_path):
    from lsr.index import IndexWriter
    from lsr.search import SparseRetriever

    splade = SpladeEncoder(str(tiny_model), max_length=64)
    free = InferenceFreeEncoder(str(tiny_model), idf=idf_file, max_length=64)
    for name, builder, other in (("s", splade, free), ("f", free, splade)):
        with IndexWriter.create(tmp_path / name, builder.vocabulary, builder.config()) as writer:
            writer.add(["a", "b", "c", "d"], builder.encode_documents(CORPUS))
        assert SparseRetriever(tmp_path / name).search(["cell"], 2).ids.shape == (1, 2)
        SparseRetriever(tmp_path / name, encoder=builder)  # the same kind is accepted
        with pytest.raises(InvalidQueryError, match="expects queries encoded by"):
            SparseRetriever(tmp_path / name, encoder=other)


def test_sentence_transformers_layouts_load_and_agree(tiny_model, idf_file, tmp_path):
    """An inference-free model saved by sentence-transformers (Router: SparseStaticEmbedding for queries,
    MLMTransformer + SpladePooling for documents) loads as a model folder, and encodes as it does."""
    from sentence_transformers.sparse_encoder import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import (
        MLMTransformer,
        Router,
        SparseStaticEmbedding,
        SpladePooling,
    )

    mlm = MLMTransformer(str(tiny_model), max_seq_length=64)
    static = SparseStaticEmbedding.from_json(str(idf_file), tokenizer=mlm.tokenizer, frozen=True)
    router = Router.for_query_document(query_modules=[static], document_modules=[mlm, SpladePooling("max")])
    st_model = SparseEncoder(modules=[router], device="cpu")
    st_model.save(str(tmp_path / "st"))

    ours = InferenceFreeEncoder(str(tmp_path / "st"), max_length=64)
    assert ours.idf_path.parent.name.endswith("SparseStaticEmbedding")
    queries = ["the cell protein", "blood pressure heart risk", "dna rna virus"]
    expected = st_model.encode_query(queries, convert_to_tensor=True).to_dense().numpy()
    np.testing.assert_allclose(ours.encode_queries(queries).to_scipy().toarray(), expected, rtol=1e-6)
    docs = ["the cell protein gene", "blood pressure and heart disease risk in humans " * 3]
    expected = st_model.encode_document(docs, convert_to_tensor=True).to_dense().numpy()
    specials = sorted(set(ours.tokenizer.all_special_ids))  # lsr zeroes these on purpose
    expected[:, specials] = 0
    np.testing.assert_allclose(ours.encode_documents(docs).to_scipy().toarray(), expected, rtol=1e-5, atol=1e-6)
    # the module folder alone works as an IDF source too
    alone = InferenceFreeEncoder(str(tiny_model), idf=tmp_path / "st" / "query_0_SparseStaticEmbedding",
                                 max_length=64)
    np.testing.assert_array_equal(alone.idf, ours.idf)


@settings(max_examples=50)
@given(st.lists(st.lists(st.sampled_from(WORDS + ["[CLS]", "[SEP]", "zzz"]), max_size=20).map(" ".join),
                min_size=1, max_size=5))
def test_query_vectors_equal_a_dictionary_lookup(tiny_model, idf_file, queries):
    """The vectorised query side against the plainest reference: one dict entry per distinct token."""
    encoder = _free_encoder(tiny_model, idf_file)
    table = json.loads(idf_file.read_text())
    vocab = encoder.tokenizer.get_vocab()
    expected = []
    for text in queries:
        tokens = encoder.tokenizer.tokenize(text)
        expected.append({vocab[t]: pytest.approx(table[t], abs=1e-6) for t in tokens if table.get(t, 0) > 0})
    assert encoder.encode_queries(queries).validate().to_dicts() == expected


_ENCODERS: dict = {}


def _free_encoder(tiny_model, idf_file) -> InferenceFreeEncoder:
    key = (str(tiny_model), str(idf_file))  # hypothesis calls the test many times: load the model once
    if key not in _ENCODERS:
        _ENCODERS[key] = InferenceFreeEncoder(str(tiny_model), idf=idf_file, max_length=64)
    return _ENCODERS[key]
