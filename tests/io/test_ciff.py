"""CIFF interchange: index -> CIFF -> index keeps every posting and every ranking; bad files fail in one
line and leave nothing behind."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("ciff_toolkit", reason="CIFF needs the optional extra: pip install 'lsr-search[ciff]'")

from ciff_toolkit.ciff_pb2 import DocRecord, Header, Posting, PostingsList  # noqa: E402
from ciff_toolkit.write import CiffWriter  # noqa: E402

from lsr.cli import main  # noqa: E402
from lsr.errors import InvalidInputError  # noqa: E402
from lsr.index import IndexWriter, Searcher, Vocabulary, open_index  # noqa: E402
from lsr.io.ciff import export_ciff, import_ciff  # noqa: E402
from lsr.kernels import quantize  # noqa: E402
from lsr.types import SparseBatch  # noqa: E402
from tests.conftest import one_line  # noqa: E402


def postings_of(path, ints=None) -> dict[str, list[tuple[str, int]]]:
    """term -> [(external id, integer impact)] over live documents, in index order; ``ints`` maps stored
    float32 weights to the integers CIFF carries."""
    index = open_index(path)
    out: dict[str, list[tuple[str, int]]] = {}
    for seg in index.segments:
        dead = index.deleted_mask(seg)
        for term, token in enumerate(index.vocabulary):
            lo, hi = int(seg.postings.offsets[term]), int(seg.postings.offsets[term + 1])
            docs = seg.postings.doc_ids(term, term + 1).tolist()
            for d, w in zip(docs, np.asarray(seg.postings.weights[lo:hi]), strict=True):
                if dead is None or not dead[d]:
                    value = int(w) if ints is None else int(ints(np.array([w]))[0])
                    out.setdefault(token, []).append((seg.external_id(d), value))
    return out


def build(path, docs, dim, dtype="uint8", scale=None, deleted=(), segment_docs=1000):
    vocab = Vocabulary.from_tokens([f"t{i}" for i in range(dim)], source="test")
    ids = [f"d{i}" for i in range(len(docs))]
    with IndexWriter.create(path, vocab, None, weight_dtype=dtype, scale=scale, segment_docs=segment_docs) as w:
        w.add(ids, SparseBatch.from_dicts(docs, dim))
    if deleted:
        with IndexWriter.open(path) as w:
            w.delete([ids[i] for i in deleted])
    return path


def ranking(path, queries: list[dict[str, int]], k=10):
    index = open_index(path)
    tok = index.token_ids
    rows = [{tok[t]: float(v) for t, v in q.items() if t in tok} for q in queries]
    hits = Searcher(index, "numpy").search(SparseBatch.from_dicts(rows, index.dim), k, algorithm="exhaustive")
    return [[(e, float(s)) for e, s in zip(index.external_ids(hits.ids[i]), hits.scores[i], strict=True) if e]
            for i in range(len(queries))]


doc_vectors = st.integers(1, 12).flatmap(lambda dim: st.tuples(
    st.just(dim),
    st.lists(st.dictionaries(st.integers(0, dim - 1), st.floats(0.125, 5.0, width=32), max_size=dim),
             min_size=1, max_size=15)))


@given(data=doc_vectors, dtype=st.sampled_from(["uint8", "float32"]), seg=st.sampled_from([2, 1000]),
       deleted=st.sets(st.integers(0, 14)), queries=st.lists(
           st.dictionaries(st.integers(0, 11), st.integers(1, 9), min_size=1), min_size=1, max_size=3))
def test_round_trip(tmp_path_factory, data, dtype, seg, deleted, queries):
    dim, docs = data
    deleted = {d for d in deleted if d < len(docs)}
    root = tmp_path_factory.mktemp("rt")
    scale = 7.0 if dtype == "float32" else None
    if not any(docs[i] for i in range(len(docs)) if i not in deleted):
        deleted = set()
    original = build(root / "a", docs, dim, dtype, scale, sorted(deleted), seg)
    if not any(docs[i] for i in range(len(docs)) if i not in deleted):
        with pytest.raises(InvalidInputError, match="no postings"):
            export_ciff(original, root / "a.ciff", show_progress=False)
            import_ciff(root / "a.ciff", root / "b", show_progress=False)
        return
    info = export_ciff(original, root / "a.ciff", scale=scale, show_progress=False)
    import_ciff(root / "a.ciff", root / "b", show_progress=False)
    imported = open_index(root / "b")
    assert imported.manifest.provenance["source"] == "ciff"
    assert imported.n_live == imported.n_docs == len(docs) - len(deleted)
    if dtype == "float32":
        def ints(values):
            return np.maximum(np.rint(np.asarray(values, np.float64) * 7.0), 1).astype(np.int64)
        assert postings_of(root / "b") == postings_of(original, ints)
        assert imported.manifest.weights["scale"] == 7.0 == info["scale"]
    else:
        assert postings_of(root / "b") == postings_of(original)
        assert imported.manifest.weights == open_index(original).manifest.weights
        qs = [{f"t{t}": v for t, v in q.items()} for q in queries]
        assert ranking(root / "b", qs) == ranking(original, qs)


def test_float_index_searches_the_same_as_its_quantised_twin(tmp_path):
    rng = np.random.default_rng(0)
    docs = [{int(t): float(rng.uniform(0.1, 3)) for t in rng.choice(30, 8, replace=False)} for _ in range(60)]
    build(tmp_path / "f", docs, 30, "float32")
    export_ciff(tmp_path / "f", tmp_path / "f.ciff", scale=50.0, show_progress=False)
    import_ciff(tmp_path / "f.ciff", tmp_path / "g", show_progress=False)
    twin = [{t: float(quantize(np.array([w]), "uint16", 50.0)[0]) / 50.0 for t, w in d.items()} for d in docs]
    build(tmp_path / "q", twin, 30, "uint16", 50.0)
    queries = [{f"t{t}": int(v) for t, v in zip(rng.choice(30, 4, replace=False), rng.integers(1, 9, 4),
                                                 strict=True)} for _ in range(20)]
    assert ranking(tmp_path / "g", queries) == ranking(tmp_path / "q", queries)


def test_one_document_and_header(tmp_path):
    build(tmp_path / "a", [{0: 1.0, 3: 0.5}], 5)
    export_ciff(tmp_path / "a", tmp_path / "a.ciff", show_progress=False)
    from ciff_toolkit.read import CiffReader

    with CiffReader(tmp_path / "a.ciff") as reader:
        header = reader.read_header()
        lists = list(reader.read_postings_lists())
        docs = list(reader.read_documents())
    assert (header.version, header.num_docs, header.num_postings_lists) == (1, 1, 2)
    assert header.total_terms_in_collection == 255 + 128 and header.average_doclength == 383.0
    assert json.loads(header.description)["lsr"]["scale"] == 255.0
    assert [(pl.term, [(p.docid, p.tf) for p in pl.postings]) for pl in lists] == [("t0", [(0, 255)]),
                                                                                    ("t3", [(0, 128)])]
    assert [(d.docid, d.collection_docid, d.doclength) for d in docs] == [(0, "d0", 383)]
    import_ciff(tmp_path / "a.ciff", tmp_path / "b", show_progress=False)
    assert open_index(tmp_path / "b").vocabulary == ["t0", "t3"]


# ---------------------------------------------------------------------------------------------- bad input
def write_ciff(path, lists, docs, version=1, description=""):
    with open(path, "wb") as fh:
        w = CiffWriter(fh)
        w.write_header(Header(version=version, num_postings_lists=len(lists), num_docs=len(docs),
                              total_postings_lists=len(lists), total_docs=len(docs), description=description))
        w.write_postings_lists(PostingsList(term=t, df=len(p), postings=[Posting(docid=g, tf=f) for g, f in p])
                               for t, p in lists)
        w.write_documents(DocRecord(docid=i, collection_docid=e, doclength=1) for i, e in enumerate(docs))
        w.flush()
    return path


GOOD = ([("a", [(0, 3), (1, 2)]), ("b", [(1, 300)])], ["x", "y"])


def test_foreign_ciff_uses_scale_one_and_uint16(tmp_path):
    write_ciff(tmp_path / "g.ciff", *GOOD)
    import_ciff(tmp_path / "g.ciff", tmp_path / "i", show_progress=False)
    index = open_index(tmp_path / "i")
    assert index.manifest.weights == {"dtype": "uint16", "scale": 1.0}
    assert postings_of(tmp_path / "i") == {"a": [("x", 3), ("y", 2)], "b": [("y", 300)]}


def corrupt_files(tmp_path):
    good = write_ciff(tmp_path / "good.ciff", *GOOD)
    data = good.read_bytes()
    rng = np.random.default_rng(1)
    files = {
        "truncated": data[: len(data) - 3],
        "cut in the header": data[:4],
        "random bytes": rng.integers(0, 256, 300, dtype=np.uint8).tobytes(),
        "json": b'{"id": "d1", "vector": {"a": 1.0}}\n',
        "empty": b"",
        "trailing bytes": data + b"\x05junk!",
    }
    paths = {}
    for name, content in files.items():
        paths[name] = tmp_path / f"{name.replace(' ', '_')}.ciff"
        paths[name].write_bytes(content)
    paths["version 7"] = write_ciff(tmp_path / "v7.ciff", *GOOD, version=7)
    paths["duplicate doc ids"] = write_ciff(tmp_path / "dup.ciff", GOOD[0], ["x", "x"])
    paths["duplicate terms"] = write_ciff(tmp_path / "dupt.ciff", [GOOD[0][0], GOOD[0][0]], GOOD[1])
    paths["doc id out of range"] = write_ciff(tmp_path / "oor.ciff", [("a", [(0, 1), (5, 1)])], GOOD[1])
    paths["zero impact"] = write_ciff(tmp_path / "zero.ciff", [("a", [(0, 0)])], GOOD[1])
    paths["gap of zero"] = write_ciff(tmp_path / "gap0.ciff", [("a", [(1, 1), (0, 1)])], GOOD[1])
    return paths


def test_bad_files_fail_in_one_line_and_write_nothing(tmp_path):
    for name, path in corrupt_files(tmp_path).items():
        dest = tmp_path / f"out-{path.stem}"
        with pytest.raises(InvalidInputError) as err:
            import_ciff(path, dest, show_progress=False)
        assert one_line(str(err.value)), (name, str(err.value))
        if name == "version 7":
            assert "version 7" in str(err.value)
        if name == "duplicate doc ids":
            assert "occurs twice" in str(err.value)
        assert not dest.exists(), name
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], name


def test_existing_destination_is_refused(tmp_path):
    write_ciff(tmp_path / "g.ciff", *GOOD)
    (tmp_path / "i").mkdir()
    with pytest.raises(InvalidInputError, match="already exists"):
        import_ciff(tmp_path / "g.ciff", tmp_path / "i", show_progress=False)
    import_ciff(tmp_path / "g.ciff", tmp_path / "i", overwrite=True, show_progress=False)
    assert open_index(tmp_path / "i").n_docs == 2


# ---------------------------------------------------------------------------------------------- CLI
def run(capsys, *argv):
    code = main(["-q", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_round_trip_and_errors(tmp_path, capsys):
    build(tmp_path / "a", [{0: 1.0, 2: 0.5}, {1: 0.25}], 3, "float32")
    code, out, err = run(capsys, "export-ciff", tmp_path / "a", tmp_path / "a.ciff.gz", "--scale", "100")
    assert code == 0, err
    assert "exported 2 documents" in out and "scale 100" in out
    code, out, err = run(capsys, "import-ciff", tmp_path / "a.ciff.gz", tmp_path / "b")
    assert code == 0, err
    assert "imported 2 documents" in out
    assert postings_of(tmp_path / "b") == {"t0": [("d0", 100)], "t1": [("d1", 25)], "t2": [("d0", 50)]}
    code, _, err = run(capsys, "import-ciff", tmp_path / "a.ciff.gz", tmp_path / "b")
    assert code == 1 and one_line(err) and "already exists" in err
    (tmp_path / "junk.ciff").write_bytes(b"\x01\x02garbage")
    code, _, err = run(capsys, "import-ciff", tmp_path / "junk.ciff", tmp_path / "c")
    assert code == 1 and one_line(err) and not (tmp_path / "c").exists()
    code, _, err = run(capsys, "export-ciff", tmp_path / "missing", tmp_path / "m.ciff")
    assert code == 1 and one_line(err) and not (tmp_path / "m.ciff").exists()
    code, _, err = run(capsys, "export-ciff", tmp_path / "b", tmp_path / "m.ciff", "--scale", "3")
    assert code == 1 and one_line(err) and "cannot take --scale" in err and not (tmp_path / "m.ciff").exists()


def test_import_with_a_model_answers_text_queries(tmp_path, tiny_model, capsys):
    pytest.importorskip("torch", reason="text queries need the encoders extra")
    from lsr.search import SparseRetriever

    write_ciff(tmp_path / "w.ciff", [("protein", [(0, 9), (1, 2)]), ("cell", [(1, 7)]), ("virus", [(2, 5)])],
               ["p", "c", "v"])
    code, _, err = run(capsys, "import-ciff", tmp_path / "w.ciff", tmp_path / "i", "--model", tiny_model)
    assert code == 0, err
    index = open_index(tmp_path / "i")
    assert index.encoder_config is not None and index.dim > 3
    assert postings_of(tmp_path / "i") == {"protein": [("p", 9), ("c", 2)], "cell": [("c", 7)], "virus": [("v", 5)]}
    retriever = SparseRetriever(index)
    hits = retriever.search(["virus cell"], 3)
    q = dict(zip(retriever.encode(["virus cell"]).indices.tolist(), retriever.encode(["virus cell"]).values.tolist(),
                 strict=True))
    tok = index.token_ids
    expected = {"p": 9 * q.get(tok["protein"], 0), "c": 2 * q.get(tok["protein"], 0) + 7 * q.get(tok["cell"], 0),
                "v": 5 * q.get(tok["virus"], 0)}
    assert index.external_ids(hits.ids[0])[0] == max(expected, key=expected.get)
    assert float(hits.scores[0][0]) == pytest.approx(max(expected.values()), rel=1e-5)
    write_ciff(tmp_path / "x.ciff", [("notaword", [(0, 1)])], ["p"])
    code, _, err = run(capsys, "import-ciff", tmp_path / "x.ciff", tmp_path / "j", "--model", tiny_model)
    assert code == 1 and one_line(err) and "notaword" in err and not (tmp_path / "j").exists()
