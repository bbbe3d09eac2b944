"""Opt-in speed modes: each changes a loaded pipeline in place, trading exactness or generality for speed.

The default path is the reference's arithmetic (float32 T3, 10 flow steps). A mode is
applied once after loading, with the device and dtype chosen there:

    tts = ChatterboxTTS.from_local(ckpt, device)
    apply_mode(tts, "int8")

`apply_mode` takes a `ChatterboxTTS` or the one part a mode changes (a `T3`, or an
`S3Gen` for `fewer_flow_steps`). A mode that does not fit the device or an earlier mode
raises `ModeError` before changing anything. T3 modes apply to the T3 loaded now: a
pipeline that loads another T3 (model switch) must apply them again.

On 2 shared CPU cores (fake checkpoint, OMP_WAIT_POLICY=PASSIVE) int8 decodes ~2.6x
faster than the default and bf16 no faster; neither keeps the greedy tokens of the
default (their logit errors exceed the fake model's top-2 gaps).
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .s3gen.s3gen import S3Gen
from .t3 import T3

FEWER_FLOW_STEPS = 5  # Euler steps of the S3Gen flow matching (the reference takes 10)


class ModeError(ValueError):
    """A fast mode that is unknown or cannot run on this model/device."""


@dataclass(frozen=True)
class FastMode:
    """One opt-in mode: `apply(target)` changes a pipeline, T3 or S3Gen in place."""

    name: str
    about: str
    apply: Callable[[object], None]


def _part(target, cls: type, attr: str):
    if isinstance(target, cls):
        return target
    part = getattr(target, attr, None)
    if isinstance(part, cls):
        return part
    raise ModeError(f"this mode changes a {cls.__name__}; got {type(target).__name__}")


def _float_t3(target) -> T3:
    """The target's T3, refusing one whose linear layers are already quantized."""
    t3 = _part(target, T3, "t3")
    if not all(isinstance(m, nn.Linear) for m in (t3.speech_head, t3.tfmr.layers[0].mlp.down_proj)):
        raise ModeError("T3 is already quantized; load it again to change its dtype")
    return t3


def int8(target) -> None:
    """Dynamic int8 quantization of the backbone's linear layers (int8 weights, activations per call).

    CPU only (fbgemm/x86 kernels). The conditioning encoder, embeddings and speech head stay
    float32: they run once per generation or are small (the head is 2% of the weights read
    per step), and a float32 head agrees slightly better with the default. Most of the
    error comes from the activations (7-bit on x86), not from the int8 weights.
    """
    t3 = _float_t3(target)
    if t3.device.type != "cpu":
        raise ModeError(f"int8 runs on CPU only; T3 is on {t3.device} (use bf16 or fp16 on a GPU)")
    if t3.dtype != torch.float32:
        raise ModeError(f"int8 quantizes float32 weights; T3 is {t3.dtype}")
    with warnings.catch_warnings():
        # torch 2.9 deprecates torch.ao.quantization (in favour of torchao, not a dependency here).
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated")
        torch.ao.quantization.quantize_dynamic(t3.tfmr.layers, {nn.Linear}, dtype=torch.qint8, inplace=True)


def bf16(target) -> None:
    """All of T3 in bfloat16 (meant for GPUs; runs on CPU, where AVX2 has no bf16 math: no faster)."""
    _float_t3(target).to(torch.bfloat16)


def fp16(target) -> None:
    """All of T3 in float16, on CUDA only."""
    t3 = _float_t3(target)
    if t3.device.type != "cuda":
        raise ModeError(f"fp16 needs a CUDA GPU; T3 is on {t3.device}: CPUs have no fast float16 kernels "
                        "(use int8 or bf16 there)")
    t3.to(torch.float16)


def fewer_flow_steps(target) -> None:
    """S3Gen decodes with FEWER_FLOW_STEPS Euler steps instead of 10 (every caller of `inference`)."""
    s3gen = _part(target, S3Gen, "s3gen")
    s3gen.inference = functools.partial(type(s3gen).inference, s3gen, n_timesteps=FEWER_FLOW_STEPS)


def compile_(target, backend: str = "inductor") -> None:
    """torch.compile of the T3 step (`forward_cached`) and, for a pipeline, the flow estimator.

    CUDA only: on CPU, inductor needs minutes of compilation on 2 cores, and the decoding
    step is bound by reading the weights, which compilation does not change. `backend`
    other than inductor is for tests.
    """
    t3 = target if isinstance(target, T3) else getattr(target, "t3", None)
    s3gen = target if isinstance(target, S3Gen) else getattr(target, "s3gen", None)
    parts = [part for part in (t3, s3gen) if part is not None]
    if not parts:
        raise ModeError(f"compile changes a pipeline, T3 or S3Gen; got {type(target).__name__}")
    devices = {part.device.type for part in parts}
    if backend == "inductor" and devices != {"cuda"}:
        raise ModeError(f"compile targets CUDA GPUs; the model is on {', '.join(sorted(devices))} (on CPU use int8)")
    if t3 is not None:
        # Only the decoding steps: hundreds of calls of one shape (the cache length is
        # symbolic). The prefill runs once per text, with a new length each time.
        eager = t3.forward_cached
        step = torch.compile(eager, dynamic=True, backend=backend)
        t3.forward_cached = lambda x, cache: step(x, cache) if x.shape[1] == 1 else eager(x, cache)
    if s3gen is not None:
        estimator = s3gen.flow.decoder.estimator
        estimator.forward = torch.compile(estimator.forward, dynamic=True, backend=backend)


FAST_MODES: dict[str, FastMode] = {
    mode.name: mode
    for mode in (
        FastMode("int8", "T3 backbone linear layers in dynamic int8 (CPU)", int8),
        FastMode("bf16", "T3 in bfloat16 (GPU; runs on CPU)", bf16),
        FastMode("fp16", "T3 in float16 (CUDA only)", fp16),
        FastMode("fewer_flow_steps", f"S3Gen flow matching with {FEWER_FLOW_STEPS} Euler steps instead of 10",
                 fewer_flow_steps),
        FastMode("compile", "torch.compile of the T3 step and the flow estimator (CUDA only)", compile_),
    )
}


def apply_mode(target, name: str):
    """Apply the fast mode `name` to `target` (pipeline, T3 or S3Gen) in place and return it."""
    mode = FAST_MODES.get(name)
    if mode is None:
        raise ModeError(f"unknown fast mode {name!r}; known: {', '.join(FAST_MODES)}")
    mode.apply(target)
    return target
