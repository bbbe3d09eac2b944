"""S3Gen's 24 kHz log-mel: the domain of `prompt_feat` and of the flow's output.

    wav24 (L,) -> reflect pad 720 | STFT 1920/480, Hann, no centring | sqrt(re²+im²+1e-9)
               -> 80 Slaney mel bands 0-8 kHz | ln(clamp 1e-5) -> (L // 480, 80)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..audio import mel_filterbank
from ..constants import S3GEN_SR

N_FFT = 1920  # samples (80 ms); also the Hann window length
HOP = 480  # samples (20 ms): 50 frames/s, two frames per 25 Hz speech token
N_MELS = 80
F_MAX = 8_000.0  # Hz
MAG_EPS = 1e-9  # added to re²+im² before the square root
LOG_FLOOR = 1e-5  # mel amplitude floor before the natural log


def s3gen_mel(wav24: torch.Tensor) -> torch.Tensor:
    """Log-mel of a 24 kHz waveform (..., L) -> (..., L // 480, 80), natural log, time-major."""
    lead = wav24.shape[:-1]
    x = wav24.reshape(-1, 1, wav24.shape[-1]).float()
    side = (N_FFT - HOP) // 2  # centres frame t on sample 480·t + 240 without torch's centring
    x = F.pad(x, (side, side), mode="reflect")[:, 0]
    # torch.hann_window (float32, periodic) is the window the reference computes; keep it for parity.
    window = torch.hann_window(N_FFT, device=x.device)
    spec = torch.stft(x, N_FFT, HOP, window=window, center=False, return_complex=True)
    magnitude = torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1) + MAG_EPS)  # (B, 961, T)
    fbank = torch.from_numpy(mel_filterbank(S3GEN_SR, N_FFT, N_MELS, 0.0, F_MAX)).to(x.device)
    log_mel = torch.log(torch.clamp(fbank @ magnitude, min=LOG_FLOOR))
    return log_mel.transpose(1, 2).reshape(*lead, -1, N_MELS)
