"""Evaluation: ir_measures metrics, BEIR end-to-end runs, JSON reports."""

from lsr.eval.metrics import DEFAULT_MEASURES, evaluate_run

__all__ = ["DEFAULT_MEASURES", "evaluate_run"]
