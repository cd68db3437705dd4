"""The batch-of-one route (queries): its int8 screen of one text against a float64 product and against the
batched screen's bound, its C quantisation against its definition, and the encoder's single-text vectors
against its batched ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lsr.encoders import single_text
from lsr.encoders.bert_body import CBertBody
from lsr.encoders.int8_screen import Int8Screen
from lsr.encoders.single_text import ScreenedProjection
from lsr.encoders.splade import SpladeEncoder

cproject = pytest.importorskip("lsr.encoders._cproject", reason="the optional C extension is not built")


def _near_zero_logits(rng, tokens: int, hidden: int, dim: int, near: float, zero_rows: bool):
    """Rows of every magnitude (some zero) and a bias that puts most logits within ``near`` of 0, the hardest
    case for a screen; returns the float32 (x, weight, bias) and the float64 logits."""
    weight = rng.normal(0, 0.5, (dim, hidden)) * np.exp(rng.uniform(-8, 3, (dim, 1)))
    if zero_rows:
        weight[rng.random(dim) < 0.3] = 0
    weight = weight.astype(np.float32)
    x = rng.normal(0, 2, (tokens, hidden)).astype(np.float32)
    products = (x.astype(np.float64) @ weight.astype(np.float64).T).max(0) if tokens else np.zeros(dim)
    bias = (-products + rng.uniform(-near, near, dim)).astype(np.float32)
    expected = products + bias if tokens else np.full(dim, -np.inf)
    return x, weight, bias, expected


def _bound_reference(screen: Int8Screen, x: np.ndarray) -> np.ndarray:
    """The terms whose bound (lsr/encoders/int8_screen.py's docstring) is positive, restated in numpy float64
    from the screen's term rows: the plain reference of the C kernels select_i8 and quantise_i8."""
    if not len(x):
        return np.zeros(0, np.int64)
    rows = x.astype(np.float64)
    largest = np.abs(rows).max()
    a = largest / 127 if largest > 0 else 1.0
    xq = np.clip(np.rint(rows / a), -127, 127)
    q = screen.panels.transpose(0, 2, 1, 3).reshape(-1, screen.hidden4 * 4)[: screen.dim, : screen.hidden]
    estimate = a * screen.scale * (xq.astype(np.int64) @ q.T.astype(np.int64)).max(0)
    error_q = (a * np.linalg.norm(xq, axis=1)).max()
    coef_n = np.linalg.norm(rows - a * xq, axis=1).max() + screen.gamma * np.linalg.norm(rows, axis=1).max()
    bound = (estimate + screen.bias + error_q * screen.residual_norms + coef_n * screen.weight_norms
             + 1e-9 * (np.abs(estimate) + np.abs(screen.bias)))
    return np.flatnonzero(bound > 0)


@given(tokens=st.integers(0, 11), hidden=st.integers(1, 40), dim=st.integers(1, 100),
       near=st.sampled_from([0.0, 1e-6, 1e-4, 1e-2]), zero_rows=st.booleans(), seed=st.integers(0, 2**16))
@settings(max_examples=300, deadline=None)
def test_one_text_screen_keeps_every_positive_logit_exact(tokens, hidden, dim, near, zero_rows, seed):
    """Every logit the float64 product finds positive comes out (float32-exact), none it finds negative does;
    and the C bound (select_i8, on quantise_i8's statistics) names exactly the terms of its float64
    restatement, alone and through the batched entry point."""
    rng = np.random.default_rng(seed)
    x, weight, bias, expected = _near_zero_logits(rng, tokens, hidden, dim, near, zero_rows)
    screen = Int8Screen(torch.from_numpy(weight), torch.from_numpy(bias))
    projection = ScreenedProjection(screen, torch.from_numpy(weight), torch.from_numpy(bias))
    terms, logits = projection.positive(torch.from_numpy(x))
    logits = logits.numpy()
    scale = 1e-6 * (np.abs(x.astype(np.float64)).sum() * np.abs(weight.astype(np.float64)).max() + 1)  # rounding room
    assert (np.diff(terms) > 0).all() and (logits > 0).all()
    assert set(np.flatnonzero(expected > scale)) <= set(terms.tolist())
    assert not set(np.flatnonzero(expected < -scale)) & set(terms.tolist())
    np.testing.assert_allclose(logits, expected[terms], rtol=1e-5, atol=scale)
    np.testing.assert_array_equal(screen.select(x), _bound_reference(screen, x))
    np.testing.assert_array_equal(screen.candidates(torch.from_numpy(x), [tokens])[0].numpy(),
                                  np.isin(np.arange(dim), _bound_reference(screen, x)))
    keep = rng.random(dim) < 0.5  # only the kept terms (a logit within rounding of 0 may come out either way)
    kept, clear = projection.positive(torch.from_numpy(x), keep)[0], np.abs(expected) > scale
    np.testing.assert_array_equal(kept[clear[kept]], terms[keep[terms] & clear[terms]])
    assert keep[kept].all()


@given(lengths=st.lists(st.integers(0, 6), min_size=1, max_size=4), hidden=st.integers(1, 13),
       zero_text=st.booleans(), seed=st.integers(0, 2**16))
def test_quantisation_equals_its_float64_definition(lengths, hidden, zero_text, seed):
    """quantise_i8 against the float64 definition in numpy: u8 rows (padding dimensions 128), and per text the
    scale, a |xq|, |x - a xq| and |x| maxima; texts without rows and all-zero texts get scale 1 and zeros."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(0, 1, (sum(lengths), hidden)) * np.exp(rng.uniform(-6, 6))).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    if zero_text:
        x[offsets[0] : offsets[1]] = 0
    hidden4 = -(-hidden // 4)
    u8, stats = np.empty((len(x), hidden4 * 4), np.uint8), np.empty((len(lengths), 4))
    cproject.quantise_i8(x, offsets, u8, stats, len(lengths), hidden, hidden4)
    for text, (lo, hi) in enumerate(zip(offsets[:-1], offsets[1:], strict=True)):
        rows = x[lo:hi].astype(np.float64)
        largest = np.abs(rows).max() if hi > lo else 0.0
        a = largest / 127 if largest > 0 else 1.0
        xq = np.clip(np.rint(rows / a), -127, 127)
        norms = [np.linalg.norm(v, axis=1).max() if hi > lo else 0.0 for v in (a * xq, rows - a * xq, rows)]
        np.testing.assert_allclose(stats[text], [a, *norms], rtol=1e-12, atol=0)
        np.testing.assert_array_equal(u8[lo:hi, :hidden], xq + 128)
        assert (u8[lo:hi, hidden:] == 128).all()


def test_the_one_text_kernels_reject_bad_buffers():
    x, offsets = np.zeros((2, 8), np.float32), np.array([0, 3], np.int64)
    with pytest.raises(ValueError, match="shorter"):
        cproject.quantise_i8(x, offsets, np.zeros((3, 8), np.uint8), np.zeros((1, 4)), 1, 8, 2)
    with pytest.raises(ValueError, match="float32"):
        cproject.quantise_i8(x.astype(np.float64), offsets, np.zeros((2, 8), np.uint8), np.zeros((1, 4)), 1, 8, 2)
    maxima, out = np.zeros(10, np.int32), np.zeros(10, np.int64)
    with pytest.raises(ValueError, match="5 x dim"):
        cproject.select_i8(maxima, np.zeros((4, 10)), out, 10, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="int64"):
        cproject.select_i8(maxima, np.zeros((5, 10)), out.astype(np.int32), 10, 1.0, 0.0, 0.0)
    assert cproject.select_i8(maxima, np.zeros((5, 10)), out, 10, 1.0, 0.0, 0.0) == 0  # every bound 0: none


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
        assert encoder._single.accelerated and isinstance(encoder._single.body, CBertBody)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("c_body", ["missing", "disagrees"])
def test_without_the_c_body_the_traced_body_is_used(tiny_model, monkeypatch, c_body):
    if c_body == "missing":
        monkeypatch.setattr(CBertBody, "from_model", classmethod(lambda cls, model: None))
    else:  # a C body whose states are off by more than rounding
        monkeypatch.setattr(CBertBody, "__call__", lambda self, ids: torch.zeros(len(ids), self.sizes[0]))
    encoder = SpladeEncoder(str(tiny_model), max_length=64)
    _single_vs_batched(encoder)
    assert encoder._single.accelerated and not isinstance(encoder._single.body, CBertBody)


def test_without_the_kernel_or_the_tracer_the_batched_pieces_are_used(tiny_model, monkeypatch):
    monkeypatch.setattr(ScreenedProjection, "load", classmethod(lambda cls, weight, bias, projection: None))
    monkeypatch.setattr(CBertBody, "from_model", classmethod(lambda cls, model: None))
    monkeypatch.setattr(single_text, "_traced_body", lambda model, ids: None)
    encoder = SpladeEncoder(str(tiny_model), max_length=64)
    _single_vs_batched(encoder)
    assert not encoder._single.accelerated


def test_a_kernel_that_disagrees_is_not_used(tiny_model, monkeypatch):
    monkeypatch.setattr(ScreenedProjection, "positive",
                        lambda self, hidden, keep=None: (np.zeros(0, np.int64), torch.zeros(0)))
    encoder = SpladeEncoder(str(tiny_model), max_length=64)
    _single_vs_batched(encoder)
    assert not encoder._single.accelerated


def test_a_tokenizer_copy_that_disagrees_is_not_used(tiny_model, monkeypatch):
    """The route calls a copy of the tokenizer's Rust encoder only where it reproduces the Hugging Face call."""
    monkeypatch.setattr(single_text, "_fast_tokenizer", lambda tokenizer, max_length: lambda text: [101, 102])
    encoder = SpladeEncoder(str(tiny_model), max_length=64)
    _single_vs_batched(encoder)
    assert encoder._single.tokenize("a b c") == encoder.tokenizer(["a b c"])["input_ids"][0]


@pytest.mark.parametrize("screen", [False, "bfloat16"])
def test_the_route_screens_on_its_own_where_the_batched_projection_does_not_in_int8(tiny_model, screen):
    """Where the batched projection has no int8 screen (none, or bfloat16 on CPUs with fast bfloat16), the
    single-text route builds its own from the output embeddings, and still equals the batched route."""
    from lsr.encoders.pooling import VocabProjection

    encoder = SpladeEncoder(str(tiny_model), max_length=64)
    decoder = encoder.model.get_output_embeddings()
    encoder._projection = VocabProjection(decoder.weight, decoder.bias, torch.float32, screen=screen)
    _single_vs_batched(encoder)
    assert encoder._single.accelerated and encoder._single.screened.screen is not getattr(encoder._projection,
                                                                                           "int8", None)


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


def test_the_screen_kernel_can_be_capped(monkeypatch):
    """LSR_SCREEN_ISA caps the screen kernel (benchmarks measure an ordinary CPU on a newer one); a value it
    does not know is an error that names the choices."""
    from lsr.encoders.int8_screen import screen_isa

    monkeypatch.setenv("LSR_SCREEN_ISA", "AVX2")
    assert screen_isa() == "avx2"
    assert Int8Screen(torch.ones(9, 8), torch.zeros(9)).isa == "avx2"
    monkeypatch.setenv("LSR_SCREEN_ISA", "avx512")
    with pytest.raises(ValueError, match="auto, avx2, plain"):
        screen_isa()


def test_a_distilbert_model_runs_its_body_in_c(tiny_model, tmp_path):
    """A DistilBERT masked-LM (the other SPLADE family) gets the C body too, and the same vectors."""
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForMaskedLM

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    torch.manual_seed(1)
    model = DistilBertForMaskedLM(DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=2,
                                                   hidden_dim=64, max_position_embeddings=128))
    with torch.no_grad():
        model.vocab_projector.bias.add_(1.0)  # vectors of a realistic density, as the tiny BERT's
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    encoder = SpladeEncoder(str(tmp_path), max_length=64)
    _single_vs_batched(encoder)
    assert encoder._single.accelerated and isinstance(encoder._single.body, CBertBody)
