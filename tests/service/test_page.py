"""The search page (``GET /``, ``GET /about``) through the Flask test client: hits, escaping, paging, errors."""

from __future__ import annotations

import html
import re

import numpy as np
import pytest

from lsr.cli import main
from lsr.search import SparseRetriever
from tests.conftest import build_hybrid_index
from tests.service.conftest import API_KEY, XSS_ID, make_app


@pytest.fixture()
def page(page_index):
    return make_app(page_index).test_client()


def hit_ids(text: str) -> list[str]:
    return [html.unescape(i) for i in re.findall(r'<span class="docid">([^<]*)</span>', text)]


def test_empty_page_is_a_plain_get_form(page):
    r = page.get("/")
    assert r.status_code == 200 and r.mimetype == "text/html"
    form = re.search(r"<form[^>]*>", r.text).group(0)
    assert 'method="get"' in form and 'action="/"' in form
    for name in ("q", "k", "mode", "alpha", "prf", "placement"):
        assert f'name="{name}"' in r.text
    assert 'type="submit"' in r.text
    assert 'method="post"' not in r.text.lower()  # no write forms anywhere on the page
    assert "no dense part" in r.text  # the dense/hybrid controls are disabled, with a note
    assert re.search(r'<option value="hybrid"\s+disabled>', r.text)


def test_hits_match_the_library_with_explanations_summing_to_scores(page, page_index):
    r = page.get("/?q=cell+protein&k=5")
    assert r.status_code == 200
    retriever = SparseRetriever(page_index)
    ids, scores = retriever.search(["cell protein"], 5).row(0)
    assert hit_ids(r.text) == retriever.index.external_ids(ids)
    shown = [float(s) for s in re.findall(r'<span class="score">score ([0-9.]+)</span>', r.text)]
    np.testing.assert_allclose(shown, scores, atol=1e-4)
    sums = [float(s) for s in re.findall(r'<td class="sum">([0-9.]+)</td>', r.text)]
    np.testing.assert_allclose(sums, scores, atol=1e-4)  # the "why" sums are the scores
    assert r.text.count('<details class="why">') == 5 and "×" in r.text
    assert "<mark>" in r.text  # matching words are marked in the snippets
    assert "Expanded query" in r.text and re.search(r"encode [0-9.]+ ms", r.text)
    assert re.search(r"search [0-9.]+ ms", r.text)


def test_expansion_terms_are_marked(page, monkeypatch):
    from lsr.service import page as page_module

    monkeypatch.setattr(page_module, "EXPANDED_TERMS", 10_000)  # the tiny model may rank "cell" low: list all
    text = page.get("/?q=cell").text
    terms = re.findall(r'<li class="(own|expansion)"><span class="tok">([^<]*)</span>', text)
    assert [token for kind, token in terms if kind == "own"] == ["cell"]  # the query's own word only
    assert any(kind == "expansion" for kind, _ in terms)


def test_a_document_holding_html_renders_as_text(page):
    r = page.get("/", query_string={"q": "vitamin sleep diet", "k": 20})
    assert XSS_ID in hit_ids(r.text)
    assert "<script>alert" not in r.text and "<img" not in r.text
    assert "&lt;script&gt;alert(&#39;title&#39;)&lt;/script&gt;" in r.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in r.text
    assert "xss&lt;1&gt;" in r.text
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    # the only script is the page's own file; there is no inline script or handler for the CSP to block
    assert re.findall(r"<script[^>]*>", r.text) == ['<script src="/static/page/page.js" defer>']


def test_the_query_itself_is_escaped(page):
    r = page.get("/", query_string={"q": '"><script>alert(1)</script> cell'})
    assert r.status_code == 200
    assert "<script>alert(1)" not in r.text and "&#34;&gt;&lt;script&gt;" in r.text


def test_pagination(page):
    first = page.get("/?q=cell+virus&k=4")
    second = page.get("/?q=cell+virus&k=4&page=2")
    both = page.get("/?q=cell+virus&k=8")
    assert hit_ids(first.text) + hit_ids(second.text) == hit_ids(both.text)
    assert 'rel="next" href="/?q=cell+virus&amp;k=4&amp;mode=sparse&amp;page=2"' in first.text
    assert 'rel="prev"' not in first.text
    assert 'rel="prev" href="/?q=cell+virus&amp;k=4&amp;mode=sparse"' in second.text
    assert '<ol class="hits" start="5">' in second.text
    last = page.get("/?q=cell+virus&k=10&page=7")  # 61 documents: the last page has one hit, no next link
    assert len(hit_ids(last.text)) == 1 and 'rel="next"' not in last.text


@pytest.mark.parametrize(("query", "fragment"), [
    ("k=abc", "k must be a whole number"),
    ("k=100000", "k must be between 1 and 100"),
    ("k=0", "k must be between"),
    ("page=0", "page must be between"),
    ("page=1000", "page must be between"),
    ("mode=fast", "mode must be one of"),
    ("mode=hybrid", "needs an index with a dense part"),
    ("alpha=2", "alpha must be"),
    ("alpha=nan", "alpha must be"),
    ("prf=maybe", "prf must be"),
    ("q=" + "x" * 10_001, "limited to"),
])
def test_bad_input_is_a_400_page(page, query, fragment):
    r = page.get("/?" + (query if query.startswith("q=") else "q=cell&" + query))
    assert r.status_code == 400, r.text
    assert r.mimetype == "text/html" and fragment in html.unescape(r.text)
    assert "Content-Security-Policy" in r.headers


def test_index_page(page, page_index):
    r = page.get("/about")
    assert r.status_code == 200
    text = html.unescape(r.text)
    for fragment in ("61 live", "postings", "MiB", "uint8", "scale", "seg-", "encoder", "document texts",
                     "corpus.jsonl"):
        assert fragment in text, fragment
    assert "Content-Security-Policy" in r.headers


def test_an_index_of_vectors_has_no_texts(page_index, tmp_path):
    vectors = tmp_path / "vectors.jsonl"
    vectors.write_text('{"id": "v1", "contents": "", "vector": {"cell": 2.0, "virus": 1.0}}\n'
                       '{"id": "v2", "contents": "", "vector": {"protein": 1.5}}\n')
    assert main(["-q", "index", str(vectors), str(tmp_path / "index")]) == 0
    client = make_app(tmp_path / "index").test_client()
    r = client.get("/?q=cell")  # a pre-encoded index has no model to encode the query with
    assert r.status_code == 400 and "vectors" in r.text
    assert "not built from a corpus" in client.get("/about").text


def test_documents_added_later_show_terms_not_stale_texts(page_index, tmp_path):
    import shutil

    shutil.copytree(page_index, tmp_path / "index")
    client = make_app(tmp_path / "index").test_client()
    r = client.post("/v1/documents", json={"documents": [{"id": "doc1", "text": "replaced cell text"}]},
                    headers={"X-API-Key": API_KEY})
    assert r.status_code == 201
    text = client.get("/", query_string={"q": "cell", "k": 61}).text
    block = text[text.index('<span class="docid">doc1</span>'):]
    block = block[:block.index("</li>")]
    assert "No text stored for this document" in block


def test_write_endpoints_still_need_the_key(page_index, tmp_path):
    import shutil

    shutil.copytree(page_index, tmp_path / "index")
    client = make_app(tmp_path / "index").test_client()
    assert client.post("/v1/documents", json={"documents": [{"id": "a", "text": "cell"}]}).status_code == 401
    assert client.delete("/v1/documents/doc1").status_code == 401
    assert client.post("/", data={"q": "cell"}).status_code == 405  # the page takes GET only


def test_read_key_servers_do_not_serve_the_page_without_a_key(page_index):
    client = make_app(page_index, LSR_READ_KEY_REQUIRED=True).test_client()
    r = client.get("/?q=cell")
    assert r.status_code == 401 and r.mimetype == "text/html" and "API key" in r.text
    assert client.get("/?q=cell", headers={"X-API-Key": API_KEY}).status_code == 200


@pytest.fixture(scope="module")
def hybrid_index(tmp_path_factory, tiny_model, tiny_dense_model):
    return build_hybrid_index(tmp_path_factory.mktemp("page-hybrid"), 30, tiny_model, tiny_dense_model)


def test_dense_and_hybrid_modes(hybrid_index):
    client = make_app(hybrid_index).test_client()
    empty = client.get("/").text
    assert "no dense part" not in empty and not re.search(r'<option value="hybrid"\s+disabled>', empty)
    for query in ("mode=dense", "mode=hybrid&alpha=0.3", "mode=hybrid&prf=on&placement=both", "mode=sparse&prf=on"):
        r = client.get(f"/?q=cell+protein&k=3&{query}")
        assert r.status_code == 200, r.text
        assert len(hit_ids(r.text)) == 3 and "pipeline total" in r.text
        assert "for plain sparse search only" in r.text and '<details class="why">' not in r.text
    r = client.get("/?q=cell+protein&k=3&mode=hybrid&alpha=0.3&prf=on&placement=before")
    assert "alpha=0.3&amp;prf=on&amp;placement=before" in r.text  # the next page keeps every option


def test_snippets_cut_around_the_first_match_and_mark_words():
    from lsr.service.snippets import Marker, snippet

    text = " ".join(f"w{i}" for i in range(200)) + " Cells grow. " + " ".join(f"v{i}" for i in range(200))
    pieces, matched = snippet(text, Marker(["cell"], lambda w: ["cell", "##s"] if w == "cells" else [w]))
    joined = "".join(t for t, _ in pieces)
    assert matched and joined.startswith("… w192 w193") and joined.endswith(" …")  # context before the match
    assert [t for t, m in pieces if m] == ["Cells"]  # "cells" -> "cell" + "##s": the stem matched
    assert len(joined.split()) == 52  # 50 words and two ellipses
    short, _ = snippet("<b>cell</b> & co", Marker(["cell"]))
    assert short == [("<b>", False), ("cell", True), ("</b> & co", False)]  # raw text: the template escapes
    assert not Marker(["##s"])("s")  # continuation pieces never mark whole words
