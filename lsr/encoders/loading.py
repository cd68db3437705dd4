"""Loading Hugging Face tokenizers and models from a known name, a folder or a hub id, with one-line errors."""

from __future__ import annotations

import logging
import os
import socket
from urllib.parse import urlparse

from lsr.errors import ModelNotFoundError
from lsr.index.vocabulary import Vocabulary
from lsr.models import KNOWN_MODELS, resolve_model

__all__ = ["load_pretrained", "load_masked_lm", "load_tokenizer", "vocabulary_of"]

log = logging.getLogger(__name__)


def _hub_error(spec: str, why: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"could not load model {spec!r}: it is not a local folder and {why}. Download the model where the "
        f"hub is reachable and pass its folder, e.g. --model /path/to/{spec.rstrip('/').split('/')[-1]}"
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A cheap DNS + TCP probe, so an offline machine fails in milliseconds instead of retrying for a minute."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def load_pretrained(spec: str, model_class: str, gguf_file: str | None = None):  # noqa: ANN201 - (tokenizer, model)
    """``AutoTokenizer`` + ``transformers.<model_class>`` from a known name, a folder or a hub id.

    ``gguf_file`` names a GGUF file inside the folder (or hub repo) to load both from; a known model shipped
    as a GGUF file supplies its own.
    """
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-load "Loading weights" bar is noise in batch jobs
    auto_model = getattr(transformers, model_class)
    path = resolve_model(spec)
    if gguf_file is None and spec in KNOWN_MODELS:
        gguf_file = KNOWN_MODELS[spec].gguf_file
    extra = {"gguf_file": gguf_file} if gguf_file else {}

    def load(**kwargs):  # noqa: ANN202
        kwargs.update(extra)
        return (transformers.AutoTokenizer.from_pretrained(path, **kwargs),
                auto_model.from_pretrained(path, **kwargs))

    if os.path.isdir(path):
        try:
            return load()
        except (OSError, ValueError) as exc:
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelNotFoundError(f"could not load {model_class} from folder {path}: {first_line}") from None
    # a hub id: the local Hugging Face cache first (works offline), then the hub if it can be reached at all
    try:
        return load(local_files_only=True)
    except (OSError, ValueError):
        pass
    if not _hub_reachable():
        raise _hub_error(spec, "the Hugging Face hub cannot be reached from this machine")
    try:
        return load()
    except (OSError, ValueError) as exc:
        raise _hub_error(spec, f"the hub did not provide it ({type(exc).__name__})") from None


def load_tokenizer(spec: str):  # noqa: ANN201 - (tokenizer, output dimension)
    """A model's tokenizer and its vocabulary size (the model's output dimension), without the weights."""
    import transformers

    path = resolve_model(spec)
    local = {} if os.path.isdir(path) else {"local_files_only": True}
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, **local)
        config = transformers.AutoConfig.from_pretrained(path, **local)
    except (OSError, ValueError) as exc:
        raise _hub_error(spec, f"its tokenizer could not be loaded ({type(exc).__name__})") from None
    return tokenizer, int(getattr(config, "vocab_size", None) or len(tokenizer))


def load_masked_lm(spec: str):  # noqa: ANN201 - (tokenizer, model)
    return load_pretrained(spec, "AutoModelForMaskedLM")


def vocabulary_of(tokenizer, dim: int, source: str) -> Vocabulary:  # noqa: ANN001 - a HF tokenizer
    """The token of every output dimension; dimensions beyond the tokenizer's vocabulary get placeholders."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(dim)))
    return Vocabulary.from_tokens(
        (tok if tok is not None else f"<unused:{i}>" for i, tok in enumerate(tokens)),
        source=source,
    )
