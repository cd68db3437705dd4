"""The batch-of-one route (queries): its C projection kernel against a float64 product, and the encoder's
single-text vectors against its batched ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lsr.encoders import single_text
from lsr.encoders.single_text import PanelProjection
from lsr.encoders.splade import SpladeEncoder

cproject = pytest.importorskip("lsr.encoders._cproject", reason="the optional C extension is not built")


@given(tokens=st.integers(0, 11), hidden=st.integers(1, 40), dim=st.integers(1, 100),
       isa=st.sampled_from(["auto", "plain"]), seed=st.integers(0, 2**16))
@settings(max_examples=200, deadline=None)
def test_panel_kernel_equals_the_float64_product(tokens, hidden, dim, isa, seed):
    """Every token count (full blocks of 4 and the 1-3 left over), odd hidden sizes, vocabularies that end
    inside a panel, both kernels."""
    rng = np.random.default_rng(seed)
    weight = torch.from_numpy(rng.normal(0, 0.5, (dim, hidden)).astype(np.float32))
    bias = torch.from_numpy(rng.normal(0, 1, dim).astype(np.float32))
    x = torch.from_numpy(rng.normal(0, 2, (tokens, hidden)).astype(np.float32))
    panels = PanelProjection(weight, bias, cproject, screen=False)
    panels._run = lambda x, first, last, out: cproject.max_logits(  # the ISA under test
        x, panels.panels[first:last], out[first * 24 : last * 24], len(x), hidden, last - first, isa)
    got = panels.max_logits(x)
    expected = (x.double() @ weight.double().T).amax(0) + bias.double() if tokens else torch.full((dim,), -np.inf)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-4 * max(1, hidden) ** 0.5)


@given(tokens=st.integers(0, 11), hidden=st.integers(1, 40), dim=st.integers(1, 100),
       isa=st.sampled_from(["auto", "plain"]), near=st.sampled_from([0.0, 1e-6, 1e-4, 1e-2]),
       zero_rows=st.booleans(), seed=st.integers(0, 2**16))
@settings(max_examples=300, deadline=None)
def test_int8_screen_keeps_every_positive_logit_exact(tokens, hidden, dim, isa, near, zero_rows, seed):
    """The int8 kernel against a float64 product, and the screen's exactness: the bias is set so that most
    logits land within ``near`` of 0 (the hardest case for a screen), and every logit the float64 product
    finds positive must come out exact, every one it finds negative at <= 0; wide-range rows and zero rows
    too."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 0.5, (dim, hidden)) * np.exp(rng.uniform(-8, 3, (dim, 1)))  # rows of every magnitude
    if zero_rows:
        weight[rng.random(dim) < 0.3] = 0
    weight = torch.from_numpy(weight.astype(np.float32))
    x = torch.from_numpy(rng.normal(0, 2, (tokens, hidden)).astype(np.float32))
    products = (x.double() @ weight.double().T).amax(0) if tokens else torch.zeros(dim, dtype=torch.float64)
    bias = torch.from_numpy((-products.numpy() + rng.uniform(-near, near, dim)).astype(np.float32))
    screened = PanelProjection(weight, bias, cproject)
    expected = (products + bias.double()).numpy() if tokens else np.full(dim, -np.inf)

    estimate = np.empty(screened.n_panels * 24, np.float32)  # the int8 kernel alone, against its own product
    cproject.max_logits_i8(x.numpy(), screened.panels, screened.scale, estimate, tokens, hidden,
                           screened.n_panels, isa)
    if tokens:
        q = screened.panels.transpose(0, 2, 1).reshape(-1, hidden)[:dim].astype(np.float64)
        own = (x.double().numpy() @ q.T).max(0) * screened.scale[:dim]
        np.testing.assert_allclose(estimate[:dim], own, rtol=1e-5, atol=1e-4 * np.abs(own).max() + 1e-30)

    got = screened.max_logits(x)
    scale = 1e-6 * (np.abs(x.double().numpy()).sum() * np.abs(weight.double().numpy()).max() + 1)  # rounding room
    positive, negative = expected > scale, expected < -scale
    np.testing.assert_allclose(got[positive], expected[positive], rtol=1e-5, atol=scale)
    assert (got[negative] <= 0).all()
    assert (got[~positive & ~negative] <= scale).all()


def test_the_int8_kernel_rejects_bad_buffers():
    x, scale, out = np.zeros((2, 8), np.float32), np.ones(24, np.float32), np.zeros(24, np.float32)
    with pytest.raises(ValueError, match="shorter"):
        cproject.max_logits_i8(x, np.zeros((1, 8, 24), np.int8), scale, out, 3, 8, 1, "auto")
    with pytest.raises(ValueError, match="int8"):
        cproject.max_logits_i8(x, np.zeros((1, 8, 24), np.float32), scale, out, 2, 8, 1, "auto")


def test_the_kernel_rejects_short_buffers():
    with pytest.raises(ValueError, match="shorter"):
        cproject.max_logits(np.zeros((2, 8), np.float32), np.zeros((1, 8, 24), np.float32), np.zeros(24, np.float32),
                            3, 8, 1, "auto")
    with pytest.raises(ValueError, match="float32"):
        cproject.max_logits(np.zeros((2, 8)), np.zeros((1, 8, 24), np.float32), np.zeros(24, np.float32), 2, 8, 1,
                            "auto")


TEXTS = ["dna", "", "the cell " * 30, "blood pressure and heart disease", "music " * 200, "a b"]


def _single_vs_batched(encoder: SpladeEncoder) -> None:
    batched = encoder.encode_queries(TEXTS).to_scipy().toarray()
    for text, row in zip(TEXTS, batched, strict=True):
        got = encoder.encode_queries([text]).validate().to_scipy().toarray()[0]
        np.testing.assert_allclose(got, row, rtol=1e-5, atol=1e-6)
        clear = np.abs(row) > 1e-5  # a weight within rounding of 0 may be +0 or tiny in either route
        assert np.array_equal((got > 0)[clear], (row > 0)[clear])


@pytest.mark.parametrize("threads", [1, 2])
def test_one_text_equals_the_batched_route(tiny_model, threads):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        encoder = SpladeEncoder(str(tiny_model), max_length=64)
        _single_vs_batched(encoder)
        assert encoder._single.accelerated and isinstance(encoder._single.body, torch.jit.ScriptModule)
    finally:
        torch.set_num_threads(previous)


def test_without_the_kernel_or_the_tracer_the_batched_pieces_are_used(tiny_model, monkeypatch):
    monkeypatch.setattr(PanelProjection, "load", classmethod(lambda cls, weight, bias: None))
    monkeypatch.setattr(single_text, "_traced_body", lambda model, ids: None)
    encoder = SpladeEncoder(str(tiny_model), max_length=64)
    _single_vs_batched(encoder)
    assert not encoder._single.accelerated


def test_a_kernel_that_disagrees_is_not_used(tiny_model, monkeypatch):
    monkeypatch.setattr(PanelProjection, "max_logits", lambda self, hidden: np.zeros(self.dim, np.float32))
    encoder = SpladeEncoder(str(tiny_model), max_length=64)
    _single_vs_batched(encoder)
    assert not encoder._single.accelerated


def test_special_tokens_kept_when_asked(tiny_model):
    encoder = SpladeEncoder(str(tiny_model), max_length=64, zero_special_tokens=False)
    _single_vs_batched(encoder)


@pytest.mark.slow
def test_real_splade_tiny_queries_one_at_a_time_equal_sentence_transformers(splade_tiny):
    """Real SciFact queries, one per call (the service's case), against sentence-transformers on the same
    checkpoint: within 1e-5 and the same support, special tokens aside (lsr zeroes them)."""
    import gzip
    import json

    from sentence_transformers import SparseEncoder

    from tests.conftest import SCIFACT

    with gzip.open(SCIFACT / "queries.jsonl.gz", "rt") as fh:
        queries = [json.loads(line)["text"] for _, line in zip(range(60), fh, strict=False)]
    ours = SpladeEncoder(splade_tiny, max_length=256)
    theirs = SparseEncoder(splade_tiny, device="cpu")
    expected = theirs.encode_document(queries, convert_to_tensor=True).to_dense().numpy()
    expected[:, sorted(set(ours.tokenizer.all_special_ids))] = 0
    got = np.vstack([ours.encode_queries([q]).to_scipy().toarray() for q in queries])
    assert ours._single.accelerated
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert ((got > 0) == (expected > 0)).all()


def test_threads_sharing_an_encoder_get_the_same_vectors(tiny_model):
    """A server's threads share one encoder: the first queries build the single-text route while others
    encode (batched and single) through the same model, which building must never disturb."""
    from concurrent.futures import ThreadPoolExecutor

    encoder = SpladeEncoder(str(tiny_model), max_length=64)
    expected = encoder.encode_queries(TEXTS).to_scipy().toarray()

    def work(i: int) -> np.ndarray:
        if i % 3 == 0:
            return encoder.encode_queries(TEXTS).to_scipy().toarray()
        return np.vstack([encoder.encode_queries([t]).to_scipy().toarray() for t in TEXTS])

    with ThreadPoolExecutor(6) as pool:
        for got in pool.map(work, range(18)):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert isinstance(encoder.model.get_output_embeddings(), torch.nn.Linear)  # the model was never modified
