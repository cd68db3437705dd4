from __future__ import annotations

import shutil

import pytest

from lsr.cli import main
from tests.conftest import write_corpus

API_KEY = "test-key-0123456789"


@pytest.fixture(scope="session")
def served_index(tmp_path_factory, tiny_model):
    """A small index over the tiny model (texts are encoded by the model the manifest names)."""
    root = tmp_path_factory.mktemp("served")
    corpus = write_corpus(root / "corpus.jsonl", 60)
    assert main(["-q", "index", str(corpus), str(root / "index"), "--model", str(tiny_model)]) == 0
    return root / "index"


@pytest.fixture()
def index_copy(served_index, tmp_path):
    """A private copy for tests that write."""
    path = tmp_path / "index"
    shutil.copytree(served_index, path)
    return path


def make_app(index, **config):
    from lsr.service import create_app

    # background merges only where a test asks for them (tests/service/test_merging.py): elsewhere they would
    # renumber documents under tests that look at internal ids and generations
    return create_app({"LSR_INDEX": str(index), "LSR_API_KEY": API_KEY, "LSR_RELOAD_CHECK_S": 0.0,
                       "LSR_MERGE": False, **config})


@pytest.fixture()
def client(served_index):
    return make_app(served_index).test_client()


@pytest.fixture()
def write_client(index_copy):
    return make_app(index_copy).test_client()


XSS_ID = "xss<1>"
XSS_TITLE = "<script>alert('title')</script> vitamin sleep"
XSS_TEXT = "<img src=x onerror=alert(1)> vitamin sleep diet vitamin sleep diet <script>alert('text')</script>"


@pytest.fixture(scope="session")
def page_index(tmp_path_factory, tiny_model):
    """An index built from a corpus (so the page has texts), with one document full of HTML to escape."""
    import orjson

    root = tmp_path_factory.mktemp("page")
    corpus = write_corpus(root / "corpus.jsonl", 60)
    with open(corpus, "ab") as fh:
        fh.write(orjson.dumps({"_id": XSS_ID, "title": XSS_TITLE, "text": XSS_TEXT}) + b"\n")
    assert main(["-q", "index", str(corpus), str(root / "index"), "--model", str(tiny_model)]) == 0
    return root / "index"
