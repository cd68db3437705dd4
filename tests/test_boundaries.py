"""Import boundaries (ARCHITECTURE.md): the numpy core never drags in torch, flask or faiss."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "flask", "faiss", "ray")


@pytest.mark.parametrize("module", ["lsr", "lsr.types", "lsr.index", "lsr.kernels", "lsr.eval", "lsr.io.beir",
                                    "lsr.io.trec", "lsr.models", "lsr.cli", "lsr.eval.runner",
                                    "lsr.distributed"])
def test_core_modules_do_not_import_heavy_dependencies(module):
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "", f"{module} imports {proc.stdout.strip()}"


def test_public_facade():
    import lsr

    assert {"SparseBatch", "Hits", "open_index", "IndexWriter", "Searcher", "__version__"} <= set(lsr.__all__)
    assert lsr.open_index is not None and lsr.IndexWriter is not None and lsr.Searcher is not None
