"""The C extension never crashes on bad arrays: lengths, dtypes and every id it reads are checked."""

from __future__ import annotations

import numpy as np
import pytest

from lsr.kernels import PostingArrays
from lsr.kernels.cost_model import PURE_BLOCKMAX
from lsr.types import SparseBatch

_csparse = pytest.importorskip("lsr.kernels._csparse", reason="the C extension is not built")


def _case():
    docs = SparseBatch.from_dicts([{0: 1.0, 2: 2.0}, {1: 1.5}, {0: 0.5, 1: 0.5}], 3)
    p = PostingArrays.from_documents(docs, block_size=2)
    q = SparseBatch.from_dicts([{0: 1.0, 1: 1.0}], 3)
    arrays = {
        "offsets": p.offsets.copy(), "weights": p.weights.copy(), "masks": p.blocks.masks.copy(),
        "b_offsets": p.blocks.offsets.copy(), "b_ids": p.blocks.ids.copy(), "b_max": p.blocks.maxima.copy(),
        "anchors": p.blocks.anchors.copy(), "dense_rows": p.blocks.dense_rows.copy(),
        "dense": p.blocks.dense.copy(), "dense_scale": p.blocks.dense_scale.copy(),
        "dense_prefix": p.blocks.dense_prefix.copy(), "q_indptr": q.indptr.copy(), "q_indices": q.indices.copy(),
        "q_values": q.values.copy(), "deleted": np.zeros(0, np.uint8),
        "out_ids": np.full((1, 2), -1, np.int64), "out_scores": np.full((1, 2), -np.inf, np.float32),
    }
    return arrays, {"n_docs": 3, "k": 2, "block_size": 2, "alpha": 1.0, "n_seeds": 1, "mode": 0,
                    "cost": PURE_BLOCKMAX.as_array(), "stats": None,
                    "q_start": 0, "q_end": 1}


def taat(a, s):
    _csparse.taat_topk(a["offsets"], a["weights"], a["b_offsets"], a["b_ids"], a["masks"], s["block_size"],
                       a["q_indptr"], a["q_indices"], a["q_values"], s["n_docs"], s["k"], a["deleted"], a["out_ids"],
                       a["out_scores"], s["q_start"], s["q_end"], 0)


def blockmax(a, s):
    _csparse.blockmax_topk(a["offsets"], a["weights"], a["b_offsets"], a["b_ids"], a["masks"], s["block_size"],
                           a["b_max"], a["anchors"], a["dense_rows"], a["dense"], a["dense_scale"], a["dense_prefix"],
                           a["q_indptr"], a["q_indices"], a["q_values"],
                           s["n_docs"], s["k"], a["deleted"], s["alpha"], s["n_seeds"], s["mode"], s["cost"],
                           a["out_ids"], a["out_scores"], s["q_start"], s["q_end"], 0, s["stats"])


@pytest.mark.parametrize("fn", [taat, blockmax])
@pytest.mark.parametrize("id_dtype", [np.uint16, np.int32])
def test_valid_call_works(fn, id_dtype):
    a, s = _case()
    a["b_ids"] = a["b_ids"].astype(id_dtype)
    assert len(a["dense_scale"]) > 0  # the case exercises the dense bound rows
    fn(a, s)
    assert a["out_ids"].tolist() == [[1, 0]] and a["out_scores"].tolist() == [[1.5, 1.0]]


BREAKAGES = {
    "doc bit beyond n_docs": lambda a, s: a["masks"].__setitem__(3, 0b10),  # term 1, block 1: doc 3, not 2
    "more mask bits than postings": lambda a, s: a["masks"].__setitem__(0, 0b11),
    "fewer mask bits than postings": lambda a, s: a["masks"].__setitem__(0, 0),
    "block id beyond the blocks": lambda a, s: a["b_ids"].__setitem__(0, 1000),
    "negative block id": lambda a, s: a.__setitem__("b_ids", np.array([-5, *a["b_ids"][1:]], np.int32)),
    "masks of the wrong length": lambda a, s: a.__setitem__("masks", a["masks"][:-1]),
    "block offsets of the wrong length": lambda a, s: a.__setitem__("b_offsets", a["b_offsets"][:-1]),
    "decreasing block offsets": lambda a, s: a["b_offsets"].__setitem__(1, 9),
    "block size 0": lambda a, s: s.__setitem__("block_size", 0),
    "n_docs too small": lambda a, s: s.__setitem__("n_docs", 1),
    "query term beyond dim": lambda a, s: a["q_indices"].__setitem__(0, 7),
    "offsets not spanning docs": lambda a, s: a.__setitem__("offsets", a["offsets"][:-1]),
    "decreasing offsets": lambda a, s: a["offsets"].__setitem__(2, 1),
    "weights shorter than the offsets": lambda a, s: a.__setitem__("weights", a["weights"][:-1]),
    "int64 block ids": lambda a, s: a.__setitem__("b_ids", a["b_ids"].astype(np.int64)),
    "float64 query values": lambda a, s: a.__setitem__("q_values", a["q_values"].astype(np.float64)),
    "output too small": lambda a, s: a.__setitem__("out_ids", np.zeros((1, 1), np.int64)),
    "read-only output": lambda a, s: a["out_scores"].setflags(write=False),
    "non-contiguous input": lambda a, s: a.__setitem__("b_ids", np.repeat(a["b_ids"], 2)[::2]),
    "query range past the batch": lambda a, s: s.__setitem__("q_end", 2),
    "q_indptr past q_indices": lambda a, s: a["q_indptr"].__setitem__(1, 9),
    "deleted mask of the wrong length": lambda a, s: a.__setitem__("deleted", np.zeros(2, np.uint8)),
    "k below 1": lambda a, s: s.__setitem__("k", 0),
    "not an array": lambda a, s: a.__setitem__("masks", "masks"),
}
BLOCK_BREAKAGES = {
    "anchor outside the term": lambda a, s: a["anchors"].__setitem__(0, 5),
    "negative anchor": lambda a, s: a["anchors"].__setitem__(0, -3),
    "anchors of the wrong length": lambda a, s: a.__setitem__("anchors", np.zeros(3, np.int32)),
    "block maxima of another dtype": lambda a, s: a.__setitem__("b_max", a["b_max"].astype(np.uint8)),
    "alpha above 1": lambda a, s: s.__setitem__("alpha", 2.0),
    "block size smaller than the data's": lambda a, s: s.__setitem__("block_size", 1),
    "no seeds": lambda a, s: s.__setitem__("n_seeds", 0),
    "unknown mode": lambda a, s: s.__setitem__("mode", 3),
    "cost model too short": lambda a, s: s.__setitem__("cost", s["cost"][:-1]),
    "cost model as float32": lambda a, s: s.__setitem__("cost", s["cost"].astype(np.float32)),
    "stats too small": lambda a, s: s.__setitem__("stats", np.zeros(3, np.int64)),
    "read-only stats": lambda a, s: s.__setitem__("stats", np.zeros(4, np.int64)) or s["stats"].setflags(write=False),
    "dense row beyond the rows": lambda a, s: a["dense_rows"].__setitem__(0, 50),
    "dense rows of the wrong length": lambda a, s: a.__setitem__("dense_rows", a["dense_rows"][:-1]),
    "dense bounds of the wrong length": lambda a, s: a.__setitem__("dense", a["dense"][:-1]),
    "dense prefix of the wrong length": lambda a, s: a.__setitem__("dense_prefix", a["dense_prefix"][:-1]),
    "dense prefix past the term's entries": lambda a, s: a["dense_prefix"].__setitem__(slice(None), 7),
}


@pytest.mark.parametrize("fn", [taat, blockmax])
@pytest.mark.parametrize("breakage", list(BREAKAGES), ids=list(BREAKAGES))
def test_bad_arrays_raise_value_error(fn, breakage):
    a, s = _case()
    BREAKAGES[breakage](a, s)
    with pytest.raises(ValueError):
        fn(a, s)


@pytest.mark.parametrize("breakage", list(BLOCK_BREAKAGES), ids=list(BLOCK_BREAKAGES))
def test_bad_block_arrays_raise_value_error(breakage):
    a, s = _case()
    BLOCK_BREAKAGES[breakage](a, s)
    with pytest.raises(ValueError):
        blockmax(a, s)
