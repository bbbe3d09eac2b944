"""S3Gen flow: encoder pieces, estimator masking, CFM solver logic (tiny configs), and
parity of the full-size flow against the h_* goldens on the fake checkpoint."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from models.s3gen.cfm import CFMConfig, ConditionalCFM, cosine_t_span
from models.s3gen.conformer import EncoderConfig, RelPositionAttention, rel_shift, relative_position_table
from models.s3gen.estimator import ConditionalDecoder, EstimatorConfig
from models.s3gen.flow import Flow, FlowConfig

TINY_ESTIMATOR = EstimatorConfig(n_feats=8, channels=16, n_blocks=1, num_mid_blocks=2, num_heads=2,
                                 attention_head_dim=8)
TINY_FLOW = FlowConfig(vocab_size=50, spk_embed_dim=12,
                       encoder=EncoderConfig(d_model=16, n_heads=2, ffn_dim=32, n_blocks=1, n_up_blocks=1),
                       cfm=CFMConfig(estimator=TINY_ESTIMATOR))


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


def tiny_flow(seed: int = 0) -> Flow:
    torch.manual_seed(seed)
    flow = Flow(TINY_FLOW).eval()
    for name, p in flow.named_parameters():  # the relative-position biases start at zero
        if "pos_bias" in name:
            nn.init.normal_(p)
    return flow


def reference_inputs(n_tokens: int = 50, n_prompt: int = 6, prompt_frames: int = 12):
    g = torch.Generator().manual_seed(1)
    return dict(speech_tokens=torch.randint(0, 50, (n_tokens,), generator=g),
                prompt_token=torch.randint(0, 50, (n_prompt,), generator=g),
                prompt_feat=torch.randn(prompt_frames, 8, generator=g),
                embedding=torch.randn(12, generator=g))


def test_state_dict_matches_manifest(parity_dir):
    manifest = json.loads((parity_dir / "manifest" / "s3gen.json").read_text())
    expected = {t["key"][len("flow."):]: tuple(t["shape"]) for t in manifest["tensors"] if t["key"].startswith("flow.")}
    with torch.device("meta"):
        flow = Flow()
    assert {k: tuple(v.shape) for k, v in flow.state_dict().items()} == expected


def test_relative_position_table():
    t, d = 7, 16
    table = relative_position_table(t, d)
    assert table.shape == (2 * t - 1, d)
    rel = torch.arange(t - 1, -t, -1, dtype=torch.float64)[:, None]          # row k -> position T-1-k
    freqs = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    torch.testing.assert_close(table[:, 0::2].double(), torch.sin(rel * freqs), atol=1e-6, rtol=0)
    torch.testing.assert_close(table[:, 1::2].double(), torch.cos(rel * freqs), atol=1e-6, rtol=0)
    assert torch.equal(table[t - 1, 1::2], torch.ones(d // 2))               # position 0 in the centre


def test_rel_shift_picks_relative_position():
    t = 5
    scores = torch.randn(2, 3, t, 2 * t - 1)
    shifted = rel_shift(scores)
    naive = torch.stack([torch.stack([scores[:, :, i, t - 1 - i + j] for j in range(t)], -1) for i in range(t)], -2)
    assert torch.equal(shifted, naive)


def test_rel_position_attention_matches_naive_oracle():
    torch.manual_seed(0)
    b, t, d, h = 2, 6, 16, 2
    attn = RelPositionAttention(d, h)
    nn.init.normal_(attn.pos_bias_u)
    nn.init.normal_(attn.pos_bias_v)
    x, table = torch.randn(b, t, d), relative_position_table(t, d)
    k_dim = d // h
    q = attn.linear_q(x).view(b, t, h, k_dim)
    k = attn.linear_k(x).view(b, t, h, k_dim)
    v = attn.linear_v(x).view(b, t, h, k_dim)
    p = attn.linear_pos(table).view(2 * t - 1, h, k_dim)
    scores = torch.empty(b, h, t, t)
    for i in range(t):
        for j in range(t):
            p_rel = p[t - 1 - (i - j)]                                        # P(i - j)
            scores[:, :, i, j] = (((q[:, i] + attn.pos_bias_u) * k[:, j]).sum(-1)
                                  + ((q[:, i] + attn.pos_bias_v) * p_rel).sum(-1)) / math.sqrt(k_dim)
    out = torch.einsum("bhij,bjhk->bihk", scores.softmax(-1), v).reshape(b, t, d)
    torch.testing.assert_close(attn(x, table), attn.linear_out(out), atol=1e-5, rtol=1e-5)


def test_cosine_t_span():
    t_span = cosine_t_span(10)
    expected = 1 - torch.cos(torch.arange(11, dtype=torch.float64) / 10 * math.pi / 2)
    torch.testing.assert_close(t_span.double(), expected, atol=1e-6, rtol=0)
    assert t_span[0] == 0 and t_span[-1] == 1 and bool((t_span.diff() > 0).all())
    assert t_span.diff()[0] < t_span.diff()[-1]                            # fine steps near the noise


def test_cfg_inputs_zero_the_conditioning_of_row_one():
    x, mu, cond = torch.randn(1, 8, 9), torch.randn(1, 8, 9), torch.randn(1, 8, 9)
    spks, mask = torch.randn(1, 8), torch.ones(1, 1, 9)
    packed = ConditionalCFM.cfg_inputs(x, torch.tensor(0.25), mu, spks, cond, mask)
    assert torch.equal(packed["x"], torch.cat([x, x])) and torch.equal(packed["mask"], torch.cat([mask, mask]))
    assert packed["t"].tolist() == [0.25, 0.25]
    for name, value in (("mu", mu), ("spks", spks), ("cond", cond)):
        assert torch.equal(packed[name][0], value[0]) and not packed[name][1].any()


class ConstantPlusMu(nn.Module):
    """Mock estimator: v = mu + c, recording the times it is asked about (and `padded`)."""

    def __init__(self, c: float):
        super().__init__()
        self.c, self.times, self.padded = c, [], []

    def forward(self, x, mask, mu, t, spks, cond, padded=None):
        self.times.append(t.clone())
        self.padded.append(padded)
        return mu + self.c


def test_euler_cfg_solver_with_mock_estimator():
    cfm = ConditionalCFM(CFMConfig(estimator=TINY_ESTIMATOR))
    cfm.estimator = ConstantPlusMu(c=0.5)
    noise, mu = torch.randn(1, 8, 9), torch.randn(1, 8, 9)
    x1 = cfm(noise, mu, torch.randn(1, 8), torch.randn(1, 8, 9), torch.ones(1, 1, 9), n_timesteps=4)
    # v = 1.7 (mu + c) - 0.7 c = 1.7 mu + c, constant in t; the steps sum to 1.
    torch.testing.assert_close(x1, noise + 1.7 * mu + 0.5, atol=1e-5, rtol=0)
    assert torch.stack([t[0] for t in cfm.estimator.times]).tolist() == cosine_t_span(4)[:-1].tolist()
    # The sampler reads the mask once and tells every step whether there is padding.
    mask = torch.ones(1, 1, 9)
    mask[..., 7:] = 0
    cfm(noise, mu, torch.randn(1, 8), torch.randn(1, 8, 9), mask, n_timesteps=4)
    assert cfm.estimator.padded == [False] * 4 + [True] * 4


def test_estimator_padding_does_not_change_valid_frames():
    torch.manual_seed(0)
    est = ConditionalDecoder(TINY_ESTIMATOR).eval()
    n, pad = 10, 4
    x, mu, cond = (torch.randn(1, 8, n + pad) for _ in range(3))
    spks, t = torch.randn(1, 8), torch.tensor([0.3])
    mask = torch.ones(1, 1, n + pad)
    mask[..., n:] = 0
    padded = est(x, mask, mu, t, spks, cond)
    alone = est(x[..., :n], torch.ones(1, 1, n), mu[..., :n], t, spks, cond[..., :n])
    torch.testing.assert_close(padded[..., :n], alone, atol=1e-5, rtol=1e-5)
    assert not padded[..., n:].any()
    # ... while the padded frames' content would leak in without the mask (the check is not vacuous).
    unmasked = est(x, torch.ones(1, 1, n + pad), mu, t, spks, cond)
    assert not torch.allclose(unmasked[..., :n], alone, atol=1e-4)
    # Told there is padding, it masks; told there is none, it skips the mask (same sum, faster);
    # not told, it reads the mask.
    ones = torch.ones(1, 1, n + pad)
    torch.testing.assert_close(est(x, ones, mu, t, spks, cond, padded=True), unmasked, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(est(x, mask, mu, t, spks, cond, padded=None), padded, atol=0, rtol=0)
    assert not torch.allclose(est(x, mask, mu, t, spks, cond, padded=False)[..., :n], alone, atol=1e-4)


@pytest.mark.parametrize("prompt_frames, expected", [(12, 100), (13, 99)])
def test_mel_length_rule(prompt_frames, expected):
    flow = tiny_flow()
    inputs = reference_inputs(prompt_frames=prompt_frames)
    mel = flow.inference(**inputs, generator=torch.Generator().manual_seed(0), n_timesteps=2)
    assert mel.shape == (8, expected)                                      # 2 (6 + 50) - Tm
    assert flow.prepare(**inputs).encoder_out.shape == (1, 2 * 56, 16)


def test_prompt_mel_longer_than_encoder_output_is_rejected():
    with pytest.raises(ValueError, match="prompt mel"):
        tiny_flow().inference(**reference_inputs(n_tokens=2, prompt_frames=40), n_timesteps=1)


def test_same_seed_same_mel_and_noise_injection_matches_generator():
    flow, inputs = tiny_flow(), reference_inputs(n_tokens=20)
    run = lambda seed: flow.inference(**inputs, generator=torch.Generator().manual_seed(seed), n_timesteps=3)
    first, again, other = run(7), run(7), run(8)
    assert torch.equal(first, again) and not torch.allclose(first, other)
    noise = torch.randn(8, 2 * 26, generator=torch.Generator().manual_seed(7))
    assert torch.equal(flow.inference(**inputs, noise=noise, n_timesteps=3), first)


@pytest.mark.slow
def test_flow_parity_on_goldens(fake_ckpt, parity_dir):
    from conftest import replay_goldens
    from tools.parity import Context

    replay_goldens(parity_dir, "h", Context(fake_ckpt))
