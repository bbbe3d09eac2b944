"""The naive T3 decoding loop: no cache, the whole sequence recomputed at every step.

The oracle `T3.stream_tokens` is tested against (nanochat's cache-free `generate`): each
step teacher-forces the tokens so far through `T3.build_inputs` and the Hugging Face
backbone (`T3.forward`), then takes the step's token with the same `T3.next_token`.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch

from models.constants import START_SPEECH_TOKEN, STOP_SPEECH_TOKEN
from models.sampling import SamplingParams
from models.t3 import T3, T3Cond


@torch.inference_mode()
def naive_stream_tokens(t3: T3, cond: T3Cond, text_tokens: torch.Tensor, params: SamplingParams,
                        generator: torch.Generator | None = None,
                        on_logits: Callable[[int, torch.Tensor], None] | None = None) -> Iterator[int]:
    tokens: list[int] = []
    for step in range(params.max_new_tokens):
        embeds = t3.build_inputs(cond, text_tokens, with_cfg_row=params.cfg_weight > 0, speech_tokens=tokens)
        hidden = t3(embeds)[:, -1:]
        seen = torch.tensor([[START_SPEECH_TOKEN, *tokens]], device=t3.device)
        token = int(t3.next_token(hidden, seen, params, generator, step, on_logits))
        tokens.append(token)
        yield token
        if token == STOP_SPEECH_TOKEN:
            return


def generate(t3: T3, cond: T3Cond, text_tokens: torch.Tensor, params: SamplingParams,
             generator: torch.Generator | None = None) -> list[int]:
    """All tokens of `T3.stream_tokens` (stop token included)."""
    return list(t3.stream_tokens(cond, text_tokens, params, generator))
