"""The SPLADE encoder against the formula it implements, and against sentence-transformers."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lsr.encoders.loading import load_masked_lm
from lsr.encoders.pooling import VocabProjection, activate, projected_max, projected_splade
from lsr.encoders.splade import SpladeEncoder
from lsr.errors import InvalidInputError, ModelNotFoundError
from tests.conftest import SCIFACT, WORDS

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


# ------------------------------------------------------------------ the fused projection (no logits tensor)
def reference_splade(model, tokenizer, texts: list[str], max_length: int = 64) -> torch.Tensor:
    """Straightforward SPLADE on one padded batch: full logits -> mask -> log1p(relu) -> max over tokens."""
    with torch.inference_mode():
        batch = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        weights = torch.log1p(torch.relu(model(**batch).logits))
        weights = weights * batch["attention_mask"].unsqueeze(-1)
        weights = weights.amax(dim=1)
        weights[:, sorted(set(tokenizer.all_special_ids))] = 0
    return weights


def dense(batch) -> np.ndarray:
    return batch.to_scipy().toarray()


UNEVEN = ["dna", "the cell " * 30, "", "blood pressure and heart disease", "music " * 60, "a b", "risk"]


def test_fused_projection_is_used_and_equals_the_reference(tiny_model):
    encoder = SpladeEncoder(str(tiny_model), max_length=64, batch_size=3)
    assert encoder._projection is not None  # a BERT head: the fused route, not the fallback
    expected = reference_splade(encoder.model, encoder.tokenizer, UNEVEN).numpy()
    np.testing.assert_allclose(dense(encoder.encode_documents(UNEVEN)), expected, rtol=1e-5, atol=1e-6)


def test_route_names_what_the_encoder_does(tiny_model, monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # an ordinary CPU, whatever this one has
    encoder = SpladeEncoder(str(tiny_model), max_length=64)
    assert encoder._projection.screen == "int8" and encoder.route.startswith("fused float32 + exact int8 screen")
    from lsr.encoders import _cproject

    kernel = "AVX-512 VNNI" if _cproject.has_vnni() else "AVX2" if _cproject.has_avx2() else "plain C"
    assert f"screen, {kernel} (" in encoder.route
    monkeypatch.setenv("LSR_SCREEN_ISA", "plain")  # the cap is named too
    assert ", plain C (" in SpladeEncoder(str(tiny_model), max_length=64).route
    encoder._projection = VocabProjection(encoder.model.get_output_embeddings().weight, None, screen=False)
    assert encoder.route.startswith("fused float32 (no exact screen")
    encoder._projection = None
    assert encoder.route.startswith("full logits")
    assert SpladeEncoder(str(tiny_model), max_length=64, dtype="bfloat16").route.startswith("bfloat16")


@pytest.mark.parametrize(("cap", "allows"), [("", True), ("ALL", True), ("avx512_core_bf16", True),
                                             ("AVX512_CORE_AMX", True), ("AVX2", False), ("AVX512_CORE", False),
                                             ("avx2_vnni", False), ("SSE41", False)])
def test_the_onednn_isa_cap_switches_the_bfloat16_screen_off(cap, allows, monkeypatch):
    from lsr.encoders import pooling

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)  # as on an AMX CPU
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert pooling.fast_bfloat16(torch.device("cpu")) is allows


def test_fused_and_full_logits_routes_agree(tiny_model):
    fused = SpladeEncoder(str(tiny_model), max_length=64, batch_size=4, max_tokens_per_batch=40)
    full = SpladeEncoder(str(tiny_model), max_length=64, batch_size=4, max_tokens_per_batch=40)
    full._projection = None  # the full-logits route (unknown architectures)
    np.testing.assert_allclose(dense(fused.encode_documents(UNEVEN)), dense(full.encode_documents(UNEVEN)),
                               rtol=1e-5, atol=1e-6)


@given(lengths=st.lists(st.integers(0, 40), min_size=1, max_size=8), tile_rows=st.integers(1, 64),
       chunk=st.integers(1, 70), seed=st.integers(0, 2**16), dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_projected_max_equals_the_full_product(lengths, tile_rows, chunk, seed, dtype):
    """Any split of texts over tiles (long texts over several) and of the vocabulary over chunks: the max of
    the product over each text's rows, bias included, as from the full logits in the same precision."""
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(sum(lengths), 8, generator=generator)
    weight, bias = torch.randn(50, 8, generator=generator), torch.randn(50, generator=generator)
    got = activate(projected_max(hidden, lengths, VocabProjection(weight, bias, dtype, chunk), tile_rows))
    logits = torch.addmm(bias.to(dtype), hidden.to(dtype), weight.T.to(dtype)).float()
    expected = torch.stack([activate(part.amax(0)) if len(part) else torch.zeros(50)
                            for part in torch.split(logits, lengths)])
    # bfloat16: a kernel chosen for another row count may round a product by one unit (2^-8) differently
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance)


@given(lengths=st.lists(st.integers(0, 40), min_size=1, max_size=8), hidden_size=st.sampled_from([8, 64]),
       shift=st.floats(-3, 3), seed=st.integers(0, 2**16))
def test_the_bfloat16_screen_changes_no_weight(lengths, hidden_size, shift, seed):
    """The screened float32 route gives the plain float32 weights: same support, same values (to the float32
    rounding of a product computed in another order), whatever the share of terms near zero (``shift``)."""
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(sum(lengths), hidden_size, generator=generator) * 3
    weight = torch.randn(300, hidden_size, generator=generator) / hidden_size**0.5
    bias = torch.randn(300, generator=generator) + shift
    plain = projected_splade(hidden, lengths, VocabProjection(weight, bias, screen=False))
    screened = VocabProjection(weight, bias, screen=True, chunk=128)
    got = projected_splade(hidden, lengths, screened, tile_rows=16)
    torch.testing.assert_close(got, plain, rtol=1e-5, atol=1e-5)
    clear = plain.abs() > 1e-5  # a weight within rounding of 0 may be +0 or tiny in either route
    assert torch.equal((got > 0)[clear], (plain > 0)[clear])


@given(lengths=st.lists(st.integers(0, 40), min_size=1, max_size=8), hidden_size=st.sampled_from([5, 8, 64]),
       shift=st.floats(-3, 3), spread=st.floats(0, 6), seed=st.integers(0, 2**16))
def test_the_int8_screen_changes_no_weight(lengths, hidden_size, shift, spread, seed):
    """As the bfloat16 screen: the int8-screened route gives the plain float32 weights, with hidden sizes that
    are not a multiple of 4 (padding), texts without tokens, rows and token states of very different
    magnitudes (``spread``) and any share of terms near zero (``shift``)."""
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(sum(lengths), hidden_size, generator=generator) * 3
    hidden *= torch.exp(torch.rand(len(hidden), 1, generator=generator) * spread - spread / 2)
    weight = torch.randn(300, hidden_size, generator=generator) / hidden_size**0.5
    weight *= torch.exp(torch.rand(300, 1, generator=generator) * spread - spread / 2)
    weight[::37] = 0  # zero rows
    bias = torch.randn(300, generator=generator) + shift
    plain = projected_splade(hidden, lengths, VocabProjection(weight, bias, screen=False))
    screened = VocabProjection(weight, bias, screen="int8")
    got = projected_splade(hidden, lengths, screened)
    torch.testing.assert_close(got, plain, rtol=1e-5, atol=1e-5)
    clear = plain.abs() > 1e-5
    assert torch.equal((got > 0)[clear], (plain > 0)[clear])


@given(lengths=st.lists(st.integers(0, 19), min_size=1, max_size=5), hidden4=st.integers(1, 6),
       n_terms=st.integers(1, 40), isa=st.sampled_from(["auto", "avx2", "plain"]), seed=st.integers(0, 2**16))
def test_the_int8_screen_kernel_equals_the_integer_product(lengths, hidden4, n_terms, isa, seed):
    """screen_i8 against numpy's int64 product at each kernel ("auto" is AVX-512 VNNI where the CPU has it):
    every row count (AVX2 blocks of 4 and the 1-3 left, VNNI blocks of 8 and the 1-7 left), odd and even panel
    ranges (VNNI pairs panels), extreme bytes, a panel range that leaves the other columns untouched."""
    cproject = pytest.importorskip("lsr.encoders._cproject")
    rng = np.random.default_rng(seed)
    x = rng.choice(np.array([0, 1, 127, 128, 254, 255], np.uint8), (sum(lengths), hidden4 * 4))
    q = rng.integers(-63, 64, (n_terms, hidden4 * 4)).astype(np.int8)
    n_panels = -(-n_terms // 8)
    padded = np.zeros((n_panels * 8, hidden4 * 4), np.int8)
    padded[:n_terms] = q
    panels = np.ascontiguousarray(padded.reshape(n_panels, 8, hidden4, 4).transpose(0, 2, 1, 3))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    first = rng.integers(0, n_panels)
    out = np.full((len(lengths), n_panels * 8), 7, np.int32)
    cproject.screen_i8(x, offsets, panels, out, len(lengths), hidden4, n_panels, int(first), n_panels, isa)
    products = x.astype(np.int64) @ padded.T.astype(np.int64)
    for text, (a, b) in enumerate(zip(offsets[:-1], offsets[1:], strict=True)):
        expected = products[a:b].max(0) if b > a else np.full(n_panels * 8, np.iinfo(np.int32).min)
        np.testing.assert_array_equal(out[text, first * 8 :], expected[first * 8 :])
        assert (out[text, : first * 8] == 7).all()
    with pytest.raises(ValueError, match="shorter"):
        cproject.screen_i8(x, offsets[:-1], panels, out, len(lengths), hidden4, n_panels, 0, n_panels, isa)


@given(texts=st.lists(st.lists(st.sampled_from(WORDS), max_size=70).map(" ".join), min_size=1, max_size=6),
       batch_size=st.integers(1, 6), budget=st.sampled_from([8, 64, 4096]))
@settings(max_examples=25)
def test_batching_and_padding_do_not_change_vectors(tiny_encoder, texts, batch_size, budget):
    tiny_encoder.batch_size, tiny_encoder.max_tokens_per_batch = batch_size, budget
    try:
        got = dense(tiny_encoder.encode_documents(texts))
    finally:
        tiny_encoder.batch_size, tiny_encoder.max_tokens_per_batch = 32, 4096
    expected = reference_splade(tiny_encoder.model, tiny_encoder.tokenizer, texts).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def _save_tiny(kind: str, tokenizer_folder, folder):
    """A tiny random masked LM of another family, with the tiny BERT's tokenizer."""
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForMaskedLM, RobertaConfig, RobertaForMaskedLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    torch.manual_seed(1)
    if kind == "distilbert":
        model = DistilBertForMaskedLM(DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=1, n_heads=2,
                                                       hidden_dim=64, max_position_embeddings=128))
    else:
        model = RobertaForMaskedLM(RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                                 num_attention_heads=2, intermediate_size=64,
                                                 max_position_embeddings=130, pad_token_id=tokenizer.pad_token_id))
    with torch.no_grad():
        model.get_output_embeddings().bias.add_(1.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind", ["distilbert", "roberta"])
def test_fused_projection_works_for_other_mlm_heads(tiny_model, tmp_path, kind):
    encoder = SpladeEncoder(str(_save_tiny(kind, tiny_model, tmp_path / kind)), max_length=64, batch_size=2)
    assert encoder._projection is not None
    expected = reference_splade(encoder.model, encoder.tokenizer, UNEVEN).numpy()
    np.testing.assert_allclose(dense(encoder.encode_documents(UNEVEN)), expected, rtol=1e-5, atol=1e-6)


def test_a_head_that_does_more_falls_back_to_the_full_logits(tiny_model, monkeypatch):
    """A model whose logits are not just its output Linear (here: rescaled after it) is detected at load time
    and encoded through its real logits."""
    from lsr.encoders import splade

    def load(spec):
        tokenizer, model = load_masked_lm(spec)
        model.register_forward_hook(lambda module, args, output: output.__class__(logits=2 * output.logits - 1))
        return tokenizer, model

    monkeypatch.setattr(splade, "load_masked_lm", load)
    encoder = SpladeEncoder(str(tiny_model), max_length=64)
    assert encoder._projection is None
    expected = reference_splade(encoder.model, encoder.tokenizer, UNEVEN).numpy()
    np.testing.assert_allclose(dense(encoder.encode_documents(UNEVEN)), expected, rtol=1e-5, atol=1e-6)


def test_bfloat16_is_close_and_recorded(tiny_model, tiny_encoder):
    bf16 = SpladeEncoder(str(tiny_model), max_length=64, dtype="bfloat16")
    assert bf16.config()["dtype"] == "bfloat16" and "dtype" not in tiny_encoder.config()
    got, expected = dense(bf16.encode_documents(UNEVEN)), dense(tiny_encoder.encode_documents(UNEVEN))
    nonempty = expected.any(axis=1)
    cosine = (got * expected).sum(1)[nonempty] / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))[
        nonempty]
    assert cosine.min() > 0.999
    with pytest.raises(InvalidInputError, match="dtype"):
        SpladeEncoder(str(tiny_model), dtype="float16")


def test_int8_is_close_recorded_and_opt_in(tiny_model, tiny_encoder):
    int8 = SpladeEncoder(str(tiny_model), max_length=64, dtype="int8")
    assert int8.config()["dtype"] == "int8" and int8.route.startswith("int8")
    assert tiny_encoder.route.startswith("fused float32")  # never the default
    got, expected = dense(int8.encode_documents(UNEVEN)), dense(tiny_encoder.encode_documents(UNEVEN))
    nonempty = expected.any(axis=1)
    cosine = (got * expected).sum(1)[nonempty] / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))[
        nonempty]
    assert cosine.min() > 0.98
    assert isinstance(tiny_encoder.model.get_output_embeddings(), torch.nn.Linear)  # float32 model untouched
    # one text: the int8 code too, not the float32 route; activations are quantised per product (their own
    # scale), so a vector depends a little on the texts batched with it
    one = dense(int8.encode_queries([UNEVEN[3]]))[0]
    assert one @ got[3] / (np.linalg.norm(one) * np.linalg.norm(got[3])) > 0.99
    assert one @ expected[3] / (np.linalg.norm(one) * np.linalg.norm(expected[3])) > 0.98


@given(lengths=st.lists(st.integers(0, 30), min_size=1, max_size=6), seed=st.integers(0, 2**16))
@settings(max_examples=20)
def test_int8_projection_is_close_to_the_float32_product(lengths, seed):
    gen = torch.Generator().manual_seed(seed)
    weight, bias = torch.randn(300, 32, generator=gen) * 0.1, torch.randn(300, generator=gen)
    hidden = torch.randn(sum(lengths), 32, generator=gen)
    plain = projected_max(hidden, lengths, VocabProjection(weight, bias, screen=False))
    int8 = projected_max(hidden, lengths, VocabProjection(weight, bias, torch.qint8, chunk=128), tile_rows=16)
    finite = torch.isfinite(plain)
    assert torch.equal(finite, torch.isfinite(int8)) or not finite.any()
    if not finite.any():
        return
    # the rounding of both factors bounds the error (a fixed 0.05 was exceeded by a random example): activations
    # on an 8-bit grid over at most their whole range (0 included), weights on a symmetric 8-bit grid at most
    # as wide as the whole matrix's, each off by half a step, plus the product of the two errors
    x_step = (hidden.max().clamp(min=0) - hidden.min().clamp(max=0)).item() / 255
    w_step = weight.abs().max().item() / 127
    bound = (0.5 * x_step * weight.abs().sum(1).max().item() + 0.5 * w_step * hidden.abs().sum(1).max().item()
             + 0.25 * x_step * w_step * weight.shape[1])
    torch.testing.assert_close(int8[finite], plain[finite], rtol=0, atol=1.01 * bound + 1e-5)


@pytest.mark.slow
def test_real_splade_tiny_fused_equals_full_logits(splade_tiny):
    """On the real checkpoint: the fused route equals the full-logits route on SciFact passages of very
    different lengths and short queries; bfloat16 (model and projection) stays within a cosine of 0.999."""
    with gzip.open(SCIFACT / "corpus.jsonl.gz", "rt") as fh:
        docs = [json.loads(line) for _, line in zip(range(40), fh, strict=False)]
    texts = [f"{d['title']} {d['text']}".strip() for d in docs] + ["what causes cancer", "a", ""]
    fused = SpladeEncoder(splade_tiny, max_length=256, batch_size=7)
    full = SpladeEncoder(splade_tiny, max_length=256, batch_size=32)
    full._projection = None
    got, expected = dense(fused.encode_documents(texts)), dense(full.encode_documents(texts))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert ((got > 0) == (expected > 0)).all()
    low = dense(SpladeEncoder(splade_tiny, max_length=256, dtype="bfloat16").encode_documents(texts[:-1]))
    cosine = (low * got[:-1]).sum(1) / (np.linalg.norm(low, axis=1) * np.linalg.norm(got[:-1], axis=1))
    assert cosine.min() > 0.999
