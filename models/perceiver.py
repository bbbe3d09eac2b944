"""Perceiver resampler: squeezes the T3 speech prompt into a fixed number of vectors.

Shapes: B batch, N prompt length (any, <= 150 in practice), Q learned queries (32), C channels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class PerceiverConfig:
    num_queries: int = 32
    channels: int = 1024
    num_heads: int = 4  # 4 heads x 256 channels
    norm_eps: float = 1e-5


class AttentionBlock(nn.Module):
    """Pre-norm multi-head attention of `x` over `context`, with a residual on `x`.

    One LayerNorm normalises both the queries and the context (the same weights), and
    the residual is added on the query side only, so the output has the shape of `x`.
    """

    def __init__(self, config: PerceiverConfig):
        super().__init__()
        c = config.channels
        self.num_heads = config.num_heads
        self.norm = nn.LayerNorm(c, eps=config.norm_eps)
        self.to_q = nn.Linear(c, c)
        self.to_k = nn.Linear(c, c)
        self.to_v = nn.Linear(c, c)
        self.proj_out = nn.Linear(c, c)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        return x.view(b, t, self.num_heads, c // self.num_heads).transpose(1, 2)  # (B, H, T, C/H)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x_norm, ctx_norm = self.norm(x), self.norm(context)
        q = self._split_heads(self.to_q(x_norm))
        k = self._split_heads(self.to_k(ctx_norm))
        v = self._split_heads(self.to_v(ctx_norm))
        h = F.scaled_dot_product_attention(q, k, v)  # no mask: every query sees the whole context
        h = h.transpose(1, 2).reshape(x.shape)
        return x + self.proj_out(h)


class Perceiver(nn.Module):
    """Learned queries that attend over the prompt, then over themselves.

    Owns `pre_attention_query` (1, Q, C) and one `attn` block used twice with the same
    weights: cross-attention of the queries over the prompt embeddings, then
    self-attention of the result. Output is always (B, Q, C), whatever the prompt length.
    """

    def __init__(self, config: PerceiverConfig):
        super().__init__()
        self.pre_attention_query = nn.Parameter(torch.zeros(1, config.num_queries, config.channels))
        self.attn = AttentionBlock(config)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B, N, C) prompt embeddings -> (B, Q, C)."""
        queries = self.pre_attention_query.expand(h.shape[0], -1, -1)
        resampled = self.attn(queries, h)
        return self.attn(resampled, resampled)
