"""Alignment analyzer logic, the attention probe against eager attention, and the multilingual
decoding loop on a tiny random T3 (14 layers x 16 heads: the analyzer reads heads of layers 9-13)."""
from __future__ import annotations

import pytest
import torch

from models.multilingual.alignment import ALIGNED_HEADS, STOP_LOGIT, AlignmentAnalyzer, AttentionProbe
from models.multilingual.decoding import DEFAULT_PARAMS, stream_tokens
from models.sampling import SamplingParams
from models.t3 import START_SPEECH_TOKEN, STOP_SPEECH_TOKEN, KVCache, T3, T3Cond, T3Config, drop_invalid_tokens

TINY = T3Config(text_tokens_dict_size=260, max_text_tokens=32, max_speech_tokens=64, hidden_size=64,
                num_hidden_layers=14, num_attention_heads=16, intermediate_size=64)
V = TINY.speech_tokens_dict_size


@pytest.fixture(scope="module")
def t3() -> T3:
    torch.manual_seed(0)
    model = T3(TINY).eval()
    with torch.no_grad():  # larger attention logits than the default init, so rows are not flat
        for layer in model.tfmr.layers:
            layer.self_attn.q_proj.weight.mul_(8)
    return model


def _cond() -> T3Cond:
    g = torch.Generator().manual_seed(1)
    return T3Cond(torch.randn(1, 256, generator=g), torch.randint(0, 6561, (1, 20), generator=g), 0.5)


TEXT = torch.tensor([255, 3, 14, 15, 9, 26, 7, 8, 0])


def _eager_attentions(t3: T3, embeds: torch.Tensor) -> tuple[torch.Tensor, ...]:
    config = t3.tfmr.config
    before = config._attn_implementation
    config._attn_implementation = "eager"
    try:
        return t3.tfmr(inputs_embeds=embeds, use_cache=False, output_attentions=True).attentions
    finally:
        config._attn_implementation = before


@torch.no_grad()
def test_probe_matches_eager_attention_in_prefill_and_steps(t3):
    embeds = t3.build_inputs(_cond(), TEXT, with_cfg_row=True)
    first = TINY.len_cond + len(TEXT)
    cache = KVCache(t3, 2, capacity=embeds.shape[1] + 3)
    with AttentionProbe(t3, first_row=first) as probe:
        t3.forward_cached(embeds, cache)
        prefill = probe.take()
        steps = []
        seq = embeds
        for k in range(1, 4):
            step = (t3.speech_emb.weight[100 + k] + t3.speech_pos_emb.emb.weight[k]).expand(2, 1, -1)
            t3.forward_cached(step, cache)
            steps.append(probe.take())
            seq = torch.cat([seq, step], dim=1)
    assert len(t3.tfmr.layers[9].input_layernorm._forward_hooks) == 0  # hooks removed on exit
    attentions = _eager_attentions(t3, seq)
    for i, (layer, head) in enumerate(ALIGNED_HEADS):
        eager = attentions[layer][0, head]  # (L, L), conditional row
        assert prefill.shape[1] == 2  # the two start tokens
        torch.testing.assert_close(prefill[i], eager[first:first + 2, :first + 2], atol=1e-5, rtol=0)
        for k, rows in enumerate(steps, start=1):
            n = first + 2 + k
            torch.testing.assert_close(rows[i, 0], eager[n - 1, :n], atol=1e-5, rtol=0)


def test_probe_says_when_it_saw_nothing(t3):
    with AttentionProbe(t3, first_row=5) as probe, pytest.raises(RuntimeError, match="no pass"):
        probe.take()


def _rows(columns: list[int], s: int, rows_per_step: list[int] | None = None) -> list[torch.Tensor]:
    """Head rows that put all attention on one text column per frame (3 heads alike)."""
    out, i = [], 0
    for n in rows_per_step or [2] + [1] * (len(columns) - 2):
        chunk = torch.zeros(3, n, s)
        for r in range(n):
            chunk[:, r, columns[i]] = 1.0
            i += 1
        out.append(chunk)
    return out


def _run(analyzer: AlignmentAnalyzer, chunks, tokens=None):
    logits_out = []
    tokens = tokens or [START_SPEECH_TOKEN] + list(range(1, len(chunks)))
    for chunk, token in zip(chunks, tokens):
        logits_out.append(analyzer.step(chunk, torch.zeros(1, V), token))
    return logits_out


def test_stop_suppressed_until_the_text_end_then_allowed():
    s = 10
    analyzer = AlignmentAnalyzer(s, STOP_SPEECH_TOKEN)
    columns = [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]  # one frame per text token
    out = _run(analyzer, _rows(columns, s))
    suppressed = [h.stop_suppressed for h in analyzer.history]
    positions = [h.cur_text_position for h in analyzer.history]
    assert positions == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert suppressed == [p < s - 3 for p in positions]
    assert all(o[0, STOP_SPEECH_TOKEN] == -STOP_LOGIT for o, sup in zip(out, suppressed) if sup)
    assert not any(h.stop_forced for h in analyzer.history)
    assert analyzer.history[-1].complete and analyzer.alignment.shape == (11, s)


def test_frames_cannot_look_ahead_of_their_index():
    s = 12
    analyzer = AlignmentAnalyzer(s, STOP_SPEECH_TOKEN)
    _run(analyzer, _rows([5, 5, 5], s))  # attention far ahead of frames 0, 1
    assert analyzer.alignment.sum() == 0  # masked: frame k sees columns <= k only
    assert [h.cur_text_position for h in analyzer.history] == [0, 0]


def test_long_tail_forces_the_stop_token():
    s = 8
    analyzer = AlignmentAnalyzer(s, STOP_SPEECH_TOKEN)
    columns = [0, 0, 1, 2, 3, 4, 5] + [7] * 7  # then stays on the last token
    out = _run(analyzer, _rows(columns, s))
    forced = [h.stop_forced for h in analyzer.history]
    first = forced.index(True)
    assert analyzer.history[first].long_tail
    assert out[first][0, STOP_SPEECH_TOKEN] == STOP_LOGIT and out[first][0, 0] == -STOP_LOGIT


def test_jump_back_after_completion_is_an_alignment_repetition():
    s = 12
    analyzer = AlignmentAnalyzer(s, STOP_SPEECH_TOKEN)
    columns = [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9] + [1] * 7
    _run(analyzer, _rows(columns, s))
    history = analyzer.history
    first = [h.stop_forced for h in history].index(True)
    assert history[first].alignment_repetition and not history[first].long_tail
    assert history[first].text_position == 9  # the jump back was not taken as the position


def test_repeated_token_forces_stop_and_short_text_is_not_suppressed():
    s = 5
    analyzer = AlignmentAnalyzer(s, STOP_SPEECH_TOKEN)
    _run(analyzer, _rows([0, 0, 1, 1], s), tokens=[START_SPEECH_TOKEN, 42, 42])
    assert [h.token_repetition for h in analyzer.history] == [False, False, True]
    assert [h.stop_forced for h in analyzer.history] == [False, False, True]
    assert not any(h.stop_suppressed for h in analyzer.history)  # texts of <= 5 tokens


@torch.no_grad()
def test_decoding_applies_the_analyzer_before_sampling(t3):
    seen = []

    def sampler(step, probs):  # the same token twice, then the model's choice
        seen.append(probs.clone())
        return 7 if step < 2 else int(probs.argmax())

    params = SamplingParams(max_new_tokens=10, repetition_penalty=2.0, min_p=0.0)  # nothing else filters
    tokens = list(stream_tokens(t3, _cond(), TEXT, params, sampler=sampler))
    assert seen[0][0, STOP_SPEECH_TOKEN] == 0  # suppressed: the alignment is at the text start
    assert tokens == [7, 7, STOP_SPEECH_TOKEN]  # a repeated token forces the stop
    assert seen[2][0, STOP_SPEECH_TOKEN] == 1


@torch.no_grad()
def test_decoding_with_and_without_guidance(t3):
    greedy = SamplingParams(max_new_tokens=6, greedy=True, repetition_penalty=2.0)
    tokens = list(stream_tokens(t3, _cond(), TEXT, greedy))
    assert 1 <= len(tokens) <= 6 and tokens == list(stream_tokens(t3, _cond(), TEXT, greedy))
    no_cfg = SamplingParams(max_new_tokens=6, greedy=True, cfg_weight=0.0)
    assert 1 <= len(list(stream_tokens(t3, _cond(), TEXT, no_cfg))) <= 6
    with pytest.raises(ValueError, match="text_tokens"):
        list(stream_tokens(t3, _cond(), torch.tensor([3, 4]), greedy))


def test_defaults_and_codebook_only_tokens_for_s3gen():
    assert DEFAULT_PARAMS.repetition_penalty == 2.0 and DEFAULT_PARAMS.cfg_weight == 0.5
    assert DEFAULT_PARAMS.temperature == 0.8 and DEFAULT_PARAMS.min_p == 0.05 and DEFAULT_PARAMS.top_p == 1.0
    # The reference passes ids >= 6561 on to S3Gen (which fails on them); they are dropped here.
    assert drop_invalid_tokens([START_SPEECH_TOKEN, 5, 6563, 7, 8000, STOP_SPEECH_TOKEN, 9]).tolist() == [5, 7]


@torch.no_grad()
def test_interleaved_generations_do_not_see_each_others_attention(t3):
    params = SamplingParams(max_new_tokens=8, greedy=True, repetition_penalty=2.0)
    texts = [TEXT, torch.tensor([255, 30, 31, 32, 33, 34, 35, 36, 37, 38, 0])]

    def start(text):
        analyzer = AlignmentAnalyzer(len(text), STOP_SPEECH_TOKEN)
        return stream_tokens(t3, _cond(), text, params, analyzer=analyzer), analyzer

    alone = []
    for text in texts:
        stream, analyzer = start(text)
        alone.append((list(stream), analyzer.alignment))
    started = [start(text) for text in texts]
    running = {i: stream for i, (stream, _) in enumerate(started)}
    tokens: dict[int, list[int]] = {0: [], 1: []}
    while running:  # one step of each in turn: their passes interleave on the shared model
        for i in list(running):
            try:
                tokens[i].append(next(running[i]))
            except StopIteration:
                del running[i]
    for i, (stream, analyzer) in enumerate(started):
        assert tokens[i] == alone[i][0]
        torch.testing.assert_close(analyzer.alignment, alone[i][1])

