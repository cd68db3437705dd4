"""The encoders' proven weight bounds (lsr/encoders/weight_bound.py) and the storage they choose
(lsr/index/weight_policy.py): no input exceeds the bound, the bound is nearly reached by a head input, heads
that are not "norm then Linear" get none, and ``auto`` storage follows the bound."""

from __future__ import annotations

import copy
import math

import numpy as np
import orjson
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lsr.encoders.splade import SpladeEncoder, head_input
from lsr.encoders.weight_bound import head_norm_bound, splade_weight_bound
from lsr.index.weight_policy import resolve_storage

from ..conftest import write_corpus


def _head(model):
    """The masked LM's head as a function of the hidden states that reach it (BERT: transform, decoder)."""
    return model.cls.predictions


def _logits_of_hidden(model, hidden: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return _head(model)(hidden)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), spread=st.floats(1e-3, 1e4), shift=st.floats(-1e3, 1e3))
def test_no_hidden_state_exceeds_the_bound(tiny_encoder, seed, spread, shift):
    """Any hidden state, however scaled or shifted, gives logits under the bound (the proof, checked)."""
    model = tiny_encoder.model
    bound = tiny_encoder.weight_bound()
    d = model.config.hidden_size
    hidden = torch.from_numpy(np.random.default_rng(seed).standard_normal((3, 5, d)) * spread + shift).float()
    weights = torch.log1p(torch.relu(_logits_of_hidden(model, hidden)))
    assert float(weights.max()) <= bound


def test_the_bound_is_reached_by_a_real_head_input(tiny_encoder):
    """Tightness: the state that aligns the normalised vector with the best row's direction gets within 1% of
    the bound, so the bound is the head's true maximum, not a loose guess."""
    model = tiny_encoder.model
    head = _head(model)
    ln, decoder = head.transform.LayerNorm, model.get_output_embeddings()
    w, gamma, beta, bias = (t.detach().double() for t in (decoder.weight, ln.weight, ln.bias, decoder.bias))
    a = w * gamma
    rows = math.sqrt(a.shape[1]) * torch.linalg.vector_norm(a, dim=1) + w @ beta + bias
    best = int(torch.argmax(rows))
    direction = a[best] - a[best].mean()  # LayerNorm centres its input: aim inside the centred subspace
    z = (direction / direction.norm() * math.sqrt(a.shape[1])).float()
    # the transform's LayerNorm sees dense(x) then the activation; feed the norm's output directly
    with torch.inference_mode():
        logits = decoder(ln.weight * z + ln.bias)
    reached = math.log1p(max(float(logits[best]), 0.0))
    assert float(rows[best]) > 0
    assert 0.99 * tiny_encoder.weight_bound() <= reached <= tiny_encoder.weight_bound()


def test_encoded_documents_stay_under_the_bound(tiny_encoder, tmp_path):
    path = write_corpus(tmp_path / "corpus.jsonl", 200, seed=3)
    texts = [orjson.loads(line)["text"] for line in path.read_text().splitlines()]
    vectors = tiny_encoder.encode_documents(texts)
    assert vectors.nnz and float(vectors.values.max()) <= tiny_encoder.weight_bound()


def test_a_head_without_a_feeding_norm_has_no_bound(tiny_encoder):
    model = copy.deepcopy(tiny_encoder.model)
    model.cls.predictions.transform.LayerNorm = torch.nn.Identity()
    batch = tiny_encoder.tokenizer(["a b c"], return_tensors="pt")
    assert head_norm_bound(model, dict(batch), head_input) is None


class _OnePlusGammaNorm(torch.nn.Module):
    """A norm that scales by (1 + weight) (as Gemma's does): not gamma * z + beta, so no bound may be claimed."""

    def __init__(self, ln: torch.nn.LayerNorm):
        super().__init__()
        self.weight, self.bias, self.eps = ln.weight, ln.bias, ln.eps

    def forward(self, x):
        z = torch.nn.functional.layer_norm(x, x.shape[-1:], eps=self.eps)
        return z * (1 + self.weight) + self.bias


_OnePlusGammaNorm.__name__ = "OnePlusGammaRMSNorm"  # named like a norm, to get past the name filter


def test_a_norm_that_is_not_gamma_z_plus_beta_has_no_bound(tiny_encoder):
    model = copy.deepcopy(tiny_encoder.model)
    model.cls.predictions.transform.LayerNorm = _OnePlusGammaNorm(model.cls.predictions.transform.LayerNorm)
    batch = tiny_encoder.tokenizer(["a b c", "d"], padding=True, return_tensors="pt")
    assert head_norm_bound(model, dict(batch), head_input) is None


def test_the_real_splade_tiny_bound(splade_tiny):
    """SPLADE-tiny: the bound the docs quote (4.12), above every weight of real texts."""
    encoder = SpladeEncoder(splade_tiny)
    bound = encoder.weight_bound()
    assert 4.0 < bound < 4.2
    vectors = encoder.encode_documents(["Volta invented the electric battery in 1800.", "Hydrochlorothiazide"])
    assert float(vectors.values.max()) <= bound
    assert splade_weight_bound(encoder.model, dict(encoder.tokenizer(["x"], return_tensors="pt")), head_input) \
        == pytest.approx(bound)


class _Bounded:
    def __init__(self, bound):
        self.bound = bound

    def weight_bound(self):
        return self.bound


@pytest.mark.parametrize(("storage", "bound", "expected"), [
    (None, 4.0, {"weight_dtype": "uint8", "scale": 255 / 4.0, "weight_bound": 4.0}),
    ({"weight_dtype": "auto", "block_size": 4}, 2.0,
     {"weight_dtype": "uint8", "scale": 127.5, "weight_bound": 2.0, "block_size": 4}),
    (None, None, {"weight_dtype": "float32"}),
    ({"weight_dtype": "uint16"}, 4.0, {"weight_dtype": "uint16", "scale": 65535 / 4.0, "weight_bound": 4.0}),
    ({"weight_dtype": "uint16"}, None, {"weight_dtype": "uint16"}),  # the writer's largest-weight rule then
    ({"weight_dtype": "uint8", "scale": 100.0}, 4.0, {"weight_dtype": "uint8", "scale": 100.0}),
    ({"weight_dtype": "float32"}, 4.0, {"weight_dtype": "float32"}),
    # a scale given under auto (lsr index --scale 100) is kept, bound or not: integer impacts at that scale
    ({"weight_dtype": "auto", "scale": 100.0}, 4.0, {"weight_dtype": "uint8", "scale": 100.0}),
    ({"scale": 100.0}, None, {"weight_dtype": "uint8", "scale": 100.0}),
])
def test_resolve_storage(storage, bound, expected):
    assert resolve_storage(storage, _Bounded(bound)) == pytest.approx(expected)


def test_no_encoder_or_no_bound_method_means_float32_by_default():
    assert resolve_storage(None, None) == {"weight_dtype": "float32"}
    assert resolve_storage({"weight_dtype": "auto"}, object()) == {"weight_dtype": "float32"}


def test_hybrid_bound_is_the_largest_part_bound():
    from lsr.encoders.hybrid import HybridSparseEncoder

    hybrid = HybridSparseEncoder.__new__(HybridSparseEncoder)
    hybrid.parts = [_Bounded(4.0), _Bounded(8.5)]
    assert hybrid.weight_bound() == 8.5
    hybrid.parts = [_Bounded(4.0), object()]
    assert hybrid.weight_bound() is None
