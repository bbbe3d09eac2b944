"""Speed options built into tiny random models: each runs, stays close to the default, and is
refused when it cannot run (unknown names, fp16/compile on CPU, options that do not combine,
a second build); the int8 linear layer against its own dequantized weights."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from models.fast_modes import (
    ACTIVATION_MAX,
    FAST_MODES,
    FEWER_FLOW_STEPS,
    INT8_WEIGHT_MAX,
    RESIDUAL_GAIN,
    Int8Linear,
    LoadOptions,
    ModeError,
    build_s3gen,
    build_t3,
)
from models.registry import MODELS
from models.s3gen.s3gen import S3Gen
from models.sampling import SamplingParams
from models.t3 import T3, KVCache, T3Cond

from test_t3 import cond, tiny_t3  # noqa: F401 (cond is a fixture)

GREEDY = SamplingParams(max_new_tokens=6, greedy=True)


def decode(model: T3, cond: T3Cond) -> tuple[list[int], torch.Tensor]:
    """Greedy tokens and the CFG logits of every step."""
    logits: list[torch.Tensor] = []
    text = model.frame_text(torch.arange(1, 6))
    tokens = list(model.stream_tokens(cond, text, GREEDY, on_logits=lambda step, l: logits.append(l.clone())))
    return tokens, torch.cat(logits)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def test_int8_quantizes_every_decoding_linear_and_stays_close(cond):
    model = tiny_t3()
    tokens, logits = decode(model, cond)
    build_t3(model, LoadOptions(quantize="int8"))
    assert not any(isinstance(m, nn.Linear) for m in model.tfmr.layers.modules())
    layer = model.tfmr.layers[0]
    assert all(isinstance(m, Int8Linear) for m in (layer.self_attn.qkv_proj, layer.mlp.gate_up_proj,
                                                   layer.mlp.down_proj, model.speech_head))
    q_tokens, q_logits = decode(model, cond)
    assert len(q_tokens) == GREEDY.max_new_tokens
    assert q_tokens[0] == tokens[0]  # later steps' top-2 gaps (down to 0.016) are below the error (0.036)
    assert min(cosine(q, f) for q, f in zip(q_logits, logits)) > 0.999  # measured 0.9999
    with pytest.raises(ModeError, match="already has a built decoding step"):
        build_t3(model, LoadOptions(t3_dtype="bfloat16"))  # options apply once, when the model is built


def test_options_that_cannot_combine_are_refused_before_building():
    with pytest.raises(ModeError, match="float32"):
        LoadOptions.from_modes("bf16+int8")
    with pytest.raises(ModeError, match="flow_steps"):
        LoadOptions(flow_steps=0)


def test_each_model_takes_the_speed_options_its_parts_can_run():
    int8, bf16, fewer = (LoadOptions.from_modes(name) for name in ("int8", "bf16", "fewer_flow_steps"))
    english, turbo, mtl = MODELS["english"], MODELS["turbo"], MODELS["multilingual"]
    assert english.t3.speed_options(int8) == (int8, {}) and english.t3.speed_options(bf16) == (bf16, {})
    kept, left = mtl.t3.speed_options(LoadOptions.from_modes("int8+fewer_flow_steps"))
    assert kept == LoadOptions(flow_steps=FEWER_FLOW_STEPS) and "alignment analyzer" in left.pop("quantize")
    assert not left and mtl.t3.speed_options(bf16) == (bf16, {})
    assert turbo.t3.speed_options(int8) == (int8, {})
    kept, left = turbo.t3.speed_options(bf16)
    assert kept == LoadOptions() and set(left) == {"t3_dtype"}
    assert english.s3gen.speed_options(fewer) == (fewer, {})
    kept, left = turbo.s3gen.speed_options(fewer)  # 5 steps would be more than Turbo's 2
    assert kept == LoadOptions() and "2 steps" in left["flow_steps"]
    assert turbo.s3gen.speed_options(LoadOptions(flow_steps=1)) == (LoadOptions(flow_steps=1), {})


def test_int8_keeps_the_uncached_forward_working(cond):
    model = build_t3(tiny_t3(), LoadOptions(quantize="int8"))
    embeds = model.build_inputs(cond, model.frame_text(torch.arange(1, 6)), with_cfg_row=True)
    with torch.no_grad():
        oracle = model(embeds)  # Hugging Face layers, through the fused layers' output slices
        cached = model.forward_cached(embeds, KVCache(model, 2, embeds.shape[1]))
    torch.testing.assert_close(cached, oracle, atol=1e-4, rtol=1e-4)


def test_int8_linear_is_its_int8_weights_times_the_input():
    g = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(96, 200, generator=g), torch.randn(96, generator=g)
    layer = Int8Linear(weight, bias)
    dequantized = layer.dequantized_weight()
    half_step = weight.abs().amax(dim=1, keepdim=True) / (2 * INT8_WEIGHT_MAX)
    assert ((dequantized - weight).abs() <= half_step * 1.001).all()
    x = torch.randn(2, 3, 200, generator=g)
    x[1, 2, 7] = 80.0  # one outlier sets the activation scale of the whole call
    expected = x @ dequantized.T + bias
    # Two passes leave each activation within peak / (2 * ACTIVATION_MAX * RESIDUAL_GAIN).
    bound = dequantized.abs().sum(dim=1) * x.abs().max() / (2 * ACTIVATION_MAX * RESIDUAL_GAIN)
    assert ((layer(x) - expected).abs() <= bound + 1e-4).all()
    single_pass = (x / x.abs().max() * ACTIVATION_MAX).round() * x.abs().max() / ACTIVATION_MAX
    assert (single_pass @ dequantized.T + bias - expected).abs().max() > 20 * (layer(x) - expected).abs().max()


def test_int8_linear_does_not_saturate_at_full_scale():
    # Every product at its largest codes (weights 127, activations 63 above zero point 64):
    # the kernel's int16 pair sums would clip here with 8-bit activation codes (checked: 10.1).
    layer = Int8Linear(torch.ones(4, 256))
    out = layer(torch.full((1, 256), 5.0))
    torch.testing.assert_close(out, torch.full((1, 4), 5.0 * 256), rtol=1e-6, atol=0)


def test_bf16_runs_in_bfloat16_and_samples_in_float32(cond):
    model = tiny_t3()
    tokens, logits = decode(model, cond)
    build_t3(model, LoadOptions.from_modes("bf16"))
    assert model.dtype == torch.bfloat16 and model.tfmr.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    b_tokens, b_logits = decode(model, cond)
    assert b_logits.dtype == torch.float32
    assert len(b_tokens) == GREEDY.max_new_tokens and b_tokens[0] == tokens[0]
    assert cosine(b_logits[0], logits[0]) > 0.99


def test_gpu_only_modes_are_refused_on_cpu_without_changes():
    model = tiny_t3()
    for mode in ("fp16", "compile", "cuda_graph", "fp16+cuda_graph"):
        with pytest.raises(ModeError, match="CUDA"):
            build_t3(model, LoadOptions.from_modes(mode))
    assert model.dtype == torch.float32 and model.fast_step is None


def test_unknown_mode_is_refused_and_modes_map_to_options():
    with pytest.raises(ModeError, match="known: int8"):
        LoadOptions.from_modes("int4")
    with pytest.raises(ModeError, match="'int4'"):
        LoadOptions.from_modes("bf16+int4")
    assert set(FAST_MODES) == {"int8", "bf16", "fp16", "fewer_flow_steps", "compile", "cuda_graph"}
    assert LoadOptions.from_modes("int8+fewer_flow_steps") == LoadOptions(quantize="int8",
                                                                          flow_steps=FEWER_FLOW_STEPS)
    assert LoadOptions.from_modes("") == LoadOptions() and LoadOptions().plain_t3


def test_flow_steps_are_built_into_s3gen_for_whole_decoding():
    with torch.device("meta"):
        s3gen = S3Gen(n_timesteps=FEWER_FLOW_STEPS)
    steps: list[int] = []
    s3gen.flow.inference = lambda *args, n_timesteps, **kwargs: steps.append(n_timesteps) or torch.zeros(1, 80, 8)
    s3gen.mel2wav.inference = lambda mel, generator=None: torch.zeros(1, 4 * 480)
    s3gen.inference(torch.arange(4), SimpleNamespace(prompt_token=None, prompt_feat=None, embedding=None))
    assert steps == [FEWER_FLOW_STEPS]


def test_compiled_step_is_one_graph_and_matches_eager(cond):
    from torch._dynamo.utils import counters

    model = tiny_t3()
    tokens, logits = decode(model, cond)
    torch._dynamo.reset()
    counters.clear()
    build_t3(model, LoadOptions(compile=True), backend="eager")  # graph capture only: inductor is for GPUs
    try:
        c_tokens, c_logits = decode(model, cond)
        # Every step reuses one graph: no graph breaks, no recompiling as the cache grows.
        assert counters["stats"]["unique_graphs"] == 1 and not counters["unimplemented"]
    finally:
        torch._dynamo.reset()
    assert c_tokens == tokens
    torch.testing.assert_close(c_logits, logits, atol=1e-5, rtol=1e-5)


def test_compiled_flow_estimator_matches_eager():
    from test_flow import reference_inputs, tiny_flow

    flow = tiny_flow()
    inputs = reference_inputs(n_tokens=10)
    noise = torch.randn(8, 2 * (6 + 10), generator=torch.Generator().manual_seed(2))
    mel = flow.inference(**inputs, noise=noise, n_timesteps=2)
    torch._dynamo.reset()
    build_s3gen(SimpleNamespace(flow=flow, device=torch.device("cpu")), LoadOptions(compile=True), backend="eager")
    try:
        compiled = flow.inference(**inputs, noise=noise, n_timesteps=2)
    finally:
        torch._dynamo.reset()
    assert "forward" in vars(flow.decoder.estimator)  # the instance now runs the compiled forward
    torch.testing.assert_close(compiled, mel, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
@pytest.mark.parametrize("dtype", ["float32", "fp16"])
def test_cuda_graph_steps_match_the_eager_steps(cond, dtype):
    model = tiny_t3().cuda()
    if dtype == "fp16":
        model.half()
    cond = T3Cond(cond.speaker_emb.cuda(), cond.cond_prompt_speech_tokens.cuda(), cond.emotion_adv)
    tokens, logits = decode(model, cond)
    build_t3(model, LoadOptions(t3_dtype="float16" if dtype == "fp16" else "float32", cuda_graph=True))
    for _ in range(2):  # the second generation has a new cache: captured again
        g_tokens, g_logits = decode(model, cond)
        assert g_tokens == tokens
        tol = 1e-4 if dtype == "float32" else 2e-2
        torch.testing.assert_close(g_logits, logits, atol=tol, rtol=tol)
    assert model.fast_step.graph is not None  # the steps ran as a graph
