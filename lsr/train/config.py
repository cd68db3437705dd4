"""The settings of a training run (no torch here: the CLI builds its options from them)."""

from __future__ import annotations

from dataclasses import dataclass

from lsr.errors import InvalidInputError

__all__ = ["TrainConfig", "ENCODERS", "FLOPS_KINDS", "LOSSES"]

LOSSES = ("kl", "infonce", "margin-mse")
ENCODERS = ("inference-free", "splade")
FLOPS_KINDS = ("plain", "idf-aware")


@dataclass
class TrainConfig:
    """Every setting of a run. ``flops="plain"`` with an inference-free encoder trains against binary query
    weights (the tokenizer alone) and penalises plain FLOPS; ``"idf-aware"`` trains against IDF query weights,
    i.e. the IDF-aware FLOPS (``idf_form`` picks which of its two equivalent forms is computed)."""

    train_file: str
    corpus: str
    model: str = "splade-tiny"
    encoder: str = "inference-free"
    flops: str = "idf-aware"
    idf_form: str = "match"
    idf: str | None = None  # idf.json; default: computed from the corpus with the model's tokenizer
    loss: str = "kl"
    doc_lambda: float = 1e-3
    query_lambda: float = 1e-3  # splade encoder only: L1 on queries
    lambda_warmup: int = 100
    l0_threshold: int | None = None
    # the student's scores are divided by it in kl / margin-mse; 0 = calibrated on the first training batches
    temperature: float = 1.0
    batch_size: int = 8
    negatives: int = 7
    steps: int | None = None
    epochs: float = 1.0
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    max_length: int = 256
    query_max_length: int = 64
    seed: int = 42
    checkpoint_every: int = 50
    threads: int | None = None

    def check(self) -> None:
        if self.encoder not in ENCODERS:
            raise InvalidInputError(f"encoder must be one of {', '.join(ENCODERS)}, got {self.encoder!r}.")
        if self.flops not in FLOPS_KINDS:
            raise InvalidInputError(f"flops must be one of {', '.join(FLOPS_KINDS)}, got {self.flops!r}.")
        if self.loss not in LOSSES:
            raise InvalidInputError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}.")
        for name in ("batch_size", "checkpoint_every", "max_length", "query_max_length"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.temperature < 0:
            raise InvalidInputError(f"temperature must be > 0, or 0 to calibrate it, got {self.temperature}.")
        if self.negatives < 0 or self.doc_lambda < 0 or self.query_lambda < 0 or self.lr <= 0:
            raise InvalidInputError("negatives and lambdas must be >= 0 and the learning rate > 0.")
        if self.steps is not None and self.steps < 1:
            raise InvalidInputError(f"steps must be >= 1, got {self.steps}.")
