"""Speech-token decoding of the multilingual T3: the English loop plus the alignment analyzer.

Per step, as chatterbox-tts 0.1.7's `T3.inference` with the multilingual model:
CFG combine `cond + w (cond - uncond)` -> alignment analyzer (may suppress or force the stop
token) -> repetition penalty over [start] + generated -> temperature -> min-p -> top-p ->
softmax -> sample. The generation defaults of its `generate()` differ from English: a
repetition penalty of 2.0. S3Gen then gets the tokens between start and stop that are
codebook ids (< 6561): the reference passes other ids on and fails on them; we drop them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..sampling import (SamplingParams, apply_repetition_penalty, apply_temperature, min_p_filter, sample_token,
                        top_p_filter)
from ..t3 import START_SPEECH_TOKEN, STOP_SPEECH_TOKEN, T3, KVCache, T3Cond
from .alignment import AlignmentAnalyzer, AlignmentStep, AttentionProbe

# The reference multilingual generate()'s defaults (0.1.7).
DEFAULT_PARAMS = SamplingParams(temperature=0.8, repetition_penalty=2.0, min_p=0.05, top_p=1.0, cfg_weight=0.5,
                                max_new_tokens=1000)
DEFAULT_EXAGGERATION = 0.5


@dataclass(frozen=True)
class DecodingStep:
    """One step for an observer: the logits after guidance (before the analyzer), what the
    analyzer did, the final probabilities (1, V) and the token drawn."""

    step: int
    cfg_logits: torch.Tensor
    alignment: AlignmentStep
    probs: torch.Tensor
    token: int


Sampler = Callable[[int, torch.Tensor], int]  # (step, probabilities (1, V)) -> token id


@torch.inference_mode()
def stream_tokens(
    t3: T3,
    cond: T3Cond,
    text_tokens: torch.Tensor,
    params: SamplingParams = DEFAULT_PARAMS,
    generator: torch.Generator | None = None,
    sampler: Sampler | None = None,
    on_step: Callable[[DecodingStep], None] | None = None,
    analyzer: AlignmentAnalyzer | None = None,
) -> Iterator[int]:
    """Yield speech tokens one by one; the last is STOP_SPEECH_TOKEN if it was produced.

    Runs T3's eager step (`forward_cached`), never a built fast step (CUDA graph, compiled):
    the analyzer reads attention inside the layers. `text_tokens` (n,) with SOT/EOT (`T3.frame_text`). `sampler` replaces the multinomial
    draw (replays use recorded draws); `on_step` sees every step; `analyzer` (a fresh
    one per call by default) can be passed in to read its alignment afterwards. Guidance off
    (`cfg_weight` 0) runs one row, which gives the reference's conditional row.
    """
    p = params
    use_cfg = p.cfg_weight > 0
    embeds = t3.build_inputs(cond, text_tokens, with_cfg_row=use_cfg)  # (B, L, C)
    batch, prompt_length = embeds.shape[:2]
    len_cond, len_text = t3.config.len_cond, len(text_tokens)
    text_columns = slice(len_cond, len_cond + len_text)
    analyzer = analyzer or AlignmentAnalyzer(len_text, STOP_SPEECH_TOKEN)
    if analyzer.len_text != len_text or analyzer.frame:
        raise ValueError("the analyzer must be new and made for this text")
    positions = t3.speech_pos_emb.emb.weight
    seen = torch.full((1, p.max_new_tokens + 1), START_SPEECH_TOKEN, dtype=torch.long, device=t3.device)

    probe = AttentionProbe(t3, first_row=len_cond + len_text)
    # Prefill: conditioning, text and both start tokens; the last token is never fed back.
    cache = KVCache(t3, batch, capacity=prompt_length + p.max_new_tokens - 1)
    hidden = probe.run(t3.forward_cached, embeds, cache)
    for step in range(p.max_new_tokens):
        logits = t3.speech_head(hidden[:, -1:])[:, 0].float()  # (B, V)
        if use_cfg:
            logits = logits[0:1] + p.cfg_weight * (logits[0:1] - logits[1:2])
        cfg_logits = logits
        logits = analyzer.step(probe.take()[:, :, text_columns], logits, int(seen[0, step]))

        logits = apply_repetition_penalty(logits, seen[:, : step + 1], p.repetition_penalty)  # start included
        logits = apply_temperature(logits, p.temperature)
        logits = min_p_filter(logits, p.min_p)
        logits = top_p_filter(logits, p.top_p)
        probs = logits.softmax(dim=-1)
        if sampler is not None:
            token = int(sampler(step, probs))
        else:
            token = int(sample_token(probs, generator, greedy=p.greedy))
        if on_step is not None:
            on_step(DecodingStep(step, cfg_logits, analyzer.history[-1], probs, token))
        seen[0, step + 1] = token
        yield token
        if token == STOP_SPEECH_TOKEN or step + 1 == p.max_new_tokens:
            return
        step_embeds = (t3.speech_emb.weight[token] + positions[step + 1]).expand(batch, 1, -1)  # (B, 1, C)
        hidden = probe.run(t3.forward_cached, step_embeds, cache)
