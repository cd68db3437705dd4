"""The sparse-backward SPLADE pooling against autograd through the full logits (the reference)."""

from __future__ import annotations

import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from lsr.train.pooling import max_projection, splade_representation


def _reference(model, batch, special):  # noqa: ANN001, ANN202 - max over valid tokens of log1p(relu(logits))
    logits = model(**batch).logits
    mask = batch["attention_mask"].unsqueeze(-1).bool()
    reps = torch.log1p(torch.relu(logits.masked_fill(~mask, float("-inf")).amax(dim=1)))
    reps = reps.clone()
    reps[:, special] = 0
    return reps


@given(lengths=st.lists(st.integers(0, 9), min_size=1, max_size=5), seed=st.integers(0, 10_000))
def test_max_projection_gradient_equals_dense_autograd(lengths, seed):
    assume(sum(lengths) > 0)  # a batch of texts without tokens has no gradient path at all
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(sum(lengths), 6, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(len(lengths), 11, generator=gen, dtype=torch.float64)
    got = max_projection(hidden, weight, lengths)
    (torch.log1p(torch.relu(got)) * upstream).sum().backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    rows, start = [], 0
    for n in lengths:
        part = hidden[start:start + n] @ weight.t()
        rows.append(part.amax(dim=0) if n else torch.full((11,), float("-inf"), dtype=torch.float64))
        start += n
    expected = torch.stack(rows)
    (torch.log1p(torch.relu(expected)) * upstream).sum().backward()
    assert torch.equal(got, expected)
    assert torch.allclose(grads[0], hidden.grad, atol=1e-12)
    assert torch.allclose(grads[1], weight.grad, atol=1e-12)


def test_representation_and_parameter_gradients_match_the_model_logits(tiny_model):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForMaskedLM.from_pretrained(tiny_model).double().eval()
    batch = dict(tokenizer(["the cell protein gene", "blood", "heart brain risk study results of the mice"],
                           padding=True, return_tensors="pt"))
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    weights = torch.linspace(0.5, 2.0, model.config.vocab_size, dtype=torch.float64)

    def grads(fn):  # noqa: ANN001, ANN202
        model.zero_grad()
        reps = fn(model, batch, special)
        (reps * weights).sum().add(reps.sum(0).square().sum()).backward()
        return reps.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    got, got_grads = grads(splade_representation)
    expected, expected_grads = grads(_reference)
    assert (got > 0).sum() > 10  # the bias makes a realistic number of terms positive
    assert torch.allclose(got, expected, atol=1e-12)
    assert got_grads.keys() == expected_grads.keys()
    for name, grad in expected_grads.items():
        assert torch.allclose(got_grads[name], grad, atol=1e-10), name
