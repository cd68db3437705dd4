"""IDF weights for inference-free query encoding: computing them from a corpus, and reading them back.

One owner for the on-disk forms of an IDF table:

- ``idf.json``: ``{token: weight}``, the layout OpenSearch's inference-free models ship (tokens absent from
  it weigh 0);
- a sentence-transformers ``SparseStaticEmbedding`` module folder (``config.json`` with ``frozen``,
  ``model.safetensors`` holding ``weight`` indexed by token id, the tokenizer files);
- a whole sentence-transformers sparse model folder (``modules.json``) whose query route is such a module,
  as inference-free models are saved with a ``Router``.

``idf = ln(1 + (N - df + 0.5) / (df + 0.5))`` (BM25's IDF, as OpenSearch computes it); special tokens get 0.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from lsr.errors import InvalidInputError, ModelNotFoundError
from lsr.index.format import write_bytes_atomic

__all__ = ["compute_idf", "idf_from_df", "save_idf_json", "load_idf", "weights_sha256", "find_st_module"]

log = logging.getLogger(__name__)

STATIC_EMBEDDING = "SparseStaticEmbedding"


def _without_special_tokens(weights: np.ndarray, tokenizer) -> np.ndarray:  # noqa: ANN001 - HF tokenizer
    """Special tokens ([CLS], [SEP], [UNK]…) weigh 0: they carry no lexical meaning."""
    weights[[i for i in tokenizer.all_special_ids if i < len(weights)]] = 0.0
    return weights


def idf_from_df(df: np.ndarray, n_docs: int) -> np.ndarray:
    """Per-token IDF from document frequencies (float32, one per vocabulary id)."""
    df = df.astype(np.float64)
    return np.log1p((n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)


def compute_idf(texts: Iterable[str], tokenizer, dim: int, batch_size: int = 1024,  # noqa: ANN001 - HF tokenizer
                show_progress: bool = False, total: int | None = None) -> tuple[np.ndarray, int]:
    """(idf over the ``dim`` vocabulary ids, number of documents) from the tokens of ``texts``.

    A document counts once per distinct token in its whole text (no truncation: IDF is a corpus statistic,
    not a property of what the encoder reads). Special tokens get 0.
    """
    df = np.zeros(dim, np.int64)
    n_docs = 0
    batch: list[str] = []

    def flush() -> None:
        for ids in tokenizer(batch, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]:
            df[np.unique(np.asarray(ids, np.int64))] += 1

    with tqdm(total=total, disable=not show_progress, desc="document frequencies", unit="doc") as bar:
        for text in texts:
            batch.append(text)
            if len(batch) == batch_size:
                flush()
                n_docs += len(batch)
                bar.update(len(batch))
                batch = []
        if batch:
            flush()
            n_docs += len(batch)
            bar.update(len(batch))
    if n_docs == 0:
        raise InvalidInputError("cannot compute IDF from an empty corpus.")
    return _without_special_tokens(idf_from_df(df, n_docs), tokenizer), n_docs


def save_idf_json(idf: np.ndarray, tokenizer, path: str | Path) -> Path:  # noqa: ANN001 - HF tokenizer
    """Write ``{token: weight}`` for every positive weight, atomically and durably (the index format's writer)."""
    path = Path(path)
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(idf))))
    table = {tok: round(float(w), 6) for tok, w in zip(tokens, idf, strict=True) if tok is not None and w > 0}
    write_bytes_atomic(path, json.dumps(table, ensure_ascii=False).encode("utf-8"))
    return path


def find_st_module(folder: Path, class_name: str) -> Path | None:
    """The folder of the first module of type ``class_name`` listed in a sentence-transformers
    ``modules.json`` (the query route of a Router is listed before the document route)."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return None
    for module in json.loads(modules_file.read_text()):
        if module.get("type", "").rsplit(".", 1)[-1] == class_name:
            return folder / module.get("path", "")
        # a Router keeps its routes' modules in its own folder, listed in router_config.json
        router = folder / module.get("path", "") / "router_config.json"
        if module.get("type", "").endswith("Router") and router.is_file():
            for name, kind in json.loads(router.read_text()).get("types", {}).items():
                if kind.rsplit(".", 1)[-1] == class_name:
                    return folder / module.get("path", "") / name
    return None


def _idf_file(source: Path) -> Path:
    """The file holding the weights: idf.json, or a SparseStaticEmbedding's model.safetensors."""
    if source.is_file():
        return source
    if (source / "idf.json").is_file():
        return source / "idf.json"
    if (source / "model.safetensors").is_file() and _is_static_embedding(source):
        return source / "model.safetensors"
    module = find_st_module(source, STATIC_EMBEDDING)
    if module is not None:
        return _idf_file(module)
    raise ModelNotFoundError(
        f"no IDF weights in {source}: expected idf.json, a SparseStaticEmbedding folder or a sentence-transformers "
        f"model whose query side is one. Compute them with: lsr idf CORPUS --model MODEL --out {source}/idf.json"
    )


def _is_static_embedding(folder: Path) -> bool:
    config = folder / "config.json"
    try:
        return config.is_file() and set(json.loads(config.read_text())) <= {"frozen", "path"}
    except ValueError:
        return False


def load_idf(source: str | Path, tokenizer, dim: int) -> tuple[np.ndarray, Path]:  # noqa: ANN001
    """(weights over the ``dim`` vocabulary ids, the file they came from). Special tokens weigh 0."""
    path = _idf_file(Path(source))
    weights = np.zeros(dim, np.float32)
    if path.suffix == ".json":
        try:
            table = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise InvalidInputError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(table, dict) or not all(isinstance(w, int | float) for w in table.values()):
            raise InvalidInputError(f"{path} must map tokens to numbers.")
        vocab = tokenizer.get_vocab()
        unknown = [tok for tok in table if tok not in vocab]
        if len(unknown) > len(table) // 2:  # a few foreign tokens are harmless; most means another tokenizer
            raise InvalidInputError(f"{path}: {len(unknown)} of {len(table)} tokens are not in the model's "
                                    f"vocabulary (e.g. {unknown[0]!r}); it was made for another tokenizer.")
        for tok, w in table.items():
            if tok in vocab and vocab[tok] < dim:
                weights[vocab[tok]] = w
    else:
        from safetensors.numpy import load_file

        stored = load_file(str(path)).get("weight")
        if stored is None or stored.ndim != 1 or len(stored) != dim:
            raise InvalidInputError(f"{path}: expected a 'weight' vector of {dim} values (one per vocabulary id).")
        weights[:] = stored
    if not np.all(np.isfinite(weights)) or (weights < 0).any():
        raise InvalidInputError(f"{path}: IDF weights must be finite and non-negative.")
    return _without_special_tokens(weights, tokenizer), path


def weights_sha256(weights: np.ndarray) -> str:
    """Identity of an IDF table: the index records it, so queries are weighted as the index expects."""
    return hashlib.sha256(np.ascontiguousarray(weights, np.float32).tobytes()).hexdigest()


def describe(n_docs: int, idf: np.ndarray) -> str:
    positive = idf[idf > 0]
    return (f"{n_docs} documents, {len(positive)} tokens with weight, "
            f"idf range {positive.min():.3f}–{positive.max():.3f}" if len(positive) else f"{n_docs} documents")

