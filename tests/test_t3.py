"""T3 logic on a tiny random model (cache vs recompute, CFG, layout, stopping), the real
config against the manifest, and parity replays of the e/f/g goldens on the fake checkpoint."""
from __future__ import annotations

import contextlib
import gc
import json
import math
from typing import Iterator

import numpy as np
import pytest
import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from models.sampling import SamplingParams
from models.t3 import (
    START_SPEECH_TOKEN,
    STOP_SPEECH_TOKEN,
    KVCache,
    T3,
    T3Cond,
    T3Config,
    _linear,
    drop_invalid_tokens,
)
from t3_oracle import generate, naive_stream_tokens

TINY = T3Config(
    text_tokens_dict_size=260,  # must hold SOT (255)
    max_text_tokens=16,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
)
GREEDY = SamplingParams(max_new_tokens=12, greedy=True)


def tiny_t3() -> T3:
    """A fresh tiny T3 with the same weights on every call (fast modes change theirs in place)."""
    torch.manual_seed(0)
    model = T3(TINY).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)  # larger than the default init: well separated logits
    return model


@pytest.fixture(scope="module")
def tiny() -> T3:
    return tiny_t3()


@pytest.fixture
def cond() -> T3Cond:
    g = torch.Generator().manual_seed(1)
    return T3Cond(
        speaker_emb=torch.randn(1, 256, generator=g),
        cond_prompt_speech_tokens=torch.randint(0, 6561, (1, 20), generator=g),
        emotion_adv=0.7,
    )


def text(model: T3, n: int = 5) -> torch.Tensor:
    return model.frame_text(torch.arange(1, n + 1))


def record_backbone_inputs(model: T3) -> tuple[list[tuple[int, ...]], object]:
    """Shapes of what enters the first backbone layer, cached or not."""
    shapes: list[tuple[int, ...]] = []
    hook = model.tfmr.layers[0].input_layernorm.register_forward_pre_hook(
        lambda mod, args: shapes.append(tuple(args[0].shape)))
    return shapes, hook


def test_llama_config_applies_llama3_rope_scaling():
    config = T3Config().llama_config()
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
            config.num_key_value_heads, config.intermediate_size) == (30, 1024, 16, 16, 4096)
    assert config.rms_norm_eps == 1e-5 and config._attn_implementation == "sdpa"
    inv_freq = LlamaRotaryEmbedding(config).inv_freq.double()

    # Spec §6.2, written out independently in float64.
    head_dim = 64
    expected = []
    for i in range(0, head_dim, 2):
        f = 1.0 / 500_000.0 ** (i / head_dim)
        wavelength = 2 * math.pi / f
        if wavelength > 8192:
            f = f / 8
        elif wavelength >= 8192 / 4:
            smooth = (8192 / wavelength - 1) / (4 - 1)
            f = (1 - smooth) * f / 8 + smooth * f
        expected.append(f)
    expected = torch.tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(inv_freq, expected, rtol=1e-6, atol=0)
    unscaled = 1.0 / 500_000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    assert (inv_freq < unscaled * 0.99).sum() > 10  # the scaling really changed the low frequencies


def test_module_names_match_checkpoint_manifest(parity_dir):
    manifest = json.loads((parity_dir / "manifest" / "t3_cfg.json").read_text())
    with torch.device("meta"):
        model = T3(T3Config())
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == {t["key"]: t["shape"] for t in manifest["tensors"]}
    assert len(ours) == 292


def test_prefill_layout_has_double_bos_and_textless_cfg_row(tiny, cond):
    n = 5
    embeds = tiny.build_inputs(cond, text(tiny, n), with_cfg_row=True)
    len_cond = TINY.len_cond
    assert embeds.shape == (2, 34 + (n + 2) + 2, TINY.hidden_size) and len_cond == 34
    bos = tiny.speech_emb.weight[START_SPEECH_TOKEN] + tiny.speech_pos_emb.emb.weight[0]
    for row in range(2):
        torch.testing.assert_close(embeds[row, -2], bos)
        torch.testing.assert_close(embeds[row, -1], bos)
    torch.testing.assert_close(embeds[0, :len_cond], embeds[1, :len_cond])
    text_pos = tiny.text_pos_emb.emb.weight[: n + 2]
    torch.testing.assert_close(embeds[1, len_cond:len_cond + n + 2], text_pos)
    torch.testing.assert_close(embeds[0, len_cond:len_cond + n + 2], tiny.text_emb(text(tiny, n)) + text_pos)

    shapes, hook = record_backbone_inputs(tiny)
    try:
        list(tiny.stream_tokens(cond, text(tiny, n), SamplingParams(max_new_tokens=3, greedy=True)))
    finally:
        hook.remove()
    assert shapes == [(2, 34 + n + 4, TINY.hidden_size)] + [(2, 1, TINY.hidden_size)] * 2


@pytest.mark.parametrize("params", [GREEDY, SamplingParams(temperature=1.0, min_p=0.0, max_new_tokens=8),
                                    SamplingParams(cfg_weight=0.0, max_new_tokens=6, greedy=True)])
def test_kv_cache_decoding_equals_full_recompute(tiny, cond, params):
    runs = []
    for decode in (tiny.stream_tokens, lambda *args, **kwargs: naive_stream_tokens(tiny, *args, **kwargs)):
        logits: list[torch.Tensor] = []
        tokens = list(decode(cond, text(tiny), params, torch.Generator().manual_seed(3),
                             on_logits=lambda step, l: logits.append(l.clone())))
        runs.append((tokens, torch.cat(logits)))
    (cached, cached_logits), (naive, naive_logits) = runs
    assert len(cached) == params.max_new_tokens and cached == naive
    assert len(set(cached)) > 1
    torch.testing.assert_close(cached_logits, naive_logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("bias", [False, True])
def test_blockwise_decoding_linear_equals_the_layer(bias):
    torch.manual_seed(0)
    layer = nn.Linear(300, 5000, bias=bias)  # 5000 rows: several blocks and a partial last one
    x = torch.randn(2, 1, 300)
    with torch.no_grad():
        out = _linear(layer, x)
        assert out.shape == (2, 1, 5000)
        torch.testing.assert_close(out, layer(x), atol=1e-5, rtol=1e-5)
    with torch.enable_grad():  # (an earlier test's fixture may have turned autograd off)
        assert _linear(layer, x).requires_grad  # with autograd on, the layer itself runs


def test_cached_backbone_refuses_a_multi_position_step(tiny, cond):
    embeds = tiny.build_inputs(cond, text(tiny), with_cfg_row=True)
    cache = KVCache(tiny, batch=2, capacity=embeds.shape[1] + 4)
    with torch.no_grad():
        tiny.forward_cached(embeds, cache)
        assert cache.length == embeds.shape[1]
        with pytest.raises(ValueError, match="prefill"):
            tiny.forward_cached(embeds[:, :2], cache)


def test_step_at_a_position_tensor_equals_the_cached_step(tiny, cond):
    """The fixed-shape step (CUDA graphs replay it): same hidden states and cache as the
    step at cache.length, with garbage-free unused slots; the caller advances the length."""
    embeds = tiny.build_inputs(cond, text(tiny), with_cfg_row=True)
    steps = torch.randn(5, 2, 1, tiny.config.hidden_size, generator=torch.Generator().manual_seed(3))
    capacity = embeds.shape[1] + len(steps) + 3  # spare slots stay masked
    plain, fixed = KVCache(tiny, 2, capacity), KVCache(tiny, 2, capacity)
    fixed.keys.zero_()
    fixed.values.zero_()
    position = torch.tensor(0)
    with torch.no_grad():
        tiny.forward_cached(embeds, plain)
        tiny.forward_cached(embeds, fixed)
        for x in steps:
            expected = tiny.forward_cached(x, plain)
            position.fill_(fixed.length)
            got = tiny.layers_cached(x, fixed, position)
            assert fixed.length == plain.length - 1  # not advanced by the step itself
            fixed.length += 1
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        used = slice(0, plain.length)
        torch.testing.assert_close(fixed.keys[:, :, :, used], plain.keys[:, :, :, used])
        torch.testing.assert_close(fixed.values[:, :, :, used], plain.values[:, :, :, used])
        assert not fixed.keys[:, :, :, plain.length:].any()  # later slots untouched
        with pytest.raises(ValueError, match="one position"):
            tiny.layers_cached(embeds[:, :2], fixed, position)


def test_cfg_logits_combine_both_rows(tiny, cond):
    w = 0.7
    first: list[torch.Tensor] = []
    next(tiny.stream_tokens(cond, text(tiny), SamplingParams(cfg_weight=w, greedy=True),
                            on_logits=lambda step, l: first.append(l.clone())))
    rows = tiny.speech_head(tiny(tiny.build_inputs(cond, text(tiny), with_cfg_row=True))[:, -1])
    torch.testing.assert_close(first[0], rows[0:1] + w * (rows[0:1] - rows[1:2]), atol=1e-5, rtol=1e-5)


def test_cfg_zero_runs_batch_one_and_equals_conditional_row(tiny, cond):
    shapes, hook = record_backbone_inputs(tiny)
    first: list[torch.Tensor] = []
    try:
        params = SamplingParams(cfg_weight=0.0, max_new_tokens=4, greedy=True)
        tokens = list(tiny.stream_tokens(cond, text(tiny), params, on_logits=lambda step, l: first.append(l.clone())))
    finally:
        hook.remove()
    assert len(tokens) == 4 and all(s[0] == 1 for s in shapes)
    rows = tiny.speech_head(tiny(tiny.build_inputs(cond, text(tiny), with_cfg_row=True))[:, -1])
    torch.testing.assert_close(first[0], rows[0:1], atol=1e-5, rtol=1e-5)


def test_same_seed_same_tokens_other_seed_differs(tiny, cond):
    params = SamplingParams(temperature=1.0, min_p=0.0, max_new_tokens=8)

    def run(seed: int) -> list[int]:
        return generate(tiny, cond, text(tiny), params, torch.Generator().manual_seed(seed))

    assert run(1) == run(1)
    assert run(1) != run(2)


@contextlib.contextmanager
def stop_takes_over(model: T3, tokens: list[int]) -> Iterator[int]:
    """Swap the speech head rows of the stop token and of the first token of the greedy
    `tokens` not produced before it (index k, yielded): the history up to k is unchanged,
    and step k now picks the stop token. The head is restored afterwards."""
    k = next(i for i in range(1, len(tokens)) if tokens[i] not in tokens[:i])
    head = model.speech_head.weight
    original = head.detach().clone()
    try:
        with torch.no_grad():
            head[[tokens[k], STOP_SPEECH_TOKEN]] = original[[STOP_SPEECH_TOKEN, tokens[k]]]
        yield k
    finally:
        with torch.no_grad():
            head.copy_(original)


def test_stop_token_ends_generation_and_is_returned(tiny, cond):
    tokens = generate(tiny, cond, text(tiny), GREEDY)
    assert STOP_SPEECH_TOKEN not in tokens
    with stop_takes_over(tiny, tokens) as k:
        stopped = generate(tiny, cond, text(tiny), GREEDY)
    assert stopped == tokens[:k] + [STOP_SPEECH_TOKEN]


def test_running_ahead_gives_the_same_tokens(tiny, cond):
    """run_ahead (the GPU default) starts the next step before reading the token back:
    same sampled tokens; at a stop it has computed one backbone step more."""
    sampled = SamplingParams(temperature=1.0, min_p=0.0, max_new_tokens=8)

    def run(run_ahead: bool, params: SamplingParams = GREEDY) -> tuple[list[int], int]:
        shapes, hook = record_backbone_inputs(tiny)
        try:
            tokens = list(tiny.stream_tokens(cond, text(tiny), params, torch.Generator().manual_seed(5),
                                             run_ahead=run_ahead))
        finally:
            hook.remove()
        return tokens, len(shapes)

    tokens, calls = run(False, sampled)
    assert run(True, sampled) == (tokens, calls)  # no stop: the last token is never fed back either way
    assert STOP_SPEECH_TOKEN not in tokens and len(set(tokens)) > 1
    tokens = run(False)[0]
    with stop_takes_over(tiny, tokens) as k:
        stopped, stopped_calls = run(False)
        ahead, ahead_calls = run(True)
    assert stopped == ahead == tokens[:k] + [STOP_SPEECH_TOKEN]
    assert ahead_calls == stopped_calls + 1


def test_too_long_or_unframed_text_raises(tiny, cond):
    tiny.build_inputs(cond, text(tiny, TINY.max_text_tokens), with_cfg_row=False)  # the longest allowed
    with pytest.raises(ValueError, match="too long"):
        list(tiny.stream_tokens(cond, text(tiny, TINY.max_text_tokens + 1), GREEDY))
    with pytest.raises(ValueError, match="start with"):
        tiny.build_inputs(cond, torch.arange(1, 6), with_cfg_row=False)
    with pytest.raises(ValueError):
        T3Cond(speaker_emb=torch.zeros(256), cond_prompt_speech_tokens=torch.zeros(1, 3, dtype=torch.long))


@pytest.mark.parametrize("tokens, expected", [
    ([1, 2, STOP_SPEECH_TOKEN, 5], [1, 2]),
    ([START_SPEECH_TOKEN, 3, 4, STOP_SPEECH_TOKEN, 9], [3, 4]),
    ([7, START_SPEECH_TOKEN, 8], [8]),
    ([1, 6563, 2, 8000, 6560], [1, 2, 6560]),
    ([START_SPEECH_TOKEN, START_SPEECH_TOKEN, 5], [5]),
    ([STOP_SPEECH_TOKEN], []),
    ([], []),
])
def test_drop_invalid_tokens(tokens, expected):
    out = drop_invalid_tokens(torch.tensor(tokens, dtype=torch.long))
    assert out.dtype == torch.long and out.tolist() == expected


# --- parity on the fake full-size checkpoint ------------------------------------------

@pytest.fixture(scope="module")
def ctx(fake_ckpt):
    from tools.parity import Context

    context = Context(fake_ckpt)
    yield context
    context.__dict__.pop("t3", None)  # one 2.1 GB copy per process: free it for later modules
    gc.collect()


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["e", "f", "g"])
def test_parity_goldens(stage, ctx, parity_dir):
    from conftest import replay_goldens

    replay_goldens(parity_dir, stage, ctx)


def test_exaggeration_field_names():
    from tools.replay_t3 import exaggeration_field

    assert [exaggeration_field(v) for v in np.float32([0.5, 0.9, 1.25, 2.0])] == [
        "cond_emb_exag_0p50", "cond_emb_exag_0p90", "cond_emb_exag_1p25", "cond_emb_exag_2p00"]
