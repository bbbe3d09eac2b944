"""Velocity estimator of the S3Gen flow matching: a causal 1-D U-Net with transformer blocks.

The reference's ConditionalDecoder (Matcha-TTS / CosyVoice), one U-Net level deep: so
there is no actual down/upsampling, only a skip connection around the 12 mid blocks.
Module names follow `flow.decoder.estimator.*` in s3gen.safetensors, including the
positional indices of the original nn.Sequential/ModuleList layouts.
Shape legend: B batch, C channels, T mel frames, F mel bins.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TIME_EMBED_BASE = 10000.0     # sinusoid wavelength base of the time embedding


@dataclass(frozen=True)
class EstimatorConfig:
    """Shape of the ConditionalDecoder (defaults: the released English model)."""

    n_feats: int = 80             # mel bins; the input stacks x, mu, spks, cond (4 x n_feats)
    channels: int = 256
    n_blocks: int = 4             # transformer blocks per U-Net block
    num_mid_blocks: int = 12
    num_heads: int = 8
    attention_head_dim: int = 64  # heads * head_dim = 512 != channels: q/k/v project up
    ff_mult: int = 4
    time_scale: float = 1000.0    # t in [0, 1] is scaled before the sinusoids
    meanflow: bool = False        # Turbo's distilled decoder: conditioned on the step's end time r too

    @property
    def in_channels(self) -> int:
        return 4 * self.n_feats

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.channels


def timestep_embedding(t: Tensor, dim: int, scale: float) -> Tensor:
    """(B,) times -> (B, dim) = [sin(scale*t*f_k), cos(scale*t*f_k)], f_k = base^(-k/(dim/2-1))."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32)
                      * -(math.log(TIME_EMBED_BASE) / (half - 1)))
    angles = scale * t.float()[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1).to(t.dtype)


class TimestepMLP(nn.Module):
    """Sinusoidal time features -> the time embedding every ResNet block adds (`time_mlp`)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class CausalConv1d(nn.Conv1d):
    """Conv1d that pads kernel_size-1 zeros on the left only: frame t sees frames <= t."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (self.kernel_size[0] - 1, 0)))


class ChannelsLast(nn.Module):
    """(B, C, T) <-> (B, T, C), so a LayerNorm can normalise over channels inside a Sequential."""

    def forward(self, x: Tensor) -> Tensor:
        return x.transpose(1, 2)


class CausalBlock1D(nn.Module):
    """Masked causal conv (k3) -> LayerNorm over channels -> Mish."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.block = nn.Sequential(CausalConv1d(dim, dim_out, 3), ChannelsLast(), nn.LayerNorm(dim_out),
                                   ChannelsLast(), nn.Mish())

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.block(x * mask) * mask


class CausalResnetBlock1D(nn.Module):
    """Two causal blocks with the time embedding added in between, plus a 1x1 residual conv."""

    def __init__(self, dim: int, dim_out: int, time_embed_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Mish(), nn.Linear(time_embed_dim, dim_out))
        self.block1 = CausalBlock1D(dim, dim_out)
        self.block2 = CausalBlock1D(dim_out, dim_out)
        self.res_conv = nn.Conv1d(dim, dim_out, 1)

    def forward(self, x: Tensor, mask: Tensor, t_emb: Tensor) -> Tensor:
        h = self.block1(x, mask) + self.mlp(t_emb)[:, :, None]
        return self.block2(h, mask) + self.res_conv(x * mask)


class Attention(nn.Module):
    """Multi-head self-attention (diffusers naming); q/k/v without bias."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])  # index 1 was an inference-free dropout

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:   # (B, T, C)
        b, t, _ = x.shape
        q, k, v = (proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
                   for proj in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.to_out[0](out.transpose(1, 2).reshape(b, t, -1))


class GELUProj(nn.Module):
    """Linear followed by exact (erf) GELU; diffusers' `GELU` module."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x))


class FeedForward(nn.Module):
    """Linear -> exact GELU -> Linear, widening by `mult` (`ff.net`)."""

    def __init__(self, dim: int, mult: int):
        super().__init__()
        # Index 1 is the (inference-free) dropout slot of the checkpoint's layout.
        self.net = nn.Sequential(GELUProj(dim, mult * dim), nn.Identity(), nn.Linear(mult * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """Pre-norm self-attention + GELU feed-forward (no cross-attention: no norm2/attn2)."""

    def __init__(self, config: EstimatorConfig):
        super().__init__()
        dim = config.channels
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, config.num_heads, config.attention_head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, config.ff_mult)

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        x = x + self.attn1(self.norm1(x), attn_mask)
        return x + self.ff(self.norm3(x))


def _stage(config: EstimatorConfig, dim_in: int) -> list[nn.Module]:
    """A U-Net block's ResNet + its transformer stack."""
    transformers = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_blocks))
    return [CausalResnetBlock1D(dim_in, config.channels, config.time_embed_dim), transformers]


class ConditionalDecoder(nn.Module):
    """Predicts the flow velocity v(x, t | mu, spks, cond) for a batch of mel sequences.

    Inputs are channel-first (B, F, T) with a (B, 1, T) 0/1 mask; padded frames are zeroed
    at every stage and excluded as attention keys, and the output is zero there. Causal
    convolutions mean padding at the end never changes earlier frames.
    """

    def __init__(self, config: EstimatorConfig | None = None):
        super().__init__()
        config = config or EstimatorConfig()
        self.config = config
        ch = config.channels
        self.time_mlp = TimestepMLP(config.in_channels, config.time_embed_dim)
        self.down_blocks = nn.ModuleList([nn.ModuleList([*_stage(config, config.in_channels),
                                                         CausalConv1d(ch, ch, 3)])])
        self.mid_blocks = nn.ModuleList(nn.ModuleList(_stage(config, ch)) for _ in range(config.num_mid_blocks))
        self.up_blocks = nn.ModuleList([nn.ModuleList([*_stage(config, 2 * ch), CausalConv1d(ch, ch, 3)])])
        self.final_block = CausalBlock1D(ch, ch)
        self.final_proj = nn.Conv1d(ch, config.n_feats, 1)
        if config.meanflow:
            # Mixes the embeddings of t and r into one (Linear 2E -> E, no bias; arXiv:2510.07979 §3.3).
            self.time_embed_mixer = nn.Linear(2 * config.time_embed_dim, config.time_embed_dim, bias=False)

    def time_embedding(self, t: Tensor, r: Tensor | None = None) -> Tensor:
        """(B,) start times (and, for meanflow, (B,) end times r) -> (B, E) embedding every block adds.

        Meanflow: time_embed_mixer(concat[time_mlp(sinusoid(t)), time_mlp(sinusoid(r))]).
        """
        c = self.config
        t_emb = self.time_mlp(timestep_embedding(t, c.in_channels, c.time_scale))
        if not c.meanflow:
            return t_emb
        if r is None:
            raise ValueError("a meanflow estimator needs the end time r of the step")
        r_emb = self.time_mlp(timestep_embedding(r, c.in_channels, c.time_scale))
        return self.time_embed_mixer(torch.cat([t_emb, r_emb], dim=1))

    @staticmethod
    def _run_stage(resnet: nn.Module, transformers: nn.ModuleList, x: Tensor, mask: Tensor,
                   t_emb: Tensor, attn_mask: Tensor | None) -> Tensor:
        x = resnet(x, mask, t_emb).transpose(1, 2)                  # (B, T, C)
        for block in transformers:
            x = block(x, attn_mask)
        return x.transpose(1, 2)

    def forward(self, x: Tensor, mask: Tensor, mu: Tensor, t: Tensor, spks: Tensor, cond: Tensor,
                padded: bool | None = None, r: Tensor | None = None) -> Tensor:
        """x, mu, cond (B, F, T); mask (B, 1, T); t (B,); spks (B, F) -> velocity (B, F, T).

        `padded`: whether any frame is masked out; None reads the mask (a host sync, which
        the sampler avoids by checking once for all its steps). `r` (B,): the step's end
        time, for a meanflow estimator only.
        """
        t_emb = self.time_embedding(t, r)
        x = torch.cat([x, mu, spks[:, :, None].expand(-1, -1, x.shape[-1]), cond], dim=1)
        if padded is None:
            padded = not bool(mask.all())
        # Without padding every key is valid: attention without a mask is the same sum, and the
        # CPU kernel is faster without one (SDPA alone, 488 frames, 2 cores: 8.6 vs 11.4 ms).
        attn_mask = mask.bool()[:, None] if padded else None        # (B, 1, 1, T): key padding

        skips = []
        for resnet, transformers, conv in self.down_blocks:
            x = self._run_stage(resnet, transformers, x, mask, t_emb, attn_mask)
            skips.append(x)
            x = conv(x * mask)
        for resnet, transformers in self.mid_blocks:
            x = self._run_stage(resnet, transformers, x, mask, t_emb, attn_mask)
        for resnet, transformers, conv in self.up_blocks:
            x = torch.cat([x, skips.pop()], dim=1)
            x = self._run_stage(resnet, transformers, x, mask, t_emb, attn_mask)
            x = conv(x * mask)
        x = self.final_block(x, mask)
        return self.final_proj(x * mask) * mask
