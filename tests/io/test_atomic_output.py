"""The streaming atomic writer the file formats share: all or nothing."""

from __future__ import annotations

import pytest

from lsr.index.format import atomic_output


def test_the_file_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "run.trec"
    target.write_bytes(b"old\n")
    with pytest.raises(ValueError), atomic_output(target) as fh:
        fh.write(b"half")
        raise ValueError("bad input met mid-write")
    assert target.read_bytes() == b"old\n"  # the previous version stays
    assert list(tmp_path.iterdir()) == [target]  # and no temporary file is left behind
    with atomic_output(target) as fh:
        fh.write(b"new\n")
    assert target.read_bytes() == b"new\n"
    assert list(tmp_path.iterdir()) == [target]
