"""Every golden index in tests/data (one per released format version) still opens and answers correctly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lsr.index import Searcher, open_index
from lsr.kernels import PostingArrays, available_backends, reference
from lsr.types import SparseBatch
from tests.data.make_golden import DIM, golden_documents

GOLDEN = sorted((Path(__file__).resolve().parent.parent / "data").glob("golden-v*"))


def test_a_golden_index_exists_for_the_current_format():
    from lsr.index import FORMAT_VERSION

    assert any(p.name == f"golden-v{FORMAT_VERSION}" for p in GOLDEN)


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.name)
def test_golden_index_opens_and_searches(path):
    index = open_index(path)
    ids, docs = golden_documents()
    # the golden history: 40 documents, ids[3] and ids[31] deleted, ids[5] replaced by doc 0's vector
    live_ids = [i for i in ids if i not in (ids[3], ids[31])]
    vectors = {ext: docs.slice(j, j + 1) for j, ext in enumerate(ids)}
    vectors[ids[5]] = docs.slice(0, 1)
    assert index.n_live == 38 and index.n_docs == 41 and len(index.segments) == 3
    assert index.vocabulary == [f"term{i}" for i in range(DIM)]
    assert {ext: index.internal_id(ext) is not None for ext in ids} == {ext: ext in live_ids for ext in ids}

    queries = SparseBatch.from_dicts([{0: 1.0, 3: 0.5}, {7: 2.0}, {1: 1.0, 2: 1.0, 15: 0.25}], DIM)
    flat = SparseBatch.concat([vectors[ext] for ext in live_ids])
    oracle = reference.topk(PostingArrays.from_documents(flat), queries, 10)
    for backend in available_backends():
        hits = Searcher(index, backend).search(queries, 10)
        for q in range(queries.n):
            got_ids, got_scores = hits.row(q)
            want_ids, want_scores = oracle.row(q)
            np.testing.assert_array_equal(got_scores, want_scores)
            got = sorted(zip(got_scores.tolist(), index.external_ids(got_ids), strict=True))
            want = sorted(zip(want_scores.tolist(), [live_ids[i] for i in want_ids], strict=True))
            assert [s for s, _ in got] == [s for s, _ in want]
            assert {e for s, e in got if s > want_scores[-1]} == {e for s, e in want if s > want_scores[-1]}
