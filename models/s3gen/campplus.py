"""CAMPPlus x-vector speaker encoder (S3Gen's `speaker_encoder`) and its Kaldi fbank front-end.

    wav16 (L,) -> Kaldi fbank (T, 80) - per-bin mean over time
    -> FCM head: 2-D res-net over (80 freq × T), freq 80 -> 10, flattened to (320, T)
    -> TDNN (stride 2) -> 3 CAM dense-TDNN blocks with transit layers -> BN-ReLU (512, T/2)
    -> mean ‖ unbiased std over time (1024) -> 1×1 conv + affine-free BN -> x-vector (192,)

The x-vector is not normalised; S3Gen's flow projects it (spk_embed_affine_layer) itself.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


# --- Kaldi fbank (torchaudio.compliance.kaldi.fbank defaults, num_mel_bins=80) -----------------

@dataclass(frozen=True)
class FbankConfig:
    sample_rate: int = 16_000  # Hz
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    num_mel_bins: int = 80
    low_freq: float = 20.0  # Hz
    high_freq: float = 0.0  # Hz; <= 0 means Nyquist + high_freq (Kaldi convention)
    preemphasis: float = 0.97
    povey_power: float = 0.85  # Povey window = Hann(periodic=False) ** 0.85

    @property
    def window_size(self) -> int:
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def window_shift(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms / 1000)

    @property
    def n_fft(self) -> int:  # frames are zero-padded to the next power of two
        return 1 << (self.window_size - 1).bit_length()


def _kaldi_mel(hz: float) -> float:
    return 1127.0 * math.log(1.0 + hz / 700.0)


def kaldi_mel_banks(cfg: FbankConfig) -> torch.Tensor:
    """Kaldi's triangular filters on the mel scale 1127·ln(1 + f/700), (num_mel_bins, n_fft//2 + 1).

    Kaldi builds them over the first n_fft/2 bins only; the Nyquist column is zero. Computed in
    float32 in torchaudio's order: float64 filters move the quietest log-energies by ~3e-4.
    """
    nyquist = cfg.sample_rate / 2
    high = cfg.high_freq if cfg.high_freq > 0 else nyquist + cfg.high_freq
    mel_low = _kaldi_mel(cfg.low_freq)
    step = (_kaldi_mel(high) - mel_low) / (cfg.num_mel_bins + 1)
    index = torch.arange(cfg.num_mel_bins).unsqueeze(1)
    left, center, right = (mel_low + (index + k) * step for k in (0.0, 1.0, 2.0))
    bin_hz = cfg.sample_rate / cfg.n_fft * torch.arange(cfg.n_fft // 2)
    bin_mel = 1127.0 * (1.0 + bin_hz / 700.0).log()
    rising = (bin_mel - left) / (center - left)
    falling = (right - bin_mel) / (right - center)
    return F.pad(torch.clamp(torch.minimum(rising, falling), min=0.0), (0, 1))


def kaldi_fbank(wav16: torch.Tensor, cfg: FbankConfig | None = None) -> torch.Tensor:
    """Log mel filterbank energies (T, 80) of a waveform in [-1, 1], T = 1 + (L - 400) // 160.

    Same steps as Kaldi / torchaudio with dither 0 and snip_edges: per-frame DC removal,
    pre-emphasis (first sample against itself), Povey window, zero-pad to 512, |FFT|²,
    mel banks, log with a float32-eps floor. No energy term.
    """
    cfg = cfg or FbankConfig()
    x = wav16.reshape(-1).float().contiguous()  # strided input would change the mean's summation order
    if x.shape[0] < cfg.window_size:  # snip_edges: no partial frames
        return x.new_zeros(0, cfg.num_mel_bins)
    frames = x.unfold(0, cfg.window_size, cfg.window_shift)  # (T, 400)
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = frames - cfg.preemphasis * previous
    window = torch.hann_window(cfg.window_size, periodic=False, device=x.device).pow(cfg.povey_power)
    frames = F.pad(frames * window, (0, cfg.n_fft - cfg.window_size))
    power = torch.fft.rfft(frames).abs().pow(2.0)
    energies = power @ kaldi_mel_banks(cfg).to(x.device).T
    return torch.clamp(energies, min=torch.finfo(torch.float32).eps).log()


# --- network ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CAMPPlusConfig:
    feat_dim: int = 80  # fbank bins
    embedding_size: int = 192
    head_channels: int = 32  # FCM 2-D conv channels
    init_channels: int = 128  # TDNN output
    tdnn_kernel: int = 5
    tdnn_stride: int = 2  # halves the frame rate before the dense blocks
    growth_rate: int = 32  # channels each dense layer adds
    bottleneck: int = 128  # 1×1 conv width inside a dense layer (4 × growth)
    block_layers: tuple[int, ...] = (12, 24, 16)
    block_dilations: tuple[int, ...] = (1, 2, 2)
    kernel_size: int = 3
    segment_frames: int = 100  # CAM context: average over non-overlapping 100-frame segments


class BNReLU(nn.Module):
    """BatchNorm1d (+ ReLU); a module of its own so keys read `<layer>.nonlinear.batchnorm.*`."""

    def __init__(self, channels: int, affine: bool = True, relu: bool = True):
        super().__init__()
        self.batchnorm = nn.BatchNorm1d(channels, affine=affine)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.batchnorm(x)
        return F.relu(x) if self.relu else x


class BasicResBlock(nn.Module):
    def __init__(self, channels: int, freq_stride: int):
        super().__init__()
        stride = (freq_stride, 1)  # downsample frequency only, never time
        self.conv1 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if freq_stride != 1:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class FCM(nn.Module):
    """2-D front: (B, 80, T) -> (B, 32 · 10, T); frequency is halved three times."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.layer1 = nn.Sequential(BasicResBlock(c, 2), BasicResBlock(c, 1))
        self.layer2 = nn.Sequential(BasicResBlock(c, 2), BasicResBlock(c, 1))
        self.conv2 = nn.Conv2d(c, c, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x[:, None])))
        x = self.layer2(self.layer1(x))
        x = F.relu(self.bn2(self.conv2(x)))
        return x.flatten(1, 2)


class TDNNLayer(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int):
        super().__init__()
        self.linear = nn.Conv1d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
        self.nonlinear = BNReLU(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


class CAMLayer(nn.Module):
    """Context-aware masking: a local conv gated by utterance- and segment-level context."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int, segment_frames: int):
        super().__init__()
        self.linear_local = nn.Conv1d(
            c_in, c_out, kernel_size, padding=(kernel_size - 1) // 2 * dilation, dilation=dilation, bias=False
        )
        self.linear1 = nn.Conv1d(c_in, c_in // 2, 1)
        self.linear2 = nn.Conv1d(c_in // 2, c_out, 1)
        self.segment_frames = segment_frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.segment_frames
        # ceil_mode: the last, shorter segment is averaged over its own frames only
        segments = F.avg_pool1d(x, kernel_size=n, stride=n, ceil_mode=True)
        context = x.mean(-1, keepdim=True) + segments.repeat_interleave(n, dim=-1)[..., : x.shape[-1]]
        gate = torch.sigmoid(self.linear2(F.relu(self.linear1(context))))
        return self.linear_local(x) * gate


class CAMDenseTDNNLayer(nn.Module):
    def __init__(self, c_in: int, cfg: CAMPPlusConfig, dilation: int):
        super().__init__()
        self.nonlinear1 = BNReLU(c_in)
        self.linear1 = nn.Conv1d(c_in, cfg.bottleneck, 1, bias=False)
        self.nonlinear2 = BNReLU(cfg.bottleneck)
        self.cam_layer = CAMLayer(cfg.bottleneck, cfg.growth_rate, cfg.kernel_size, dilation, cfg.segment_frames)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class CAMDenseTDNNBlock(nn.ModuleDict):
    """Dense connectivity: each layer (`tdnnd1`, `tdnnd2`, ...) appends `growth_rate` channels."""

    def __init__(self, c_in: int, num_layers: int, cfg: CAMPPlusConfig, dilation: int):
        super().__init__({
            f"tdnnd{i + 1}": CAMDenseTDNNLayer(c_in + i * cfg.growth_rate, cfg, dilation) for i in range(num_layers)
        })

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.values():
            x = torch.cat([x, layer(x)], dim=1)
        return x


class TransitLayer(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.nonlinear = BNReLU(c_in)
        self.linear = nn.Conv1d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class DenseLayer(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.linear = nn.Conv1d(c_in, c_out, 1, bias=False)
        self.nonlinear = BNReLU(c_out, affine=False, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C) pooled statistics
        return self.nonlinear(self.linear(x[..., None])[..., 0])


class XVector(nn.Module):
    """TDNN + CAM dense blocks + statistics pooling + embedding layer: (B, 320, T) -> (B, 192)."""

    def __init__(self, c_in: int, cfg: CAMPPlusConfig):
        super().__init__()
        self.tdnn = TDNNLayer(c_in, cfg.init_channels, cfg.tdnn_kernel, cfg.tdnn_stride)
        c = cfg.init_channels
        for i, (n_layers, dilation) in enumerate(zip(cfg.block_layers, cfg.block_dilations), start=1):
            self.add_module(f"block{i}", CAMDenseTDNNBlock(c, n_layers, cfg, dilation))
            c += n_layers * cfg.growth_rate
            self.add_module(f"transit{i}", TransitLayer(c, c // 2))
            c //= 2
        self.num_blocks = len(cfg.block_layers)
        self.out_nonlinear = BNReLU(c)
        self.dense = DenseLayer(2 * c, cfg.embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tdnn(x)
        for i in range(1, self.num_blocks + 1):
            x = getattr(self, f"transit{i}")(getattr(self, f"block{i}")(x))
        x = self.out_nonlinear(x)
        stats = torch.cat([x.mean(dim=-1), x.std(dim=-1, unbiased=True)], dim=-1)
        return self.dense(stats)


class CAMPPlus(nn.Module):
    """CAMPPlus x-vector network (3D-Speaker / CosyVoice), S3Gen's speaker encoder.

    Owns `head.*` (FCM) and `xvector.*` with the checkpoint's names, BatchNorm running stats
    included; always used in eval mode. `forward` takes mean-normalised fbank features
    (B, T, 80) and returns un-normalised x-vectors (B, 192); `embed` does one 16 kHz waveform.
    """

    def __init__(self, config: CAMPPlusConfig | None = None):
        super().__init__()
        cfg = config or CAMPPlusConfig()
        self.config = cfg
        self.head = FCM(cfg.head_channels)
        freq_after_head = math.ceil(cfg.feat_dim / 8)  # three stride-2 convs over frequency
        self.xvector = XVector(cfg.head_channels * freq_after_head, cfg)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.xvector(self.head(feats.transpose(1, 2)))

    @staticmethod
    def features(wav16: torch.Tensor) -> torch.Tensor:
        """Fbank of one waveform minus its per-bin mean over time (CMN), (T, 80)."""
        fbank = kaldi_fbank(wav16)
        return fbank - fbank.mean(dim=0, keepdim=True)

    @torch.inference_mode()
    def embed(self, wav16: torch.Tensor) -> torch.Tensor:
        """x-vector (192,) of one 16 kHz waveform (L,) in [-1, 1]."""
        feats = self.features(wav16.to(self.head.conv1.weight.device))
        return self(feats[None])[0]
