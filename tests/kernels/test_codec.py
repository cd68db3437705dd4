"""The doc-id codec (format 4) against plain postings: coding then decoding gives back every doc id, and the
entries' anchors, counts and maxima agree with a direct computation. The kernels' oracle decodes through
the same codec, so this is what keeps the oracle itself honest."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from lsr.kernels import PostingArrays
from lsr.kernels._arrays import ANCHOR_EVERY


@st.composite
def plain_postings(draw):
    n_docs = draw(st.integers(1, 300))
    dim = draw(st.integers(1, 12))
    lists = [sorted(draw(st.sets(st.integers(0, n_docs - 1), max_size=60))) for _ in range(dim)]
    offsets = np.zeros(dim + 1, np.int64)
    np.cumsum([len(x) for x in lists], out=offsets[1:])
    docs = np.array([d for x in lists for d in x], np.int32)
    weights = np.array(draw(st.lists(st.integers(1, 255), min_size=len(docs), max_size=len(docs))), np.uint8)
    block_size = draw(st.one_of(st.integers(1, 17), st.just(64)))
    return offsets, docs, weights, n_docs, block_size


@given(case=plain_postings(), data=st.data())
def test_decoding_gives_back_the_doc_ids(case, data):
    offsets, docs, weights, n_docs, block_size = case
    postings = PostingArrays.from_postings(offsets, docs, weights, n_docs, block_size)
    np.testing.assert_array_equal(postings.doc_ids(), docs)
    lo = data.draw(st.integers(0, len(offsets) - 1))
    hi = data.draw(st.integers(lo, len(offsets) - 1))
    np.testing.assert_array_equal(postings.doc_ids(lo, hi), docs[offsets[lo] : offsets[hi]])


@given(case=plain_postings())
def test_entries_agree_with_the_plain_postings(case):
    offsets, docs, weights, n_docs, block_size = case
    blocks = PostingArrays.from_postings(offsets, docs, weights, n_docs, block_size).blocks
    terms = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    keys = terms.astype(np.int64) * (n_docs + 1) + docs // block_size  # (term, block) of each posting
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    np.testing.assert_array_equal(blocks.entry_counts(), counts)
    np.testing.assert_array_equal(blocks.entry_starts(), first)
    np.testing.assert_array_equal(blocks.anchors, first[::ANCHOR_EVERY])
    np.testing.assert_array_equal(blocks.ids, docs[first] // block_size)
    np.testing.assert_array_equal(blocks.maxima, np.maximum.reduceat(weights, first) if len(first) else weights)
    assert blocks.ids.dtype == np.uint16  # at most 65,536 blocks here
