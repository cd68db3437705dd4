"""Encode-time document pruning against a one-vector-at-a-time reference of OpenSearch's rules."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lsr.encoders.pruning import check_pruning, prune
from lsr.errors import InvalidInputError
from lsr.types import SparseBatch


def reference(vector: dict[int, float], kind: str, value: float) -> dict[int, float]:
    """OpenSearch's PruneUtils, written as plainly as possible over a {term: weight} dict."""
    if not vector:
        return {}
    items = sorted(vector.items(), key=lambda kv: (-kv[1], kv[0]))  # largest first, smaller id first on ties
    if kind == "top_k":
        return dict(items[: int(value)])
    if kind == "abs_value":
        return {t: w for t, w in vector.items() if w >= np.float32(value)}
    if kind == "max_ratio":
        top = max(vector.values())
        return {t: w for t, w in vector.items() if w >= np.float32(value) * np.float32(top)}
    total = np.float32(sum(np.float64(w) for w in vector.values()))
    kept, running = {}, np.float32(0)
    for t, w in items:
        running = np.float32(running + np.float32(w))
        if running <= np.float32(value) * total:
            kept[t] = w
    return kept


weights = st.floats(min_value=0.015625, max_value=4.0, allow_nan=False, width=32)
vectors = st.lists(st.dictionaries(st.integers(0, 40), weights, max_size=25), min_size=0, max_size=6)
rules = st.one_of(
    st.tuples(st.just("top_k"), st.integers(1, 30).map(float)),
    st.tuples(st.just("abs_value"), st.floats(0, 4, width=32)),
    st.tuples(st.sampled_from(["max_ratio", "alpha_mass"]), st.floats(0, 0.99609375, width=32)),
)


@given(vectors, rules)
def test_prune_equals_the_reference(rows, rule):
    kind, value = rule
    batch = SparseBatch.from_dicts(rows, 41)
    got = prune(batch, {"type": kind, "value": value}).validate()
    expected = [reference({t: np.float32(w) for t, w in row.items()}, kind, value) for row in batch.to_dicts()]
    assert got.to_dicts() == expected


def test_opensearch_examples():
    batch = SparseBatch.from_dicts([{0: 10.0, 1: 6.0, 2: 3.0, 3: 1.0}, {0: 5.0, 1: 3.0, 2: 2.0, 3: 1.0}], 4)
    assert prune(batch, {"type": "alpha_mass", "value": 0.8}).to_dicts()[0] == {0: 10.0, 1: 6.0}
    assert prune(batch, {"type": "abs_value", "value": 3.0}).to_dicts()[1] == {0: 5.0, 1: 3.0}
    assert prune(batch, {"type": "max_ratio", "value": 0.5}).to_dicts()[0] == {0: 10.0, 1: 6.0}
    assert prune(batch, {"type": "top_k", "value": 1}).to_dicts() == [{0: 10.0}, {0: 5.0}]
    assert prune(batch, None) is batch


@pytest.mark.parametrize("config", [
    {"type": "top_k", "value": 0}, {"type": "top_k", "value": 2.5}, {"type": "max_ratio", "value": 1.0},
    {"type": "alpha_mass", "value": -0.1}, {"type": "abs_value", "value": -1}, {"type": "nope", "value": 1},
    {"type": "top_k"}, "top_k=5", {"type": "top_k", "value": True},
])
def test_bad_pruning_configs_are_clear_errors(config):
    with pytest.raises(InvalidInputError, match="prun"):
        check_pruning(config)


def test_pruned_encoder_records_the_rule_and_prunes_documents_only(tiny_model):
    from lsr.encoders import load_encoder

    encoder = load_encoder(str(tiny_model), max_length=64, pruning={"type": "top_k", "value": 3})
    assert encoder.config()["pruning"] == {"type": "top_k", "value": 3}
    assert load_encoder(encoder.config()).config() == encoder.config()  # round-trips through the manifest
    text = ["blood pressure and heart disease risk in humans with cancer"]
    assert encoder.encode_documents(text).row_nnz().max() <= 3
    assert encoder.encode_queries(text).row_nnz().max() > 3
    assert "pruning" not in load_encoder(str(tiny_model)).config()  # unpruned configs keep their old form
