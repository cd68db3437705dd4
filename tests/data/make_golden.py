"""Writes tests/data/golden-v<FORMAT_VERSION>/: a small index kept in the repository so that every future
lsr must still open what this format version wrote. Run once per new format version; never regenerate an
existing golden index (that would hide an incompatibility).

    python tests/data/make_golden.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lsr.index import FORMAT_VERSION, IndexWriter, Vocabulary
from lsr.types import SparseBatch

HERE = Path(__file__).resolve().parent
DIM = 16


def golden_documents() -> tuple[list[str], SparseBatch]:
    rng = np.random.default_rng(20261125)
    rows = [{int(t): float(rng.integers(1, 40)) / 8 for t in rng.choice(DIM, rng.integers(1, 6), replace=False)}
            for _ in range(40)]
    return [f"doc-{i:02d}-é" for i in range(40)], SparseBatch.from_dicts(rows, DIM)


def main() -> None:
    target = HERE / f"golden-v{FORMAT_VERSION}"
    if target.exists():
        raise SystemExit(f"{target} exists; golden indexes are never regenerated.")
    ids, docs = golden_documents()
    vocabulary = Vocabulary.from_tokens([f"term{i}" for i in range(DIM)], source="golden")
    # version 2 added quantised impacts and block maxima: exercise both (weights are multiples of 1/8,
    # so scale 8 stores them exactly)
    options = {"weight_dtype": "uint8", "scale": 8.0, "block_size": 4}
    with IndexWriter.create(target, vocabulary, None, segment_docs=15, merge_policy=None, **options) as writer:
        writer.add(ids[:15], docs.slice(0, 15))
        writer.add(ids[15:30], docs.slice(15, 30))
    with IndexWriter.open(target, merge_policy=None) as writer:
        writer.add(ids[30:], docs.slice(30, 40))
        writer.delete([ids[3], ids[31]])
        writer.add([ids[5]], docs.slice(0, 1))  # replace doc 5 by doc 0's vector
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
