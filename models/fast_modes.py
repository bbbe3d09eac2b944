"""Speed options of a build: `LoadOptions`, applied once when a model's components are built.

The default is the reference's arithmetic (float32 T3, each model's own flow steps). A
speed mode trades exactness or generality for speed; it is chosen at load and never
applied to a live model:

    tts = ChatterboxTTS.from_local(ckpt, device, options=LoadOptions.from_modes("int8"))

`LoadOptions.check` refuses, before anything is built, an option that does not fit the
device (`ModeError`). T3 options are applied by `build_t3` to a freshly loaded T3; the
flow's steps are an S3Gen constructor argument that block streaming and whole decoding
both read; `compile` also compiles the flow estimator (`build_s3gen`). Measured figures
are in bench/README.md.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields, replace
from typing import Callable, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .packed_linear import unpack_linears
from .s3gen.s3gen import S3Gen
from .t3 import T3, KVCache

FEWER_FLOW_STEPS = 5  # Euler steps of the S3Gen flow matching in `fewer_flow_steps` (the reference takes 10)
T3_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
T3_OPTIONS = ("t3_dtype", "quantize", "compile", "cuda_graph")  # the LoadOptions fields that change T3


class ModeError(ValueError):
    """A speed mode that is unknown or cannot run on this device or with the other options."""


@dataclass(frozen=True)
class LoadOptions:
    """How a model is built. The defaults keep the reference's arithmetic."""

    t3_dtype: str = "float32"      # "float32" | "bfloat16" | "float16" (CUDA only)
    quantize: str | None = None    # "int8": T3's decoding linear layers in int8 (CPU, float32 T3)
    flow_steps: int | None = None  # S3Gen Euler steps; None: each model's own (models/registry.py)
    compile: bool = False          # torch.compile of the T3 step and the flow estimator (CUDA)
    cuda_graph: bool = False       # T3 decoding steps replayed as one CUDA graph (CUDA)

    def __post_init__(self):
        if self.t3_dtype not in T3_DTYPES:
            raise ModeError(f"t3_dtype must be one of {', '.join(T3_DTYPES)}, got {self.t3_dtype!r}")
        if self.quantize not in (None, "int8"):
            raise ModeError(f"quantize must be None or 'int8', got {self.quantize!r}")
        if self.quantize and self.t3_dtype != "float32":
            raise ModeError(f"int8 quantizes float32 weights; t3_dtype is {self.t3_dtype}")
        if self.flow_steps is not None and self.flow_steps < 1:
            raise ModeError(f"flow_steps must be >= 1, got {self.flow_steps}")

    @property
    def plain_t3(self) -> bool:
        """No T3 option: T3 stays as loaded (float32, packed for oneDNN on CPU)."""
        return (self.t3_dtype, self.quantize, self.compile, self.cuda_graph) == ("float32", None, False, False)

    @classmethod
    def from_modes(cls, modes: str | None) -> "LoadOptions":
        """Options of named modes joined by "+" ("fp16+cuda_graph"); None or "" is the default."""
        options = cls()
        for name in (modes.split("+") if modes else []):
            if name not in FAST_MODES:
                raise ModeError(f"unknown fast mode {name!r}; known: {', '.join(FAST_MODES)}")
            options = replace(options, **FAST_MODES[name].options)
        return options

    def check(self, device: torch.device | str) -> None:
        """ModeError when an option cannot run on `device`."""
        kind = torch.device(device).type
        if self.quantize == "int8":
            if kind != "cpu":
                raise ModeError(f"int8 runs on CPU only; the model is on {kind} (use bf16 or fp16 on a GPU)")
            if torch.backends.quantized.engine not in ("x86", "fbgemm"):
                raise ModeError(f"int8 needs the fbgemm kernels; torch.backends.quantized.engine is "
                                f"{torch.backends.quantized.engine!r} (set it to 'x86')")
        gpu_only = [name for name, on in (("fp16", self.t3_dtype == "float16"), ("compile", self.compile),
                                          ("cuda_graph", self.cuda_graph)) if on]
        if gpu_only and kind != "cuda":
            raise ModeError(f"{', '.join(gpu_only)} needs a CUDA GPU; the model is on {kind} "
                            "(CPUs have no fast float16 kernels; on CPU use int8 or bf16)")

    def changed(self) -> str:
        """The options that differ from the default ("quantize=int8, flow_steps=5"; "" for none):
        what a recipe records, since they change the samples."""
        return ", ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                         if getattr(self, f.name) != f.default)


@dataclass(frozen=True)
class FastMode:
    """One named speed mode: the LoadOptions fields it sets."""

    name: str
    about: str
    options: dict


# --- int8 -------------------------------------------------------------------------------

INT8_WEIGHT_MAX = 127    # symmetric int8 weight codes, one scale per output channel
# fbgemm's AVX2 kernels add pairs of uint8 x int8 products in saturating int16, so with
# weights up to 127 the activation codes must stay below 128: 7 bits, zero point 64.
ACTIVATION_ZERO = 64
ACTIVATION_MAX = 63      # codes each side of zero for the largest |activation| of a call
RESIDUAL_GAIN = 64       # the rounding residual (within half a code) is scaled to +-32 codes
# float32 spacing is 1 in [2^23, 2^24): adding 1.5 * 2^23 rounds any |x| < 2^22 to an integer.
_ROUNDING_SHIFT = torch.tensor(1.5 * 2**23)
_ZERO = torch.tensor(0.0)


def _int8_rows(rows: torch.Tensor, packed: torch.classes.quantized.LinearPackedParamsBase,
               shift: torch.Tensor, zero: torch.Tensor, levels: int = ACTIVATION_MAX,
               zero_point: int = ACTIVATION_ZERO, gain: int = RESIDUAL_GAIN) -> torch.Tensor:
    """(n, in) float32 rows x fbgemm-packed int8 weight -> (n, out) float32, in two passes.

    Rows 0..n-1 of the product hold the activations in 7-bit codes (one scale for the
    call), rows n.. RESIDUAL_GAIN x what rounding lost; the weights are read once. Python
    numbers go in `alpha` (as operands they would become tensors, 4 more kernel calls).
    `shift` is _ROUNDING_SHIFT and `zero` _ZERO, and the defaults are the constants above
    (TorchScript reads no globals).
    """
    n = rows.shape[0]
    peak = float(rows.abs().amax()) if n > 0 else 0.0
    step = peak / levels if math.isfinite(peak) and peak > 0 else 1.0
    stacked = torch.empty(2 * n, rows.shape[1])
    codes, residual = stacked[:n], stacked[n:]
    torch.add(zero, rows, alpha=gain / step, out=residual)
    # Round to nearest (even) by adding and removing the shift: cheaper than round() on CPU.
    torch.add(shift, residual, alpha=1.0 / gain, out=codes).sub_(shift)
    residual.sub_(codes, alpha=gain)
    out = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(stacked, 1.0, zero_point, packed)
    return torch.add(zero, out[:n], alpha=step).add_(out[n:], alpha=step / gain)


def _int8_layers(x: torch.Tensor, qkv: List[torch.classes.quantized.LinearPackedParamsBase],
                 o: List[torch.classes.quantized.LinearPackedParamsBase],
                 gate_up: List[torch.classes.quantized.LinearPackedParamsBase],
                 down: List[torch.classes.quantized.LinearPackedParamsBase],
                 input_norms: List[torch.Tensor], post_norms: List[torch.Tensor],
                 keys: torch.Tensor, values: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 start: int, heads: int, eps: float, scaling: float,
                 shift: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """The backbone's layers over (B, T, C) at positions start.., as `T3.forward_cached`
    runs them, with q/k/v and gate/up fused and RoPE on q and k together."""
    batch, length, channels = x.shape[0], x.shape[1], x.shape[2]
    head_dim = channels // heads
    half = head_dim // 2
    end = start + length
    for i in range(len(qkv)):
        h = F.rms_norm(x, [channels], input_norms[i], eps).reshape(batch * length, channels)
        qkv_i = _int8_rows(h, qkv[i], shift, zero).view(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        qk = qkv_i[:2]  # (2, B, heads, T, head_dim)
        qk = qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin  # rotate_half
        keys[i, :, :, start:end] = qk[1]
        values[i, :, :, start:end] = qkv_i[2]
        a = F.scaled_dot_product_attention(qk[0], keys[i, :, :, :end], values[i, :, :, :end],
                                           is_causal=length > 1, scale=scaling)
        a = a.transpose(1, 2).reshape(batch * length, channels)
        x = x + _int8_rows(a, o[i], shift, zero).view(batch, length, channels)
        h = F.rms_norm(x, [channels], post_norms[i], eps).reshape(batch * length, channels)
        gate, up = _int8_rows(h, gate_up[i], shift, zero).chunk(2, -1)
        x = x + _int8_rows(F.silu(gate) * up, down[i], shift, zero).view(batch, length, channels)
    return x


def _int8_gpt2_layers(x: torch.Tensor, c_attn: List[torch.classes.quantized.LinearPackedParamsBase],
                      attn_proj: List[torch.classes.quantized.LinearPackedParamsBase],
                      c_fc: List[torch.classes.quantized.LinearPackedParamsBase],
                      mlp_proj: List[torch.classes.quantized.LinearPackedParamsBase],
                      biases: List[List[torch.Tensor]], norms: List[List[torch.Tensor]],
                      keys: torch.Tensor, values: torch.Tensor, start: int, heads: int, eps: float,
                      shift: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """T3-Turbo's GPT-2 blocks over (B, T, C) at positions start.., as `T3Turbo.forward_cached`
    runs them: x += c_proj(attn(c_attn(ln_1(x)))); x += c_proj(gelu_tanh(c_fc(ln_2(x)))).
    `biases[i]`: the block's c_attn, attn.c_proj, c_fc, mlp.c_proj biases; `norms[i]`: ln_1
    weight and bias, ln_2 weight and bias."""
    batch, length, channels = x.shape[0], x.shape[1], x.shape[2]
    head_dim = channels // heads
    end = start + length
    for i in range(len(c_attn)):
        b, n = biases[i], norms[i]
        h = F.layer_norm(x, [channels], n[0], n[1], eps).reshape(batch * length, channels)
        qkv = (_int8_rows(h, c_attn[i], shift, zero) + b[0]).view(batch, length, 3, heads, head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, heads, T, head_dim)
        keys[i, :, :, start:end] = qkv[1]
        values[i, :, :, start:end] = qkv[2]
        a = F.scaled_dot_product_attention(qkv[0], keys[i, :, :, :end], values[i, :, :, :end],
                                           is_causal=length > 1)
        a = a.transpose(1, 2).reshape(batch * length, channels)
        x = x + (_int8_rows(a, attn_proj[i], shift, zero) + b[1]).view(batch, length, channels)
        h = F.layer_norm(x, [channels], n[2], n[3], eps).reshape(batch * length, channels)
        h = F.gelu(_int8_rows(h, c_fc[i], shift, zero) + b[2], approximate="tanh")
        x = x + (_int8_rows(h, mlp_proj[i], shift, zero) + b[3]).view(batch, length, channels)
    return x


@functools.cache
def _compiled() -> tuple[Callable, Callable, Callable]:
    """`_int8_rows`, `_int8_layers` and `_int8_gpt2_layers` in TorchScript, compiled on first
    use: at 2 rows the decoding step is ~8000 small kernel calls, which TorchScript's
    interpreter runs faster than Python does (bench/README.md)."""
    return torch.jit.script(_int8_rows), torch.jit.script(_int8_layers), torch.jit.script(_int8_gpt2_layers)


class Int8Linear(nn.Module):
    """A linear layer with int8 weights (per-output-channel symmetric scales) for CPU decoding.

    Holds the fbgemm-packed weight (`packed`, a quarter of the float32 bytes) and an
    optional float bias. Each call quantizes the activations with one scale to 7-bit codes
    and stacks the codes' rounding residual, scaled up, as extra rows of the same product
    (`_int8_rows`): the activations keep ~13 bits, and the error is that of the int8
    weights alone (bench/README.md has the figures).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        weight = weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / INT8_WEIGHT_MAX
        zero = torch.zeros(weight.shape[0], dtype=torch.long)
        qweight = torch.quantize_per_channel(weight, scale.double(), zero, 0, torch.qint8)
        self.packed = torch.ops.quantized.linear_prepack(qweight, None)
        self.out_features, self.in_features = weight.shape
        self.sizes = [self.out_features]  # the outputs of the layers fused into this one (`fuse`)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    @classmethod
    def fuse(cls, layers: Sequence[nn.Linear]) -> "Int8Linear":
        """One layer whose output is the layers' outputs side by side (one weight read per call)."""
        biases = [layer.bias for layer in layers]
        bias = None if all(b is None for b in biases) else torch.cat(
            [b if b is not None else torch.zeros(layer.out_features) for b, layer in zip(biases, layers)])
        fused = cls(torch.cat([layer.weight for layer in layers]), bias)
        fused.sizes = [layer.out_features for layer in layers]
        return fused

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The outputs of the layers this one fused (`sizes`), from one call."""
        return self(x).split(self.sizes, dim=-1)

    @property
    def packed_bytes(self) -> int:
        """Bytes of the packed int8 weight and its per-channel scales (not a parameter: memory
        accounting reads this)."""
        return self.out_features * (self.in_features + 8)

    def dequantized_weight(self) -> torch.Tensor:
        return self.packed.unpack()[0].dequantize()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = _compiled()[0](x.reshape(-1, self.in_features).float(), self.packed, _ROUNDING_SHIFT, _ZERO)
        if self.bias is not None:
            rows += self.bias
        return rows.view(*x.shape[:-1], self.out_features)


class _OutputSlice(nn.Module):
    """Columns start:stop of a fused layer's output, so that `q_proj(x)` and the like keep
    working outside the decoding step (the Hugging Face `forward`, slower: it runs the fused
    product for each slice). `group` and `start` let `T3.layers_cached` (batched decoding)
    call the fused layer once for all its slices (models/t3.py `_projections`)."""

    def __init__(self, fused: Int8Linear, start: int, stop: int):
        super().__init__()
        self._fused = (fused,)  # a tuple: the fused layer is registered once, as a sibling
        self.start, self.stop = start, stop

    @property
    def group(self) -> Int8Linear:
        return self._fused[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fused[0](x)[..., self.start : self.stop]


def _fuse_into(owner: nn.Module, fused_name: str, names: Sequence[str]) -> None:
    layers = [getattr(owner, name) for name in names]
    fused = Int8Linear.fuse(layers)
    setattr(owner, fused_name, fused)
    start = 0
    for name, layer in zip(names, layers):
        setattr(owner, name, _OutputSlice(fused, start, start + layer.out_features))
        start += layer.out_features


class _Int8Step:
    """`T3.forward_cached` of an int8 T3: its layers' packed weights and norm weights,
    gathered in lists once for `_int8_layers` (same tensors as the modules hold)."""

    def __init__(self, t3: T3):
        layers = t3.tfmr.layers
        self.qkv = [layer.self_attn.qkv_proj.packed for layer in layers]
        self.o = [layer.self_attn.o_proj.packed for layer in layers]
        self.gate_up = [layer.mlp.gate_up_proj.packed for layer in layers]
        self.down = [layer.mlp.down_proj.packed for layer in layers]
        self.input_norms = [layer.input_layernorm.weight for layer in layers]
        self.post_norms = [layer.post_attention_layernorm.weight for layer in layers]
        self.norm = t3.tfmr.norm
        self.heads, self.eps = t3.tfmr.config.num_attention_heads, t3.tfmr.config.rms_norm_eps
        self.scaling = layers[0].self_attn.scaling

    def __call__(self, inputs_embeds: torch.Tensor, cache: KVCache) -> torch.Tensor:
        length = inputs_embeds.shape[1]
        start, end = cache.length, cache.length + length
        if length > 1 and start:
            raise ValueError("only the prefill feeds several positions, and from position 0")
        x = _compiled()[1](inputs_embeds, self.qkv, self.o, self.gate_up, self.down, self.input_norms,
                           self.post_norms, cache.keys, cache.values, cache.cos[None, start:end],
                           cache.sin[None, start:end], start, self.heads, self.eps, self.scaling,
                           _ROUNDING_SHIFT, _ZERO)
        cache.length = end
        return self.norm(x)


def _int8(t3: T3) -> None:
    """T3's backbone linear layers (q/k/v fused, o, gate/up fused, down) and speech head in int8.

    Decoding then runs `_Int8Step`; the conditioning encoder and embeddings stay float32
    (they run once per generation). The original layer names stay callable
    (`_OutputSlice`), so the uncached `T3.forward` still works.
    """
    try:
        _compiled()
    except RuntimeError as exc:  # a torch build whose TorchScript cannot compile the step
        raise ModeError(f"int8's decoding step does not compile here: {exc}") from exc
    with torch.no_grad():
        for layer in t3.tfmr.layers:
            attn, mlp = layer.self_attn, layer.mlp
            _fuse_into(attn, "qkv_proj", ("q_proj", "k_proj", "v_proj"))
            _fuse_into(mlp, "gate_up_proj", ("gate_proj", "up_proj"))
            attn.o_proj = Int8Linear.fuse([attn.o_proj])
            mlp.down_proj = Int8Linear.fuse([mlp.down_proj])
        t3.speech_head = Int8Linear.fuse([t3.speech_head])
    t3.fast_step = _Int8Step(t3)


def int8_turbo(t3) -> None:
    """T3-Turbo's backbone `Conv1D` layers (c_attn, attn.c_proj, c_fc, mlp.c_proj) and speech
    head as `Int8Linear`, for CPU decoding (each token reads a quarter of the float32 bytes).

    The blocks keep their module names, so `T3Turbo.forward_cached` and the Hugging Face
    `forward` run them as before; embeddings and the speaker projection stay float32 (they
    run once per generation). Raises ModeError where the int8 kernels cannot run.
    """
    options = LoadOptions(quantize="int8")
    options.check(t3.device)
    try:
        _compiled()
    except RuntimeError as exc:
        raise ModeError(f"int8's decoding step does not compile here: {exc}") from exc
    unpack_linears(t3)  # from the packed float32 layout of loading, if any
    with torch.no_grad():
        for block in t3.tfmr.h:
            for owner, name in ((block.attn, "c_attn"), (block.attn, "c_proj"), (block.mlp, "c_fc"),
                                (block.mlp, "c_proj")):
                layer = getattr(owner, name)
                weight = layer.weight if isinstance(layer, nn.Linear) else layer.weight.T  # Conv1D: [in, out]
                setattr(owner, name, Int8Linear(weight, layer.bias))
        t3.speech_head = Int8Linear.fuse([t3.speech_head])
    t3.fast_step = _Int8TurboStep(t3)


class _Int8TurboStep:
    """`T3Turbo.forward_cached` of an int8 T3-Turbo: the blocks in one TorchScript call
    (`_int8_gpt2_layers`) over the same int8 layers and norm weights the modules hold."""

    def __init__(self, t3):
        blocks = t3.tfmr.h
        self.c_attn = [block.attn.c_attn.packed for block in blocks]
        self.attn_proj = [block.attn.c_proj.packed for block in blocks]
        self.c_fc = [block.mlp.c_fc.packed for block in blocks]
        self.mlp_proj = [block.mlp.c_proj.packed for block in blocks]
        self.biases = [[layer.bias for layer in (b.attn.c_attn, b.attn.c_proj, b.mlp.c_fc, b.mlp.c_proj)]
                       for b in blocks]
        self.norms = [[b.ln_1.weight, b.ln_1.bias, b.ln_2.weight, b.ln_2.bias] for b in blocks]
        self.wpe, self.ln_f = t3.tfmr.wpe.weight, t3.tfmr.ln_f
        self.heads, self.eps = t3.config.num_attention_heads, t3.config.layer_norm_epsilon

    def __call__(self, inputs_embeds: torch.Tensor, cache) -> torch.Tensor:
        length = inputs_embeds.shape[1]
        start, end = cache.length, cache.length + length
        x = _compiled()[2](inputs_embeds + self.wpe[start:end], self.c_attn, self.attn_proj, self.c_fc,
                           self.mlp_proj, self.biases, self.norms, cache.keys, cache.values, start, self.heads,
                           self.eps, _ROUNDING_SHIFT, _ZERO)
        cache.length = end
        return self.ln_f(x)


class _CompiledStep:
    """torch.compile of the T3 decoding step (hundreds of calls of one shape; the cache length
    is symbolic). The prefill runs once per text, with a new length each time: eager."""

    def __init__(self, t3: T3, backend: str):
        self.eager = t3.layers_cached
        self.step = torch.compile(self.eager, dynamic=True, backend=backend)

    def __call__(self, x: torch.Tensor, cache: KVCache) -> torch.Tensor:
        return self.step(x, cache) if x.shape[1] == 1 else self.eager(x, cache)


class _GraphStep:
    """The T3 step whose decoding steps replay a CUDA graph: one launch per step
    instead of ~500 kernel launches, which on a fast GPU take longer than the kernels.

    A graph binds the memory it was captured on, so it is captured for each generation's
    KV cache at the first decoding step (a few ms: the kernels are recorded, not run) and
    replayed with the step's input and position copied into its input tensors. The prefill
    (T > 1) and calls for an older cache run eagerly. Same arithmetic as the eager step,
    except that attention runs over the whole cache capacity with the unused slots masked
    (another kernel's summation order).
    """

    def __init__(self, t3: T3):
        self.eager = t3.layers_cached
        self.cache: KVCache | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warm = False

    def __call__(self, inputs_embeds: torch.Tensor, cache: KVCache) -> torch.Tensor:
        if inputs_embeds.shape[1] != 1:
            return self.eager(inputs_embeds, cache)
        if cache is not self.cache:
            self._capture(inputs_embeds, cache)
        self.x.copy_(inputs_embeds)
        self.position.fill_(cache.length)
        self.graph.replay()
        cache.length += 1
        return self.out.clone()  # the next replay overwrites `out`

    def _capture(self, x: torch.Tensor, cache: KVCache) -> None:
        self.graph = self.cache = None  # the old graph's memory goes back to the allocator
        # Every later slot is attended to with weight 0, so it must be finite (the cache is
        # allocated uninitialised).
        cache.keys[:, :, :, cache.length:].zero_()
        cache.values[:, :, :, cache.length:].zero_()
        self.x = x.clone()
        self.position = torch.tensor(cache.length, device=x.device)
        if not self.warm:
            # Libraries initialise lazily on a first call, which must not happen while
            # capturing; run one step on a side stream first, as CUDA graphs require. It
            # writes the same keys and values the captured step will write.
            side = torch.cuda.Stream(x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):
                self.eager(self.x, cache, self.position)
            torch.cuda.current_stream(x.device).wait_stream(side)
            self.warm = True
        graph = torch.cuda.CUDAGraph()
        # thread_local: the S3Gen decoder may be running on another thread meanwhile.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self.out = self.eager(self.x, cache, self.position)
        self.graph, self.cache = graph, cache


def build_t3(t3: T3, options: LoadOptions, backend: str = "inductor") -> T3:
    """Apply the T3 options to a T3 just loaded (nothing has run on it): dtype, then int8,
    then the decoding step (CUDA graph, else compile). `backend` other than inductor is
    for tests; only inductor is refused off CUDA."""
    if backend == "inductor":
        options.check(t3.device)
    if t3.fast_step is not None:
        raise ModeError("T3 already has a built decoding step; build a new one")
    unpack_linears(t3)  # the float32 CPU layout of loading; options start from plain layers
    t3.to(T3_DTYPES[options.t3_dtype])
    if options.quantize == "int8":
        _int8(t3)
    if options.cuda_graph:
        t3.fast_step = _GraphStep(t3)
    elif options.compile:
        t3.fast_step = _CompiledStep(t3, backend)
    return t3


def build_s3gen(s3gen: S3Gen, options: LoadOptions, backend: str = "inductor") -> S3Gen:
    """Apply the S3Gen options to an S3Gen just loaded: `compile` compiles the flow estimator."""
    if options.compile:
        if backend == "inductor":
            options.check(s3gen.device)
        estimator = s3gen.flow.decoder.estimator
        estimator.forward = torch.compile(estimator.forward, dynamic=True, backend=backend)
    return s3gen


FAST_MODES: dict[str, FastMode] = {
    mode.name: mode
    for mode in (
        FastMode("int8", "T3 linear layers with int8 weights, fused (CPU)", {"quantize": "int8"}),
        FastMode("bf16", "T3 in bfloat16 (GPU; runs on CPU)", {"t3_dtype": "bfloat16"}),
        FastMode("fp16", "T3 in float16 (CUDA only)", {"t3_dtype": "float16"}),
        FastMode("fewer_flow_steps", f"S3Gen flow matching with {FEWER_FLOW_STEPS} Euler steps instead of 10",
                 {"flow_steps": FEWER_FLOW_STEPS}),
        FastMode("compile", "torch.compile of the T3 step and the flow estimator (CUDA only)", {"compile": True}),
        FastMode("cuda_graph", "T3 decoding steps replayed as a CUDA graph (CUDA only; combines with fp16)",
                 {"cuda_graph": True}),
    )
}
