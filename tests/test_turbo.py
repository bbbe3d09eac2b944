"""Chatterbox-Turbo: T3-Turbo logic on a tiny GPT-2 (cached decoding vs the no-cache oracle,
sampling order, stopping), the text front-end and its tags, loudness normalisation, the
short-reference error, meanflow S3Gen on a tiny estimator, the real layouts against the
kit's manifests, and a representative subset of the Turbo golden replays (slow)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from models.loading import CheckpointError, load_strict
from models.loudness import TARGET_LUFS, loudness_gain, normalize_loudness
from models.s3gen.cfm import CFMConfig, ConditionalCFM
from models.s3gen.estimator import EstimatorConfig
from models.s3gen.flow import Flow, FlowConfig
from models.s3gen.s3gen import S3Gen
from models.sampling import top_k_filter
from models.t3 import START_SPEECH_TOKEN, STOP_SPEECH_TOKEN, T3Cond
from models.t3_turbo import (
    S3GEN_SILENCE_TOKEN,
    T3Turbo,
    T3TurboConfig,
    TurboKVCache,
    TurboSamplingParams,
    exponential_race,
    s3gen_tokens,
)
from models.turbo_text import EMPTY_TEXT_STAND_IN, TurboTextTokenizer, turbo_punc_norm

TINY = T3TurboConfig(text_tokens_dict_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     n_positions=128)
TAGS = ("[angry]", "[fear]", "[surprised]", "[whispering]", "[advertisement]", "[dramatic]", "[narration]",
        "[crying]", "[happy]", "[sarcastic]", "[clear throat]", "[sigh]", "[shush]", "[cough]", "[groan]",
        "[sniff]", "[gasp]", "[chuckle]", "[laugh]")


@pytest.fixture(scope="module")
def tiny() -> T3Turbo:
    torch.manual_seed(0)
    model = T3Turbo(TINY).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)  # well separated logits
    model.drop_token_table()
    return model


@pytest.fixture
def cond() -> T3Cond:
    g = torch.Generator().manual_seed(1)
    return T3Cond(torch.randn(1, 256, generator=g), torch.randint(0, 6561, (1, 12), generator=g))


TEXT = [5, 17, 42, 7]


# --- T3-Turbo ---------------------------------------------------------------------------

def test_input_layout_one_start_token_and_no_position_tables(tiny, cond):
    embeds = tiny.build_inputs(cond, TEXT, speech_tokens=[3, 9])
    assert embeds.shape == (1, 1 + 12 + len(TEXT) + 1 + 2, TINY.hidden_size)
    prompt = tiny.speech_emb(cond.cond_prompt_speech_tokens)[0]
    torch.testing.assert_close(embeds[0, 1:13], prompt, rtol=0, atol=0)  # raw rows: no positions added
    torch.testing.assert_close(embeds[0, 13:17], tiny.text_emb(torch.tensor(TEXT)), rtol=0, atol=0)
    torch.testing.assert_close(embeds[0, 17], tiny.speech_emb.weight[START_SPEECH_TOKEN], rtol=0, atol=0)
    assert not hasattr(tiny.tfmr, "wte")


def test_cached_blocks_match_hugging_face_gpt2(tiny, cond):
    embeds = tiny.build_inputs(cond, TEXT, speech_tokens=[3, 9, 100])
    oracle = tiny(embeds)
    cache = TurboKVCache(tiny, embeds.shape[1])
    prefill = tiny.forward_cached(embeds[:, :-3], cache)
    steps = [tiny.forward_cached(embeds[:, i : i + 1], cache) for i in range(embeds.shape[1] - 3, embeds.shape[1])]
    torch.testing.assert_close(torch.cat([prefill, *steps], dim=1), oracle, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("greedy", [True, False])
def test_cached_decoding_equals_no_cache_oracle(tiny, cond, greedy):
    params = TurboSamplingParams(max_gen_len=15, greedy=greedy, top_k=50)
    runs = []
    for use_cache in (True, False):
        logits: list[torch.Tensor] = []
        tokens = list(tiny.stream_tokens(cond, TEXT, params, torch.Generator().manual_seed(7),
                                         on_logits=lambda s, x: logits.append(x.clone()), use_kv_cache=use_cache))
        runs.append((tokens, torch.cat(logits)))
    assert runs[0][0] == runs[1][0]
    assert len(set(runs[0][0])) > 2  # really sampled several different tokens
    torch.testing.assert_close(runs[0][1], runs[1][1], rtol=1e-4, atol=1e-4)


def test_int8_puts_every_block_layer_and_the_head_in_int8_and_stays_close(tiny, cond):
    import copy

    from models.fast_modes import Int8Linear, int8_turbo

    model = copy.deepcopy(tiny)
    int8_turbo(model)
    block = model.tfmr.h[0]
    layers = (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj, model.speech_head)
    assert all(isinstance(layer, Int8Linear) for layer in layers)
    params = TurboSamplingParams(max_gen_len=7, greedy=True)
    runs = []
    for m in (tiny, model):
        logits: list[torch.Tensor] = []
        list(m.stream_tokens(cond, TEXT, params, on_logits=lambda s, x: logits.append(x.clone())))
        runs.append(torch.cat(logits))
    assert runs[0].shape == runs[1].shape
    rel = (runs[1] - runs[0]).norm(dim=-1) / runs[0].norm(dim=-1)
    assert 0 < float(rel.max()) < 0.05  # int8 weights (measured 0.01): close, not the float32 arithmetic
    # The Hugging Face blocks call the replaced layers too: the no-cache oracle still agrees.
    with torch.no_grad():
        embeds = model.build_inputs(cond, TEXT, speech_tokens=[3, 9])
        cached = model.forward_cached(embeds, TurboKVCache(model, embeds.shape[1]))
        torch.testing.assert_close(cached, model(embeds), rtol=1e-4, atol=1e-4)
        # The scripted step (all blocks in one TorchScript call) is the module loop over the same layers,
        # for the prefill and for a decoding step after it.
        step, model.fast_step = model.fast_step, None
        assert step is not None
        outputs = []
        for fast_step in (step, None):
            model.fast_step = fast_step
            cache = TurboKVCache(model, embeds.shape[1])
            outputs.append(torch.cat([model.forward_cached(embeds[:, :-1], cache),
                                      model.forward_cached(embeds[:, -1:], cache)], dim=1))
        torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)


def test_decoding_length_and_stop_rules(tiny, cond):
    # Without a stop, the first token plus max_gen_len steps are drawn.
    params = TurboSamplingParams(max_gen_len=6, greedy=True, repetition_penalty=1.0)
    with torch.no_grad():
        tiny.speech_head.bias[STOP_SPEECH_TOKEN] = -1e4
    assert len(list(tiny.stream_tokens(cond, TEXT, params))) == 7
    # A stop drawn first is not checked (the reference never tests the prefill's token) ...
    with torch.no_grad():
        tiny.speech_head.bias[STOP_SPEECH_TOKEN] = 1e4
    tokens = list(tiny.stream_tokens(cond, TEXT, params))
    assert tokens[:2] == [STOP_SPEECH_TOKEN, STOP_SPEECH_TOKEN] and len(tokens) == 2
    # ... and `generate` removes one final stop, as inference_turbo does.
    assert tiny.generate(cond, TEXT, params).tolist() == [STOP_SPEECH_TOKEN]
    with torch.no_grad():
        tiny.speech_head.bias[STOP_SPEECH_TOKEN] = 0.0


def test_penalty_history_is_start_then_generated_tokens(tiny, cond):
    """Step 0 penalises START; later steps penalise every generated token, but not START."""
    seen: list[torch.Tensor] = []
    params = TurboSamplingParams(max_gen_len=3, greedy=True, repetition_penalty=2.0)
    original = TurboSamplingParams.process

    def spy(self, logits, history):
        seen.append(history.clone())
        return original(self, logits, history)

    TurboSamplingParams.process = spy
    try:
        tokens = list(tiny.stream_tokens(cond, TEXT, params))
    finally:
        TurboSamplingParams.process = original
    assert seen[0].tolist() == [[START_SPEECH_TOKEN]]
    for step in range(1, len(tokens)):
        assert seen[step].tolist() == [tokens[:step]]


def test_processing_order_matches_the_reference_processors():
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        logits = torch.randn(1, 500, generator=g) * 3
        history = torch.randint(0, 500, (1, 9), generator=g)
        reference = LogitsProcessorList([TemperatureLogitsWarper(0.7), TopKLogitsWarper(40), TopPLogitsWarper(0.9),
                                         RepetitionPenaltyLogitsProcessor(1.3)])
        ours = TurboSamplingParams(temperature=0.7, top_k=40, top_p=0.9, repetition_penalty=1.3)
        torch.testing.assert_close(ours.process(logits, history), reference(history, logits.clone()))


def test_penalty_after_filtering_keeps_removed_tokens_removed():
    logits = torch.tensor([[4.0, 3.0, -1.0, -2.0]])
    out = TurboSamplingParams(temperature=1.0, top_k=2, top_p=1.0, repetition_penalty=2.0).process(
        logits, torch.tensor([[0, 2]]))
    assert out.tolist() == [[2.0, 3.0, float("-inf"), float("-inf")]]


def test_top_k_filter_keeps_ties_and_caps_k():
    logits = torch.tensor([[1.0, 5.0, 3.0, 3.0, 0.0]])
    assert torch.isinf(top_k_filter(logits, 2)).tolist() == [[True, False, False, False, True]]
    assert torch.equal(top_k_filter(logits, 100), logits)
    assert torch.equal(top_k_filter(logits, 0), logits)


def test_exponential_race_is_torch_cpu_multinomial():
    probs = torch.softmax(torch.randn(1, 6563, generator=torch.Generator().manual_seed(5)) * 2, dim=-1)
    for seed in range(30):
        torch.manual_seed(seed)
        expected = torch.multinomial(probs, 1)
        q = torch.empty_like(probs).exponential_(1.0, generator=torch.Generator().manual_seed(seed))
        assert exponential_race(probs, q).item() == expected.item()


def test_sampling_params_defaults_and_validation():
    p = TurboSamplingParams()
    assert (p.temperature, p.top_k, p.top_p, p.repetition_penalty, p.max_gen_len) == (0.8, 1000, 0.95, 1.2, 1000)
    for bad in (dict(top_p=0.0), dict(top_p=1.5), dict(temperature=-1.0), dict(repetition_penalty=0.0),
                dict(max_gen_len=-1), dict(top_k=2.5)):
        with pytest.raises(ValueError):
            TurboSamplingParams(**bad)


def test_s3gen_tokens_drop_specials_and_append_silence():
    out = s3gen_tokens([5, START_SPEECH_TOKEN, 6560, STOP_SPEECH_TOKEN, 7])
    assert out.tolist() == [5, 6560, 7] + [S3GEN_SILENCE_TOKEN] * 3


def test_too_long_prompt_is_a_value_error(tiny, cond):
    with pytest.raises(ValueError, match="positions"):
        list(tiny.stream_tokens(cond, list(range(120)), TurboSamplingParams(max_gen_len=10)))
    with pytest.raises(ValueError, match="text token"):
        tiny.build_inputs(cond, [TINY.text_tokens_dict_size])


def test_module_names_match_checkpoint_manifests(parity_dir):
    manifest = json.loads((parity_dir / "turbo" / "manifest" / "t3_turbo_v1.json").read_text())
    with torch.device("meta"):
        t3 = T3Turbo(T3TurboConfig())
    ours = {k: list(v.shape) for k, v in t3.state_dict().items()}
    assert ours == {t["key"]: t["shape"] for t in manifest["tensors"]}
    assert len(ours) == 299
    manifest = json.loads((parity_dir / "turbo" / "manifest" / "s3gen_meanflow.json").read_text())
    with torch.device("meta"):
        s3gen = S3Gen(meanflow=True)
    ours = {k: list(v.shape) for k, v in s3gen.state_dict().items()}
    assert ours == {t["key"]: t["shape"] for t in manifest["tensors"]}
    assert len(ours) == 2491
    assert s3gen.n_timesteps == 2  # the reference's n_cfm_timesteps for meanflow


def test_strict_load_names_missing_and_unexpected_keys(tiny):
    state = dict(T3Turbo(TINY).state_dict())
    del state["tfmr.h.1.attn.c_attn.bias"]
    state["tfmr.h.1.attn.bias"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing keys: tfmr\.h\.1\.attn\.c_attn\.bias.*"
                                              r"unexpected keys: tfmr\.h\.1\.attn\.bias"):
        load_strict(T3Turbo(TINY), state, "t3_turbo_v1.safetensors")


# --- text front-end -----------------------------------------------------------------------

@pytest.mark.parametrize("raw, normalized", [
    ("", EMPTY_TEXT_STAND_IN),
    ("hello there", "Hello there."),
    ("[laugh] ha", "[laugh] ha."),                       # only a lowercase first letter is raised
    ("wait... what; really - yes", "Wait... what; really - yes."),  # kept, unlike English
    ("a\u2026 b: c \u2014 d \u2013 e , f", "A,  b, c - d - e, f."),
    ("\u201cq\u201d \u2018s\u2019  ", "\u201cq\u201d 's'.".replace("\u201c", '"').replace("\u201d", '"')),
    ("Done!", "Done!"),
])
def test_turbo_punc_norm(raw, normalized):
    assert turbo_punc_norm(raw) == normalized


@pytest.fixture(scope="module")
def turbo_tokenizer(parity_dir) -> TurboTextTokenizer:
    return TurboTextTokenizer.from_dir(parity_dir / "turbo" / "tokenizer")


def test_every_tag_of_the_vocabulary_is_listed_in_id_order(turbo_tokenizer):
    assert turbo_tokenizer.tags == TAGS
    assert turbo_tokenizer.tag_ids() == {tag: 50257 + i for i, tag in enumerate(TAGS)}
    assert turbo_tokenizer.vocab_size == 50276


def test_tags_are_single_tokens_with_the_space_before_them_separate(turbo_tokenizer):
    ids = turbo_tokenizer.encode("Oh [clear throat] well.")
    strings = turbo_tokenizer.token_strings(ids)
    assert strings[1:3] == ["\u0120", "[clear throat]"] and 50267 in ids
    assert turbo_tokenizer.decode(ids) == "Oh [clear throat] well."


def test_long_text_is_cut_at_1024_tokens_and_says_so(turbo_tokenizer):
    out = turbo_tokenizer.tokenize("word " * 1500)
    assert len(out.ids) == 1024 and out.truncated
    assert not turbo_tokenizer.tokenize("short").truncated


def test_missing_tokenizer_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        TurboTextTokenizer.from_dir(tmp_path)


# --- loudness and the reference clip ---------------------------------------------------

def _tone(seconds: float, amplitude: float, sr: int = 24_000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_loudness_normalisation_reaches_the_target():
    for amplitude in (0.02, 0.5):
        wav = _tone(3.0, amplitude)
        out = normalize_loudness(wav, 24_000)
        assert out.dtype == np.float32
        assert abs(loudness_gain(out, 24_000).loudness_lufs - TARGET_LUFS) < 0.01


def test_loudness_of_silence_leaves_the_clip_alone_and_short_clip_is_an_error():
    silence = np.zeros(24_000, dtype=np.float32)
    assert not loudness_gain(silence, 24_000).applied
    assert np.array_equal(normalize_loudness(silence, 24_000), silence)
    with pytest.raises(ValueError, match="loudness block"):
        loudness_gain(_tone(0.3, 0.5), 24_000)


def test_reference_not_longer_than_five_seconds_is_a_value_error():
    from models.tts_turbo import ChatterboxTurbo

    tts = ChatterboxTurbo.__new__(ChatterboxTurbo)  # the check runs before any model is used
    tts.voice_encoder = tts.s3gen = None
    with pytest.raises(ValueError, match="more than 5 s"):
        tts.prepare_conditionals((24_000, _tone(5.0, 0.3)))


def test_generation_arguments_are_checked():
    from models.tts_turbo import check_turbo_args

    ok = dict(text="Hi.", temperature=0.8, top_k=1000, top_p=0.95, repetition_penalty=1.2, seed=1,
              max_new_tokens=1000)
    check_turbo_args(**ok)
    for bad in (dict(text="  "), dict(top_k=-1), dict(top_k=1.5), dict(top_p=0.0), dict(temperature=0.0),
                dict(max_new_tokens=0), dict(seed=-3)):
        with pytest.raises(ValueError):
            check_turbo_args(**{**ok, **bad})


# --- meanflow S3Gen ---------------------------------------------------------------------

TINY_ESTIMATOR = EstimatorConfig(n_feats=8, channels=16, n_blocks=1, num_mid_blocks=1, num_heads=2,
                                 attention_head_dim=8)


def test_meanflow_solver_is_two_mean_velocity_steps_on_linear_times():
    torch.manual_seed(0)
    cfm = ConditionalCFM(CFMConfig(estimator=EstimatorConfig(**{**TINY_ESTIMATOR.__dict__, "meanflow": True})))
    cfm.eval()
    est = cfm.estimator
    x0, mu, cond = torch.randn(1, 8, 10), torch.randn(1, 8, 10), torch.randn(1, 8, 10)
    spks, mask = torch.randn(1, 8), torch.ones(1, 1, 10)
    with torch.no_grad():
        expected = x0
        for t, r in ((0.0, 0.5), (0.5, 1.0)):
            v = est(expected, mask, mu, torch.tensor([t]), spks, cond, r=torch.tensor([r]))
            expected = expected + (r - t) * v
        torch.testing.assert_close(cfm(x0, mu, spks, cond, mask, n_timesteps=2), expected)
        # r matters: the mixer sees both embeddings.
        a = est.time_embedding(torch.tensor([0.0]), torch.tensor([0.5]))
        b = est.time_embedding(torch.tensor([0.0]), torch.tensor([1.0]))
        assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="end time"):
        est.time_embedding(torch.tensor([0.0]))


def test_english_estimator_is_unchanged_by_the_meanflow_option():
    with torch.device("meta"):
        english, turbo = Flow(FlowConfig()), Flow(FlowConfig.turbo())
    extra = set(turbo.state_dict()) - set(english.state_dict())
    assert extra == {"decoder.estimator.time_embed_mixer.weight"}
    assert (FlowConfig().default_timesteps, FlowConfig.turbo().default_timesteps) == (10, 2)


def test_meanflow_noise_draw_order():
    """First randn(1, F, 2N) for the new tokens, then randn over every frame, whose last
    2N frames are replaced by the first draw (the reference's flow_inference + CFM)."""
    flow = Flow.__new__(Flow)
    torch.nn.Module.__init__(flow)
    flow.config = FlowConfig.turbo()
    flow.input_embedding = torch.nn.Embedding(1, 1)
    noise = flow.initial_noise(30, 5, torch.Generator().manual_seed(11))
    g = torch.Generator().manual_seed(11)
    first = torch.randn(1, 80, 10, generator=g)
    second = torch.randn(1, 80, 30, generator=g)
    torch.testing.assert_close(noise[..., :20], second[..., :20], rtol=0, atol=0)
    torch.testing.assert_close(noise[..., 20:], first, rtol=0, atol=0)


# --- golden replays on the fake Turbo checkpoint ------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("names", [("e_t3_cond", "f_t3_teacher_forced", "g_t3_sampled"), ("h_s3gen_flow",)])
def test_turbo_golden_replays(parity_dir, fake_turbo_ckpt, names):
    from tools.parity import Context, Report, replay_file

    ctx = Context(fake_turbo_ckpt)
    assert ctx.family == "turbo"
    report = Report()
    with torch.inference_mode():
        for name in names:
            replay_file(parity_dir / "turbo" / "golden" / f"{name}.npz", ctx, report)
    assert report.failed == 0 and report.skipped == 0 and report.passed >= 3 * len(names), "\n".join(report.lines)


def test_packed_backbone_decodes_like_the_plain_one(cond):
    from models.packed_linear import packing_available
    from models.t3_turbo import PackedConv1D, pack_conv1d_layers

    if not packing_available():
        pytest.skip("this torch build has no oneDNN kernels")
    torch.manual_seed(0)
    plain = T3Turbo(TINY).eval()
    with torch.no_grad():
        for p in plain.parameters():
            p.normal_(0.0, 0.3)
    packed = T3Turbo(TINY).eval()
    packed.load_state_dict(plain.state_dict())
    assert pack_conv1d_layers(packed) == 4 * TINY.num_hidden_layers
    assert isinstance(packed.tfmr.h[0].attn.c_attn, PackedConv1D)
    # The checkpoint's [in, out] layout survives a save.
    saved = packed.state_dict()
    torch.testing.assert_close(saved["tfmr.h.0.mlp.c_fc.weight"], plain.state_dict()["tfmr.h.0.mlp.c_fc.weight"])
    params = TurboSamplingParams(max_gen_len=10, greedy=True)
    with torch.inference_mode():
        assert list(packed.stream_tokens(cond, TEXT, params)) == list(plain.stream_tokens(cond, TEXT, params))
        embeds = plain.build_inputs(cond, TEXT)
        torch.testing.assert_close(packed(embeds), plain(embeds), rtol=1e-4, atol=1e-4)


def test_parity_tool_recognises_the_family_and_refuses_a_mismatch(tmp_path, parity_dir):
    from types import SimpleNamespace

    from tools.parity import Report, detect_stage, golden_families, replay_file

    turbo_golden = parity_dir / "turbo" / "golden"
    expected = {"a_conditionals": "a", "b_text_tags": "b", "e_t3_cond": "e", "f_t3_teacher_forced": "f",
                "g_t3_sampled": "g", "h_s3gen_flow": "h", "i_hift": "i", "j_e2e_generate": "j"}
    for name, letter in expected.items():
        data = np.load(turbo_golden / f"{name}.npz")
        assert "turbo" in golden_families(data)
        assert detect_stage(data, "turbo") == letter
    assert golden_families(np.load(parity_dir / "golden" / "b_text_en.npz")) == ("english",)
    # HiFT is the same module in every family: the checkpoint decides.
    assert set(golden_families(np.load(turbo_golden / "i_hift.npz"))) == {"english", "multilingual", "turbo"}

    report = Report()
    replay_file(turbo_golden / "e_t3_cond.npz", SimpleNamespace(family="english", checkpoint=tmp_path), report)
    assert report.failed == 1 and "turbo golden needs a turbo checkpoint" in report.lines[0]


@pytest.mark.slow
def test_turbo_pipeline_speaks_the_reference_tokens(parity_dir, fake_turbo_ckpt):
    """ChatterboxTurbo end to end on the fake checkpoint: seeded like the reference's global
    RNG, it draws the tokens of the reference `generate()` (golden j) and makes 960 samples
    per token (kept ones + 3 silence)."""
    from models.tts_turbo import ChatterboxTurbo

    golden = np.load(parity_dir / "turbo" / "golden" / "j_e2e_generate.npz")
    tts = ChatterboxTurbo.from_local(fake_turbo_ckpt, device="cpu")
    assert tts.tags == TAGS and tts.builtin is not None
    conds = tts.prepare_conditionals((24_000, golden["ref_wav_24k"]))
    assert conds.t3.cond_prompt_speech_tokens.shape == (1, 375)
    out = tts.generate(str(golden["text"]), conds, seed=int(golden["torch_seed"]), watermark=False)
    assert out.normalized_text == str(golden["normalized_text"])
    assert list(out.t3_tokens) == golden["t3_tokens"].tolist()
    assert len(out.wav) == len(golden["wav_before_watermark"]) and not out.hit_token_limit
    assert np.all(np.isfinite(out.wav)) and 0 < np.abs(out.wav).max() <= 0.99
    with pytest.raises(ValueError, match="empty"):
        tts.generate("   ", conds)
