"""Sampler functions against hand-computed vectors and the Hugging Face processors."""
from __future__ import annotations

import math

import pytest
import torch
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TopPLogitsWarper,
)

from models.sampling import (
    SamplingParams,
    apply_repetition_penalty,
    apply_temperature,
    min_p_filter,
    sample_token,
    top_p_filter,
)

INF = float("inf")


def log_probs(*probs: float) -> torch.Tensor:
    return torch.tensor([[math.log(p) for p in probs]])


def test_repetition_penalty_divides_positive_and_multiplies_negative():
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0]])
    out = apply_repetition_penalty(logits, torch.tensor([[0, 1]]), 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, -3.0]]
    # An id seen twice is penalised once, as in Hugging Face.
    again = apply_repetition_penalty(logits, torch.tensor([[0, 0, 1]]), 2.0)
    assert torch.equal(again, out)
    assert torch.equal(apply_repetition_penalty(logits, torch.tensor([[0]]), 1.0), logits)
    assert logits.tolist() == [[2.0, -1.0, 0.5, -3.0]]  # input untouched


def test_temperature():
    logits = torch.tensor([[1.0, -2.0]])
    assert apply_temperature(logits, 0.5).tolist() == [[2.0, -4.0]]
    assert torch.equal(apply_temperature(logits, 1.0), logits)


def test_min_p_removes_tokens_below_fraction_of_top():
    logits = log_probs(0.5, 0.3, 0.02, 0.18)
    out = min_p_filter(logits, 0.1)  # threshold 0.05
    assert out[0, 2] == -INF
    assert torch.equal(out[0, [0, 1, 3]], logits[0, [0, 1, 3]])
    assert torch.equal(min_p_filter(logits, 0.0), logits)


def test_min_p_one_keeps_exactly_the_top_token():
    logits = log_probs(0.2, 0.5, 0.3)
    out = min_p_filter(logits, 1.0)
    assert torch.isfinite(out).tolist() == [[False, True, False]]


def test_top_p_keeps_smallest_set_above_threshold():
    logits = log_probs(0.5, 0.3, 0.15, 0.05)
    # ascending cumulative: 0.05, 0.20, 0.50, 1.00; removed where <= 1 - top_p
    assert torch.isfinite(top_p_filter(logits, 0.75)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.85)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(top_p_filter(logits, 0.1)).tolist() == [[True, False, False, False]]
    assert torch.equal(top_p_filter(logits, 1.0), logits)


def test_processors_match_hugging_face_on_random_rows():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, generator=g) * 3
    seen = torch.randint(0, 50, (3, 7), generator=g)
    hf_rep = RepetitionPenaltyLogitsProcessor(1.3)(seen, logits.clone())
    assert torch.equal(apply_repetition_penalty(logits, seen, 1.3), hf_rep)
    hf_min_p = MinPLogitsWarper(0.2)(seen, logits.clone())
    assert torch.equal(min_p_filter(logits, 0.2), hf_min_p)
    for top_p in (0.3, 0.9):
        hf_top_p = TopPLogitsWarper(top_p)(seen, logits.clone())
        assert torch.equal(top_p_filter(logits, top_p), hf_top_p)


def test_sample_token_greedy_and_seeded():
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.0, 0.0, 1.0]])
    assert sample_token(probs, None, greedy=True).tolist() == [[1], [2]]
    uniform = torch.full((1, 1000), 1e-3)
    a = [int(sample_token(uniform, torch.Generator().manual_seed(s))) for s in (1, 1, 2)]
    assert a[0] == a[1] != a[2]
    assert int(sample_token(torch.tensor([[0.0, 1.0, 0.0]]), torch.Generator().manual_seed(3))) == 1


def test_sampling_params_defaults_and_validation():
    p = SamplingParams()
    assert (p.temperature, p.repetition_penalty, p.min_p, p.top_p, p.cfg_weight, p.max_new_tokens) == (
        0.8, 1.2, 0.05, 1.0, 0.5, 1000)
    for bad in (dict(temperature=0.0), dict(top_p=0.0), dict(min_p=1.5), dict(cfg_weight=-1.0),
                dict(max_new_tokens=0), dict(repetition_penalty=0.0)):
        with pytest.raises(ValueError):
            SamplingParams(**bad)
