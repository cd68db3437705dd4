"""Durability: a crash (process death or power loss) and an I/O error (ENOSPC, EIO) at every write point of a
commit leave an index that opens in the old or the new state and answers exactly as that state does."""

from __future__ import annotations

import errno
import os
import shutil

import numpy as np
import pytest

from lsr.index import IndexWriter, Searcher, Vocabulary, open_index
from lsr.index import format as fmt
from lsr.index.merge import MERGE_LOCK, MERGING_PREFIX, optimize
from lsr.types import SparseBatch
from tests.faults import FaultyFS, SimulatedCrash, dead_pid

DIM = 16
VOCAB = Vocabulary.from_tokens([f"t{i}" for i in range(DIM)], source="faults")
QUERIES = SparseBatch.from_dicts([{0: 1.0, 3: 0.5}, {5: 2.0, 7: 1.0}, {1: 1.0, 2: 1.0, 15: 0.25}], DIM)


def docs(seed: int, n: int) -> SparseBatch:
    rng = np.random.default_rng(seed)
    return SparseBatch.from_dicts(
        [{int(t): float(rng.integers(1, 40)) / 8 for t in rng.choice(DIM, rng.integers(1, 6), replace=False)}
         for _ in range(n)], DIM)


def state(path) -> tuple:
    """What a reader sees: generation, live documents, and the exact answers to fixed queries."""
    index = open_index(path)
    hits = Searcher(index).search(QUERIES, 10)
    answers = tuple((tuple(index.external_ids(hits.row(i)[0])), tuple(hits.row(i)[1].tolist()))
                    for i in range(hits.n))
    return index.manifest.generation, index.n_live, answers


def base_index(root):
    with IndexWriter.create(root / "idx", VOCAB, None, block_size=4) as writer:
        writer.add([f"d{i}" for i in range(30)], docs(0, 30))
    return root / "idx"


# the commits under test: each takes the index path and changes it in one commit
def add_segment(path):
    with IndexWriter.open(path) as writer:
        writer.add([f"n{i}" for i in range(12)] + ["d3"], docs(1, 13))  # new documents and a replacement


def delete_documents(path):
    with IndexWriter.open(path) as writer:
        writer.delete(["d1", "d7", "d20"])


def merge_segments(path):
    optimize(path, max_segments=1)  # three segments with deletions -> one, deleted documents dropped


COMMITS = {"add_segment": add_segment, "delete_documents": delete_documents, "create_index": None,
           "merge_segments": merge_segments}


def prepare(tmp_path, name):
    path = base_index(tmp_path)
    if name == "create_index":
        shutil.rmtree(path)
        old = None
    else:
        if name == "merge_segments":  # the base, plus a segment with a replacement, plus deletions
            with IndexWriter.open(path, merge_policy=None) as writer:
                writer.add([f"m{i}" for i in range(12)] + ["d3"], docs(1, 13))
            with IndexWriter.open(path, merge_policy=None, segment_docs=4) as writer:
                writer.add([f"p{i}" for i in range(6)], docs(3, 6))
                writer.delete(["d1", "d7", "m4"])
        old = state(path)
    return path, old


def commit(name, path):
    if name == "create_index":
        with IndexWriter.create(path, VOCAB, None, block_size=4) as writer:
            writer.add([f"c{i}" for i in range(20)], docs(2, 20))
    else:
        COMMITS[name](path)


def expected_new_state(tmp_path, name):
    path, _ = prepare(tmp_path / "reference", name)
    fs = FaultyFS(path.parent)
    with fs.active():
        commit(name, path)
    return state(path), fs.points


def commit_point(tmp_path, name) -> int:
    """The operation that makes a commit visible: the manifest's rename (for a new index, the folder's)."""
    path, _ = prepare(tmp_path / "reference-log", name)
    fs = FaultyFS(path.parent)
    with fs.active():
        commit(name, path)
    target = str(path) if name == "create_index" else str(path / fmt.MANIFEST)
    return next(i for i, (what, where) in enumerate(fs.log, 1) if what == "rename" and where == target)


def bury_the_crashed_process(path) -> None:
    """The 'crashed' writer or merger is this test process: make what it left look as a dead process's."""
    pid = dead_pid()
    for name in (fmt.LOCK, MERGE_LOCK):
        if (path / name).exists():  # its lock holds a pid no process has
            (path / name).write_text(str(pid))
    for entry in path.glob(f"{MERGING_PREFIX}{os.getpid()}-*"):  # a merge in progress whose merger died
        os.replace(entry, entry.with_name(f"{MERGING_PREFIX}{pid}-{entry.name.rsplit('-', 1)[1]}"))


def leftovers_of(path) -> list[str]:
    return [p.name for p in path.iterdir()
            if ".tmp" in p.name or p.name in (fmt.LOCK, MERGE_LOCK) or p.name.startswith(MERGING_PREFIX)]


def after_crash_is_sound(path, old, new) -> None:
    if path.exists():
        bury_the_crashed_process(path)
    if old is None and not (path / fmt.MANIFEST).exists():
        seen = None  # a new index that never committed: nothing at the path is an index
    else:
        seen = state(path)
    assert seen in (old, new), f"state after the crash is neither the old nor the new one: {seen}"
    if seen is not None:
        with IndexWriter.open(path) as writer:  # a writer gets in (stale lock) and cleans temporary files
            writer.delete(["nothing-here"])
        assert not leftovers_of(path), leftovers_of(path)
    siblings = [p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")]
    # a new index's hidden work folder may outlive a crash (nothing refers to it); it never becomes the index
    assert all(".tmp-" in s or ".old-" in s for s in siblings), siblings


@pytest.mark.parametrize("name", list(COMMITS))
@pytest.mark.parametrize("power_loss", [False, True], ids=["process-crash", "power-loss"])
def test_crash_at_every_point(tmp_path, name, power_loss):
    new, n_points = expected_new_state(tmp_path, name)
    assert n_points >= 10, "the fault layer saw too few operations to be testing anything"
    survived = 0
    for at in range(1, n_points + 1):
        root = tmp_path / f"crash-{at}"
        path, old = prepare(root, name)
        fs = FaultyFS(root, "crash", at)
        with pytest.raises(SimulatedCrash):
            with fs.active():
                commit(name, path)
        if power_loss:
            fs.power_loss()
        fs.cleanup()
        after_crash_is_sound(path, old, new)
        survived += 1
    print(f"{name}, {'power loss' if power_loss else 'process crash'}: survived {survived} of {n_points} points")
    assert survived == n_points


@pytest.mark.parametrize("name", list(COMMITS))
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO], ids=["ENOSPC", "EIO"])
def test_io_error_at_every_point(tmp_path, name, code):
    """Before the commit point the commit fails with one line naming the cause and the old index answers as
    before; after it (an fsync of the rename) it fails but the new index is complete; in the best-effort
    cleanup after a commit nothing fails and the next writer removes what was left."""
    new, n_points = expected_new_state(tmp_path, name)
    visible_at = commit_point(tmp_path, name)
    outcomes = {"failed, old index intact": 0, "failed after the commit point, new index complete": 0,
                "no failure: the operation did not matter or was cleanup left to the next writer": 0}
    for at in range(1, n_points + 1):
        root = tmp_path / f"error-{at}"
        path, old = prepare(root, name)
        fs = FaultyFS(root, "error", at, code)
        raised = None
        try:
            with fs.active():
                commit(name, path)
        except OSError as exc:
            raised = exc
        fs.cleanup()
        where = f"point {at} ({fs.log[-1]})"
        if raised is not None:
            message = str(raised)
            assert "\n" not in message and os.strerror(code) in message, message
        if raised is None:
            # the failed operation did not matter (a mkdir of an existing folder) or was best-effort cleanup
            # after the commit: the commit is complete
            assert state(path) == new, where
            outcomes["no failure: the operation did not matter or was cleanup left to the next writer"] += 1
        elif at <= visible_at:
            if old is None:
                assert not path.exists() or not (path / fmt.MANIFEST).exists(), where
                assert not [p for p in root.iterdir() if p.name != "idx"], f"{where}: a failed new index left files"
            else:
                assert state(path) == old, where  # the previous index answers as before
            outcomes["failed, old index intact"] += 1
        else:
            assert state(path) == new, where
            outcomes["failed after the commit point, new index complete"] += 1
        if path.exists():
            bury_the_crashed_process(path)  # what a failed unlink left is stale once this "command" has exited
            with IndexWriter.open(path) as writer:
                writer.delete(["nothing-here"])
            assert not leftovers_of(path), f"{where}: {leftovers_of(path)}"
    print(f"{name}, {errno.errorcode[code]}: {n_points} points: {outcomes}")
    assert sum(outcomes.values()) == n_points


def test_cli_reports_a_full_disk_in_one_line(tmp_path, capsys):
    from lsr.cli import main

    vectors = tmp_path / "vectors.jsonl"
    vectors.write_text("".join(f'{{"id": "d{i}", "vector": {{"a": {i + 1}, "b": 2}}}}\n' for i in range(20)))
    fs = FaultyFS(tmp_path, "error", 6, errno.ENOSPC)
    with fs.active():
        code = main(["-q", "index", str(vectors), str(tmp_path / "idx")])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and "No space left on device" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors.jsonl"]
