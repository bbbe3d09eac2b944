"""Opt-in fast modes on tiny random models: each runs, stays close to the default, and refuses
what it cannot do (unknown names, fp16/compile on CPU, changing dtype after int8); the int8
linear layer against its own dequantized weights."""
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
    ModeError,
    apply_mode,
    compile_,
)
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
    apply_mode(model, "int8")
    assert not any(isinstance(m, nn.Linear) for m in model.tfmr.layers.modules())
    layer = model.tfmr.layers[0]
    assert all(isinstance(m, Int8Linear) for m in (layer.self_attn.qkv_proj, layer.mlp.gate_up_proj,
                                                   layer.mlp.down_proj, model.speech_head))
    q_tokens, q_logits = decode(model, cond)
    assert len(q_tokens) == GREEDY.max_new_tokens
    assert q_tokens[0] == tokens[0]  # later steps' top-2 gaps (down to 0.016) are below the error (0.036)
    assert min(cosine(q, f) for q, f in zip(q_logits, logits)) > 0.999  # measured 0.9999
    with pytest.raises(ModeError, match="already quantized"):
        apply_mode(model, "bf16")
    with pytest.raises(ModeError, match="already quantized"):
        apply_mode(model, "int8")


def test_int8_refuses_a_t3_that_is_not_float32():
    model = tiny_t3()
    apply_mode(model, "bf16")
    with pytest.raises(ModeError, match="float32"):
        apply_mode(model, "int8")


def test_int8_keeps_the_uncached_forward_working(cond):
    model = tiny_t3()
    apply_mode(model, "int8")
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
    apply_mode(SimpleNamespace(t3=model), "bf16")  # a pipeline-like target
    assert model.dtype == torch.bfloat16 and model.tfmr.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    b_tokens, b_logits = decode(model, cond)
    assert b_logits.dtype == torch.float32
    assert len(b_tokens) == GREEDY.max_new_tokens and b_tokens[0] == tokens[0]
    assert cosine(b_logits[0], logits[0]) > 0.99


def test_gpu_only_modes_are_refused_on_cpu_without_changes():
    model = tiny_t3()
    with pytest.raises(ModeError, match="CUDA"):
        apply_mode(model, "fp16")
    with pytest.raises(ModeError, match="CUDA"):
        apply_mode(model, "compile")
    with pytest.raises(ModeError, match="CUDA"):
        apply_mode(model, "cuda_graph")
    assert model.dtype == torch.float32 and "forward_cached" not in vars(model)


def test_unknown_mode_and_wrong_target_are_refused():
    with pytest.raises(ModeError, match="known: int8"):
        apply_mode(tiny_t3(), "int4")
    with pytest.raises(ModeError, match="S3Gen"):
        apply_mode(tiny_t3(), "fewer_flow_steps")
    assert set(FAST_MODES) == {"int8", "bf16", "fp16", "fewer_flow_steps", "compile", "cuda_graph"}
    model = tiny_t3()
    with pytest.raises(ModeError, match="'int4'"):
        apply_mode(model, "bf16+int4")  # every name is checked before any mode applies
    assert model.dtype == torch.float32


def test_modes_joined_by_plus_apply_in_order():
    with torch.device("meta"):
        s3gen = S3Gen()
    pipeline = SimpleNamespace(t3=tiny_t3(), s3gen=s3gen)
    apply_mode(pipeline, "int8+fewer_flow_steps")
    assert isinstance(pipeline.t3.speech_head, Int8Linear)
    assert pipeline.s3gen.inference.keywords == {"n_timesteps": FEWER_FLOW_STEPS}
    # A second step replacement is refused: it would wrap (or be wrapped by) the first.
    with pytest.raises(ModeError, match="already replaced"):
        compile_(pipeline.t3, backend="eager")


def test_fewer_flow_steps_reaches_the_flow_solver():
    with torch.device("meta"):
        s3gen = S3Gen()
    steps: list[int] = []
    s3gen.flow.inference = lambda *args, n_timesteps, **kwargs: steps.append(n_timesteps) or torch.zeros(1, 80, 8)
    s3gen.mel2wav.inference = lambda mel, generator=None: torch.zeros(1, 4 * 480)
    tokens = torch.arange(4)
    s3gen.inference(tokens, SimpleNamespace(prompt_token=None, prompt_feat=None, embedding=None))
    apply_mode(SimpleNamespace(s3gen=s3gen), "fewer_flow_steps")
    s3gen.inference(tokens, SimpleNamespace(prompt_token=None, prompt_feat=None, embedding=None))
    assert steps == [10, FEWER_FLOW_STEPS]


def test_compiled_step_is_one_graph_and_matches_eager(cond):
    from torch._dynamo.utils import counters

    model = tiny_t3()
    tokens, logits = decode(model, cond)
    torch._dynamo.reset()
    counters.clear()
    compile_(model, backend="eager")  # graph capture only: inductor codegen is for GPUs
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
    compile_(SimpleNamespace(s3gen=SimpleNamespace(flow=flow, device=torch.device("cpu"))), backend="eager")
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
        apply_mode(model, "fp16")
    cond = T3Cond(cond.speaker_emb.cuda(), cond.cond_prompt_speech_tokens.cuda(), cond.emotion_adv)
    tokens, logits = decode(model, cond)
    apply_mode(model, "cuda_graph")
    for _ in range(2):  # the second generation has a new cache: captured again
        g_tokens, g_logits = decode(model, cond)
        assert g_tokens == tokens
        tol = 1e-4 if dtype == "float32" else 2e-2
        torch.testing.assert_close(g_logits, logits, atol=tol, rtol=tol)
    assert model.forward_cached.graph is not None  # the steps ran as a graph
