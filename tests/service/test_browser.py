"""The search page in a real browser (Debian's chromium through Playwright) against a real gunicorn server.

Playwright's own browser download needs the internet, so the test drives the system chromium and skips,
saying why, when either is missing (.ci/run installs chromium through apt). It also saves the README's
screenshot, docs/search_page.png.
"""

from __future__ import annotations

import gzip
import itertools
import os
import shutil
from pathlib import Path

import orjson
import pytest

from lsr.cli import main
from tests.service.conftest import XSS_ID, XSS_TEXT, XSS_TITLE
from tests.service.test_live import Server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCIFACT = ROOT / "lsr" / "datasets" / "scifact" / "corpus.jsonl.gz"
SCREENSHOT = ROOT / "docs" / "search_page.png"
N_DOCS = 400  # enough SciFact abstracts for real-looking results, few enough to encode in seconds


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium on PATH (apt-get install chromium; .ci/run does this when it can)")


@pytest.fixture(scope="module")
def browser():
    executable = chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install 'lsr-search[dev]')")
    with sync_playwright() as p:
        # --no-sandbox: chromium refuses to sandbox as root, which CI containers are
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        b = p.chromium.launch(executable_path=executable, headless=True, args=args)
        yield b
        b.close()


@pytest.fixture(scope="module")
def scifact_index(tmp_path_factory, splade_tiny):
    root = tmp_path_factory.mktemp("browser")
    corpus = root / "corpus.jsonl"
    with gzip.open(SCIFACT, "rb") as src, open(corpus, "wb") as out:
        out.writelines(itertools.islice(src, N_DOCS))
        out.write(orjson.dumps({"_id": XSS_ID, "title": XSS_TITLE, "text": XSS_TEXT}) + b"\n")
    assert main(["-q", "index", str(corpus), str(root / "index"), "--model", splade_tiny]) == 0
    return root / "index"


@pytest.fixture(scope="module")
def server(scifact_index, tmp_path_factory):
    s = Server(scifact_index, tmp_path_factory.mktemp("browser-server"), workers=1)
    yield s
    s.kill()


def test_search_explain_page_and_inert_html(browser, server):
    page = browser.new_page(viewport={"width": 1200, "height": 1000})
    dialogs, console = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("console", lambda m: console.append(m.text))
    base = f"http://127.0.0.1:{server.port}/"
    page.goto(base)
    page.fill("#q", "vitamin D deficiency and bone health")
    page.fill("input[name=k]", "5")
    page.click("button[type=submit]")
    page.wait_for_selector("li.hit")
    assert "q=vitamin+D+deficiency" in page.url  # a plain GET form: the result page has a shareable URL
    hits = page.locator("li.hit")
    assert hits.count() == 5
    assert page.locator("li.hit .title").count() > 0 and page.locator("mark").count() > 0

    why = page.locator("details.why").first
    assert not why.locator("table").is_visible()
    why.locator("summary").click()
    assert why.locator("table").is_visible()
    assert why.locator("td.sum").inner_text() == hits.first.locator(".score").inner_text().split()[-1]
    page.locator("details.expanded summary").click()
    assert page.locator("li.expansion").count() > 0
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))

    page.click("#toggle-why")  # page.js's nicety: every explanation at once
    assert all(d.get_attribute("open") is not None for d in page.locator("details.why").all())

    first_page = page.locator(".docid").all_inner_texts()
    page.click("a[rel=next]")
    page.wait_for_selector("li.hit")
    assert "page=2" in page.url
    assert page.locator("li.hit .rank").first.inner_text() == "6"
    assert not set(page.locator(".docid").all_inner_texts()) & set(first_page)

    page.goto(base + "?q=vitamin+sleep+diet+script+alert&k=50")
    page.wait_for_selector("li.hit")
    xss = page.locator("li.hit", has=page.locator(".docid", has_text=XSS_ID))
    assert xss.count() == 1
    assert "<script>alert('title')</script>" in xss.locator(".title").inner_text()
    assert "<img src=x onerror=alert(1)>" in xss.locator(".snippet").inner_text()
    assert page.locator("li.hit img").count() == 0 and page.locator("li.hit script").count() == 0
    page.wait_for_timeout(300)  # time for anything that would fire
    assert dialogs == []
    assert not [m for m in console if "Content Security Policy" in m]  # the page breaks none of its own CSP

    page.goto(base + "?q=cell&k=abc")
    assert "k must be a whole number" in page.locator(".error").inner_text()
    page.goto(base + "about")
    assert f"{N_DOCS + 1} live" in page.locator("table.info").inner_text()
    page.close()


def test_the_page_works_without_javascript(browser, server):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(f"http://127.0.0.1:{server.port}/")
    page.fill("#q", "coffee and heart disease")
    page.press("#q", "Enter")  # a plain form submission
    page.wait_for_selector("li.hit")
    assert page.locator("li.hit").count() == 10 and page.locator("#toggle-why").count() == 0
    why = page.locator("details.why").first
    why.locator("summary").click()  # <details> opens without script
    assert why.locator("table").is_visible()
    page.click("a[rel=next]")
    page.wait_for_selector("li.hit")
    assert page.locator("li.hit .rank").first.inner_text() == "11"
    context.close()
