"""S3Gen: speech tokens + a reference voice -> 24 kHz waveform.

Owns the four checkpoint parts under their key prefixes in s3gen.safetensors:
`tokenizer` (S3 speech tokenizer), `speaker_encoder` (CAMPPlus x-vector), `flow`
(conformer encoder + flow-matching decoder -> mel) and `mel2wav` (HiFT vocoder).
The reference voice is embedded once (`embed_ref`) into an immutable
`ReferenceEmbedding`; synthesis never mutates the module.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .campplus import CAMPPlus
from .flow import Flow, FlowConfig
from .hift import HiFTGenerator, apply_fade_in
from .mel import s3gen_mel
from .tokenizer import S3Tokenizer
from ..audio import resample
from ..constants import S3_SR, S3GEN_MEL_FRAMES_PER_TOKEN, S3GEN_SR

MAX_REF_SECONDS = 10       # the reference prompt S3Gen conditions on
DEC_COND_LEN = MAX_REF_SECONDS * S3GEN_SR


@dataclass(frozen=True)
class ReferenceEmbedding:
    """What S3Gen keeps of a reference voice (the reference's `gen` dict)."""

    prompt_token: torch.Tensor  # (Tp,) int64 S3 tokens of the reference
    prompt_feat: torch.Tensor   # (Tm, 80) 24 kHz log-mel of the reference, Tm = 2*Tp normally
    embedding: torch.Tensor     # (192,) CAMPPlus x-vector (not normalised)

    def to(self, device: torch.device | str) -> "ReferenceEmbedding":
        return ReferenceEmbedding(self.prompt_token.to(device), self.prompt_feat.to(device), self.embedding.to(device))


class S3Gen(nn.Module):
    """Token-to-waveform decoder with its reference-voice front-end.

    `meanflow=True` builds Chatterbox-Turbo's S3Gen (`s3gen_meanflow.safetensors`): the same
    modules plus the estimator's time-embedding mixer, decoded without guidance.
    `n_timesteps`: flow steps of every decode, whole or streamed (None: 10; meanflow 2).
    """

    def __init__(self, n_timesteps: int | None = None, meanflow: bool = False) -> None:
        super().__init__()
        self.meanflow = meanflow
        self.tokenizer = S3Tokenizer()
        self.speaker_encoder = CAMPPlus()
        self.flow = Flow(FlowConfig.turbo() if meanflow else FlowConfig())
        self.n_timesteps = self.flow.config.default_timesteps if n_timesteps is None else n_timesteps
        self.mel2wav = HiFTGenerator()

    @property
    def device(self) -> torch.device:
        return self.flow.input_embedding.weight.device

    def fold_weight_norm(self) -> None:
        """Replace weight-norm parametrisations by their effective weights (faster, same output)."""
        self.mel2wav.fold_weight_norm()

    @torch.inference_mode()
    def embed_ref(self, wav24: np.ndarray, wav16: np.ndarray | None = None) -> ReferenceEmbedding:
        """Embed up to the first 10 s of a 24 kHz mono reference clip.

        `wav16` is that clip at 16 kHz (x-vector and prompt tokens), for a caller that
        resamples it another way; by default it is our soxr resampling of the kept part.
        """
        wav24 = np.asarray(wav24, dtype=np.float32)[:DEC_COND_LEN]
        wav16 = resample(wav24, S3GEN_SR, S3_SR) if wav16 is None else np.asarray(wav16, dtype=np.float32)
        x24 = torch.from_numpy(wav24).to(self.device)
        x16 = torch.from_numpy(wav16).to(self.device)
        prompt_feat = s3gen_mel(x24)
        embedding = self.speaker_encoder.embed(x16)
        prompt_token = self.tokenizer.tokenize(x16)
        # The mel must be exactly twice as long as the tokens; the reference only ever
        # shortens the tokens to fit (a shorter token list is left as it is).
        n_fit = prompt_feat.shape[0] // S3GEN_MEL_FRAMES_PER_TOKEN
        if prompt_token.shape[0] > n_fit:
            prompt_token = prompt_token[:n_fit]
        return ReferenceEmbedding(prompt_token, prompt_feat, embedding)

    @torch.inference_mode()
    def inference(
        self,
        speech_tokens: torch.Tensor,
        ref: ReferenceEmbedding,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Speech tokens (N,) -> waveform (960*N,) at 24 kHz, faded in over the first 40 ms."""
        if speech_tokens.numel() == 0:
            raise ValueError("no speech tokens to decode")
        mel = self.flow.inference(speech_tokens.to(self.device), ref.prompt_token, ref.prompt_feat,
                                  ref.embedding, generator=generator, n_timesteps=self.n_timesteps)
        wav = self.mel2wav.inference(mel, generator=generator)
        return apply_fade_in(wav)
