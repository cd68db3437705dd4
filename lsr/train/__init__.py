"""Training sparse encoders: losses (FLOPS, IDF-aware FLOPS, L1, InfoNCE, MarginMSE, KL), ensemble teachers,
training data (a JSONL format and BEIR splits with mined negatives) and the ``lsr train`` loop.

Its modules import torch; this package file does not, so that ``lsr.cli`` can register the training
commands (``lsr.train.cli``) without loading torch for every other command.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Flops", "L1", "idf_aware_flops", "InfoNCE", "MarginMSE", "KLDistillation", "QuadraticWarmup",
           "Objective", "TrainConfig", "train"]


def __getattr__(name: str) -> Any:
    if name in ("TrainConfig", "train"):
        from lsr.train import trainer

        return getattr(trainer, name)
    if name in __all__:
        from lsr.train import losses

        return getattr(losses, name)
    raise AttributeError(f"module 'lsr.train' has no attribute {name!r}")
