"""Fusion against a plain dictionary implementation of each formula."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lsr.errors import InvalidQueryError
from lsr.search.fusion import fuse
from lsr.types import Hits


def hits_from(rows: list[dict[int, float]], k: int) -> Hits:
    hits = Hits.empty(len(rows), k)
    for i, row in enumerate(rows):
        ranked = sorted(row.items(), key=lambda x: (-x[1], x[0]))[:k]
        for j, (d, s) in enumerate(ranked):
            hits.ids[i, j], hits.scores[i, j] = d, s
    return hits


def reference(sparse: dict, dense: dict, method: str, alpha: float, normalization: str) -> dict[int, float]:
    docs = set(sparse) | set(dense)
    if method == "rrf":
        out = dict.fromkeys(docs, 0.0)
        for side in (sparse, dense):
            for rank, (d, _) in enumerate(sorted(side.items(), key=lambda x: (-x[1], x[0])), 1):
                out[d] += 1 / (60 + rank)
        return out

    if not docs:
        return {}

    def column(side):
        lo = min(side.values()) if side else 0.0
        full = {d: side.get(d, lo) for d in docs}
        vals = np.array(list(full.values()))
        mn, mx, mean, std = vals.min(), vals.max(), vals.mean(), vals.std()
        if normalization == "minmax":
            return {d: (v - mn) / (mx - mn) if mx > mn else 0.0 for d, v in full.items()}
        if normalization == "zscore":
            return {d: (v - mean) / std if std > 0 else 0.0 for d, v in full.items()}
        if normalization == "midrange":
            return {d: (v - (mn + mx) / 2) / (mx - mn) if mx > mn else v - mn for d, v in full.items()}
        return full

    s, d = column(sparse), column(dense)
    if method == "convex":
        return {doc: alpha * s[doc] + (1 - alpha) * d[doc] for doc in docs}
    return {doc: alpha * s[doc] + d[doc] for doc in docs}


side = st.dictionaries(st.integers(0, 30), st.integers(1, 200).map(lambda x: x / 8), max_size=12)


@given(pairs=st.lists(st.tuples(side, side), min_size=1, max_size=3),
       method=st.sampled_from(["pyserini", "convex", "rrf"]), alpha=st.sampled_from([0.0, 0.25, 0.5, 1.0]),
       normalization=st.sampled_from(["none", "midrange", "minmax", "zscore"]), k=st.integers(1, 30))
def test_fuse_equals_the_formulas(pairs, method, alpha, normalization, k):
    if method == "convex" and normalization == "none":
        normalization = "minmax"
    depth = 40
    got = fuse(hits_from([p[0] for p in pairs], depth), hits_from([p[1] for p in pairs], depth), k, method, alpha,
               normalization).validate()
    for i, (sparse, dense) in enumerate(pairs):
        want = reference(sparse, dense, method, alpha, normalization)
        ranked = sorted(want.items(), key=lambda x: (-x[1], x[0]))[:k]
        ids, scores = got.row(i)
        np.testing.assert_allclose(scores, [s for _, s in ranked], rtol=1e-5, atol=1e-6)
        # the same documents, unless float rounding reorders near-equal fused scores at the cut
        near_ties = len({round(s, 5) for _, s in ranked}) < len(ranked)
        assert sorted(ids.tolist()) == sorted(d for d, _ in ranked) or near_ties


def test_missing_documents_take_the_list_minimum():
    sparse = hits_from([{1: 10.0, 2: 5.0}], 5)
    dense = hits_from([{2: 0.9, 3: 0.5}], 5)
    got = fuse(sparse, dense, 3, "pyserini", alpha=1.0)
    scores = dict(zip(got.row(0)[0].tolist(), got.row(0)[1].tolist(), strict=True))
    assert scores == pytest.approx({1: 10.0 + 0.5, 2: 5.0 + 0.9, 3: 5.0 + 0.5})


@pytest.mark.parametrize(("kwargs", "fragment"), [({"method": "mean"}, "fusion method"),
                                                  ({"normalization": "log"}, "normalization")])
def test_bad_fusion_options(kwargs, fragment):
    with pytest.raises(InvalidQueryError, match=fragment):
        fuse(hits_from([{1: 1.0}], 2), hits_from([{1: 1.0}], 2), 2, **kwargs)
