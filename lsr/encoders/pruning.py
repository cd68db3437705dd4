"""Document pruning at encode time: drop a vector's weakest terms before they reach the index.

The four rules are OpenSearch's neural-sparse ``prune_type`` values, with its semantics, so a setting
tuned there means the same here:

- ``top_k``: keep the k largest weights (ties broken towards the smaller term id, so the result is
  deterministic);
- ``abs_value``: keep weights >= the threshold;
- ``max_ratio``: keep weights >= ratio x the vector's largest weight;
- ``alpha_mass``: walk the weights from the largest down and keep them while their running sum stays
  <= alpha x the vector's total.

The rule is part of the encoder's config, so the index manifest records how its documents were pruned.
No torch here: pruning works on :class:`~lsr.types.SparseBatch` rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lsr.errors import InvalidInputError
from lsr.types import SparseBatch

__all__ = ["PRUNE_TYPES", "check_pruning", "prune"]


def _keep_top_k(values: np.ndarray, k: float) -> np.ndarray:
    order = np.argsort(-values, kind="stable")  # row indices are in term order: stable = smaller id first
    keep = np.zeros(len(values), bool)
    keep[order[: int(k)]] = True
    return keep


def _keep_abs_value(values: np.ndarray, threshold: float) -> np.ndarray:
    return values >= np.float32(threshold)


def _keep_max_ratio(values: np.ndarray, ratio: float) -> np.ndarray:
    return values >= np.float32(ratio) * values.max()


def _keep_alpha_mass(values: np.ndarray, alpha: float) -> np.ndarray:
    order = np.argsort(-values, kind="stable")
    # float32 running sums, as OpenSearch accumulates them, so a borderline term is decided the same way
    running = np.cumsum(values[order], dtype=np.float32)
    keep = np.zeros(len(values), bool)
    keep[order[running <= np.float32(alpha) * np.float32(values.sum(dtype=np.float64))]] = True
    return keep


PRUNE_TYPES: dict[str, tuple[Callable[[np.ndarray, float], np.ndarray], Callable[[float], bool], str]] = {
    "top_k": (_keep_top_k, lambda v: v > 0 and float(v).is_integer(), "a positive integer"),
    "abs_value": (_keep_abs_value, lambda v: v >= 0, "non-negative"),
    "max_ratio": (_keep_max_ratio, lambda v: 0 <= v < 1, "in [0, 1)"),
    "alpha_mass": (_keep_alpha_mass, lambda v: 0 <= v < 1, "in [0, 1)"),
}


def check_pruning(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """Validate ``{"type": ..., "value": ...}`` (None = keep every positive weight); returns it normalised."""
    if config is None:
        return None
    if not isinstance(config, dict) or set(config) != {"type", "value"}:
        raise InvalidInputError(f"pruning must be {{'type': ..., 'value': ...}}, got {config!r}.")
    kind, value = config["type"], config["value"]
    if kind not in PRUNE_TYPES:
        raise InvalidInputError(f"unknown pruning type {kind!r}; known: {', '.join(PRUNE_TYPES)}.")
    _, valid, description = PRUNE_TYPES[kind]
    if isinstance(value, bool) or not isinstance(value, int | float) or not valid(value):
        raise InvalidInputError(f"pruning value for {kind} must be {description}, got {value!r}.")
    return {"type": kind, "value": int(value) if kind == "top_k" else float(value)}


def prune(batch: SparseBatch, config: dict[str, Any] | None) -> SparseBatch:
    """Each row of ``batch`` pruned by ``config`` (see the module doc); rows stay in term order."""
    config = check_pruning(config)
    if config is None or batch.nnz == 0:
        return batch
    keep_rule = PRUNE_TYPES[config["type"]][0]
    keep = np.zeros(batch.nnz, bool)
    for row in range(batch.n):
        lo, hi = int(batch.indptr[row]), int(batch.indptr[row + 1])
        if hi > lo:
            keep[lo:hi] = keep_rule(np.asarray(batch.values[lo:hi]), config["value"])
    kept_before = np.concatenate([[0], np.cumsum(keep)])  # kept entries before each position
    indptr = kept_before[batch.indptr].astype(np.int64)
    return SparseBatch(indptr, batch.indices[keep], batch.values[keep], batch.dim)
