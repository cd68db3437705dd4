"""PyTerrier transformers over lsr (extra ``lsr-search[pyterrier]``; PyTerrier 1.x, no Java needed).

- :class:`LsrIndexer` — ``pt.Indexer``: a document iterator (``docno`` and ``text``, optionally ``title``;
  or pre-encoded ``toks``) → an lsr index.
- :class:`LsrRetriever` — ``pt.Transformer``: queries frame (``qid``, ``query``; or pre-encoded
  ``query_toks``) → results frame ``qid, query, docno, docid, score, rank``. Composes like any PyTerrier
  retriever: ``retriever % 10``, ``retriever >> reranker``, ``pt.Experiment([retriever], …)``.
- :class:`LsrEncoder` — ``.query_encoder()`` adds ``query_toks``, ``.doc_encoder()`` adds ``toks``
  (``{token: weight}``), the column names of ``pyt_splade`` and ``pyterrier_pisa``, so lsr's encoders feed
  their indexers and theirs feed lsr's: ``encoder.query_encoder() >> retriever`` searches lsr with the
  vectors an encoder in the pipeline made.
- :func:`beir_topics_qrels` — a local BEIR folder (or ``scifact``) as PyTerrier's topics and qrels frames.

Measures are ir_measures objects or strings (``"nDCG@10"``), as everywhere in lsr and PyTerrier 1.x.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lsr.errors import InvalidInputError, MissingDependencyError

try:
    import pandas as pd
    import pyterrier as pt
except ImportError:  # one line for the user, not pandas' or pyterrier's traceback
    raise MissingDependencyError(
        "PyTerrier is not installed; the PyTerrier integration needs pip install 'lsr-search[pyterrier]'.") from None

__all__ = ["LsrIndexer", "LsrRetriever", "LsrEncoder", "beir_topics_qrels"]


def _text(row: Mapping[str, Any], text_field: str) -> str:
    # BEIR's convention, the one lsr's own indexing uses: title + " " + text, or the text alone
    text = row.get(text_field)
    if not isinstance(text, str):
        raise InvalidInputError(f"document {row.get('docno')!r} has no {text_field!r} text.")
    title = row.get("title")
    return f"{title} {text}" if isinstance(title, str) and title else text


def _vectors_to_dicts(batch, tokens: Sequence[str]) -> list[dict[str, float]]:  # noqa: ANN001 - SparseBatch
    out = []
    for i in range(batch.n):
        idx, w = batch.row(i)
        out.append({tokens[t]: float(v) for t, v in zip(idx.tolist(), w.tolist(), strict=True)})
    return out


class LsrIndexer(pt.Indexer):
    """Build an lsr index from PyTerrier documents. Texts are encoded by ``model`` (any ``--model`` spec:
    ``splade-tiny``, a folder); documents that carry ``toks`` are indexed as given, over ``model``'s
    vocabulary (or, with ``model=None``, over the tokens the collection uses: queries must then come as
    ``query_toks``). ``storage`` takes IndexWriter options (``weight_dtype``, ``scale``, ``block_size``)."""

    def __init__(self, index_dir: str | os.PathLike[str], model: str | None = "splade-tiny", *,
                 overwrite: bool = False, text_field: str = "text", batch_size: int = 256,
                 storage: dict[str, Any] | None = None, encoder_options: dict[str, Any] | None = None,
                 show_progress: bool = False):
        self.index_dir = Path(index_dir)
        self.model, self.overwrite, self.text_field = model, overwrite, text_field
        self.batch_size, self.storage, self.show_progress = batch_size, storage or {}, show_progress
        self.encoder_options = encoder_options or {}

    def index(self, iter: Iterable[Mapping[str, Any]]) -> Path:  # noqa: A002 - PyTerrier's signature
        from lsr.index import IndexWriter
        from lsr.index.vocabulary import Vocabulary
        from lsr.index.weight_policy import resolve_storage
        from lsr.types import SparseBatch

        docs = iter.to_dict("records") if isinstance(iter, pd.DataFrame) else iter
        encoder = None
        if self.model is not None:
            from lsr.encoders import load_encoder

            encoder = load_encoder(self.model, **self.encoder_options)
            vocabulary, config = encoder.vocabulary, encoder.config()
        else:  # the collection's own tokens: every document has to be seen before the vocabulary exists
            docs = list(docs)
            tokens = sorted({t for d in docs for t in self._toks(d)})
            if not tokens:
                raise InvalidInputError("no document carries 'toks'; pass a model to encode texts.")
            vocabulary, config = Vocabulary.from_tokens(tokens, source="collection"), None
        storage = resolve_storage(self.storage, encoder)  # weight type "auto" unless given
        token_ids = vocabulary.token_ids()

        def flush(writer: IndexWriter, ids: list[str], texts: list[str], toks: list[dict[int, float]]) -> None:
            if texts:
                writer.add(ids, encoder.encode_documents(texts, show_progress=self.show_progress))
            else:
                writer.add(ids, SparseBatch.from_dicts(toks, vocabulary.size))

        with IndexWriter.create(self.index_dir, vocabulary, config, overwrite=self.overwrite,
                                **storage) as writer:
            ids: list[str] = []
            texts: list[str] = []
            toks: list[dict[int, float]] = []
            for row in docs:
                docno = row.get("docno")
                if not isinstance(docno, str) or not docno:
                    raise InvalidInputError(f"every document needs a non-empty string 'docno', got {docno!r}.")
                given = row.get("toks")
                if given is not None:  # a batch holds either texts or vectors, never both
                    if texts:
                        flush(writer, ids, texts, [])
                        ids, texts = [], []
                    row_ids = {}
                    for tok, w in self._toks(row).items():
                        if tok not in token_ids:
                            raise InvalidInputError(f"document {docno!r}: token {tok!r} is not in the vocabulary.")
                        if w > 0:
                            row_ids[token_ids[tok]] = float(w)
                    toks.append(row_ids)
                else:
                    if encoder is None:
                        raise InvalidInputError(f"document {docno!r} has no 'toks' and the indexer has no model.")
                    if toks:
                        flush(writer, ids, [], toks)
                        ids, toks = [], []
                    texts.append(_text(row, self.text_field))
                ids.append(docno)
                if len(ids) >= self.batch_size:
                    flush(writer, ids, texts, toks)
                    ids, texts, toks = [], [], []
            if ids:
                flush(writer, ids, texts, toks)
            writer.commit()
        return self.index_dir

    @staticmethod
    def _toks(row: Mapping[str, Any]) -> dict[str, float]:
        toks = row.get("toks")
        if toks is None:
            return {}
        if not isinstance(toks, Mapping):
            raise InvalidInputError(f"document {row.get('docno')!r}: 'toks' must map tokens to weights.")
        return dict(toks)


class LsrRetriever(pt.Transformer):
    """Exact top-``k`` retrieval from an lsr index. Queries come as text (``query``, encoded by the encoder the
    index manifest names) or as vectors (``query_toks``: ``{token: weight}``, tokens outside the vocabulary
    ignored). ``search_options`` are :meth:`lsr.search.SparseRetriever.search`'s (``algorithm``, ``alpha``,
    ``query_cut``); ``pipeline`` a :class:`lsr.search.SearchPipeline` config (hybrid, PRF) instead."""

    def __init__(self, index: Any, k: int = 1000, *, backend: str = "auto",
                 pipeline: dict[str, Any] | None = None, **search_options: Any):
        from lsr.index import Index, open_index

        self.k, self.search_options = k, search_options
        self.index = index if isinstance(index, Index) else open_index(index)
        if pipeline is not None:
            from lsr.search import SearchPipeline

            self._searcher = SearchPipeline(self.index, pipeline, backend=backend)
        else:
            from lsr.search import SparseRetriever

            self._searcher = SparseRetriever(self.index, backend=backend)
        self._pipeline = pipeline is not None

    def __repr__(self) -> str:
        return f"LsrRetriever({str(self.index.path)!r}, k={self.k})"

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        from lsr.io.anserini import queries_to_batch

        with pt.validate.any(inp) as v:  # vectors first: a frame with both came through an encoder upstream
            v.query_frame(extra_columns=["query_toks"], mode="vectors")
            v.query_frame(extra_columns=["query"], mode="text")
        query_columns = [c for c in inp.columns if c not in ("docno", "docid", "score", "rank")]
        if len(inp) == 0:
            return pd.DataFrame(columns=[*query_columns, "docno", "docid", "score", "rank"])
        if v.mode == "vectors":
            if self._pipeline:
                raise InvalidInputError("a SearchPipeline retriever takes query texts, not 'query_toks'.")
            queries = queries_to_batch(list(inp["query_toks"]), self.index.token_ids, self.index.dim)
            hits = self._searcher.search(queries, self.k, **self.search_options)
        else:
            texts = [str(q) for q in inp["query"]]
            options = {} if self._pipeline else self.search_options
            hits = self._searcher.search(texts, self.k, **options)
        rows: dict[str, list] = {c: [] for c in query_columns}
        rows.update(docno=[], docid=[], score=[], rank=[])
        records = inp[query_columns].to_dict("records")
        for i, record in enumerate(records):
            ids, scores = hits.row(i)
            docnos = self.index.external_ids(ids)
            for c in query_columns:
                rows[c].extend([record[c]] * len(docnos))
            rows["docno"].extend(docnos)
            rows["docid"].extend(ids.tolist())
            rows["score"].extend(scores.tolist())
            # hits are ordered by score, ties by ascending id: the position is the rank
            rows["rank"].extend(range(pt.model.FIRST_RANK, pt.model.FIRST_RANK + len(docnos)))
        return pd.DataFrame(rows)


class _EncodeColumn(pt.Transformer):
    def __init__(self, encoder: Any, kind: str):
        self.encoder, self.kind = encoder, kind

    def __repr__(self) -> str:
        return f"LsrEncoder.{self.kind}_encoder()"

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        source, target = ("query", "query_toks") if self.kind == "query" else ("text", "toks")
        pt.validate.columns(inp, includes=[source])
        out = inp.copy()
        if len(out) == 0:
            out[target] = pd.Series(dtype=object)
            return out
        if self.kind == "query":
            batch = self.encoder.encode_queries([str(q) for q in out["query"]])
        else:
            batch = self.encoder.encode_documents([_text(r, "text") for r in out.to_dict("records")])
        out[target] = _vectors_to_dicts(batch, self.encoder.vocabulary.tokens)
        return out


class LsrEncoder:
    """An lsr sparse encoder (``model``: any ``--model`` spec, or an encoder object) as PyTerrier
    transformers that add ``{token: weight}`` columns."""

    def __init__(self, model: Any = "splade-tiny", **encoder_options: Any):
        if isinstance(model, str | os.PathLike):
            from lsr.encoders import load_encoder

            model = load_encoder(str(model), **encoder_options)
        self.encoder = model

    @classmethod
    def from_index(cls, index: Any) -> LsrEncoder:
        """The encoder an index's manifest records (what :class:`LsrRetriever` encodes queries with)."""
        from lsr.encoders import load_encoder
        from lsr.index import Index, open_index

        index = index if isinstance(index, Index) else open_index(index)
        if index.encoder_config is None:
            raise InvalidInputError(f"index {index.path} was built from vectors without a model.")
        return cls(load_encoder(index.encoder_config))

    def query_encoder(self) -> pt.Transformer:
        """``query`` → ``query_toks``."""
        return _EncodeColumn(self.encoder, "query")

    def doc_encoder(self) -> pt.Transformer:
        """``text`` (with ``title``, if any) → ``toks``."""
        return _EncodeColumn(self.encoder, "doc")


def beir_topics_qrels(dataset: str | os.PathLike[str], split: str = "test") -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(topics, qrels)`` frames of a local BEIR folder (or a bundled name such as ``scifact``): the judged
    queries of ``split``, as ``lsr eval`` evaluates them."""
    from lsr.io.beir import read_qrels, read_queries, resolve_dataset, split_queries

    folder = resolve_dataset(dataset)
    qrels = read_qrels(folder, split)
    queries = split_queries(read_queries(folder), qrels)
    topics = pd.DataFrame({"qid": list(queries), "query": list(queries.values())})
    qrels_frame = pd.DataFrame([(q, d, int(r)) for q, docs in qrels.items() for d, r in docs.items()],
                               columns=["qid", "docno", "label"])
    return topics, qrels_frame
