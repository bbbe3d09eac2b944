"""HiFT vocoder (`mel2wav` in s3gen.safetensors): 80-band log-mel at 50 Hz -> 24 kHz waveform.

HiFTNet = neural source-filter + iSTFTNet. Shapes: B batch, T mel frames, H = 9 harmonics,
L = 480*T samples, F = 120*T + 1 STFT frames (n_fft 16, hop 4), K = n_fft + 2 = 18 channels.
  mel (B, 80, T) -> f0 predictor -> f0 (B, T) Hz -> nearest x480 -> sine source (B, L)
  source -> STFT -> (B, K, F), fused into each of the three upsampling stages of
  mel -> conv_pre -> [LeakyReLU, ConvTranspose, + source branch, mean of 3 Snake ResBlocks] x3
      -> LeakyReLU(0.01) -> conv_post (B, K, F) -> exp magnitude, sin phase -> iSTFT -> (B, L)
Weight-normed convolutions use torch's parametrization, so the checkpoint's
`...parametrizations.weight.original0/1` keys load name for name; `fold_weight_norm` then
turns them into plain weights for inference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

TWO_PI = 2 * math.pi
FADE_SAMPLES = 480  # 20 ms at 24 kHz: zeroed, then a raised-cosine rise of the same length
SNAKE_EPS = 1e-9    # keeps 1/alpha finite for a zero alpha


@dataclass(frozen=True)
class HiFTConfig:
    """The released 24 kHz HiFT: 3 upsampling stages (x8, x5, x3) then an iSTFT with hop 4,
    so every mel frame becomes 480 samples. Kernel/dilation tuples are per stage or shared.
    """

    in_channels: int = 80
    base_channels: int = 512                      # halved by each upsampling stage
    nb_harmonics: int = 8                         # overtones above f0 -> 9 sine channels
    sampling_rate: int = 24_000                   # Hz
    nsf_alpha: float = 0.1                        # sine amplitude
    nsf_sigma: float = 0.003                      # noise std where voiced
    nsf_voiced_threshold: float = 10.0            # Hz
    upsample_rates: tuple[int, ...] = (8, 5, 3)
    upsample_kernel_sizes: tuple[int, ...] = (16, 11, 7)
    n_fft: int = 16
    hop_length: int = 4
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    source_resblock_kernel_sizes: tuple[int, ...] = (7, 7, 11)  # one per upsampling stage
    resblock_dilations: tuple[int, ...] = (1, 3, 5)             # the same for every ResBlock
    lrelu_slope: float = 0.1                      # inside the stages; 0.01 before conv_post
    audio_limit: float = 0.99
    f0_channels: int = 512
    f0_num_convs: int = 5

    @property
    def samples_per_frame(self) -> int:
        return math.prod(self.upsample_rates) * self.hop_length  # 480


@dataclass(frozen=True)
class SourceDraws:
    """The random inputs of the sine source; injectable so a reference run can be replayed."""

    phases: torch.Tensor  # (..., H) ~ U(-pi, pi); harmonic 0 is forced to phase 0 regardless
    noise: torch.Tensor   # (..., H, L) ~ N(0, 1)

    @classmethod
    def sample(cls, batch: int, harmonics: int, length: int,
               generator: torch.Generator | None = None) -> "SourceDraws":
        # Same order, shapes and arithmetic as the reference (rand*(hi-lo)+lo, then randn),
        # so a generator seeded like the reference's global RNG gives its exact draws. The
        # reference then draws one more unused randn(L); it is the last draw of the call and
        # cannot change this output, so we skip it rather than advance a caller's generator.
        device = generator.device if generator is not None else torch.device("cpu")
        phases = torch.rand(batch, harmonics, generator=generator, device=device) * TWO_PI - math.pi
        noise = torch.randn(batch, harmonics, length, generator=generator, device=device)
        return cls(phases, noise)


class Snake(nn.Module):
    """Snake activation x + sin^2(alpha*x)/alpha with one linear-scale alpha per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        alpha = self.alpha[:, None]
        return x + torch.sin(x * alpha).pow(2) / (alpha + SNAKE_EPS)


def _wn_conv(c_in: int, c_out: int, kernel: int, dilation: int = 1) -> nn.Module:
    return weight_norm(nn.Conv1d(c_in, c_out, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2))


class ResBlock(nn.Module):
    """HiFi-GAN residual block: per dilation d, x += conv(Snake(conv_d(Snake(x)))); length kept."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(_wn_conv(channels, channels, kernel, d) for d in dilations)
        self.convs2 = nn.ModuleList(_wn_conv(channels, channels, kernel) for _ in dilations)
        self.activations1 = nn.ModuleList(Snake(channels) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(channels) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv1, conv2, act1, act2 in zip(self.convs1, self.convs2, self.activations1, self.activations2):
            x = x + conv2(act2(conv1(act1(x))))
        return x


class F0Predictor(nn.Module):
    """Mel (B, 80, T) -> f0 (B, T) in Hz: 5 weight-normed k3 convs with ELU, a linear head, abs."""

    def __init__(self, config: HiFTConfig):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(config.f0_num_convs):  # Sequential indices 0, 2, 4, ... are the convs
            layers += [_wn_conv(config.in_channels if i == 0 else config.f0_channels, config.f0_channels, 3), nn.ELU()]
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(config.f0_channels, 1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        h = self.condnet(mel).transpose(1, 2)  # (B, T, C)
        return self.classifier(h).squeeze(-1).abs()


class SineSource(nn.Module):
    """Neural source-filter excitation: 9 harmonic sines of f0 plus noise, merged to one channel.

    Unvoiced samples (f0 <= threshold) carry only noise of std alpha/3.
    """

    def __init__(self, config: HiFTConfig):
        super().__init__()
        self.config = config
        self.l_linear = nn.Linear(config.nb_harmonics + 1, 1)

    def forward(self, f0_up: torch.Tensor, draws: SourceDraws,
                start_cycles: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """f0 at the sample rate (B, L) -> (source (B, L), uv (B, L)).

        `start_cycles` (B, H): the harmonics' phase, in cycles, accumulated before this
        segment, so a waveform vocoded in pieces keeps one continuous phase (streaming).
        """
        c = self.config
        f0 = f0_up.float()[:, None, :]  # phase accumulation stays float32 whatever the model dtype
        harmonic = torch.arange(1, c.nb_harmonics + 2, device=f0.device, dtype=f0.dtype)[:, None]
        cycles = torch.cumsum(f0 * harmonic / c.sampling_rate, dim=-1)  # (B, H, L)
        if start_cycles is not None:
            cycles = cycles + start_cycles.to(f0.device, f0.dtype)[..., None]
        cycles = cycles % 1
        phases = draws.phases.to(f0.device, f0.dtype)
        phases = torch.cat([torch.zeros_like(phases[..., :1]), phases[..., 1:]], dim=-1)[..., None]
        sines = c.nsf_alpha * torch.sin(TWO_PI * cycles + phases)
        uv = (f0 > c.nsf_voiced_threshold).to(f0.dtype)  # (B, 1, L)
        noise_amp = uv * c.nsf_sigma + (1 - uv) * c.nsf_alpha / 3
        waves = sines * uv + noise_amp * draws.noise.to(f0.device, f0.dtype)
        merged = self.l_linear(waves.transpose(1, 2).to(self.l_linear.weight.dtype))  # (B, L, 1)
        return torch.tanh(merged).squeeze(-1), uv.squeeze(1)


class RealSTFT(nn.Module):
    """STFT / iSTFT with n_fft 16, periodic Hann, centred (reflect) frames, as torch.stft/istft.

    Both are one strided convolution with real DFT kernels (window folded in): for n_fft 16 a
    matmul is as fast as an FFT, and no complex dtype is needed on any device. Spectra are
    (B, n_fft + 2, F): the n_fft/2 + 1 real parts, then the imaginary parts.
    """

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        n = torch.arange(n_fft, dtype=torch.float64)
        window = 0.5 - 0.5 * torch.cos(TWO_PI * n / n_fft)  # periodic Hann
        angle = TWO_PI * torch.outer(torch.arange(n_fft // 2 + 1, dtype=torch.float64), n) / n_fft
        cos, sin = torch.cos(angle), torch.sin(angle)
        sin[0], sin[-1] = 0.0, 0.0  # exact: DC and Nyquist are real, their imaginary parts are ignored
        # Inverse real DFT: bins strictly between DC and Nyquist stand for their conjugates too.
        weight = torch.full((n_fft // 2 + 1, 1), 2.0 / n_fft, dtype=torch.float64)
        weight[0], weight[-1] = 1.0 / n_fft, 1.0 / n_fft
        analysis = torch.cat([cos, -sin]) * window
        synthesis = torch.cat([cos * weight, -sin * weight]) * window
        self.register_buffer("analysis", analysis[:, None, :].float(), persistent=False)    # (K, 1, n_fft)
        self.register_buffer("synthesis", synthesis[:, None, :].float(), persistent=False)  # (K, 1, n_fft)
        self.register_buffer("window_sq", (window ** 2)[None, None, :].float(), persistent=False)

    def stft(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, K, L // hop + 1)."""
        pad = self.n_fft // 2
        x = F.pad(x[:, None, :], (pad, pad), mode="reflect")
        return F.conv1d(x, self.analysis.to(x.dtype), stride=self.hop_length)

    def istft(self, spec: torch.Tensor) -> torch.Tensor:
        """(B, K, F) -> (B, hop * (F - 1)); overlap-add normalised by the summed squared window."""
        frames = spec.shape[-1]
        y = F.conv_transpose1d(spec, self.synthesis.to(spec.dtype), stride=self.hop_length)[:, 0]
        ones = torch.ones(1, 1, frames, device=spec.device, dtype=spec.dtype)
        envelope = F.conv_transpose1d(ones, self.window_sq.to(spec.dtype), stride=self.hop_length)[0, 0]
        pad = self.n_fft // 2
        return y[:, pad:-pad] / envelope[pad:-pad]


@dataclass(frozen=True)
class HiFTOutput:
    """Everything one vocoder call computes (the replay checks each piece)."""

    f0: torch.Tensor             # (B, T) Hz
    uv: torch.Tensor             # (B, L) 1.0 where voiced
    source: torch.Tensor         # (B, L) excitation
    conv_post_out: torch.Tensor  # (B, K, F) log-magnitude channels, then phase pre-activations
    wav: torch.Tensor            # (B, L) clamped to +-audio_limit, before the fade-in


class HiFTGenerator(nn.Module):
    """The `mel2wav` part of S3Gen: mel (80, T) -> 480*T samples at 24 kHz.

    Owns the f0 predictor, the sine source and the upsampling generator; attribute names
    are the checkpoint keys under `mel2wav.`. The only randomness is the source's
    `SourceDraws`, taken from an explicit generator or injected. No fade-in here: the
    caller applies `apply_fade_in` to the final waveform.
    """

    def __init__(self, config: HiFTConfig | None = None):
        super().__init__()
        self.config = c = config or HiFTConfig()
        self.f0_predictor = F0Predictor(c)
        self.m_source = SineSource(c)
        self.conv_pre = _wn_conv(c.in_channels, c.base_channels, 7)
        spec_channels = c.n_fft + 2
        self.ups = nn.ModuleList()
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        n_stages = len(c.upsample_rates)
        for i, (rate, kernel) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes)):
            c_in, c_out = c.base_channels >> i, c.base_channels >> (i + 1)
            self.ups.append(weight_norm(nn.ConvTranspose1d(c_in, c_out, kernel, rate, padding=(kernel - rate) // 2)))
            # The source STFT runs at the final frame rate; bring it down to this stage's rate.
            down = math.prod(c.upsample_rates[i + 1:])
            if down == 1:
                self.source_downs.append(nn.Conv1d(spec_channels, c_out, 1))
            else:
                self.source_downs.append(nn.Conv1d(spec_channels, c_out, 2 * down, down, padding=down // 2))
            self.source_resblocks.append(ResBlock(c_out, c.source_resblock_kernel_sizes[i], c.resblock_dilations))
            for k in c.resblock_kernel_sizes:
                self.resblocks.append(ResBlock(c_out, k, c.resblock_dilations))
        self.conv_post = _wn_conv(c.base_channels >> n_stages, spec_channels, 7)
        self.fourier = RealSTFT(c.n_fft, c.hop_length)  # no weights

    def fold_weight_norm(self) -> None:
        """Replace every weight-norm parametrization by its effective weight g*v/||v||."""
        wrapped = [m for m in self.modules() if parametrize.is_parametrized(m, "weight")]
        for module in wrapped:
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)

    def decode(self, mel: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """mel (B, 80, T) and excitation (B, L) -> conv_post output (B, K, F)."""
        c = self.config
        s_spec = self.fourier.stft(source.float()).to(mel.dtype)
        x = self.conv_pre(mel)
        n_kernels = len(c.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, c.lrelu_slope))
            if i == len(self.ups) - 1:
                x = F.pad(x, (1, 0), mode="reflect")  # 120T -> 120T + 1 = the STFT frame count
            x = x + self.source_resblocks[i](self.source_downs[i](s_spec))
            blocks = self.resblocks[i * n_kernels:(i + 1) * n_kernels]
            x = sum(block(x) for block in blocks) / n_kernels
        return self.conv_post(F.leaky_relu(x))  # torch's default slope 0.01 here, not lrelu_slope

    def spec_to_wav(self, conv_post_out: torch.Tensor) -> torch.Tensor:
        """(B, K, F) -> (B, L) clamped waveform."""
        bins = self.config.n_fft // 2 + 1
        magnitude = torch.exp(conv_post_out[:, :bins].float()).clamp(max=1e2)
        phase = torch.sin(conv_post_out[:, bins:].float())
        spec = torch.cat([magnitude * torch.cos(phase), magnitude * torch.sin(phase)], dim=1)
        wav = self.fourier.istft(spec)
        return wav.clamp(-self.config.audio_limit, self.config.audio_limit)

    def forward(self, mel: torch.Tensor, draws: SourceDraws) -> HiFTOutput:
        """mel (B, 80, T) with draws for L = 480*T samples -> all intermediate outputs."""
        f0 = self.f0_predictor(mel)
        f0_up = f0.repeat_interleave(self.config.samples_per_frame, dim=-1)  # nearest upsampling
        source, uv = self.m_source(f0_up, draws)
        conv_post_out = self.decode(mel, source)
        return HiFTOutput(f0, uv, source, conv_post_out, self.spec_to_wav(conv_post_out))

    @torch.inference_mode()
    def inference(self, mel: torch.Tensor, *, generator: torch.Generator | None = None,
                  draws: SourceDraws | None = None) -> torch.Tensor:
        """mel (80, T) -> waveform (480*T,) in [-0.99, 0.99], without the fade-in.

        The source noise comes from `draws` if given, else from `generator` (else torch's
        global RNG); the same seed gives the same waveform.
        """
        c = self.config
        if mel.dim() != 2 or mel.shape[0] != c.in_channels:
            raise ValueError(f"expected a mel of shape ({c.in_channels}, T), got {tuple(mel.shape)}")
        if draws is None:
            draws = SourceDraws.sample(1, c.nb_harmonics + 1, mel.shape[-1] * c.samples_per_frame, generator)
        return self.forward(mel[None], draws).wav[0]


def fade_in_envelope(n_trim: int = FADE_SAMPLES) -> torch.Tensor:
    """(2*n_trim,): n_trim zeros, then a raised cosine from 0 to 1 (the reference's `trim_fade`)."""
    rise = (torch.cos(torch.linspace(torch.pi, 0, n_trim)) + 1) / 2
    return torch.cat([torch.zeros(n_trim), rise])


def apply_fade_in(wav: torch.Tensor) -> torch.Tensor:
    """Mute the first 20 ms and fade in over the next 20 ms (last dim), hiding prompt spill-over."""
    envelope = fade_in_envelope().to(wav.device, wav.dtype)
    n = min(envelope.shape[0], wav.shape[-1])
    return torch.cat([wav[..., :n] * envelope[:n], wav[..., n:]], dim=-1)
