"""Streaming S3Gen: speech tokens arriving one by one -> 24 kHz audio in pieces.

The browser can start playing before T3 has finished. Each emission reruns the flow on
prompt + every token so far, with initial noise drawn once for the whole utterance and
sliced to the current length (earlier frames always start from the same noise). The
last `lookahead` tokens' frames still wait for their right context, so they are kept
back until later tokens arrive or the stream ends. Committed mel frames then go to a
`StreamingVocoder` that continues the previous audio seamlessly: one sine-source phase
and one noise signal for the whole utterance, and calls that overlap by HiFT's receptive
field (left context re-vocoded, right edge held back), so the joined pieces equal one
vocoder run over the committed mel. The pieces add up to the length of `S3Gen.inference`
(960 samples per token); their content differs a little from it because the flow's
attention sees the whole sequence, so frames computed early never saw later tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .hift import HiFTGenerator, SourceDraws, fade_in_envelope
from .s3gen import ReferenceEmbedding, S3Gen
from ..constants import MAX_NEW_TOKENS, SPEECH_CODEBOOK_SIZE, STOP_SPEECH_TOKEN

HIFT_REACH_FRAMES = 14  # mel frames beyond which HiFT's output cannot see (receptive field 13.3)


@dataclass(frozen=True)
class StreamConfig:
    """When pieces are emitted and how vocoder calls overlap.

    Token counts are S3 tokens (40 ms each), frame counts mel frames (20 ms each). The
    vocoder overlap is HiFT's receptive field: a mel frame reaches 13 frames each way and
    a source sample 6403 samples (13.3 frames), so with 14 frames of context on each side
    a call's audio equals the whole-utterance vocoder's and joins need no crossfade (which
    mixes in the edge-distorted audio). Fewer held-back frames cut the latency and leave an
    error at each join (figures in bench/README.md).
    """

    # Blocks of 20, 20, 40, 80 tokens then 100 each: piece k ends 2*N_k - 20 frames into the
    # audio, so playback started at the first piece never stalls while T3 makes >= 50 tokens/s
    # (2x real time); doubling keeps the flow reruns (each over all tokens) to a few.
    first_block: int = 20          # tokens before the first flow run (0.8 s of speech -> 0.4 s of audio)
    block: int = 20                # tokens of the second block; each later block doubles ...
    max_block: int = 100           # ... up to this
    context_frames: int = HIFT_REACH_FRAMES   # re-vocoded left context of every vocoder call
    holdback_frames: int = HIFT_REACH_FRAMES  # right-edge frames whose audio waits for the next call
    max_tokens: int = MAX_NEW_TOKENS  # noise is drawn once for this many tokens (T3's limit)

    def __post_init__(self):
        if self.first_block < 1 or not 1 <= self.block <= self.max_block:
            raise ValueError("need first_block >= 1 and 1 <= block <= max_block")
        if self.context_frames < 0 or self.holdback_frames < 0:
            raise ValueError("context_frames and holdback_frames must be >= 0")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")


@dataclass(frozen=True)
class UtteranceNoise:
    """Every random input of one utterance, drawn once up front.

    `flow` (1, F, frames) is the CFM start over prompt + tokens; `source` covers the
    whole output (H harmonics x samples). Every decode of the utterance, partial or
    whole, uses a prefix of each, so shared frames see the same noise.
    """

    flow: Tensor
    source: SourceDraws

    @classmethod
    def sample(cls, n_feats: int, flow_frames: int, harmonics: int, samples: int,
               generator: torch.Generator | None = None) -> "UtteranceNoise":
        device = generator.device if generator is not None else torch.device("cpu")
        flow = torch.randn(1, n_feats, flow_frames, generator=generator, device=device)
        return cls(flow, SourceDraws.sample(1, harmonics, samples, generator))


class StreamingVocoder:
    """HiFT over a mel that grows at the end, returning each new stretch of audio once.

    Owns the committed mel and the f0 of every finished frame (so the sine phase runs on
    across calls). Invariant: the audio of frames [0, done) has been returned, and the
    pieces joined equal `hift.forward` on the whole mel with the same draws, up to float32
    phase rounding (and an edge error if holdback_frames < HIFT_REACH_FRAMES).
    """

    def __init__(self, hift: HiFTGenerator, draws: SourceDraws, config: StreamConfig | None = None):
        self.hift = hift
        self.draws = draws
        self.config = config or StreamConfig()
        self.samples_per_frame = hift.config.samples_per_frame
        self._mel = torch.zeros(hift.config.in_channels, 0)
        self._f0 = torch.zeros(0, dtype=torch.float64)  # Hz, one per finished frame
        self.done = 0                                    # finished frames
        self.closed = False

    @property
    def mel(self) -> Tensor:
        """(F, frames) every mel frame pushed so far."""
        return self._mel

    @property
    def f0(self) -> Tensor:
        """(done,) float64 Hz of every finished frame, as its audio was voiced."""
        return self._f0

    @torch.inference_mode()
    def push(self, mel: Tensor, final: bool = False) -> Tensor:
        """Append mel frames (F, n); return the audio that is now final (maybe empty).

        With `final` every frame is finished; nothing may be pushed afterwards.
        """
        if self.closed:
            raise RuntimeError("push after the final push")
        self.closed = final
        self._mel = torch.cat([self._mel.to(mel.device, mel.dtype), mel], dim=1)
        end = self._mel.shape[1]
        c = self.config
        target = end if final else end - c.holdback_frames
        if target <= self.done:
            return self._mel.new_zeros(0)
        start = max(0, self.done - c.context_frames)
        wav, f0 = self._vocode(start, end)
        spf = self.samples_per_frame
        piece = wav[(self.done - start) * spf:(target - start) * spf]
        self._f0 = torch.cat([self._f0, f0[self.done - start:target - start].double().cpu()])
        self.done = target
        return piece

    def _vocode(self, start: int, end: int) -> tuple[Tensor, Tensor]:
        """Waveform and the f0 used for mel frames [start, end) (start <= done)."""
        hift, spf = self.hift, self.samples_per_frame
        mel = self._mel[:, start:end][None]
        f0 = hift.f0_predictor(mel)[0]
        # Frames already finished keep the f0 they were voiced with: this call's f0 near its
        # left edge sees zero padding, and the source phase must match the audio already out.
        known = self._f0[start:self.done]
        f0 = torch.cat([known.to(f0.device, f0.dtype), f0[known.numel():]])
        harmonics = torch.arange(1, self.draws.phases.shape[-1] + 1, dtype=torch.float64)
        cycles = (harmonics * (self._f0[:start].sum() * spf / hift.config.sampling_rate)) % 1
        draws = SourceDraws(self.draws.phases, self.draws.noise[..., start * spf:end * spf])
        source, _ = hift.m_source(f0.repeat_interleave(spf)[None], draws, cycles[None])
        wav = hift.spec_to_wav(hift.decode(mel, source))[0]
        return wav, f0


class StreamingS3Gen:
    """Speech tokens in one at a time (`push`), audio pieces out; `finish` flushes the rest.

    Owns one utterance: the tokens so far, its noise (drawn at construction from
    `generator`, which is not touched afterwards), the latest flow mel and a
    `StreamingVocoder`. Accepts raw T3 output: ids >= 6561 are skipped and 6562 ends
    the stream (unlike `drop_invalid_tokens`, a start token does not drop the tokens
    before it: their audio may be out already). The 40 ms fade-in touches only the
    utterance's first samples.
    """

    def __init__(self, s3gen: S3Gen, ref: ReferenceEmbedding, generator: torch.Generator | None = None,
                 config: StreamConfig | None = None):
        self.s3gen, self.config = s3gen, config or StreamConfig()
        self.ref = ref.to(s3gen.flow.device)
        flow, hift = s3gen.flow, s3gen.mel2wav
        enc = flow.config.encoder
        self.lookahead_frames = enc.lookahead * enc.upsample
        self.frames_per_token = enc.upsample
        n_prompt, prompt_frames = ref.prompt_token.numel(), ref.prompt_feat.shape[0]
        flow_frames = enc.upsample * (n_prompt + self.config.max_tokens)
        noise = UtteranceNoise.sample(flow.config.n_feats, flow_frames, hift.config.nb_harmonics + 1,
                                      (flow_frames - prompt_frames) * hift.config.samples_per_frame, generator)
        dev = flow.device
        self.noise = UtteranceNoise(noise.flow.to(dev), SourceDraws(noise.source.phases.to(dev),
                                                                    noise.source.noise.to(dev)))
        self.vocoder = StreamingVocoder(hift, self.noise.source, self.config)
        self.tokens: list[int] = []
        self.stopped = False          # a stop token arrived: further tokens are ignored
        self._mel: Tensor | None = None
        self._mel_tokens = 0          # tokens the latest flow mel was computed from
        self._committed = 0           # mel frames handed to the vocoder
        self._next_emit = self.config.first_block
        self._block = self.config.block
        self._samples_out = 0
        self._finished = False

    def push(self, token: int) -> Tensor | None:
        """Take one token; return a new piece of audio (1-D, model device) or None."""
        token = int(token)
        if self._finished:
            raise RuntimeError("push after finish")
        if self.stopped or token >= SPEECH_CODEBOOK_SIZE:
            self.stopped = self.stopped or token == STOP_SPEECH_TOKEN
            return None
        if len(self.tokens) >= self.config.max_tokens:
            raise ValueError(f"more than max_tokens={self.config.max_tokens} speech tokens")
        self.tokens.append(token)
        if len(self.tokens) < self._next_emit:
            return None
        self._next_emit = len(self.tokens) + self._block
        self._block = min(2 * self._block, self.config.max_block)
        piece = self._emit(final=False)
        return piece if piece.numel() else None

    def finish(self) -> Tensor:
        """The rest of the audio (possibly empty); the stream is over."""
        if self._finished:
            return torch.zeros(0, device=self.s3gen.flow.device)
        self._finished = True
        if not self.tokens:
            return torch.zeros(0, device=self.s3gen.flow.device)
        return self._emit(final=True)

    @torch.inference_mode()
    def _emit(self, final: bool) -> Tensor:
        if self._mel_tokens != len(self.tokens):  # else the latest mel already saw every token
            n_frames = self.frames_per_token * (self.ref.prompt_token.numel() + len(self.tokens))
            tokens = torch.tensor(self.tokens, dtype=torch.long)
            self._mel = self.s3gen.flow.inference(tokens, self.ref.prompt_token, self.ref.prompt_feat,
                                                  self.ref.embedding, noise=self.noise.flow[..., :n_frames],
                                                  n_timesteps=self.s3gen.n_timesteps)
            self._mel_tokens = len(self.tokens)
        stable = self._mel.shape[1] if final else max(self._committed, self._mel.shape[1] - self.lookahead_frames)
        piece = self.vocoder.push(self._mel[:, self._committed:stable], final=final)
        self._committed = stable
        return self._fade_in(piece)

    def _fade_in(self, piece: Tensor) -> Tensor:
        envelope = fade_in_envelope().to(piece.device, piece.dtype)
        start = self._samples_out
        self._samples_out += piece.numel()
        if start >= envelope.numel() or not piece.numel():
            return piece
        n = min(piece.numel(), envelope.numel() - start)
        return torch.cat([piece[:n] * envelope[start:start + n], piece[n:]])
