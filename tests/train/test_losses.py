"""Losses against hand computations, and the two forms of the IDF-aware FLOPS against each other."""

from __future__ import annotations

import math

import pytest
import torch

from lsr.errors import InvalidInputError
from lsr.train.losses import (
    L1,
    Flops,
    InfoNCE,
    KLDistillation,
    MarginMSE,
    Objective,
    QuadraticWarmup,
    flops_per_pair,
    idf_aware_flops,
)

REPS = torch.tensor([[1.0, 0.0, 2.0, 0.0], [3.0, 1.0, 0.0, 0.0], [0.0, 0.0, 4.0, 1.0]])


def test_flops_is_the_sum_of_squared_mean_magnitudes():
    # means per term: 4/3, 1/3, 2, 1/3
    expected = (4 / 3) ** 2 + (1 / 3) ** 2 + 2**2 + (1 / 3) ** 2
    assert Flops()(REPS)["flops"].item() == pytest.approx(expected)
    weights = torch.tensor([1.0, 2.0, 0.5, 0.0])
    assert Flops(weights)(REPS)["flops"].item() == pytest.approx((4 / 3) ** 2 + 2 / 9 + 2)


def test_flops_l0_mask_penalises_only_rows_above_the_threshold():
    # non-zeros per row: 2, 2, 2 -> threshold 1 keeps all, 2 keeps none
    assert Flops(threshold=1)(REPS)["flops"].item() == pytest.approx(Flops()(REPS)["flops"].item())
    assert Flops(threshold=2)(REPS)["flops"].item() == 0.0
    reps = torch.cat([REPS, torch.tensor([[1.0, 1.0, 1.0, 1.0]])])
    # only the last row (4 non-zeros) counts, divided by the batch of 4
    assert Flops(threshold=2)(reps)["flops"].item() == pytest.approx(4 * (1 / 4) ** 2)


def test_l1_and_flops_per_pair():
    assert L1()(REPS)["l1"].item() == pytest.approx((3 + 4 + 5) / 3)
    queries = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    # P(q != 0) = .5, 0, .5, .5 ; P(d != 0) = 2/3, 1/3, 2/3, 1/3
    assert flops_per_pair(queries, REPS).item() == pytest.approx(0.5 * 2 / 3 + 0.5 * 2 / 3 + 0.5 / 3)


def test_ranking_losses_against_hand_computation():
    scores = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    expected = -(math.log(math.exp(2) / (math.exp(2) + math.e + 1))
                 + math.log(math.exp(3) / (1 + math.exp(3) + math.e))) / 2
    assert InfoNCE()(scores=scores, positives=torch.tensor([0, 1]))["infonce"].item() == pytest.approx(expected)
    own, teacher = torch.tensor([[3.0, 1.0, 0.0]]), torch.tensor([[2.0, 1.5, 0.0]])
    # margins: student 2, 3; teacher 0.5, 2
    assert MarginMSE()(own=own, teacher=teacher)["margin_mse"].item() == pytest.approx(((2 - .5) ** 2 + 1) / 2)
    p, q = torch.softmax(teacher, 1), torch.softmax(own, 1)
    assert KLDistillation()(own=own, teacher=teacher)["kl"].item() == pytest.approx(
        float((p * (p.log() - q.log())).sum()), rel=1e-5)
    assert KLDistillation()(own=teacher, teacher=teacher)["kl"].item() == pytest.approx(0.0, abs=1e-7)


def test_quadratic_warmup():
    schedule = QuadraticWarmup(0.1, 10)
    assert [schedule(s) for s in (0, 5, 10, 50)] == pytest.approx([0.0, 0.025, 0.1, 0.1])
    assert QuadraticWarmup(0.1, 0)(0) == 0.1


def test_a_regulariser_alone_is_refused():
    with pytest.raises(InvalidInputError, match="regulariser alone"):
        Objective(None, Flops(), QuadraticWarmup(1.0, 0))


def test_objective_reports_every_term_and_weights_them():
    objective = Objective(InfoNCE(), Flops(), QuadraticWarmup(0.5, 10), L1(), QuadraticWarmup(0.1, 0))
    scores = torch.tensor([[2.0, 1.0]])
    terms = objective(5, REPS, REPS[:1], scores=scores, positives=torch.tensor([0]))
    assert set(terms) == {"infonce", "doc_flops", "doc_lambda", "query_l1", "query_lambda", "loss"}
    assert terms["doc_lambda"].item() == pytest.approx(0.125)
    assert terms["loss"].item() == pytest.approx(
        terms["infonce"].item() + 0.125 * terms["doc_flops"].item() + 0.1 * terms["query_l1"].item())


def _two_forms(tiny_model):  # noqa: ANN001, ANN202
    """Gradients of ranking + IDF-aware FLOPS for one model and toy batch, in both forms."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from lsr.train.pooling import splade_representation

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForMaskedLM.from_pretrained(tiny_model).double().eval()
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    idf = torch.linspace(0.2, 5.0, model.config.vocab_size, dtype=torch.float64)
    idf[special] = 0
    docs = dict(tokenizer(["cell protein gene the", "blood heart of", "virus disease patients cancer"],
                          padding=True, return_tensors="pt"))
    presence = torch.zeros(2, model.config.vocab_size, dtype=torch.float64)
    for row, ids in enumerate(tokenizer(["cell gene", "heart virus disease"], add_special_tokens=False)["input_ids"]):
        presence[row, ids] = 1
    results = {}
    for form in ("match", "weighted"):
        model.zero_grad()
        w = splade_representation(model, docs, special)
        reg = idf_aware_flops(idf, form)
        reps, queries = (w, presence * idf) if form == "match" else (w * idf, presence)
        objective = Objective(InfoNCE(), reg, QuadraticWarmup(0.3, 0))
        terms = objective(1, reps, scores=queries @ reps.t(), positives=torch.tensor([0, 1]))
        terms["loss"].backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results[form] = (terms, grad)
    return results


def test_idf_aware_flops_forms_give_the_same_loss_and_gradient(tiny_model):
    results = _two_forms(tiny_model)
    (match_terms, match_grad), (weighted_terms, weighted_grad) = results["match"], results["weighted"]
    assert match_terms["doc_flops_idf"].item() > 0
    assert match_terms["loss"].item() == pytest.approx(weighted_terms["loss"].item(), rel=1e-10)
    cosine = torch.nn.functional.cosine_similarity(match_grad, weighted_grad, dim=0).item()
    assert cosine == pytest.approx(1.0, abs=1e-10)
    assert torch.allclose(match_grad, weighted_grad, rtol=1e-8, atol=1e-12)


def test_idf_aware_flops_weights_frequent_terms_more():
    idf = torch.tensor([0.5, 4.0])
    reps = torch.tensor([[1.0, 1.0]])
    weighted = idf_aware_flops(idf, "weighted")(reps)["flops_idf"].item()
    assert weighted == pytest.approx(1 / 0.25 + 1 / 16)
    with pytest.raises(InvalidInputError, match="form"):
        idf_aware_flops(idf, "other")
