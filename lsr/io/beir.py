"""BEIR folders and JSONL corpora: documents, queries and qrels, read from local files only.

A BEIR folder holds ``corpus.jsonl[.gz]``, ``queries.jsonl[.gz]`` (every split's queries) and
``qrels/<split>.tsv``. A plain JSONL corpus works too: one object per line with an id (``_id``, ``id`` or
``docid``) and a text (``text`` or Pyserini's ``contents``), optionally a ``title``.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from lsr.errors import InvalidInputError

__all__ = [
    "BUNDLED_DATASETS",
    "Document",
    "resolve_dataset",
    "find_corpus_file",
    "open_text",
    "iter_jsonl",
    "iter_corpus",
    "count_lines",
    "read_queries",
    "read_qrels",
    "split_queries",
]

BUNDLED_DATASETS = {"scifact": Path(__file__).resolve().parent.parent / "datasets" / "scifact"}
_ID_KEYS = ("_id", "id", "docid")
_TEXT_KEYS = ("text", "contents")


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str

    @property
    def full_text(self) -> str:
        """BEIR's convention: ``title + " " + text``, or the text alone when there is no title."""
        return f"{self.title} {self.text}" if self.title else self.text


def resolve_dataset(name_or_path: str | os.PathLike[str]) -> Path:
    """A bundled dataset name (``scifact``) or a path to a BEIR folder."""
    spec = os.fspath(name_or_path)
    if spec in BUNDLED_DATASETS and not os.path.exists(spec):
        return BUNDLED_DATASETS[spec]
    path = Path(spec)
    if not path.exists():
        bundled = ", ".join(BUNDLED_DATASETS)
        raise InvalidInputError(f"dataset {spec!r} not found: not a path and not a bundled dataset ({bundled}).")
    return path


def find_corpus_file(path: Path) -> Path:
    """The corpus file of a BEIR folder, or ``path`` itself when it is a file."""
    if path.is_file():
        return path
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):
        if (path / name).is_file():
            return path / name
    raise InvalidInputError(f"{path} holds no corpus.jsonl or corpus.jsonl.gz.")


def open_text(path: Path) -> io.TextIOBase:
    try:
        if path.suffix == ".gz":
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
        return open(path, encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise InvalidInputError(f"expected a file, got the directory {path}") from None


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; a malformed line is a one-line error."""
    try:
        with open_text(path) as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise InvalidInputError(f"{path}:{number}: not valid JSON.") from None
                if not isinstance(obj, dict):
                    raise InvalidInputError(f"{path}:{number}: expected a JSON object.")
                yield number, obj
    except (EOFError, gzip.BadGzipFile, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path} is corrupt or truncated: {exc}.") from None


def _field(obj: dict, keys: tuple[str, ...], what: str, where: str) -> str:
    for key in keys:
        if key in obj:
            value = obj[key]
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str):
                raise InvalidInputError(f"{where}: field {key!r} must be a string.")
            return value
    raise InvalidInputError(f"{where}: no {what} field (expected one of {', '.join(keys)}).")


def iter_corpus(path: Path) -> Iterator[Document]:
    """Documents of a corpus file (or BEIR folder) in file order."""
    corpus = find_corpus_file(path)
    for number, obj in iter_jsonl(corpus):
        where = f"{corpus}:{number}"
        doc_id = _field(obj, _ID_KEYS, "document id", where)
        if not doc_id:
            raise InvalidInputError(f"{where}: empty document id.")
        title = obj.get("title") or ""
        if not isinstance(title, str):
            raise InvalidInputError(f"{where}: field 'title' must be a string.")
        yield Document(doc_id, title.strip(), _field(obj, _TEXT_KEYS, "text", where).strip())


def count_lines(path: Path) -> int:
    with open_text(find_corpus_file(path)) as fh:
        return sum(1 for line in fh if line.strip())


def read_queries(path: Path) -> dict[str, str]:
    """``{query id: text}`` from a BEIR folder's queries file, a JSONL file or a TSV (id<TAB>text)."""
    if path.is_dir():
        candidates = [path / "queries.jsonl", path / "queries.jsonl.gz"]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise InvalidInputError(f"{path} holds no queries.jsonl or queries.jsonl.gz.")
        path = found[0]
    queries: dict[str, str] = {}
    if path.suffix in (".tsv", ".txt"):
        with open_text(path) as fh:
            for number, line in enumerate(fh, 1):
                line = line.rstrip("\r\n")
                if not line:
                    continue
                parts = line.split("\t")
                if len(parts) < 2:
                    raise InvalidInputError(f"{path}:{number}: expected 'query id<TAB>text'.")
                queries[parts[0]] = parts[1]
        return queries
    for number, obj in iter_jsonl(path):
        where = f"{path}:{number}"
        queries[_field(obj, _ID_KEYS, "query id", where)] = _field(obj, ("text", "query", "title"), "text", where)
    return queries


def read_qrels(path: Path, split: str | None = None) -> dict[str, dict[str, int]]:
    """``{query id: {doc id: relevance}}`` from a BEIR qrels TSV (header optional, CRLF tolerated) or a
    TREC qrels file (``qid 0 docid rel``). ``path`` may be a BEIR folder, with ``split`` naming the file."""
    if path.is_dir():
        if split is None:
            raise InvalidInputError(f"{path} is a folder; name the split whose qrels to read.")
        path = path / "qrels" / f"{split}.tsv"
    qrels: dict[str, dict[str, int]] = {}
    with open_text(path) as fh:
        for number, line in enumerate(fh, 1):
            parts = line.rstrip("\r\n").split()
            if not parts:
                continue
            if number == 1 and parts[0] == "query-id":
                continue
            if len(parts) == 3:
                qid, docid, rel = parts
            elif len(parts) == 4:
                qid, _, docid, rel = parts
            else:
                raise InvalidInputError(f"{path}:{number}: expected 'query-id corpus-id score' (or TREC qrels).")
            try:
                qrels.setdefault(qid, {})[docid] = int(rel)
            except ValueError:
                raise InvalidInputError(f"{path}:{number}: relevance {rel!r} is not an integer.") from None
    if not qrels:
        raise InvalidInputError(f"{path} holds no judgements.")
    return qrels


def split_queries(queries: dict[str, str], qrels: dict[str, dict[str, int]]) -> dict[str, str]:
    """The queries of one split: those the split's qrels judge (BEIR keeps every split in one file)."""
    missing = [qid for qid in qrels if qid not in queries]
    if missing:
        raise InvalidInputError(f"{len(missing)} judged queries have no text, e.g. {missing[0]!r}.")
    return {qid: queries[qid] for qid in qrels}
