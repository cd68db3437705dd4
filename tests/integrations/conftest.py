"""Fixtures of the integration tests: one SciFact SPLADE-tiny index per session (encoded once, shared by the
PyTerrier and Pyserini tests) and the JVM, started once per session when Pyserini's extra is installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import SCIFACT


def require_pyterrier() -> None:
    if importlib.util.find_spec("pyterrier") is None:
        pytest.skip("PyTerrier is not installed (pip install 'lsr-search[pyterrier]'; CI installs it with dev)")


def require_pyserini() -> None:
    from lsr.errors import MissingDependencyError
    from lsr.pyserini import check_installed

    try:
        check_installed()
    except MissingDependencyError as exc:
        pytest.skip(f"{exc} (CI installs it with dev)")


@pytest.fixture(scope="session")
def scifact_eval(tmp_path_factory, splade_tiny) -> dict:
    """``lsr eval scifact`` (SPLADE-tiny, test split, k=1000): its report, with the index in report['index']."""
    from lsr.eval.runner import evaluate_beir

    out = tmp_path_factory.mktemp("scifact-eval")
    report = evaluate_beir(SCIFACT, out, split="test", model="splade-tiny", show_progress=False)
    assert Path(report["index"]).is_dir()
    return report


@pytest.fixture(scope="session")
def jvm() -> None:
    require_pyserini()
    from lsr.pyserini import start_jvm

    start_jvm()
