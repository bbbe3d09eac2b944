"""T3-Turbo: text tokens + voice conditioning -> S3 speech tokens, on a GPT-2 medium backbone.

Shapes: L sequence, C channels (1024), V speech vocabulary (6563). One row, no guidance.
Input sequence: [speaker (1) | prompt speech tokens (<= 375) | text (GPT-2 ids) | START | t1 ...];
every input is an embedding and GPT-2 adds its own `wpe` row for each absolute position 0..L-1.
Decoding runs the backbone's blocks in `forward_cached` over a preallocated KV cache;
`forward` (the Hugging Face GPT2Model, no cache) is the oracle it is tested against.
Facts: chatterbox-spec.md §11.2 (reference: chatterbox-tts 0.1.7 `T3.inference_turbo`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2Model
from transformers.pytorch_utils import Conv1D

from .packed_linear import PackedLinear
from .sampling import FILTERED, apply_repetition_penalty, apply_temperature, top_k_filter, top_p_filter
from .constants import SPEECH_CODEBOOK_SIZE, START_SPEECH_TOKEN, STOP_SPEECH_TOKEN
from .t3 import T3Cond

S3GEN_SILENCE_TOKEN = 4299  # S3 token of silence; three are appended before S3Gen decodes
SILENCE_TOKENS_APPENDED = 3


@dataclass(frozen=True)
class T3TurboConfig:
    """Chatterbox-Turbo T3 (`t3_turbo_v1.safetensors`): GPT-2 medium, no perceiver, no emotion."""

    text_tokens_dict_size: int = 50276  # GPT-2's 50257 ids + 19 expression tags
    speech_tokens_dict_size: int = 6563  # codebook 6561 + start + stop
    speaker_embed_size: int = 256       # VoiceEncoder output
    speech_cond_prompt_len: int = 375   # 15 s of 25 Hz reference tokens
    # GPT-2 medium backbone
    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    n_positions: int = 8196             # rows of `tfmr.wpe`: the longest sequence T3 can read
    layer_norm_epsilon: float = 1e-5
    activation_function: str = "gelu_new"  # tanh approximation of GELU

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def gpt2_config(self) -> GPT2Config:
        return GPT2Config(
            vocab_size=self.text_tokens_dict_size,  # `wte` exists in the file but is never used
            n_positions=self.n_positions,
            n_embd=self.hidden_size,
            n_layer=self.num_hidden_layers,
            n_head=self.num_attention_heads,
            n_inner=None,                           # 4 * hidden
            activation_function=self.activation_function,
            layer_norm_epsilon=self.layer_norm_epsilon,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,  # inference only
            attn_implementation="sdpa",
        )


@dataclass(frozen=True)
class TurboSamplingParams:
    """Decoding parameters of one T3-Turbo generation, with the reference `generate` defaults.

    Processors run in the reference order: temperature (skipped at 0 or 1), top-k (skipped
    at <= 0), top-p (skipped at >= 1), then the repetition penalty (skipped at 1). There is
    no guidance and no min-p. `max_gen_len` counts the steps after the first token, so at
    most 1 + max_gen_len tokens are drawn. `greedy` takes the argmax of the processed
    probabilities instead of sampling (used to replay the reference).
    """

    temperature: float = 0.8
    top_k: int = 1000
    top_p: float = 0.95
    repetition_penalty: float = 1.2
    max_gen_len: int = 1000
    greedy: bool = False

    def __post_init__(self):
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if int(self.top_k) != self.top_k:
            raise ValueError(f"top_k must be an integer, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.max_gen_len < 0:
            raise ValueError(f"max_gen_len must be >= 0, got {self.max_gen_len}")

    def process(self, logits: torch.Tensor, seen_ids: torch.Tensor) -> torch.Tensor:
        """Raw logits (1, V) -> processed logits, in the reference order (see class doc)."""
        if self.temperature > 0:
            logits = apply_temperature(logits, self.temperature)
        if self.top_k > 0:
            logits = top_k_filter(logits, int(self.top_k))
        logits = top_p_filter(logits, self.top_p)
        return apply_repetition_penalty(logits, seen_ids, self.repetition_penalty)


def exponential_race(probs: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """One sample per row of `probs` (B, V) -> (B, 1): argmax(probs / draws), draws ~ Exp(1).

    This is how torch's CPU `multinomial(probs, 1)` samples (so with a generator seeded
    like the reference's global one it picks the same tokens); drawing q explicitly lets
    a recorded draw be replayed.
    """
    return (probs / draws).argmax(dim=-1, keepdim=True)


class TurboConditioningEncoder(nn.Module):
    """Projects the speaker embedding (`spkr_enc`); the prompt tokens pass through as embeddings."""

    def __init__(self, config: T3TurboConfig):
        super().__init__()
        self.spkr_enc = nn.Linear(config.speaker_embed_size, config.hidden_size)

    def forward(self, speaker_emb: torch.Tensor, prompt_emb: torch.Tensor) -> torch.Tensor:
        """(1, 256), (1, N, C) -> (1, 1 + N, C): [speaker, prompt embeddings]."""
        return torch.cat([self.spkr_enc(speaker_emb)[:, None], prompt_emb], dim=1)


class TurboKVCache:
    """Keys and values of every GPT-2 block for one generation, allocated once.

    keys, values: (layers, 1, heads, capacity, head_dim), filled in place for positions
    0..length-1.
    """

    def __init__(self, t3: "T3Turbo", capacity: int):
        c = t3.config
        shape = (c.num_hidden_layers, 1, c.num_attention_heads, capacity, c.head_dim)
        self.keys = torch.empty(shape, device=t3.device, dtype=t3.dtype)
        self.values = torch.empty(shape, device=t3.device, dtype=t3.dtype)
        self.length = 0


class PackedConv1D(PackedLinear):
    """GPT-2's `Conv1D` with its weight in oneDNN's packed layout (CPU float32 decoding).

    Each decoding step reads every backbone weight once; the packed layout reads them about
    twice as fast (models/packed_linear.py). `state_dict` keeps the checkpoint's [in, out]
    weight, so a packed model saves and loads like the original.
    """

    @classmethod
    def from_conv1d(cls, layer: nn.Module) -> "PackedConv1D":
        return cls(layer.weight.detach().T.contiguous(), layer.bias)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "weight"] = self.weight.T.contiguous()
        destination[prefix + "bias"] = self.bias

    def _load_from_state_dict(self, state_dict, prefix, *args):
        if prefix + "weight" in state_dict:
            state_dict = {**state_dict, prefix + "weight": state_dict[prefix + "weight"].T}
        super()._load_from_state_dict(state_dict, prefix, *args)


def pack_conv1d_layers(model: "T3Turbo") -> int:
    """Pack every float32 CPU Conv1D of the backbone; returns how many. Same arithmetic in
    float32, additions in another order (differences ~1e-6 relative)."""
    count = 0
    for block in model.tfmr.h:
        for owner, name in ((block.attn, "c_attn"), (block.attn, "c_proj"), (block.mlp, "c_fc"),
                            (block.mlp, "c_proj")):
            layer = getattr(owner, name)
            if isinstance(layer, PackedLinear) or layer.weight.dtype != torch.float32 or not layer.weight.is_cpu:
                continue
            setattr(owner, name, PackedConv1D.from_conv1d(layer))
            count += 1
    return count


def _conv1d(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """GPT-2's `Conv1D` (weight stored [in, out]) applied to (B, T, in); a layer that replaced
    it (packed for oneDNN, int8) is called as it is."""
    if not isinstance(layer, Conv1D):
        return layer(x)
    return torch.addmm(layer.bias, x.reshape(-1, x.shape[-1]), layer.weight).view(*x.shape[:-1], -1)


class T3Turbo(nn.Module):
    """Token-to-token model of Chatterbox-Turbo: text + voice -> speech tokens, one at a time.

    Owns the GPT-2 backbone (`tfmr`; its token table `wte` is deleted after loading, as the
    reference does), the speaker projection, text/speech embeddings and the heads. Attribute
    names are the checkpoint keys. Does not tokenise text nor make audio. Device and dtype
    are those of the loaded weights.
    """

    def __init__(self, config: T3TurboConfig | None = None):
        super().__init__()
        self.config = config = config or T3TurboConfig()
        c = config.hidden_size
        self.tfmr = GPT2Model(config.gpt2_config())
        self.cond_enc = TurboConditioningEncoder(config)
        self.text_emb = nn.Embedding(config.text_tokens_dict_size, c)
        self.speech_emb = nn.Embedding(config.speech_tokens_dict_size, c)
        self.text_head = nn.Linear(c, config.text_tokens_dict_size, bias=False)  # unused at inference
        self.speech_head = nn.Linear(c, config.speech_tokens_dict_size, bias=True)
        # A build's replacement of `forward_cached`'s blocks (int8: models/fast_modes.py), else None.
        self.fast_step: Callable[[torch.Tensor, TurboKVCache], torch.Tensor] | None = None

    @property
    def device(self) -> torch.device:
        return self.speech_emb.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.speech_emb.weight.dtype

    def drop_token_table(self) -> None:
        """Delete `tfmr.wte` (50276 x 1024, never read: every input is an embedding)."""
        if hasattr(self.tfmr, "wte"):
            del self.tfmr.wte

    # --- inputs ---------------------------------------------------------------------

    def _check_text(self, text_tokens: Sequence[int] | torch.Tensor) -> torch.Tensor:
        text_tokens = torch.as_tensor(text_tokens, dtype=torch.long, device=self.device).reshape(-1)
        if len(text_tokens) == 0:
            raise ValueError("no text tokens: there is nothing to speak")
        if int(text_tokens.min()) < 0 or int(text_tokens.max()) >= self.config.text_tokens_dict_size:
            raise ValueError(f"text token ids must lie in [0, {self.config.text_tokens_dict_size})")
        return text_tokens

    def conditioning(self, cond: T3Cond) -> torch.Tensor:
        """[spkr_enc(speaker), speech_emb(prompt tokens)] -> (1, 1 + N, C); no position table."""
        speaker = cond.speaker_emb.to(self.device, self.dtype)
        prompt = self.speech_emb(cond.cond_prompt_speech_tokens.to(self.device))
        return self.cond_enc(speaker, prompt)

    def build_inputs(self, cond: T3Cond, text_tokens: Sequence[int] | torch.Tensor,
                     speech_tokens: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Input embeddings (1, len_cond + n_text + 1 + n_speech, C): one START token, then
        `speech_tokens` (already generated, for teacher forcing)."""
        text_tokens = self._check_text(text_tokens)
        speech = torch.tensor([START_SPEECH_TOKEN], device=self.device)
        if speech_tokens is not None:
            more = torch.as_tensor(speech_tokens, dtype=torch.long, device=self.device).reshape(-1)
            speech = torch.cat([speech, more])
        parts = [self.conditioning(cond), self.text_emb(text_tokens)[None], self.speech_emb(speech)[None]]
        return torch.cat(parts, dim=1)

    def forward(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Full causal pass without cache: (1, L, C) -> hidden states after `ln_f` (1, L, C)."""
        return self.tfmr(inputs_embeds=inputs_embeds, use_cache=False).last_hidden_state

    # --- decoding -------------------------------------------------------------------

    def forward_cached(self, inputs_embeds: torch.Tensor, cache: TurboKVCache) -> torch.Tensor:
        """The backbone over (1, T, C) at positions cache.length.., extending the cache (through
        the build's `fast_step` when it has one).

        Same blocks and weights as `forward` (the oracle), run step by step: T > 1 only for
        the prefill (from position 0, causal), T = 1 for a decoding step. GPT-2 block:
        x += c_proj(attn(c_attn(ln_1(x)))); x += c_proj(gelu_tanh(c_fc(ln_2(x)))); then ln_f.
        """
        tfmr = self.tfmr
        batch, length, channels = inputs_embeds.shape
        start, end = cache.length, cache.length + length
        if length > 1 and start:
            raise ValueError("only the prefill feeds several positions, and from position 0")
        if end > cache.keys.shape[3]:
            raise ValueError(f"sequence of {end} positions exceeds the cache ({cache.keys.shape[3]})")
        if self.fast_step is not None:
            return self.fast_step(inputs_embeds, cache)
        heads, head_dim = self.config.num_attention_heads, self.config.head_dim
        x = inputs_embeds + tfmr.wpe.weight[start:end]
        for i, block in enumerate(tfmr.h):
            h = block.ln_1(x)
            q, k, v = _conv1d(block.attn.c_attn, h).split(channels, dim=-1)
            q, k, v = (t.view(batch, length, heads, head_dim).transpose(1, 2) for t in (q, k, v))
            cache.keys[i, :, :, start:end] = k
            cache.values[i, :, :, start:end] = v
            a = F.scaled_dot_product_attention(q, cache.keys[i, :, :, :end], cache.values[i, :, :, :end],
                                               is_causal=length > 1)
            x = x + _conv1d(block.attn.c_proj, a.transpose(1, 2).reshape(batch, length, channels))
            h = F.gelu(_conv1d(block.mlp.c_fc, block.ln_2(x)), approximate="tanh")
            x = x + _conv1d(block.mlp.c_proj, h)
        cache.length = end
        return tfmr.ln_f(x)

    @torch.inference_mode()
    def stream_tokens(
        self,
        cond: T3Cond,
        text_tokens: Sequence[int] | torch.Tensor,
        params: TurboSamplingParams | None = None,
        generator: torch.Generator | None = None,
        on_logits: Callable[[int, torch.Tensor], None] | None = None,
        draws: Callable[[int], torch.Tensor] | None = None,
        use_kv_cache: bool = True,
    ) -> Iterator[int]:
        """Yield speech tokens one by one; the last is STOP_SPEECH_TOKEN if it was drawn.

        The reference loop: the first token comes from the prefill and is never checked for
        the stop token; then at most `max_gen_len` more steps. The repetition penalty sees
        [START] at the first step and every generated token afterwards. Sampling is
        `exponential_race` with Exp(1) draws from `generator` (one (1, V) draw per step),
        or from `draws(step)` when given (a recorded run). `on_logits(step, logits)` sees the
        raw logits (1, V). `use_kv_cache=False` recomputes the whole sequence every step
        with `forward` (the slow oracle for tests).
        """
        p = params or TurboSamplingParams()
        embeds = self.build_inputs(cond, text_tokens)
        capacity = embeds.shape[1] + p.max_gen_len
        if capacity > self.config.n_positions:
            raise ValueError(f"prompt ({embeds.shape[1]} positions) + {p.max_gen_len} tokens exceed the "
                             f"{self.config.n_positions} positions GPT-2 can read; shorten the text")
        if use_kv_cache:
            cache = TurboKVCache(self, capacity)
            hidden = self.forward_cached(embeds, cache)
        else:
            hidden = self.forward(embeds)
        seen = torch.full((1, p.max_gen_len + 1), START_SPEECH_TOKEN, dtype=torch.long, device=self.device)

        for step in range(p.max_gen_len + 1):
            logits = self.speech_head(hidden[:, -1]).float()  # (1, V); sampling in float32
            if on_logits is not None:
                on_logits(step, logits)
            # The penalty's history: [START] at step 0, then the generated tokens only.
            history = seen[:, :1] if step == 0 else seen[:, 1 : step + 1]
            logits = p.process(logits, history)
            if bool((logits == FILTERED).all()):
                return  # nothing left to draw (the reference stops here too)
            probs = logits.softmax(dim=-1)
            if p.greedy:
                token = probs.argmax(dim=-1, keepdim=True)
            else:
                q = draws(step).to(probs) if draws is not None else \
                    torch.empty_like(probs).exponential_(1.0, generator=generator)
                token = exponential_race(probs, q.reshape(probs.shape))
            seen[:, step + 1 : step + 2] = token
            token_id = int(token)
            yield token_id
            if (step > 0 and token_id == STOP_SPEECH_TOKEN) or step == p.max_gen_len:
                return
            step_embeds = self.speech_emb(token)  # (1, 1, C); GPT-2 adds the position itself
            if use_kv_cache:
                hidden = self.forward_cached(step_embeds, cache)
            else:
                embeds = torch.cat([embeds, step_embeds], dim=1)
                hidden = self.forward(embeds)

    def generate(self, cond: T3Cond, text_tokens: Sequence[int] | torch.Tensor,
                 params: TurboSamplingParams | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """What the reference `inference_turbo` returns: every drawn token, a final stop removed."""
        tokens = list(self.stream_tokens(cond, text_tokens, params, generator))
        if tokens and tokens[-1] == STOP_SPEECH_TOKEN:
            tokens = tokens[:-1]
        return torch.tensor(tokens, dtype=torch.long)


def s3gen_tokens(t3_tokens: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """T3-Turbo output -> what S3Gen decodes: codebook ids only (a sampled START or STOP is
    dropped wherever it is), then three silence tokens, as the reference `generate` does."""
    tokens = torch.as_tensor(t3_tokens, dtype=torch.long).reshape(-1)
    tokens = tokens[tokens < SPEECH_CODEBOOK_SIZE]
    silence = torch.full((SILENCE_TOKENS_APPENDED,), S3GEN_SILENCE_TOKEN, dtype=torch.long, device=tokens.device)
    return torch.cat([tokens, silence])
