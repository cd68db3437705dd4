"""The SPLADE encoder against the formula it implements, and against sentence-transformers."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

from lsr.encoders.splade import SpladeEncoder
from lsr.errors import InvalidInputError, ModelNotFoundError
from tests.conftest import SCIFACT

TEXTS = ["the cell protein", "blood pressure and heart disease risk in humans", "dna", "",
         "music film history " * 30, "unknownword cancer"]


def naive_splade(encoder: SpladeEncoder, texts: list[str]) -> np.ndarray:
    """Textbook SPLADE, one text at a time, no batching or padding tricks."""
    rows = []
    with torch.no_grad():
        for text in texts:
            batch = encoder.tokenizer([text], truncation=True, max_length=encoder.max_length, return_tensors="pt")
            logits = encoder.model(**batch).logits[0]
            rows.append(torch.log1p(torch.relu(logits)).max(dim=0).values.numpy())
    dense = np.stack(rows)
    dense[:, sorted(set(encoder.tokenizer.all_special_ids))] = 0
    return dense


def test_batched_encoding_equals_the_formula(tiny_encoder):
    got = tiny_encoder.encode_documents(TEXTS).validate()
    np.testing.assert_allclose(got.to_scipy().toarray(), naive_splade(tiny_encoder, TEXTS), rtol=1e-5, atol=1e-6)


def test_order_and_batch_size_do_not_change_vectors(tiny_model):
    small = SpladeEncoder(str(tiny_model), max_length=64, batch_size=2, max_tokens_per_batch=16)
    big = SpladeEncoder(str(tiny_model), max_length=64, batch_size=64)
    a = small.encode_documents(TEXTS).to_scipy().toarray()
    b = big.encode_documents(TEXTS).to_scipy().toarray()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    reversed_ = big.encode_documents(TEXTS[::-1]).to_scipy().toarray()
    np.testing.assert_allclose(reversed_[::-1], b, rtol=1e-5, atol=1e-6)


def test_special_tokens_are_zeroed_and_vocabulary_recorded(tiny_encoder):
    batch = tiny_encoder.encode_queries(["the cell"])
    specials = set(tiny_encoder.tokenizer.all_special_ids)
    assert not specials & set(batch.indices.tolist())
    assert tiny_encoder.vocabulary.size == tiny_encoder.dim
    assert tiny_encoder.vocabulary.tokens[5] == tiny_encoder.tokenizer.convert_ids_to_tokens(5)
    assert tiny_encoder.config()["type"] == "splade"


def test_truncation_respects_max_length(tiny_model):
    short = SpladeEncoder(str(tiny_model), max_length=4)
    long_text = "the cell protein gene dna rna virus"
    expected = short.encode_documents(["the cell"]).to_dicts()  # [CLS] the cell [SEP]
    assert short.encode_documents([long_text]).to_dicts() == expected


def test_bad_texts_are_rejected(tiny_encoder):
    with pytest.raises(InvalidInputError, match="single string"):
        tiny_encoder.encode_documents("a string")
    with pytest.raises(InvalidInputError, match="strings"):
        tiny_encoder.encode_documents([1, 2])
    assert tiny_encoder.encode_documents([]).n == 0


def test_unreachable_hub_id_gives_one_line_error():
    """These machines cannot reach the hub: the error comes at once and says how to use a local folder."""
    with pytest.raises(ModelNotFoundError) as info:
        SpladeEncoder("naver/splade-v3-does-not-exist")
    message = str(info.value)
    assert "\n" not in message and "--model /path/to/" in message


def test_folder_without_model_gives_one_line_error(tmp_path):
    with pytest.raises(ModelNotFoundError) as info:
        SpladeEncoder(str(tmp_path))
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_real_splade_tiny_equals_sentence_transformers(splade_tiny):
    """Our vectors equal sentence-transformers' SparseEncoder on the same checkpoint (within 1e-5), except
    the special-token dimensions, which we zero on purpose."""
    from sentence_transformers import SparseEncoder

    with gzip.open(SCIFACT / "corpus.jsonl.gz", "rt") as fh:
        docs = [json.loads(line) for _, line in zip(range(48), fh, strict=False)]
    texts = [f"{d['title']} {d['text']}".strip() for d in docs] + ["what causes cancer", "a"]
    ours = SpladeEncoder(splade_tiny, max_length=256)
    theirs = SparseEncoder(splade_tiny, device="cpu")
    theirs.max_seq_length = 256
    expected = theirs.encode_document(texts, convert_to_tensor=True).to_dense().numpy()
    expected[:, sorted(set(ours.tokenizer.all_special_ids))] = 0
    got = ours.encode_documents(texts).to_scipy().toarray()
    assert got.shape == expected.shape == (len(texts), 30522)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert ((got > 0) == (expected > 0)).all()
