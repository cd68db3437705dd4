"""Corrupt bytes anywhere in an index are detected (at open for small files, by `lsr check` for all): a
one-line error, never a crash, a hang or silently wrong results."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from lsr.errors import LsrError
from lsr.index import IndexWriter, Searcher, Vocabulary, open_index
from lsr.index import format as fmt
from lsr.index.check import check_index
from lsr.types import SparseBatch

DIM = 24
VOCAB = Vocabulary.from_tokens([f"t{i}" for i in range(DIM)], source="corruption")
QUERIES = SparseBatch.from_dicts([{0: 1.0, 3: 0.5}, {5: 2.0, 7: 1.0}, {1: 1.0, 2: 1.0, 23: 0.25}], DIM)
KINDS = ("flip-byte", "flip-bit", "truncate")


def docs(seed: int, n: int) -> SparseBatch:
    rng = np.random.default_rng(seed)
    return SparseBatch.from_dicts(
        [{int(t): float(rng.integers(1, 40)) / 8 for t in rng.choice(DIM, rng.integers(1, 8), replace=False)}
         for _ in range(n)], DIM)


@pytest.fixture(scope="module", params=["float32", "uint8"])
def pristine(request, tmp_path_factory):
    """Two segments, tombstones, block maxima and dense bound rows."""
    path = tmp_path_factory.mktemp(f"pristine-{request.param}") / "idx"
    with IndexWriter.create(path, VOCAB, None, weight_dtype=request.param, block_size=4) as writer:
        writer.add([f"d{i}" for i in range(120)], docs(0, 120))
    with IndexWriter.open(path) as writer:
        writer.add([f"e{i}" for i in range(40)], docs(1, 40))
        writer.delete(["d3", "e5"])
    assert check_index(path).ok
    return path


def answers(path):
    index = open_index(path)
    hits = Searcher(index).search(QUERIES, 10)
    return [(index.external_ids(hits.row(i)[0]), hits.row(i)[1].tolist()) for i in range(hits.n)]


def corrupt(path, kind: str, position: int) -> None:
    data = bytearray(path.read_bytes())
    if kind == "truncate":
        path.write_bytes(bytes(data[:position]))
        return
    data[position] ^= 0xFF if kind == "flip-byte" else 0x01
    path.write_bytes(bytes(data))


def positions(size: int) -> list[int]:
    return sorted({0, size - 1, *np.linspace(0, size - 1, 10).astype(int).tolist()}) if size else []


def test_every_corruption_is_detected(pristine, tmp_path):
    files = sorted(p.relative_to(pristine) for p in pristine.rglob("*") if p.is_file())
    assert len(files) >= 30
    expected = answers(pristine)
    tried = at_open = by_check = 0
    for rel in files:
        size = (pristine / rel).stat().st_size
        for kind in KINDS:
            for position in positions(size):
                if kind == "truncate" and position == size:
                    continue
                tried += 1
                copy = tmp_path / f"c{tried}"
                shutil.copytree(pristine, copy)
                corrupt(copy / rel, kind, position)
                try:
                    seen = answers(copy)
                except LsrError as exc:
                    assert "\n" not in str(exc)
                    at_open += 1
                else:  # cannot happen for files this small (all checksummed at open) -- but never wrong results
                    assert seen == expected, f"{rel} {kind}@{position}: wrong results"
                report = check_index(copy)
                assert not report.ok, f"{rel} {kind}@{position}: lsr check found nothing"
                by_check += 1
                shutil.rmtree(copy)
    print(f"corruptions tried {tried}: detected at open {at_open}, by lsr check {by_check}")
    assert at_open == tried and by_check == tried


@pytest.mark.parametrize("target", ["blocks.masks.npy", "blocks.anchors.npy", "postings.offsets.npy",
                                    "blocks.ids.npy", "blocks.offsets.npy", "blocks.dense.npy"])
def test_unverified_large_files_never_crash_the_c_kernels(pristine, tmp_path, monkeypatch, target):
    """Files above the size verified at open are only checksummed by `lsr check`: corrupt ids in them must
    give an error (never a crash) from the C kernels, and `lsr check` must name the problem."""
    pytest.importorskip("lsr.kernels._csparse", reason="the C extension is not built")
    monkeypatch.setattr(fmt, "VERIFY_AT_OPEN_BYTES", 0)
    copy = tmp_path / "idx"
    shutil.copytree(pristine, copy)
    arr_path = copy / "seg-000001" / target
    arr = np.load(arr_path)
    arr[len(arr) // 2:] = np.iinfo(arr.dtype).max if arr.dtype.kind in "iu" else arr[len(arr) // 2:]
    np.save(arr_path, arr)
    try:
        index = open_index(copy)
        for algorithm in ("exhaustive", "blockmax", "auto"):
            try:
                Searcher(index, "c").search(QUERIES, 10, algorithm=algorithm)
            except ValueError as exc:  # bounds checks in the kernel
                assert "\n" not in str(exc)
    except LsrError as exc:  # shape checks at open
        assert "\n" not in str(exc)
    report = check_index(copy)
    assert not report.ok and any(target in p or "seg-000001" in p for p in report.problems)


def test_lsr_check_cli(pristine, tmp_path, capsys):
    from lsr.cli import main

    assert main(["check", str(pristine)]) == 0
    assert capsys.readouterr().out.startswith("ok: 158 documents, 2 segments")
    copy = tmp_path / "idx"
    shutil.copytree(pristine, copy)
    corrupt(copy / "seg-000002" / "postings.weights.npy", "flip-bit", 200)
    assert main(["check", str(copy)]) == 1
    out, err = capsys.readouterr()
    assert "postings.weights.npy" in out and len(err.strip().splitlines()) == 1
