"""The two types every layer passes around: :class:`SparseBatch` (vectors in) and :class:`Hits` (results out).

numpy only: this module must stay importable without torch, numba or scipy (``to_scipy`` imports scipy
lazily).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lsr.errors import InvalidInputError

__all__ = ["SparseBatch", "Hits"]


@dataclass(frozen=True, eq=False)
class SparseBatch:
    """``n`` sparse vectors over a vocabulary of size ``dim``, stored as CSR.

    Invariants (checked cheaply on construction, fully by :meth:`validate`): ``indptr`` is int64 of
    length n+1 starting at 0 and non-decreasing; ``indices`` int32, strictly increasing within a row and
    in ``[0, dim)``; ``values`` float32, finite and > 0. One query is a batch of one.
    """

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    dim: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "indptr", np.ascontiguousarray(self.indptr, dtype=np.int64))
        object.__setattr__(self, "indices", np.ascontiguousarray(self.indices, dtype=np.int32))
        object.__setattr__(self, "values", np.ascontiguousarray(self.values, dtype=np.float32))
        if int(self.dim) <= 0:
            raise InvalidInputError(f"SparseBatch dim must be positive, got {self.dim}.")
        object.__setattr__(self, "dim", int(self.dim))
        if self.indptr.ndim != 1 or len(self.indptr) == 0 or self.indptr[0] != 0:
            raise InvalidInputError("SparseBatch indptr must be a 1-d array of length n+1 starting at 0.")
        nnz = int(self.indptr[-1])
        if self.indices.shape != (nnz,) or self.values.shape != (nnz,):
            raise InvalidInputError(
                f"SparseBatch indptr ends at {nnz} but indices has shape {self.indices.shape} "
                f"and values {self.values.shape}."
            )

    # ------------------------------------------------------------------ constructors
    @classmethod
    def empty(cls, n: int, dim: int) -> SparseBatch:
        """``n`` all-zero vectors."""
        return cls(np.zeros(n + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), dim)

    @classmethod
    def from_dense(cls, matrix: np.ndarray) -> SparseBatch:
        """From an ``(n, dim)`` array; keeps the entries > 0 (negative entries are not allowed)."""
        matrix = np.asarray(matrix, dtype=np.float32)
        if matrix.ndim != 2:
            raise InvalidInputError(f"from_dense needs a 2-d array, got shape {matrix.shape}.")
        if (matrix < 0).any():
            raise InvalidInputError("SparseBatch weights must be >= 0; the dense matrix has negative entries.")
        rows, cols = np.nonzero(matrix > 0)
        indptr = np.zeros(matrix.shape[0] + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=matrix.shape[0]), out=indptr[1:])
        return cls(indptr, cols, matrix[rows, cols], matrix.shape[1])

    @classmethod
    def from_scipy(cls, matrix) -> SparseBatch:  # noqa: ANN001 - scipy is optional at import time
        """From any scipy sparse matrix; explicit zeros are dropped and duplicates summed."""
        csr = matrix.tocsr(copy=True)
        csr.sum_duplicates()
        csr.eliminate_zeros()
        csr.sort_indices()
        return cls(csr.indptr, csr.indices, csr.data, csr.shape[1])

    @classmethod
    def from_dicts(cls, vectors: Sequence[Mapping[int, float]], dim: int, validate: bool = True) -> SparseBatch:
        """From one ``{term_id: weight}`` mapping per row. Zero weights are dropped. ``validate=False`` leaves
        the full check (:meth:`validate`) to the caller (the search path checks queries in one C pass)."""
        indptr = np.zeros(len(vectors) + 1, np.int64)
        indices: list[np.ndarray] = []
        values: list[np.ndarray] = []
        for row, vec in enumerate(vectors):
            ids = np.fromiter((int(t) for t in vec.keys()), np.int64, len(vec))
            ws = np.fromiter((float(w) for w in vec.values()), np.float64, len(vec))
            keep = ws != 0
            ids, ws = ids[keep], ws[keep]
            order = np.argsort(ids, kind="stable")
            indices.append(ids[order])
            values.append(ws[order])
            indptr[row + 1] = indptr[row] + len(ids)
        batch = cls(
            indptr,
            np.concatenate(indices) if indices else np.zeros(0, np.int64),
            np.concatenate(values) if values else np.zeros(0, np.float64),
            dim,
        )
        return batch.validate() if validate else batch

    @classmethod
    def concat(cls, batches: Iterable[SparseBatch]) -> SparseBatch:
        """Stack batches row-wise (all must share ``dim``)."""
        batches = list(batches)
        if not batches:
            raise InvalidInputError("SparseBatch.concat needs at least one batch.")
        dim = batches[0].dim
        if any(b.dim != dim for b in batches):
            raise InvalidInputError(f"cannot concatenate SparseBatches of dims {sorted({b.dim for b in batches})}.")
        offsets = np.cumsum([0] + [b.nnz for b in batches[:-1]])
        indptr = np.concatenate([[0]] + [b.indptr[1:] + off for b, off in zip(batches, offsets, strict=True)])
        return cls(
            indptr,
            np.concatenate([b.indices for b in batches]),
            np.concatenate([b.values for b in batches]),
            dim,
        )

    # ------------------------------------------------------------------ accessors
    @property
    def n(self) -> int:
        return len(self.indptr) - 1

    def __len__(self) -> int:
        return self.n

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(term ids, weights) of row ``i``."""
        lo, hi = self.indptr[i], self.indptr[i + 1]
        return self.indices[lo:hi], self.values[lo:hi]

    def row_nnz(self) -> np.ndarray:
        return np.diff(self.indptr)

    def slice(self, start: int, stop: int) -> SparseBatch:
        """Rows ``start:stop`` as a new batch (copies the slices)."""
        lo, hi = self.indptr[start], self.indptr[stop]
        return SparseBatch(self.indptr[start : stop + 1] - lo, self.indices[lo:hi], self.values[lo:hi], self.dim)

    def take(self, rows: Sequence[int] | np.ndarray) -> SparseBatch:
        """The given rows, in the given order."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.indptr[rows + 1] - self.indptr[rows]
        indptr = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lengths, out=indptr[1:])
        gather = np.concatenate(
            [np.arange(self.indptr[r], self.indptr[r + 1]) for r in rows] or [np.zeros(0, np.int64)]
        ).astype(np.int64)
        return SparseBatch(indptr, self.indices[gather], self.values[gather], self.dim)

    def to_scipy(self):  # noqa: ANN201 - returns scipy.sparse.csr_matrix
        import scipy.sparse as sp

        return sp.csr_matrix((self.values, self.indices, self.indptr), shape=(self.n, self.dim))

    def to_dicts(self) -> list[dict[int, float]]:
        return [dict(zip(*(a.tolist() for a in self.row(i)), strict=True)) for i in range(self.n)]

    # ------------------------------------------------------------------ validation
    def validate(self) -> SparseBatch:
        """Full O(nnz) check of every invariant; returns self so it can be chained."""
        if np.any(np.diff(self.indptr) < 0):
            raise InvalidInputError("SparseBatch indptr must be non-decreasing.")
        if self.nnz:
            if self.indices.min() < 0 or self.indices.max() >= self.dim:
                bad = int(self.indices.max() if self.indices.max() >= self.dim else self.indices.min())
                raise InvalidInputError(f"term id {bad} is outside the vocabulary [0, {self.dim}).")
            if not np.all(np.isfinite(self.values)):
                raise InvalidInputError("SparseBatch values must be finite (found NaN or inf).")
            if np.any(self.values <= 0):
                raise InvalidInputError(
                    f"SparseBatch values must be > 0, found {float(self.values.min())}."
                )
            # strictly increasing within each row: a step <= 0 is allowed only where a new row starts
            steps = np.diff(self.indices.astype(np.int64))
            row_starts = np.zeros(self.nnz, bool)
            row_starts[self.indptr[1:-1][self.indptr[1:-1] < self.nnz]] = True
            if np.any((steps <= 0) & ~row_starts[1:]):
                raise InvalidInputError("SparseBatch term ids must be strictly increasing within each row.")
        return self

    def __repr__(self) -> str:
        return f"SparseBatch(n={self.n}, dim={self.dim}, nnz={self.nnz})"


@dataclass(frozen=True, eq=False)
class Hits:
    """Top-k results of ``n`` queries as fixed-shape arrays (faiss's contract).

    ``ids`` int64 ``(n, k)``, ``-1`` where a query has fewer than k matches; ``scores`` float32 ``(n, k)``,
    descending within a row, ``-inf`` where ``ids`` is ``-1``. Equal scores are ordered by ascending id.
    Ids are internal (dense) document ids; external ids are resolved at the edges.
    """

    ids: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", np.ascontiguousarray(self.ids, dtype=np.int64))
        object.__setattr__(self, "scores", np.ascontiguousarray(self.scores, dtype=np.float32))
        if self.ids.ndim != 2 or self.ids.shape != self.scores.shape:
            raise InvalidInputError(
                f"Hits ids and scores must be 2-d of the same shape, got {self.ids.shape} and {self.scores.shape}."
            )

    @classmethod
    def empty(cls, n: int, k: int) -> Hits:
        return cls(np.full((n, k), -1, np.int64), np.full((n, k), -np.inf, np.float32))

    @property
    def n(self) -> int:
        return self.ids.shape[0]

    @property
    def k(self) -> int:
        return self.ids.shape[1]

    def __len__(self) -> int:
        return self.n

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of query ``i`` without the padding."""
        valid = self.ids[i] >= 0
        return self.ids[i][valid], self.scores[i][valid]

    def validate(self) -> Hits:
        """Check the padding convention and the (score desc, id asc) order of every row."""
        pad = self.ids < 0
        if np.any(self.ids[pad] != -1) or np.any(~np.isneginf(self.scores[pad])):
            raise InvalidInputError("Hits padding must be id -1 with score -inf.")
        if np.any(pad[:, :-1] & ~pad[:, 1:]):
            raise InvalidInputError("Hits padding must come after every real hit in a row.")
        s, d = self.scores, self.ids
        both = ~pad[:, :-1] & ~pad[:, 1:]
        wrong = (s[:, 1:] > s[:, :-1]) | ((s[:, 1:] == s[:, :-1]) & (d[:, 1:] <= d[:, :-1]))
        if np.any(wrong & both):
            raise InvalidInputError("Hits rows must be sorted by score descending, then id ascending.")
        return self

    @staticmethod
    def merge(parts: Sequence[Hits], k: int) -> Hits:
        """Global top-k of several result sets for the same queries (e.g. one per segment or shard).

        Ids must already be in one id space; an id present in several parts is kept once (its best score).
        """
        if not parts:
            raise InvalidInputError("Hits.merge needs at least one part.")
        n = parts[0].n
        if any(p.n != n for p in parts):
            raise InvalidInputError("Hits.merge parts must have the same number of queries.")
        ids = np.concatenate([p.ids for p in parts], axis=1)
        scores = np.concatenate([p.scores for p in parts], axis=1)
        out = Hits.empty(n, k)
        for i in range(n):
            valid = ids[i] >= 0
            row_ids, row_scores = ids[i][valid], scores[i][valid]
            order = np.lexsort((row_ids, -row_scores.astype(np.float64)))
            row_ids, row_scores = row_ids[order], row_scores[order]
            _, first = np.unique(row_ids, return_index=True)
            keep = np.sort(first)[:k]
            out.ids[i, : len(keep)] = row_ids[keep]
            out.scores[i, : len(keep)] = row_scores[keep]
        return out

    def __repr__(self) -> str:
        return f"Hits(n={self.n}, k={self.k})"
