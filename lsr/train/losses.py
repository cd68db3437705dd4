"""Training losses as small modules, each returning a dict of named terms (every one of them is logged).

Regularisers act on a batch of sparse representations ``(batch, vocab)``:

- :class:`Flops` -- ``sum_j (mean_batch |w_j|)^2`` (Paria et al.), optionally weighted per term and with an
  l0 mask (only rows with more than ``threshold`` non-zeros are penalised, as in SPLADE-v3's training);
- :class:`L1` -- ``mean_batch sum_j |w_j|``, the usual query-side penalty;
- :func:`idf_aware_flops` -- the IDF-aware FLOPS of Geng et al. ("Towards Competitive Search Relevance For
  Inference-Free Learned Sparse Retrievers", 2024) in either of its two equivalent forms (see there).

Ranking losses act on scores: :class:`InfoNCE` (in-batch + hard negatives), :class:`MarginMSE` and
:class:`KLDistillation`.
:class:`QuadraticWarmup` ramps a regulariser's lambda up as ``lambda * min(1, step / warmup)^2``.
:class:`Objective` adds one ranking loss and per-side regularisers; a regulariser alone is refused, since
minimising sparsity alone drives every weight to 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 - torch's own convention

from lsr.errors import InvalidInputError

__all__ = ["Flops", "L1", "idf_aware_flops", "InfoNCE", "MarginMSE", "KLDistillation", "QuadraticWarmup",
           "Objective", "flops_per_pair"]


class Flops(torch.nn.Module):
    """``sum_j c_j (mean_batch |w_j|)^2`` with optional per-term weights ``c`` (default 1).

    ``threshold``: only rows with more than that many non-zeros count (the others are left alone), so a model
    is not pushed below a useful length. The mean is still over the whole batch, so a penalised term's
    gradient does not grow when few rows pass the mask.
    """

    def __init__(self, term_weights: torch.Tensor | None = None, threshold: int | None = None, name: str = "flops"):
        super().__init__()
        if term_weights is not None and not term_weights.is_floating_point():
            term_weights = term_weights.float()
        self.register_buffer("term_weights", term_weights)
        self.threshold = threshold
        self.name = name

    def forward(self, reps: torch.Tensor) -> dict[str, torch.Tensor]:
        magnitude = reps.abs()
        if self.threshold is not None:
            keep = ((reps != 0).sum(dim=1) > self.threshold).to(reps.dtype)
            magnitude = magnitude * keep.unsqueeze(1)
        per_term = magnitude.mean(dim=0).square()
        if self.term_weights is not None:
            per_term = per_term * self.term_weights
        return {self.name: per_term.sum()}


class L1(torch.nn.Module):
    """``mean_batch sum_j |w_j|``."""

    def __init__(self, name: str = "l1"):
        super().__init__()
        self.name = name

    def forward(self, reps: torch.Tensor) -> dict[str, torch.Tensor]:
        return {self.name: reps.abs().sum(dim=1).mean()}


def idf_aware_flops(idf: torch.Tensor, form: str = "match", threshold: int | None = None) -> Flops:
    """The IDF-aware FLOPS regulariser over document representations, in one of two equivalent forms.

    The ranking score is the IDF-weighted match ``sum_{t in q} idf(t) w_t(d)`` and the penalty a plain FLOPS
    on ``w`` -- form ``"match"``: the model's output ``w`` is the representation, queries carry ``idf(t)``.
    Equivalently the document representation is ``u = idf * w`` (what a binary query matches) and the penalty
    ``sum_j (mean |u_j|)^2 / idf_j^2`` -- form ``"weighted"``: queries are binary and the FLOPS is weighted per
    term by ``1 / idf^2``, so frequent (low-IDF) terms cost more than rare ones. Both give the same loss and
    gradient for the same model (``tests/train/test_losses.py``). Terms with IDF 0 (special tokens) cannot
    match any query; the trainer zeroes them in the representation, so their weight here does not matter.
    """
    if form == "match":
        return Flops(threshold=threshold, name="flops_idf")
    if form == "weighted":
        idf = idf if idf.is_floating_point() else idf.float()
        weights = torch.where(idf > 0, 1.0 / idf.clamp_min(1e-12).square(), torch.zeros_like(idf))
        return Flops(weights, threshold=threshold, name="flops_idf")
    raise InvalidInputError(f"IDF-aware FLOPS form must be 'match' or 'weighted', got {form!r}.")


def flops_per_pair(query_reps: torch.Tensor, doc_reps: torch.Tensor) -> torch.Tensor:
    """Expected number of shared non-zero terms of a query and a document, ``sum_j P(q_j != 0) P(d_j != 0)``
    over the batch (the FLOPS measure of Paria et al.); times the collection size it is postings per query."""
    return ((query_reps != 0).float().mean(dim=0) * (doc_reps != 0).float().mean(dim=0)).sum()


class InfoNCE(torch.nn.Module):
    """Cross-entropy of each query's positive against every document in the batch (its hard negatives and the
    other queries' documents). ``scores`` is ``(queries, documents)``, ``positives`` the column of each row's
    positive."""

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, scores: torch.Tensor, positives: torch.Tensor, **_: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"infonce": F.cross_entropy(scores / self.temperature, positives)}


class MarginMSE(torch.nn.Module):
    """``mean (s(q,d+) - s(q,d-) - (t(q,d+) - t(q,d-)))^2`` over each query's own candidates, the first being
    its positive. ``own`` is ``(queries, candidates)`` student scores, ``teacher`` the same shape."""

    def forward(self, own: torch.Tensor, teacher: torch.Tensor, **_: torch.Tensor) -> dict[str, torch.Tensor]:
        student_margin = own[:, :1] - own[:, 1:]
        teacher_margin = teacher[:, :1] - teacher[:, 1:]
        return {"margin_mse": F.mse_loss(student_margin, teacher_margin)}


class KLDistillation(torch.nn.Module):
    """``KL(softmax(teacher) || softmax(student))`` over each query's own candidates. Teacher scores arrive
    already scaled (the ensemble's S); the student's raw scores are its logits."""

    def forward(self, own: torch.Tensor, teacher: torch.Tensor, **_: torch.Tensor) -> dict[str, torch.Tensor]:
        target = F.log_softmax(teacher, dim=1)
        return {"kl": F.kl_div(F.log_softmax(own, dim=1), target, log_target=True, reduction="batchmean")}


RANKING_LOSSES = {"infonce": InfoNCE, "margin-mse": MarginMSE, "kl": KLDistillation}


@dataclass(frozen=True)
class QuadraticWarmup:
    """``lam * min(1, step / steps)^2`` (SPLADE's schedule: sparsity pressure grows as the ranking settles)."""

    lam: float
    steps: int

    def __call__(self, step: int) -> float:
        if self.steps <= 0:
            return self.lam
        return self.lam * min(1.0, step / self.steps) ** 2


class Objective(torch.nn.Module):
    """A ranking loss plus optional document- and query-side regularisers, each with its own warm-up.

    ``forward`` returns every named term, the lambdas in force and ``loss``, their weighted sum.
    """

    def __init__(self, ranking: torch.nn.Module | None, doc_reg: torch.nn.Module | None = None,
                 doc_lambda: QuadraticWarmup | None = None, query_reg: torch.nn.Module | None = None,
                 query_lambda: QuadraticWarmup | None = None):
        super().__init__()
        if ranking is None:
            raise InvalidInputError("a regulariser alone is not a training objective (it drives every weight to "
                                    "0); add a ranking loss: infonce, margin-mse or kl.")
        if (doc_reg is None) != (doc_lambda is None) or (query_reg is None) != (query_lambda is None):
            raise InvalidInputError("each regulariser needs its lambda schedule, and a schedule its regulariser.")
        self.ranking, self.doc_reg, self.query_reg = ranking, doc_reg, query_reg
        self.doc_lambda, self.query_lambda = doc_lambda, query_lambda

    def forward(self, step: int, doc_reps: torch.Tensor, query_reps: torch.Tensor | None = None,
                **ranking_inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = dict(self.ranking(**ranking_inputs))
        loss = sum(terms.values())
        for reg, schedule, reps, side in ((self.doc_reg, self.doc_lambda, doc_reps, "doc"),
                                          (self.query_reg, self.query_lambda, query_reps, "query")):
            if reg is None or reps is None:
                continue
            lam = schedule(step)
            for name, value in reg(reps).items():
                terms[f"{side}_{name}"] = value
                loss = loss + lam * value
            terms[f"{side}_lambda"] = torch.tensor(lam)
        terms["loss"] = loss
        return terms
