"""Logit processing and sampling for T3 decoding, as small pure functions.

Each processor takes logits (B, V) and returns new logits (B, V); removed tokens get
-inf. The T3 loop applies them in the reference order: repetition penalty ->
temperature -> min-p -> top-p -> softmax -> sample. Semantics follow the Hugging Face
logits processors that the reference uses.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .constants import MAX_NEW_TOKENS
from .params import DEFAULT_PARAMS, GenerationParams

FILTERED = float("-inf")


@dataclass(frozen=True)
class SamplingParams:
    """What T3's decoding loop reads: the sampler's controls, the token cap and greedy.

    The defaults are `GenerationParams`' (models/params.py), where request values are
    validated; the checks here are the sampler's own domain. `cfg_weight` 0 disables
    classifier-free guidance (batch 1); `greedy` takes the argmax of the processed
    probabilities instead of sampling (used to replay the reference).
    """

    temperature: float = DEFAULT_PARAMS.temperature
    repetition_penalty: float = DEFAULT_PARAMS.repetition_penalty
    min_p: float = DEFAULT_PARAMS.min_p
    top_p: float = DEFAULT_PARAMS.top_p
    cfg_weight: float = DEFAULT_PARAMS.cfg_weight
    max_new_tokens: int = MAX_NEW_TOKENS
    greedy: bool = False

    @classmethod
    def of(cls, params: GenerationParams, max_new_tokens: int = MAX_NEW_TOKENS) -> "SamplingParams":
        """The T3 part of a request's `GenerationParams`."""
        return cls(temperature=params.temperature, repetition_penalty=params.repetition_penalty,
                   min_p=params.min_p, top_p=params.top_p, cfg_weight=params.cfg_weight,
                   max_new_tokens=max_new_tokens)

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.cfg_weight >= 0:
            raise ValueError(f"cfg_weight must be >= 0, got {self.cfg_weight}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


def apply_repetition_penalty(logits: torch.Tensor, seen_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """Push down every id in `seen_ids` (B, T): positive logits / penalty, others * penalty."""
    if penalty == 1.0:
        return logits
    seen = logits.gather(-1, seen_ids)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(-1, seen_ids, seen)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return logits if temperature == 1.0 else logits / temperature


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Remove tokens whose probability is below `min_p` times the top probability."""
    if min_p <= 0.0:
        return logits
    probs = logits.softmax(dim=-1)
    top_prob, top_idx = probs.max(dim=-1, keepdim=True)
    remove = probs < min_p * top_prob
    remove.scatter_(-1, top_idx, False)  # the most likely token always survives
    return logits.masked_fill(remove, FILTERED)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose total probability exceeds `top_p`.

    As in Hugging Face: in ascending order, tokens whose cumulative probability is
    <= 1 - top_p are removed; the most likely token is always kept.
    """
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= 1.0 - top_p
    remove_sorted[..., -1] = False
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, FILTERED)


def sample_token(probs: torch.Tensor, generator: torch.Generator | None, greedy: bool = False) -> torch.Tensor:
    """One token id per row of `probs` (B, V) -> (B, 1)."""
    if greedy:
        return probs.argmax(dim=-1, keepdim=True)
    return torch.multinomial(probs, num_samples=1, generator=generator)


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the `top_k` largest logits (and any tied with the k-th); remove the rest.

    As Hugging Face's TopKLogitsWarper: k is capped at the vocabulary size; k <= 0 disables it.
    """
    if top_k <= 0:
        return logits
    kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, FILTERED)
