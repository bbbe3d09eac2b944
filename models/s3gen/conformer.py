"""Upsampling conformer encoder of the S3Gen flow: token embeddings (25 Hz) -> features (50 Hz).

ESPnet/WeNet-style conformer layers (pre-norm, relative-position self-attention, SiLU
feed-forward; no macaron branch, no convolution module), a right-context "lookahead"
convolution, then a x2 nearest-neighbour upsampler and a second conformer stack.
Shape legend: B batch, T time, D model width, H heads, K head width (D = H*K).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CONFORMER_LN_EPS = 1e-12      # ESPnet's conformer-layer LayerNorms; embed/after_norm use torch's 1e-5
LOOKAHEAD_SLOPE = 0.01        # LeakyReLU slope inside the pre-lookahead layer
POS_ENC_BASE = 10000.0        # sinusoid wavelength base of the relative position table


@dataclass(frozen=True)
class EncoderConfig:
    """Shape of the upsampling conformer (defaults: the released English model)."""

    d_model: int = 512
    n_heads: int = 8
    ffn_dim: int = 2048
    n_blocks: int = 6          # conformer layers at the token rate
    n_up_blocks: int = 4       # conformer layers after upsampling
    lookahead: int = 3         # tokens of right context seen by the pre-lookahead conv
    upsample: int = 2          # mel frames per speech token


def relative_position_table(length: int, d_model: int, device=None, dtype=torch.float32) -> Tensor:
    """Sinusoids for relative positions T-1, T-2, ..., -(T-1): shape (2T-1, D).

    Row k encodes position r = T-1-k; even channels sin(r*w_i), odd channels cos(r*w_i),
    w_i = base^(-2i/D) (ESPnet's RelPositionalEncoding, computed in float32).
    """
    r = torch.arange(length - 1, -length, -1, device=device, dtype=torch.float32)
    inv_freq = torch.exp(torch.arange(0, d_model, 2, device=device, dtype=torch.float32)
                         * -(math.log(POS_ENC_BASE) / d_model))
    angles = r[:, None] * inv_freq[None, :]
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1).to(dtype)


def rel_shift(scores: Tensor) -> Tensor:
    """(..., T, 2T-1) scores against the table of `relative_position_table` -> (..., T, T).

    out[..., i, j] = scores[..., i, T-1-i+j], i.e. the score for relative position i-j.
    This is Transformer-XL's pad-and-reshape trick written as a strided view (no copy):
    element (i, j) sits at flat offset i*(2T-1) + T-1-i+j = i*(2T-2) + (T-1) + j.
    """
    scores = scores.contiguous()
    *lead, t, width = scores.shape
    assert width == 2 * t - 1, "scores must span relative positions T-1 .. -(T-1)"
    lead_strides = scores.stride()[:-2]
    return scores.as_strided((*lead, t, t), (*lead_strides, width - 1, 1),
                             scores.storage_offset() + t - 1)


class LinearEmbed(nn.Module):
    """Linear + LayerNorm, then the sqrt(D) scale and the relative position table (`embed`, `up_embed`)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.out = nn.Sequential(nn.Linear(d_model, d_model), nn.LayerNorm(d_model))
        self.d_model = d_model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.out(x) * math.sqrt(self.d_model)
        pos = relative_position_table(x.shape[1], self.d_model, device=x.device, dtype=x.dtype)
        return x, pos


class RelPositionAttention(nn.Module):
    """Self-attention with Transformer-XL relative positions (learned biases u, v).

    score(i, j) = [(q_i + u) . k_j + (q_i + v) . P(i-j)] / sqrt(K), P = linear_pos(table).
    The positional term enters SDPA as an additive mask. Full (unmasked) attention: the
    flow encodes one unpadded sequence at a time.
    """

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.linear_q = nn.Linear(d_model, d_model)
        self.linear_k = nn.Linear(d_model, d_model)
        self.linear_v = nn.Linear(d_model, d_model)
        self.linear_out = nn.Linear(d_model, d_model)
        self.linear_pos = nn.Linear(d_model, d_model, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(n_heads, self.head_dim))
        self.pos_bias_v = nn.Parameter(torch.zeros(n_heads, self.head_dim))

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        b, t, d = x.shape
        h, k = self.n_heads, self.head_dim
        q = self.linear_q(x).view(b, t, h, k)                       # (B, T, H, K)
        key = self.linear_k(x).view(b, t, h, k).transpose(1, 2)     # (B, H, T, K)
        value = self.linear_v(x).view(b, t, h, k).transpose(1, 2)
        p = self.linear_pos(pos).view(-1, h, k).transpose(0, 1)     # (H, 2T-1, K)
        q_u = (q + self.pos_bias_u).transpose(1, 2)
        q_v = (q + self.pos_bias_v).transpose(1, 2)
        pos_scores = rel_shift(q_v @ p.transpose(-2, -1))           # (B, H, T, T)
        out = F.scaled_dot_product_attention(q_u, key, value, attn_mask=pos_scores / math.sqrt(k))
        return self.linear_out(out.transpose(1, 2).reshape(b, t, d))


class FeedForward(nn.Module):
    """Linear -> SiLU -> Linear (`feed_forward.w_1`, `w_2`)."""

    def __init__(self, d_model: int, ffn_dim: int):
        super().__init__()
        self.w_1 = nn.Linear(d_model, ffn_dim)
        self.w_2 = nn.Linear(ffn_dim, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_2(F.silu(self.w_1(x)))


class ConformerLayer(nn.Module):
    """Pre-norm block: x += attn(LN(x)); x += ffn(LN(x))."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.self_attn = RelPositionAttention(config.d_model, config.n_heads)
        self.feed_forward = FeedForward(config.d_model, config.ffn_dim)
        self.norm_mha = nn.LayerNorm(config.d_model, eps=CONFORMER_LN_EPS)
        self.norm_ff = nn.LayerNorm(config.d_model, eps=CONFORMER_LN_EPS)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        x = x + self.self_attn(self.norm_mha(x), pos)
        return x + self.feed_forward(self.norm_ff(x))


class PreLookahead(nn.Module):
    """Residual conv pair that lets each token see `lookahead` future tokens."""

    def __init__(self, d_model: int, lookahead: int):
        super().__init__()
        self.lookahead = lookahead
        self.conv1 = nn.Conv1d(d_model, d_model, kernel_size=lookahead + 1)
        self.conv2 = nn.Conv1d(d_model, d_model, kernel_size=3)

    def forward(self, x: Tensor) -> Tensor:                          # (B, T, D)
        y = F.pad(x.transpose(1, 2), (0, self.lookahead))
        y = F.leaky_relu(self.conv1(y), LOOKAHEAD_SLOPE)
        y = self.conv2(F.pad(y, (self.conv2.kernel_size[0] - 1, 0)))  # causal
        return x + y.transpose(1, 2)


class Upsample(nn.Module):
    """Nearest-neighbour x`factor` in time, then a causal conv (left pad 2*factor)."""

    def __init__(self, d_model: int, factor: int):
        super().__init__()
        self.factor = factor
        self.conv = nn.Conv1d(d_model, d_model, kernel_size=2 * factor + 1)

    def forward(self, x: Tensor) -> Tensor:                          # (B, D, T) -> (B, D, factor*T)
        x = F.interpolate(x, scale_factor=self.factor, mode="nearest")
        return self.conv(F.pad(x, (2 * self.factor, 0)))


class UpsampleConformerEncoder(nn.Module):
    """Token-rate conformer, x2 upsampler, frame-rate conformer (`flow.encoder.*`).

    Input (B, T, D) token embeddings, output (B, upsample*T, D). Offline only: every
    frame is returned (the reference's finalize=True), nothing is trimmed for streaming.
    """

    def __init__(self, config: EncoderConfig | None = None):
        super().__init__()
        config = config or EncoderConfig()
        self.embed = LinearEmbed(config.d_model)
        self.pre_lookahead_layer = PreLookahead(config.d_model, config.lookahead)
        self.encoders = nn.ModuleList(ConformerLayer(config) for _ in range(config.n_blocks))
        self.up_layer = Upsample(config.d_model, config.upsample)
        self.up_embed = LinearEmbed(config.d_model)
        self.up_encoders = nn.ModuleList(ConformerLayer(config) for _ in range(config.n_up_blocks))
        self.after_norm = nn.LayerNorm(config.d_model)

    def forward(self, x: Tensor) -> Tensor:
        x, pos = self.embed(x)
        x = self.pre_lookahead_layer(x)
        for layer in self.encoders:
            x = layer(x, pos)
        x = self.up_layer(x.transpose(1, 2)).transpose(1, 2)
        x, pos = self.up_embed(x)
        for layer in self.up_encoders:
            x = layer(x, pos)
        return self.after_norm(x)
