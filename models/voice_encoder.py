"""Speaker encoder for T3: 16 kHz reference audio -> one unit-norm 256-d embedding.

wav16 --trim silence--> 40-band linear mel (T, 40) --1.6 s windows every 0.77 s--> (N, 160, 40)
      --3-layer LSTM, last hidden state, Linear, ReLU, L2--> (N, 256) --mean, L2--> (256,)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .audio import mel_filterbank, trim_silence


@dataclass(frozen=True)
class VoiceEncoderConfig:
    """Hyper-parameters of the released voice encoder (Resemble's `VoiceEncConfig`).

    Only the network sizes shape the checkpoint; the rest fixes the preprocessing.
    """

    sample_rate: int = 16_000  # Hz
    num_mels: int = 40
    n_fft: int = 400  # samples (25 ms), also the Hann window length
    hop_length: int = 160  # samples (10 ms) -> 100 mel frames per second
    fmin: float = 0.0  # Hz
    fmax: float = 8_000.0  # Hz
    hidden_size: int = 256
    num_layers: int = 3
    embed_size: int = 256
    partial_frames: int = 160  # frames per window (1.6 s)
    partial_rate: float = 1.3  # windows per second of audio
    min_coverage: float = 0.8  # a last, partly filled window is kept if this fraction is real audio
    trim_top_db: float = 20.0  # leading/trailing silence threshold below the loudest frame
    batch_size: int = 32  # windows per LSTM call

    @property
    def frame_step(self) -> int:
        """Mel frames between window starts (77).

        The reference divides samples-per-window-start by the window length in frames;
        that equals dividing by the hop only because both are 160, so keep its formula.
        """
        return int(np.round((self.sample_rate / self.partial_rate) / self.partial_frames))


class VoiceEncoder(nn.Module):
    """The T3 speaker encoder (`ve.safetensors`): LSTM over mel windows, projection, L2 norm.

    Owns the network (`lstm`, `proj`; `similarity_*` are stored training leftovers, unused)
    and the preprocessing (trim, mel, windowing). The mel is computed in float32 on the
    weights' device; the network runs in the weights' dtype. Outputs are unit-norm.
    """

    def __init__(self, config: VoiceEncoderConfig):
        super().__init__()
        self.config = config
        self.lstm = nn.LSTM(config.num_mels, config.hidden_size, num_layers=config.num_layers, batch_first=True)
        self.proj = nn.Linear(config.hidden_size, config.embed_size)
        # Cosine-similarity scale/offset from speaker-verification training; stored in the file.
        self.similarity_weight = nn.Parameter(torch.tensor([10.0]))
        self.similarity_bias = nn.Parameter(torch.tensor([-5.0]))
        # Not in the checkpoint (non-persistent): derived from the config.
        window = torch.hann_window(config.n_fft, periodic=True, dtype=torch.float64).float()
        self.register_buffer("window", window, persistent=False)
        basis = mel_filterbank(config.sample_rate, config.n_fft, config.num_mels, config.fmin, config.fmax)
        self.register_buffer("mel_basis", torch.from_numpy(basis), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.proj.weight.device

    def mel(self, wav16: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Power mel spectrogram (frames, num_mels), float32, linear amplitude (no log).

        Centred STFT with reflect padding, so frames = 1 + len // hop_length.
        """
        cfg = self.config
        wav = torch.as_tensor(wav16, dtype=torch.float32).to(self.device)
        if wav.ndim != 1:
            raise ValueError(f"expected a mono 1-D waveform, got shape {tuple(wav.shape)}")
        if wav.numel() <= cfg.n_fft // 2:
            raise ValueError(f"audio too short for the voice encoder: {wav.numel()} samples")
        spec = torch.stft(
            wav, cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.n_fft, window=self.window.float(),
            center=True, pad_mode="reflect", return_complex=True,
        )
        power = spec.abs().square()  # (freqs, frames)
        return (self.mel_basis.float() @ power).T.contiguous()

    def num_windows(self, n_frames: int) -> tuple[int, int]:
        """(number of windows, mel length they span) for a mel of `n_frames` frames."""
        win, step = self.config.partial_frames, self.config.frame_step
        n_wins, remainder = divmod(max(n_frames - win + step, 0), step)
        # Keep a last window that ends past the audio if enough of it is audio.
        if n_wins == 0 or (remainder + win - step) / win >= self.config.min_coverage:
            n_wins += 1
        return n_wins, win + step * (n_wins - 1)

    def partial_windows(self, mel: torch.Tensor) -> torch.Tensor:
        """(frames, M) mel -> (N, partial_frames, M) overlapping windows.

        The mel is zero-padded or truncated at the end to exactly span the windows.
        """
        n_wins, target = self.num_windows(mel.shape[0])
        if target > mel.shape[0]:
            mel = F.pad(mel, (0, 0, 0, target - mel.shape[0]))
        mel = mel[:target]
        windows = mel.unfold(0, self.config.partial_frames, self.config.frame_step)  # (N, M, P)
        return windows.transpose(1, 2).contiguous()

    def forward(self, partials: torch.Tensor) -> torch.Tensor:
        """(N, partial_frames, num_mels) mel windows -> (N, embed_size) unit-norm embeddings."""
        _, (hidden, _) = self.lstm(partials.to(self.proj.weight))
        embeds = F.relu(self.proj(hidden[-1]))
        return embeds / torch.linalg.vector_norm(embeds, dim=1, keepdim=True)

    def embed_partials(self, partials: torch.Tensor) -> torch.Tensor:
        """`forward` in chunks of `batch_size` windows, to bound memory on long audio."""
        return torch.cat([self(chunk) for chunk in partials.split(self.config.batch_size)])

    def embed_utterance(self, wav16: np.ndarray) -> torch.Tensor:
        """16 kHz mono waveform -> (embed_size,) unit-norm speaker embedding.

        T3's `speaker_emb` is this vector with a leading batch axis of 1.
        """
        wav16 = np.asarray(wav16, dtype=np.float32)
        start, end = trim_silence(wav16, top_db=self.config.trim_top_db)
        if end <= start or not np.any(wav16[start:end]):
            raise ValueError("reference audio is silent: nothing left after trimming")
        partial_embeds = self.embed_partials(self.partial_windows(self.mel(wav16[start:end])))
        mean = partial_embeds.mean(dim=0)
        return mean / torch.linalg.vector_norm(mean)
