"""Voice conversion: source loading, windowed conversion of a long real-voice source (lengths,
seamless joins measured), short sources as one reference call, and (slow) VC golden replays."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from conftest import PARITY, REAL_VOICES, replay_goldens
from models.audio import resample
from models.reference import ReferenceAudioError
from models.s3gen.campplus import CAMPPlus, CAMPPlusConfig
from models.s3gen.cfm import CFMConfig
from models.s3gen.conformer import EncoderConfig
from models.s3gen.estimator import EstimatorConfig
from models.s3gen.flow import Flow, FlowConfig
from models.s3gen.hift import HiFTConfig, HiFTGenerator
from models.s3gen.s3gen import ReferenceEmbedding, S3Gen
from models.s3gen.tokenizer import S3Tokenizer, S3TokenizerConfig
from models.vc import VCConfig, VoiceConverter, load_source, piece_bounds

N_FEATS, XVEC = 80, 12  # real mel bins: targets are embedded with the real 80-bin mel
TINY_FLOW = FlowConfig(spk_embed_dim=XVEC,
                       encoder=EncoderConfig(d_model=16, n_heads=2, ffn_dim=32, n_blocks=1, n_up_blocks=1),
                       cfm=CFMConfig(estimator=EstimatorConfig(n_feats=N_FEATS, channels=16, n_blocks=1,
                                                               num_mid_blocks=1, num_heads=2, attention_head_dim=8)))


def tiny_s3gen() -> S3Gen:
    """S3Gen with the real token vocabulary, rates and receptive fields but few channels (random weights)."""
    torch.manual_seed(0)
    s3gen = S3Gen.__new__(S3Gen)
    nn.Module.__init__(s3gen)
    s3gen.n_timesteps = 10
    s3gen.tokenizer = S3Tokenizer(S3TokenizerConfig(n_audio_state=128, n_audio_head=2, n_audio_layer=1))
    s3gen.speaker_encoder = CAMPPlus(CAMPPlusConfig(embedding_size=XVEC, head_channels=8, init_channels=16,
                                                    growth_rate=8, bottleneck=16, block_layers=(1, 1, 1)))
    s3gen.flow = Flow(TINY_FLOW)
    s3gen.mel2wav = HiFTGenerator(HiFTConfig(in_channels=N_FEATS, base_channels=16, f0_channels=8))
    with torch.no_grad():
        s3gen.mel2wav.f0_predictor.classifier.bias.fill_(150.0)  # voiced: the sine source runs
    s3gen.fold_weight_norm()
    return s3gen.eval()


def tiny_target(prompt_frames: int = 51) -> ReferenceEmbedding:
    """An odd prompt mel (51 frames, 25 tokens): the first source frame is cut, as in the VC golden."""
    g = torch.Generator().manual_seed(1)
    return ReferenceEmbedding(torch.randint(0, 6561, (prompt_frames // 2,), generator=g),
                              torch.randn(prompt_frames, N_FEATS, generator=g), torch.randn(XVEC, generator=g))


def real_voice(seconds: float) -> np.ndarray:
    """The two real AISHELL clips, alternated and looped to `seconds`, at 16 kHz."""
    clips = [sf.read(str(p), dtype="float32")[0] for p in sorted(REAL_VOICES.glob("*.wav"))]
    wav = np.concatenate(clips * int(np.ceil(seconds / 8.0)))
    return wav[: int(seconds * 16_000)]


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.inference_mode():
        yield


def test_load_source_resamples_from_its_own_rate_and_mixes_channels(tmp_path):
    wav44 = 0.3 * np.sin(2 * np.pi * 220 * np.arange(44_100) / 44_100).astype(np.float32)
    stereo = np.stack([wav44, 0.5 * wav44], axis=1)
    path = tmp_path / "s.wav"
    sf.write(path, stereo, 44_100, subtype="FLOAT")
    got = load_source(path)
    np.testing.assert_allclose(got, resample(0.75 * wav44, 44_100, 16_000), atol=1e-6)
    with pytest.raises(ReferenceAudioError, match="silent"):
        load_source((16_000, np.zeros(16_000, dtype=np.float32)))
    with pytest.raises(ReferenceAudioError, match="min"):
        load_source((16_000, np.ones(16_000 * 61, dtype=np.float32) * 0.1), max_seconds=60)


def test_short_source_is_one_reference_call_with_the_seeded_noise():
    s3gen, target = tiny_s3gen(), tiny_target()
    wav16 = real_voice(3.0)
    converter = VoiceConverter(s3gen, watermarker=None)
    pieces = list(converter.stream(wav16, target, seed=7))
    assert len(pieces) == 1
    tokens = s3gen.tokenizer.tokenize(torch.from_numpy(wav16))
    expected = s3gen.inference(tokens, target, generator=torch.Generator().manual_seed(7)).numpy()
    np.testing.assert_array_equal(pieces[0], expected)
    assert len(expected) == 960 * len(tokens) - 480  # odd prompt mel


def join_steps(wav: np.ndarray, bounds: list[int], lost: int, config: VCConfig = VCConfig()) -> tuple[list, float]:
    """Largest |sample step| in each join region, and outside every join region (fade-in skipped).

    A join region is all audio the join can touch: the mel crossfade (`blend_frames` centred on
    output sample 960·b − 480·lost) widened by HiFT's reach (14 frames) on each side, since the
    vocoder's output at a frame depends on mel frames that far away.
    """
    from models.s3gen.streaming import HIFT_REACH_FRAMES

    steps = np.abs(np.diff(np.asarray(wav, dtype=np.float64)))
    reach = 480 * (config.blend_frames // 2 + HIFT_REACH_FRAMES)
    near = np.zeros(len(steps), dtype=bool)
    near[:960] = True  # the fade-in
    at_joins = []
    for b in bounds[1:-1]:
        centre = 960 * b - 480 * lost
        near[centre - reach:centre + reach] = True
        at_joins.append(float(steps[centre - reach:centre + reach].max()))
    return at_joins, float(steps[~near].max())


def test_piece_bounds_put_joins_in_the_sources_pauses():
    config = VCConfig()
    wav16 = real_voice(60.0)
    n = 1500
    bounds = piece_bounds(wav16, n, config)
    assert bounds[0] == 0 and bounds[-1] == n
    sizes = np.diff(bounds)
    assert np.all(sizes[:-1] >= config.piece_tokens - config.join_search_tokens)
    assert np.all(sizes[:-1] <= config.piece_tokens + config.join_search_tokens)
    assert config.piece_tokens // 2 <= sizes[-1] <= config.piece_tokens * 3 // 2
    power = np.mean(wav16[: n * 640].reshape(n, 640).astype(np.float64) ** 2, axis=1)
    for b in bounds[1:-1]:  # each join's blend (5 tokens either side) is the quietest stretch in reach
        here = power[b - 5:b + 5].mean()
        nominal_range = range(b - 2 * config.join_search_tokens, b + 2 * config.join_search_tokens)
        typical = np.median([power[t - 5:t + 5].mean() for t in nominal_range if 5 <= t <= n - 5])
        assert here < 0.1 * typical, (b, here, typical)  # > 10 dB below the speech around it
    assert piece_bounds(wav16, config.whole_max_tokens, config) == [0, config.whole_max_tokens]
    # Without a pause to find (the same power everywhere), the joins stay at their nominal places.
    steady = np.where(np.arange(n * 640) % 2 == 0, 0.1, -0.1).astype(np.float32)
    assert piece_bounds(steady, n, config) == [0, 250, 500, 750, 1000, 1250, n]


@pytest.mark.slow
def test_three_minute_real_voice_converts_in_windows_without_a_join_step():
    s3gen, target = tiny_s3gen(), tiny_target()
    wav16 = real_voice(185.0)
    config = VCConfig()
    converter = VoiceConverter(s3gen, watermarker=None, config=config)
    n_tokens = s3gen.tokenizer.tokenize(torch.from_numpy(wav16)).numel()
    pieces = list(converter.stream(wav16, target, seed=3))
    wav = np.concatenate(pieces)
    bounds = piece_bounds(wav16, n_tokens, config)
    assert len(pieces) >= len(bounds) - 2  # streamed window by window
    assert len(wav) == 960 * n_tokens - 480
    assert np.all(np.isfinite(wav)) and np.abs(wav).max() <= 0.99
    at_joins, inside = join_steps(wav, bounds, lost=1, config=config)
    print(f"largest step at {len(at_joins)} joins {max(at_joins):.4f}, inside pieces {inside:.4f}")
    assert max(at_joins) <= inside


@pytest.mark.slow
def test_vc_goldens_replay(parity_dir, fake_ckpt):
    """The VC kit's target (d) and flow (h) files: the plumbing of the target and the flow."""
    from tools.parity import Context, Report, replay_file

    ctx = Context(fake_ckpt)
    report = Report()
    for name in ("d_target_ref.npz", "c_source_tokens.npz"):
        replay_file(PARITY / "vc" / "golden" / name, ctx, report)
    assert report.failed == 0 and report.skipped == 0 and report.passed >= 10, "\n".join(report.lines)


def test_long_source_noise_reads_the_same_numbers_in_any_pieces():
    from models.vc import _BlockNoise

    noise = _BlockNoise(9, seed=5, device=torch.device("cpu"))
    whole = noise[..., 1_000:150_000]
    pieces = torch.cat([noise[..., 1_000:48_000], noise[..., 48_000:100_001], noise[..., 100_001:150_000]], dim=-1)
    assert whole.shape == (1, 9, 149_000) and torch.equal(whole, pieces)
    assert torch.equal(_BlockNoise(9, seed=5, device=torch.device("cpu"))[..., 47_999:48_001], whole[..., 46_999:47_001])
    assert not torch.equal(_BlockNoise(9, seed=6, device=torch.device("cpu"))[..., :10], noise[..., :10])


def test_config_rejects_a_blend_wider_than_the_context():
    with pytest.raises(ValueError, match="blend_frames"):
        VCConfig(context_tokens=5, blend_frames=20)
