"""One text's BERT forward in C (lsr/encoders/_cbert.c) against the model's own forward, on random BERT shapes
and weights, at both SIMD levels; its product of screened terms against float64; its refusals."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lsr.encoders.bert_body import CBertBody, c_max_logits
from lsr.encoders.splade import head_input

cbert = pytest.importorskip("lsr.encoders._cbert", reason="the optional C extension is not built")
LEVELS = ["none", "avx2"] if cbert.set_simd("avx2") == "avx2" else ["none"]


@contextmanager
def simd(level: str):
    cbert.set_simd(level)
    try:
        yield
    finally:
        cbert.set_simd("avx2")


def _random_bert(heads: int, head_dim: int, layers: int, intermediate: int, positions: int, scale: float,
                 seed: int, arch: str = "bert"):
    from transformers import BertConfig, BertForMaskedLM, DistilBertConfig, DistilBertForMaskedLM

    torch.manual_seed(seed)
    if arch == "bert":
        config = BertConfig(vocab_size=97, hidden_size=heads * head_dim, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=intermediate,
                            max_position_embeddings=positions, initializer_range=scale, hidden_act="gelu")
        model = BertForMaskedLM(config).eval()
    else:
        config = DistilBertConfig(vocab_size=97, dim=heads * head_dim, n_layers=layers, n_heads=heads,
                                  hidden_dim=intermediate, max_position_embeddings=positions,
                                  initializer_range=scale, activation="gelu")
        model = DistilBertForMaskedLM(config).eval()
    with torch.no_grad():  # LayerNorms and biases away from their 1 / 0 initialisation, as in a trained model
        for name, param in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                param.add_(torch.randn_like(param) * scale)
    return model


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
@pytest.mark.parametrize("level", LEVELS)
@given(heads=st.integers(1, 3), head_dim=st.sampled_from([1, 5, 8, 16]), layers=st.integers(0, 3),
       intermediate=st.sampled_from([3, 16, 40, 64]), tokens=st.integers(1, 20),
       scale=st.sampled_from([0.02, 0.3, 1.0]), seed=st.integers(0, 2**16))
@settings(max_examples=40, deadline=None)
def test_the_c_forward_equals_the_models_own(arch, level, heads, head_dim, layers, intermediate, tokens, scale,
                                             seed):
    """Random BERT and DistilBERT shapes (hidden sizes with and without the AVX2 kernel's multiple of 16, no
    layers to three), weights at three scales, up to max_position_embeddings tokens: the head input is as close
    to the model's float64 forward as the model's own float32 forward is (within 4x: the sums run in another
    order; erf is A&S 7.1.26, within 1.5e-7, on the AVX2 level)."""
    model = _random_bert(heads, head_dim, layers, intermediate, positions=20, scale=scale, seed=seed, arch=arch)
    body = CBertBody.from_model(model)
    assert body is not None
    ids = np.random.default_rng(seed).integers(0, 97, tokens).tolist()
    with torch.inference_mode():
        tensor = torch.tensor([ids])
        batch = {"input_ids": tensor, "attention_mask": torch.ones_like(tensor)}
        expected = head_input(model, batch)[0]
        exact = head_input(model.double(), batch)[0]
    with simd(level):
        got = body(ids)
    assert got.shape == expected.shape and got.dtype == torch.float32
    # as close to the float64 forward as torch's own float32 forward is, within a factor, plus the erf's error
    # (<= 1.5e-7 absolute, carried through the layers in proportion to the states' size)
    torch_error = (expected.double() - exact).abs().max().item()
    erf_room = 1e-5 * (1 + exact.abs().max().item())
    torch.testing.assert_close(got.double(), exact, rtol=0, atol=4 * torch_error + erf_room)


@pytest.mark.slow
@pytest.mark.parametrize("level", LEVELS)
def test_the_c_forward_equals_splade_tiny_on_real_queries(splade_tiny, level):
    from lsr.encoders import load_encoder

    encoder = load_encoder(splade_tiny)
    body = CBertBody.from_model(encoder.model)
    texts = ["Albedo", "0-dimensional biomaterials show inductive properties.", "what is the capital of " * 30]
    with torch.inference_mode():
        for text in texts:
            ids = encoder.tokenizer([text], truncation=True, max_length=256)["input_ids"][0]
            tensor = torch.tensor([ids])
            expected = head_input(encoder.model, {"input_ids": tensor, "attention_mask": torch.ones_like(tensor)})[0]
            with simd(level):
                got = body(ids)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("level", LEVELS)
@given(rows=st.integers(0, 9), hidden=st.integers(1, 40), terms=st.integers(0, 40), seed=st.integers(0, 2**16))
@settings(max_examples=100, deadline=None)
def test_max_logits_equal_float64(level, rows, hidden, terms, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 2, (rows, hidden)).astype(np.float32)
    weight = rng.normal(0, 1, (50, hidden)).astype(np.float32)
    bias = rng.normal(0, 1, 50).astype(np.float32)
    chosen = rng.integers(0, 50, terms)
    with simd(level):
        got = c_max_logits(x, weight, bias, chosen)
    expected = ((x.astype(np.float64) @ weight[chosen].T.astype(np.float64)).max(0) if rows
                else np.full(terms, -np.inf)) + bias[chosen]
    scale = 1 + (np.abs(x).sum(1).max() * np.abs(weight).max() if rows else 0)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * scale)


def test_bad_input_is_refused():
    model = _random_bert(2, 8, 1, 32, positions=6, scale=0.02, seed=0)
    body = CBertBody.from_model(model)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        body([1, 97])
    with pytest.raises(ValueError, match="tokens, the model holds 1 to 6"):
        body(list(range(7)))
    with pytest.raises(ValueError, match="tokens, the model holds"):
        body([])
    with pytest.raises(ValueError, match="parameters"):
        cbert.bert_forward(np.zeros(2, np.int64), body.words, body.params[:-1], np.empty((2, 16), np.float32),
                           *body.sizes, body.eps)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        c_max_logits(np.zeros((1, 16), np.float32), body.words, np.zeros(97, np.float32), np.array([97]))
    with pytest.raises(ValueError, match="not one of"):
        cbert.set_simd("avx512")


@pytest.mark.parametrize("change, reason", [
    ({"hidden_act": "relu"}, "activation"),
    ({"position_embedding_type": "relative_key"}, "position embeddings"),
    ({"is_decoder": True}, "decoder"),
])
def test_other_architectures_are_left_to_torch(change, reason, caplog):
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=8, **change)
    with caplog.at_level("INFO", logger="lsr.encoders.bert_body"):
        assert CBertBody.from_model(BertForMaskedLM(config).eval()) is None
    assert reason in caplog.text
    assert CBertBody.from_model(torch.nn.Linear(2, 2)) is None


def test_other_distilbert_variants_and_mixed_eps_are_left_to_torch(caplog):
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    relu = DistilBertForMaskedLM(DistilBertConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, hidden_dim=32,
                                                  max_position_embeddings=8, activation="relu")).eval()
    model = _random_bert(2, 8, 1, 32, positions=8, scale=0.02, seed=0)
    model.cls.predictions.transform.LayerNorm.eps = 1e-5  # one LayerNorm unlike the others
    with caplog.at_level("INFO", logger="lsr.encoders.bert_body"):
        assert CBertBody.from_model(relu) is None
        assert CBertBody.from_model(model) is None
    assert "not erf GELU" in caplog.text and "different eps" in caplog.text
