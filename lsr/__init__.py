"""lsr: learned sparse retrieval.

The public surface is small: the core types, the index and the searcher. Encoders (torch) and evaluation
live in subpackages imported on demand, so ``import lsr`` stays light.
"""

from __future__ import annotations

__version__ = "0.1.0"

from lsr.errors import LsrError  # noqa: E402
from lsr.types import Hits, SparseBatch  # noqa: E402

__all__ = ["__version__", "Hits", "SparseBatch", "LsrError", "open_index", "IndexWriter", "Searcher"]


def __getattr__(name: str):
    # The index pulls in scipy and numba-backed kernels; load it only when asked for.
    if name in {"open_index", "IndexWriter", "Searcher"}:
        import lsr.index

        return getattr(lsr.index, name)
    raise AttributeError(f"module 'lsr' has no attribute {name!r}")
