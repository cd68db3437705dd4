"""Dense retrieval: a sentence-transformers encoder and faiss indexes over each segment's dense vectors.

The only place lsr imports faiss (and, with the encoders, sentence-transformers). The index stores each
segment's dense vectors (``dense.vectors.npy``) and the serialised faiss index built over them
(``dense.faiss``); this package builds and reads the latter and keeps faiss's contract: fixed-shape
(scores, ids) results padded with -1.
"""

from __future__ import annotations

from lsr.dense.encoder import DenseEncoder
from lsr.dense.store import DenseSearcher, faiss_builder

__all__ = ["DenseEncoder", "DenseSearcher", "faiss_builder"]
