"""Conditional flow matching sampler of S3Gen: Euler steps on a cosine schedule, with CFG.

The mel is the end point x(1) of dx/dt = v(x, t), started from Gaussian noise x(0).
Classifier-free guidance packs two rows into each estimator call: the conditional row
and one with mu, spks and cond zeroed (x, mask and t shared); the velocity used is
(1 + w) * v_cond - w * v_uncond.

A meanflow estimator (Chatterbox-Turbo) is distilled to a few steps: linear times, no
guidance, and each step's velocity v(x, t, r) is the mean over [t, r], so
x(r) = x(t) + (r - t) * v(x, t, r) (spec §11.2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .estimator import ConditionalDecoder, EstimatorConfig
from .turns import flow_run, flow_step


@dataclass(frozen=True)
class CFMConfig:
    """Guidance weight of the sampler and the shape of its estimator."""

    inference_cfg_rate: float = 0.7   # w: v = 1.7 v_cond - 0.7 v_uncond
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)


def linear_t_span(n_timesteps: int, device=None, dtype=torch.float32) -> Tensor:
    """n+1 equally spaced times from 0 to 1 (the meanflow schedule)."""
    return torch.linspace(0, 1, n_timesteps + 1, device=device, dtype=dtype)


def cosine_t_span(n_timesteps: int, device=None, dtype=torch.float32) -> Tensor:
    """n+1 times 1 - cos(pi/2 * k/n): small steps near the noise end, large near the data end."""
    t = torch.linspace(0, 1, n_timesteps + 1, device=device, dtype=dtype)
    return 1 - torch.cos(t * 0.5 * math.pi)


class ConditionalCFM(nn.Module):
    """Owns the velocity estimator (`decoder.estimator`) and integrates its ODE.

    Everything is channel-first: x, mu, cond (B, F, T), spks (B, F), mask (B, 1, T).
    The noise is an argument: drawing it is the caller's business (seeded generator
    or injected for golden replay).
    """

    def __init__(self, config: CFMConfig | None = None):
        super().__init__()
        self.config = config or CFMConfig()
        self.estimator = ConditionalDecoder(self.config.estimator)

    @staticmethod
    def cfg_inputs(x: Tensor, t: Tensor, mu: Tensor, spks: Tensor, cond: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """Estimator keyword arguments for [conditional rows; unconditional rows] (2B rows)."""
        def with_zero_rows(c: Tensor) -> Tensor:
            return torch.cat([c, torch.zeros_like(c)])

        return dict(x=torch.cat([x, x]), mask=torch.cat([mask, mask]), mu=with_zero_rows(mu),
                    t=t.reshape(1).expand(2 * x.shape[0]), spks=with_zero_rows(spks), cond=with_zero_rows(cond))

    def forward(self, noise: Tensor, mu: Tensor, spks: Tensor, cond: Tensor, mask: Tensor,
                n_timesteps: int = 10, cfg_rate: float | None = None) -> Tensor:
        """Euler-integrate from `noise` (t=0) to the mel (t=1); returns (B, F, T)."""
        if self.config.estimator.meanflow:
            return self.meanflow_euler(noise, mu, spks, cond, mask, n_timesteps)
        w = self.config.inference_cfg_rate if cfg_rate is None else cfg_rate
        t_span = cosine_t_span(n_timesteps, device=mu.device, dtype=mu.dtype)
        padded = not bool(mask.all())
        x = noise
        with flow_run():  # concurrent requests take turns step by step (turns.py)
            for t, t_next in zip(t_span[:-1], t_span[1:]):
                with flow_step():
                    v_cond, v_uncond = self.estimator(**self.cfg_inputs(x, t, mu, spks, cond, mask),
                                                      padded=padded).chunk(2)
                x = x + (t_next - t) * ((1.0 + w) * v_cond - w * v_uncond)
        return x

    def meanflow_euler(self, noise: Tensor, mu: Tensor, spks: Tensor, cond: Tensor, mask: Tensor,
                       n_timesteps: int = 2) -> Tensor:
        """Meanflow steps x <- x + (r - t) v(x, t, r) over linear times, without guidance -> (B, F, T)."""
        t_span = linear_t_span(n_timesteps, device=mu.device, dtype=mu.dtype)
        padded = not bool(mask.all())
        batch = noise.shape[0]
        x = noise
        with flow_run():
            for t, r in zip(t_span[:-1], t_span[1:]):
                with flow_step():
                    v = self.estimator(x, mask, mu, t.reshape(1).expand(batch), spks, cond, padded=padded,
                                       r=r.reshape(1).expand(batch))
                x = x + (r - t) * v
        return x
