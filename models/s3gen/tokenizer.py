"""S3 speech tokenizer (CosyVoice2 `speech_tokenizer_v2_25hz`): 16 kHz audio -> 25 Hz token ids.

    wav16 (L,) -> Whisper-style log-mel (128, L // 160) -> AudioEncoderV2 (two stride-2 convs,
    6 FSMN-attention blocks) -> FSQ (8 ternary digits) -> ids in [0, 3^8) (≈ L // 640)

The network is the `s3tokenizer` package's S3TokenizerV2; only the log-mel front-end is ours.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from s3tokenizer.model_v2 import ModelConfig, S3TokenizerV2

from ..audio import mel_filterbank
from ..constants import S3_SR, SPEECH_CODEBOOK_SIZE, TOKENIZER_MEL_FRAMES_PER_TOKEN


@dataclass(frozen=True)
class S3TokenizerConfig:
    sample_rate: int = S3_SR  # Hz
    n_fft: int = 400  # 25 ms window
    hop_length: int = 160  # 10 ms: 100 mel frames/s
    n_mels: int = 128
    log_dynamic_range: float = 8.0  # log10 units kept below the loudest bin (80 dB)
    mel_floor: float = 1e-10  # power floor before log10
    n_audio_state: int = 1280
    n_audio_head: int = 20
    n_audio_layer: int = 6


class S3Tokenizer(S3TokenizerV2):
    """S3TokenizerV2 with Chatterbox's log-mel front-end: one 16 kHz waveform in, token ids out.

    Owns the encoder and FSQ weights (`encoder.*`, `quantizer._codebook.project_down.*`) and two
    buffers, `_mel_filters` (128, 201) and `window` (400,). The released checkpoint lacks the
    buffers, so they are computed here (Slaney filters; periodic Hann in float64) and are the
    only keys a loader may leave missing. Inference only; audio longer than 30 s is windowed by
    the package's `quantize`.
    """

    def __init__(self, config: S3TokenizerConfig | None = None):
        config = config or S3TokenizerConfig()
        super().__init__(
            "speech_tokenizer_v2_25hz",
            ModelConfig(
                n_mels=config.n_mels,
                n_audio_state=config.n_audio_state,
                n_audio_head=config.n_audio_head,
                n_audio_layer=config.n_audio_layer,
                n_codebook_size=SPEECH_CODEBOOK_SIZE,
            ),
        )
        self.tokenizer_config = config
        mel_filters = mel_filterbank(config.sample_rate, config.n_fft, config.n_mels)
        self.register_buffer("_mel_filters", torch.from_numpy(mel_filters))
        self.register_buffer("window", torch.hann_window(config.n_fft, dtype=torch.float64).float())

    def log_mel(self, wav16: torch.Tensor) -> torch.Tensor:
        """Log-mel of a 16 kHz waveform (L,) -> (128, L // 160), scaled to roughly [-1, 1]."""
        cfg = self.tokenizer_config
        x = wav16.to(self.window.device, torch.float32)
        spec = torch.stft(x, cfg.n_fft, cfg.hop_length, window=self.window, return_complex=True)
        # the centred STFT gives L // 160 + 1 frames; the last, centred on the clip's end, is dropped
        power = spec[..., :-1].abs() ** 2
        log_spec = torch.clamp(self._mel_filters @ power, min=cfg.mel_floor).log10()
        log_spec = torch.maximum(log_spec, log_spec.max() - cfg.log_dynamic_range)
        return (log_spec + 4.0) / 4.0

    @torch.inference_mode()
    def tokenize(self, wav16: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
        """Speech token ids (N,) int64 of one 16 kHz waveform (L,); N = ceil(L // 160 / 4).

        `max_len` keeps at most that many tokens by cutting the log-mel to 4·max_len frames
        (after the dynamic-range floor, which is taken over the whole clip).
        """
        mel = self.log_mel(wav16)
        if max_len is not None:
            mel = mel[:, : TOKENIZER_MEL_FRAMES_PER_TOKEN * max_len]
        mel_len = torch.tensor([mel.shape[-1]], device=mel.device)
        codes, code_len = self.quantize(mel[None], mel_len)
        return codes[0, : int(code_len[0])].long()
