"""S3Gen flow: speech tokens + reference prompt + x-vector -> 80-bin log-mel at 50 Hz.

token embedding -> upsampling conformer encoder (x2 in time) -> encoder_proj = mu;
the x-vector, L2-normalised, through spk_embed_affine_layer = spks; the prompt mel
padded with zeros = cond; then the CFM sampler generates the mel for prompt + new
tokens, and the prompt frames are cut off.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cfm import CFMConfig, ConditionalCFM
from ..constants import SPEECH_CODEBOOK_SIZE
from .conformer import EncoderConfig, UpsampleConformerEncoder
from .estimator import EstimatorConfig

COSINE_TIMESTEPS = 10   # Euler steps of the English decoder
MEANFLOW_TIMESTEPS = 2  # the distilled (meanflow) decoder's steps


@dataclass(frozen=True)
class FlowConfig:
    """Token vocabulary, x-vector width and the encoder/CFM configs; F (mel bins) comes from the estimator."""

    vocab_size: int = SPEECH_CODEBOOK_SIZE  # S3 speech tokens (3^8 FSQ codes)
    spk_embed_dim: int = 192      # CAMPPlus x-vector
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    cfm: CFMConfig = field(default_factory=CFMConfig)

    @property
    def n_feats(self) -> int:
        return self.cfm.estimator.n_feats

    @property
    def meanflow(self) -> bool:
        return self.cfm.estimator.meanflow

    @property
    def default_timesteps(self) -> int:
        return MEANFLOW_TIMESTEPS if self.meanflow else COSINE_TIMESTEPS

    @classmethod
    def turbo(cls) -> "FlowConfig":
        """The meanflow flow of Chatterbox-Turbo (`s3gen_meanflow.safetensors`)."""
        return cls(cfm=CFMConfig(estimator=EstimatorConfig(meanflow=True)))


@dataclass(frozen=True)
class FlowInputs:
    """What the sampler is conditioned on, for one utterance (batch of one, T = all frames)."""

    encoder_out: Tensor   # (1, T, D)
    mu: Tensor            # (1, F, T)
    spks: Tensor          # (1, F)
    cond: Tensor          # (1, F, T): prompt mel in the first prompt_frames frames, zeros after
    mask: Tensor          # (1, 1, T): all ones (nothing is padded)
    prompt_frames: int


class Flow(nn.Module):
    """Token-to-mel part of S3Gen (`flow.*` in s3gen.safetensors).

    Owns the token embedding, the conformer encoder, the two projections and the CFM
    decoder with its estimator. Does not own the reference embedding (tokens, mel and
    x-vector of the prompt come in) nor the noise policy beyond `noise`/`generator`.
    Output length: 2*(Tp + N) - Tm frames (= 2N when the prompt mel has 2*Tp frames).
    """

    def __init__(self, config: FlowConfig | None = None):
        super().__init__()
        config = config or FlowConfig()
        self.config = config
        self.input_embedding = nn.Embedding(config.vocab_size, config.encoder.d_model)
        self.spk_embed_affine_layer = nn.Linear(config.spk_embed_dim, config.n_feats)
        self.encoder = UpsampleConformerEncoder(config.encoder)
        self.encoder_proj = nn.Linear(config.encoder.d_model, config.n_feats)
        self.decoder = ConditionalCFM(config.cfm)

    @property
    def device(self) -> torch.device:
        return self.input_embedding.weight.device

    def initial_noise(self, n_frames: int, n_tokens: int, generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.float32) -> Tensor:
        """The sampler's start x(0), (1, F, n_frames), drawn as the reference draws it.

        English: one randn over all frames. Meanflow: first randn(1, F, 2N) for the N new
        tokens, then randn over all frames whose last 2N frames are replaced by the first draw.
        """
        device = generator.device if generator is not None else self.device
        shape = (1, self.config.n_feats, n_frames)
        if not self.config.meanflow:
            return torch.randn(shape, generator=generator, device=device, dtype=dtype)
        tail = torch.randn(1, self.config.n_feats, 2 * n_tokens, generator=generator, device=device, dtype=dtype)
        noise = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        noise[..., n_frames - tail.shape[-1]:] = tail
        return noise

    def prepare(self, speech_tokens: Tensor, prompt_token: Tensor, prompt_feat: Tensor,
                embedding: Tensor) -> FlowInputs:
        """Encode prompt + new tokens and build the sampler's conditioning."""
        dev, dtype = self.device, self.input_embedding.weight.dtype
        tokens = torch.cat([prompt_token.to(dev), speech_tokens.to(dev)]).long()[None]
        encoder_out = self.encoder(self.input_embedding(tokens))              # (1, T, D)
        mu = self.encoder_proj(encoder_out).transpose(1, 2)
        spks = self.spk_embed_affine_layer(F.normalize(embedding.to(dev, dtype).reshape(1, -1), dim=1))
        n_frames, prompt_frames = mu.shape[-1], prompt_feat.shape[0]
        if prompt_frames > n_frames:
            raise ValueError(f"prompt mel ({prompt_frames} frames) longer than prompt + tokens ({n_frames})")
        cond = torch.zeros_like(mu)
        cond[0, :, :prompt_frames] = prompt_feat.to(dev, dtype).T
        mask = torch.ones_like(mu[:, :1])
        return FlowInputs(encoder_out, mu, spks, cond, mask, prompt_frames)

    @torch.inference_mode()
    def inference(
        self,
        speech_tokens: Tensor,
        prompt_token: Tensor,
        prompt_feat: Tensor,
        embedding: Tensor,
        *,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        n_timesteps: int | None = None,
        cfg_rate: float | None = None,
    ) -> Tensor:
        """Tokens (N,), prompt tokens (Tp,), prompt mel (Tm, F), x-vector (192,) -> mel (F, 2(Tp+N) - Tm).

        The initial noise (F, 2(Tp+N)) covers the prompt frames too. It is `noise` when
        given, else drawn on the generator's device (so a CPU seed reproduces on any
        device) in the reference's order (`initial_noise`). `cfg_rate` overrides the
        configured guidance weight; `n_timesteps` defaults to 10 (meanflow: 2).
        """
        inputs = self.prepare(speech_tokens, prompt_token, prompt_feat, embedding)
        mu = inputs.mu
        if noise is None:
            noise = self.initial_noise(mu.shape[-1], speech_tokens.numel(), generator, mu.dtype)
        noise = noise.to(mu.device, mu.dtype).reshape(mu.shape)
        n_timesteps = self.config.default_timesteps if n_timesteps is None else n_timesteps
        mel = self.decoder(noise, mu, inputs.spks, inputs.cond, inputs.mask, n_timesteps, cfg_rate)
        return mel[0, :, inputs.prompt_frames:]
