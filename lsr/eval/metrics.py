"""Metrics through ir_measures (never re-implemented). Judged queries missing from a run count as 0."""

from __future__ import annotations

from collections.abc import Sequence

import ir_measures

from lsr.errors import InvalidInputError

__all__ = ["DEFAULT_MEASURES", "parse_measures", "evaluate_run"]

DEFAULT_MEASURES = ("nDCG@10", "R@100", "RR@10")


def parse_measures(names: Sequence[str]) -> list:
    measures = []
    for name in names:
        try:
            measures.append(ir_measures.parse_measure(name))
        except (ValueError, NameError, SyntaxError, TypeError):
            raise InvalidInputError(
                f"unknown measure {name!r}; use ir_measures syntax such as nDCG@10 or R@100."
            ) from None
    return measures


def evaluate_run(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]],
                 measures: Sequence[str] = DEFAULT_MEASURES) -> dict[str, float]:
    """Mean of each measure over every judged query (as ``trec_eval -c``): absent queries score 0."""
    parsed = parse_measures(measures)
    totals = {str(m): 0.0 for m in parsed}
    for metric in ir_measures.iter_calc(parsed, qrels, run):
        if metric.query_id in qrels:
            totals[str(metric.measure)] += float(metric.value)
    n = len(qrels)
    if n == 0:
        raise InvalidInputError("no judged queries to evaluate.")
    return {name: total / n for name, total in totals.items()}
