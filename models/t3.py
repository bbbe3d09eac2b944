"""T3: text tokens + voice conditioning -> S3 speech tokens (25 Hz), on a Llama backbone.

Shapes: B batch (2 with classifier-free guidance: row 0 conditional, row 1 without text),
L sequence, C channels (1024), V speech vocabulary (8194).
Input sequence of one row: [cond (34) | SOT text EOT (+ learned text positions) | BOS | BOS | t1 ...]
where every BOS sits at speech position 0 and generated token k at speech position k.
Decoding runs the backbone's layers in `forward_cached` over a preallocated KV cache;
`forward` (the Hugging Face LlamaModel, no cache) is what tests/t3_oracle.py's uncached
loop, the oracle of `stream_tokens`, runs instead.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaModel
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from .constants import (SPEECH_CODEBOOK_SIZE, START_SPEECH_TOKEN, START_TEXT_TOKEN, STOP_SPEECH_TOKEN,
                        STOP_TEXT_TOKEN)
from .perceiver import Perceiver, PerceiverConfig
from .sampling import (
    SamplingParams,
    apply_repetition_penalty,
    apply_temperature,
    min_p_filter,
    sample_token,
    top_p_filter,
)

CPU_WEIGHT_BLOCK_BYTES = 2 * 2**20  # weight slice a CPU decoding step multiplies at once (stays in cache)


@dataclass(frozen=True)
class T3Config:
    """English T3 ("Llama_520M" backbone). `text_tokens_dict_size` follows the checkpoint."""

    text_tokens_dict_size: int = 704
    max_text_tokens: int = 2048
    speech_tokens_dict_size: int = 8194  # codebook + start/stop + unused ids
    max_speech_tokens: int = 4096
    speaker_embed_size: int = 256  # VoiceEncoder output
    perceiver_queries: int = 32
    perceiver_heads: int = 4
    # Llama backbone
    hidden_size: int = 1024
    num_hidden_layers: int = 30
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 131072
    rope_theta: float = 500_000.0
    rope_factor: float = 8.0  # Llama-3 RoPE scaling
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_position_embeddings: int = 8192
    llama_vocab_size: int = 8  # dummy: the backbone only ever receives embeddings

    @property
    def text_positions(self) -> int:
        return self.max_text_tokens + 2  # room for SOT and EOT: 2050 rows

    @property
    def speech_positions(self) -> int:
        return self.max_speech_tokens + 4  # 4100 rows, as in the checkpoint

    @property
    def len_cond(self) -> int:
        return 1 + self.perceiver_queries + 1  # speaker, prompt summary, emotion

    def perceiver_config(self) -> PerceiverConfig:
        return PerceiverConfig(self.perceiver_queries, self.hidden_size, self.perceiver_heads)

    def llama_config(self) -> LlamaConfig:
        # transformers 5 reads RoPE settings (theta included) from `rope_parameters` only.
        rope = dict(
            rope_type="llama3",
            rope_theta=self.rope_theta,
            factor=self.rope_factor,
            low_freq_factor=self.rope_low_freq_factor,
            high_freq_factor=self.rope_high_freq_factor,
            original_max_position_embeddings=self.rope_original_max_position_embeddings,
        )
        return LlamaConfig(
            vocab_size=self.llama_vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            hidden_act="silu",
            rms_norm_eps=self.rms_norm_eps,
            max_position_embeddings=self.max_position_embeddings,
            rope_parameters=rope,
            attention_bias=False,
            mlp_bias=False,
            tie_word_embeddings=False,
            attn_implementation="sdpa",
        )


@dataclass(frozen=True)
class T3Cond:
    """Voice conditioning for T3: who speaks (speaker_emb, prompt tokens) and how much emotion.

    speaker_emb (1, 256) VoiceEncoder embedding; cond_prompt_speech_tokens (1, N) int64 S3
    tokens of the reference (N <= 150, 6 s); emotion_adv is the exaggeration scalar.
    Use `dataclasses.replace(cond, emotion_adv=x)` to change only the exaggeration.
    """

    speaker_emb: torch.Tensor
    cond_prompt_speech_tokens: torch.Tensor
    emotion_adv: float = 0.5

    def __post_init__(self):
        if self.speaker_emb.dim() != 2 or self.speaker_emb.shape[0] != 1:
            raise ValueError(f"speaker_emb must be (1, D), got {tuple(self.speaker_emb.shape)}")
        tokens = self.cond_prompt_speech_tokens
        if tokens.dim() != 2 or tokens.shape[0] != 1 or tokens.shape[1] == 0 or tokens.is_floating_point():
            raise ValueError(f"cond_prompt_speech_tokens must be integer (1, N>0), got {tuple(tokens.shape)}")


class LearnedPositionEmbedding(nn.Module):
    """A table of learned absolute position vectors (`emb`), added to token embeddings."""

    def __init__(self, num_positions: int, dim: int):
        super().__init__()
        self.emb = nn.Embedding(num_positions, dim)

    def forward(self, start: int, length: int) -> torch.Tensor:
        """Vectors of positions start .. start+length-1 -> (length, C)."""
        return self.emb(torch.arange(start, start + length, device=self.emb.weight.device))


class ConditioningEncoder(nn.Module):
    """Turns a voice (speaker embedding, embedded prompt, exaggeration) into 34 vectors.

    Order along time: speaker projection (1), perceiver summary of the prompt (32),
    emotion vector (1). Owns no token embeddings: the prompt arrives embedded by T3.
    """

    def __init__(self, config: T3Config):
        super().__init__()
        self.spkr_enc = nn.Linear(config.speaker_embed_size, config.hidden_size)
        self.emotion_adv_fc = nn.Linear(1, config.hidden_size, bias=False)
        self.perceiver = Perceiver(config.perceiver_config())

    def forward(self, speaker_emb: torch.Tensor, prompt_emb: torch.Tensor, exaggeration: float) -> torch.Tensor:
        """(1, 256), (1, N, C), scalar -> (1, 34, C)."""
        speaker = self.spkr_enc(speaker_emb)[:, None]  # (1, 1, C)
        prompt = self.perceiver(prompt_emb)  # (1, 32, C)
        w = self.emotion_adv_fc.weight
        emotion = self.emotion_adv_fc(torch.full((1, 1, 1), float(exaggeration), device=w.device, dtype=w.dtype))
        return torch.cat([speaker, prompt, emotion], dim=1)


class KVCache:
    """Keys and values of every backbone layer for one generation, allocated once.

    keys, values: (layers, B, heads, capacity, head_dim), filled in place for positions
    0..length-1 (no per-step concatenation). cos, sin: (capacity, head_dim) RoPE tables of
    every position the generation can reach, computed once.
    """

    def __init__(self, t3: "T3", batch: int, capacity: int):
        config = t3.tfmr.config
        head_dim = config.hidden_size // config.num_attention_heads
        shape = (config.num_hidden_layers, batch, config.num_attention_heads, capacity, head_dim)
        self.keys = torch.empty(shape, device=t3.device, dtype=t3.dtype)
        self.values = torch.empty(shape, device=t3.device, dtype=t3.dtype)
        positions = torch.arange(capacity, device=t3.device)[None]
        cos, sin = t3.tfmr.rotary_emb(self.keys, positions)
        self.cos, self.sin = cos[0], sin[0]
        self.length = 0


def _projections(x: torch.Tensor, *layers: nn.Module) -> Sequence[torch.Tensor]:
    """`_linear(layer, x)` of each layer; layers that a build made slices of one fused layer
    (they read the same input: q/k/v, gate/up; float32 packed groups, int8) in one call of it,
    with the same numbers. A slice has `group` (the fused layer, with `sizes` and `split`)
    and `start`."""
    group = getattr(layers[0], "group", None)
    if group is not None and [(getattr(layer, "group", None), getattr(layer, "start", None)) for layer in layers] \
            == [(group, start) for start in itertools.accumulate([0, *group.sizes[:-1]])]:
        return group.split(x)
    return [_linear(layer, x) for layer in layers]


def _linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)` for x (B, T, C); a float32 decoding step on CPU as matrix-vector products.

    Loading packs these layers for oneDNN (models/packed_linear.py, faster again); this is
    the path of plain layers, e.g. on a torch build without oneDNN. For 2 rows, MKL's
    float32 GEMM packs the whole weight first and is slower than matrix-vector products
    (bench/README.md). Done block by block, the second row's product finds the block in
    cache, so the weight is read from memory about once. Other dtypes, quantized layers and
    the prefill are faster whole; autograd (never needed for decoding) cannot write into `out`.
    """
    batch, length = x.shape[:2]
    cpu_float32_step = length == 1 and batch > 1 and x.is_cpu and x.dtype == torch.float32
    if not (cpu_float32_step and isinstance(layer, nn.Linear)) or torch.is_grad_enabled():
        return layer(x)
    weight = layer.weight
    block = max(1, CPU_WEIGHT_BLOCK_BYTES // (weight.shape[1] * weight.element_size()))
    rows = x.reshape(batch, -1)
    out = torch.empty(batch, weight.shape[0], dtype=x.dtype)
    for start in range(0, weight.shape[0], block):
        for b in range(batch):
            torch.mv(weight[start : start + block], rows[b], out=out[b, start : start + block])
    if layer.bias is not None:
        out += layer.bias
    return out[:, None]


class T3(nn.Module):
    """Token-to-token model: text + voice conditioning -> speech tokens, one at a time.

    Owns the Llama backbone (`tfmr`, its own token embedding unused), the conditioning
    encoder, text/speech embeddings with learned positions and the heads. Attribute names
    are the checkpoint keys. Does not tokenise text nor make audio. Device and dtype are
    those of the loaded weights.
    """

    def __init__(self, config: T3Config):
        super().__init__()
        self.config = config
        c = config.hidden_size
        self.tfmr = LlamaModel(config.llama_config())
        self.cond_enc = ConditioningEncoder(config)
        self.text_emb = nn.Embedding(config.text_tokens_dict_size, c)
        self.speech_emb = nn.Embedding(config.speech_tokens_dict_size, c)
        self.text_pos_emb = LearnedPositionEmbedding(config.text_positions, c)
        self.speech_pos_emb = LearnedPositionEmbedding(config.speech_positions, c)
        self.text_head = nn.Linear(c, config.text_tokens_dict_size, bias=False)  # unused at inference
        self.speech_head = nn.Linear(c, config.speech_tokens_dict_size, bias=False)
        # A decoding step set once when the model is built with a speed option
        # (models/fast_modes.py: int8, CUDA graph, compile); None runs `layers_cached`.
        self.fast_step: Callable[[torch.Tensor, KVCache], torch.Tensor] | None = None

    @property
    def device(self) -> torch.device:
        return self.speech_emb.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.speech_emb.weight.dtype

    # --- inputs ---------------------------------------------------------------------

    def frame_text(self, token_ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Tokenizer ids -> (n+2,) int64 with SOT/EOT, as T3 consumes them."""
        ids = torch.as_tensor(token_ids, dtype=torch.long).reshape(-1)
        sot, eot = ids.new_tensor([START_TEXT_TOKEN]), ids.new_tensor([STOP_TEXT_TOKEN])
        return torch.cat([sot, ids, eot]).to(self.device)

    def _check_text(self, text_tokens: torch.Tensor) -> torch.Tensor:
        text_tokens = torch.as_tensor(text_tokens, dtype=torch.long, device=self.device)
        if text_tokens.dim() != 1 or len(text_tokens) < 2:
            raise ValueError(f"text_tokens must be 1-D with SOT/EOT, got shape {tuple(text_tokens.shape)}")
        if text_tokens[0] != START_TEXT_TOKEN or text_tokens[-1] != STOP_TEXT_TOKEN:
            raise ValueError(f"text_tokens must start with {START_TEXT_TOKEN} and end with {STOP_TEXT_TOKEN}")
        if len(text_tokens) > self.config.text_positions:
            raise ValueError(
                f"text too long: {len(text_tokens) - 2} tokens, T3 reads at most {self.config.max_text_tokens}; "
                "split the text into shorter pieces"
            )
        if int(text_tokens.max()) >= self.config.text_tokens_dict_size:
            raise ValueError(f"text token id {int(text_tokens.max())} outside the T3 text vocabulary")
        return text_tokens

    def prompt_embeds(self, prompt_tokens: torch.Tensor) -> torch.Tensor:
        """(1, N) speech tokens -> (1, N, C) embeddings with speech positions 0..N-1."""
        prompt_tokens = prompt_tokens.to(self.device)
        return self.speech_emb(prompt_tokens) + self.speech_pos_emb(0, prompt_tokens.shape[1])

    def conditioning(self, cond: T3Cond) -> torch.Tensor:
        """The 34 conditioning vectors of a voice -> (1, 34, C)."""
        speaker = cond.speaker_emb.to(self.device, self.dtype)
        return self.cond_enc(speaker, self.prompt_embeds(cond.cond_prompt_speech_tokens), cond.emotion_adv)

    def build_inputs(
        self,
        cond: T3Cond,
        text_tokens: torch.Tensor,
        with_cfg_row: bool,
        speech_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Input embeddings (B, 34 + n_text + 2 + n_speech, C), B = 2 if `with_cfg_row`.

        Row 1 (CFG) has its text token embeddings zeroed but keeps the text positions.
        `speech_tokens` (tokens already generated, t1.. at positions 1..) are appended
        after the two start tokens, for teacher forcing.
        """
        text_tokens = self._check_text(text_tokens)
        batch = 2 if with_cfg_row else 1
        text = self.text_emb(text_tokens).unsqueeze(0).repeat(batch, 1, 1)
        if with_cfg_row:
            text[1] = 0
        text = text + self.text_pos_emb(0, len(text_tokens))
        # The reference appends the start token twice, both at position 0 (see module doc).
        bos = self.speech_emb.weight[START_SPEECH_TOKEN] + self.speech_pos_emb(0, 1)  # (1, C)
        parts = [self.conditioning(cond).expand(batch, -1, -1), text, bos.expand(batch, 2, -1)]
        if speech_tokens is not None:
            speech_tokens = torch.as_tensor(speech_tokens, dtype=torch.long, device=self.device).reshape(-1)
            speech = self.speech_emb(speech_tokens) + self.speech_pos_emb(1, len(speech_tokens))
            parts.append(speech.expand(batch, -1, -1))
        return torch.cat(parts, dim=1)

    def forward(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Full causal pass without cache: (B, L, C) -> final-normed hidden states (B, L, C)."""
        return self.tfmr(inputs_embeds=inputs_embeds, use_cache=False).last_hidden_state

    # --- decoding -------------------------------------------------------------------

    def forward_cached(self, inputs_embeds: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """The backbone over (B, T, C) at positions cache.length.., extending the cache: the
        build's `fast_step` if it has one, else `layers_cached`."""
        if self.fast_step is not None:
            return self.fast_step(inputs_embeds, cache)
        return self.layers_cached(inputs_embeds, cache)

    def layers_cached(self, inputs_embeds: torch.Tensor, cache: KVCache,
                      position: torch.Tensor | None = None) -> torch.Tensor:
        """The backbone over (B, T, C) at positions cache.length.., extending the cache.

        Same layers and weights as `forward` (the oracle), run step by step: T > 1 only
        for the prefill (from position 0, causal), T = 1 for a decoding step.
        Returns final-normed hidden states (B, T, C).

        `position` (a 0-d int64 tensor on the model's device, T = 1) runs a decoding step at
        that position instead of cache.length, attending over the whole capacity with the
        slots after it masked; cache.length is then the caller's to advance. Every shape and
        address is the same from step to step, as a CUDA graph needs (fast mode `cuda_graph`).
        The masked slots must hold finite numbers (a NaN times a zero weight is NaN).
        A (B,) `position` gives each row its own: its RoPE angle, cache slot and visible
        slots (batched decoding of unrelated requests, models/t3_batching.py).
        """
        x = inputs_embeds
        batch, length, channels = x.shape
        start, end = cache.length, cache.length + length
        if position is None:
            if length > 1 and start:
                raise ValueError("only the prefill feeds several positions, and from position 0")
            cos, sin = cache.cos[None, start:end], cache.sin[None, start:end]
            visible = None
        else:
            if length != 1:
                raise ValueError("a step at a given position feeds one position")
            slots = torch.arange(cache.keys.shape[3], device=x.device)
            if position.dim() == 0:
                slot = position.reshape(1)
                cos, sin = cache.cos.index_select(0, slot)[None], cache.sin.index_select(0, slot)[None]
                visible = (slots <= position)[None]  # (T=1, capacity)
            else:
                if position.shape != (batch,):
                    raise ValueError(f"position must be 0-d or ({batch},), got {tuple(position.shape)}")
                rows = torch.arange(batch, device=x.device)
                cos, sin = cache.cos.index_select(0, position)[:, None], cache.sin.index_select(0, position)[:, None]
                visible = (slots[None] <= position[:, None])[:, None, None]  # (B, 1, T=1, capacity)
        for i, layer in enumerate(self.tfmr.layers):
            attn, mlp = layer.self_attn, layer.mlp
            h = layer.input_layernorm(x)
            q, k, v = [t.view(batch, length, -1, attn.head_dim).transpose(1, 2)
                       for t in _projections(h, attn.q_proj, attn.k_proj, attn.v_proj)]  # (B, heads, T, head_dim)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            if visible is None:
                cache.keys[i, :, :, start:end] = k
                cache.values[i, :, :, start:end] = v
                keys, values = cache.keys[i, :, :, :end], cache.values[i, :, :, :end]
            elif position.dim() == 0:
                cache.keys[i].index_copy_(2, slot, k)
                cache.values[i].index_copy_(2, slot, v)
                keys, values = cache.keys[i], cache.values[i]
            else:  # row b writes its slot position[b]
                cache.keys[i][rows, :, position] = k[:, :, 0]
                cache.values[i][rows, :, position] = v[:, :, 0]
                keys, values = cache.keys[i], cache.values[i]
            a = F.scaled_dot_product_attention(q, keys, values, attn_mask=visible,
                                               is_causal=length > 1, scale=attn.scaling)
            x = x + _linear(attn.o_proj, a.transpose(1, 2).reshape(batch, length, channels))
            h = layer.post_attention_layernorm(x)
            gate, up = _projections(h, mlp.gate_proj, mlp.up_proj)
            x = x + _linear(mlp.down_proj, mlp.act_fn(gate) * up)
        if position is None:
            cache.length = end
        return self.tfmr.norm(x)

    def next_token(self, hidden: torch.Tensor, seen: torch.Tensor, p: SamplingParams,
                   generator: torch.Generator | None, step: int = 0,
                   on_logits: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
        """One decoding step's token from the last hidden state of each row (B, 1, C).

        Guidance (row 0 conditional, row 1 without text: cond + w * (cond - uncond)), then
        the reference's processors in order: repetition penalty over `seen` (1, n) (the
        start token included), temperature, min-p, top-p, and a draw from `generator`
        (argmax when `p.greedy`). `on_logits(step, logits)` sees the guided logits (1, V)
        before any processing. Returns the token (1, 1) on the model's device.
        """
        logits = _linear(self.speech_head, hidden)[:, 0].float()  # (B, V); sampling in float32
        if p.cfg_weight > 0:
            cond_logits, uncond_logits = logits[0:1], logits[1:2]
            logits = cond_logits + p.cfg_weight * (cond_logits - uncond_logits)
        if on_logits is not None:
            on_logits(step, logits)
        logits = apply_repetition_penalty(logits, seen, p.repetition_penalty)
        logits = apply_temperature(logits, p.temperature)
        logits = min_p_filter(logits, p.min_p)
        logits = top_p_filter(logits, p.top_p)
        return sample_token(logits.softmax(dim=-1), generator, greedy=p.greedy)

    @torch.inference_mode()
    def stream_tokens(
        self,
        cond: T3Cond,
        text_tokens: torch.Tensor,
        params: SamplingParams | None = None,
        generator: torch.Generator | None = None,
        on_logits: Callable[[int, torch.Tensor], None] | None = None,
        run_ahead: bool | None = None,
    ) -> Iterator[int]:
        """Yield speech tokens one by one; the last is STOP_SPEECH_TOKEN if it was produced.

        Prefill over the whole prompt into a KV cache allocated once, then one step per
        token (`next_token`: guidance and sampling), stopping after the stop token or
        `max_new_tokens`. `on_logits` is `next_token`'s. `run_ahead` (default: on a CUDA
        device) starts each next step before the token is read back, so that the GPU never
        waits for the host; the step after a stop token is then computed for nothing. Same
        tokens either way. tests/t3_oracle.py holds the uncached loop this one is tested against.
        """
        p = params or SamplingParams()
        if p.max_new_tokens > self.config.speech_positions:
            raise ValueError(f"max_new_tokens {p.max_new_tokens} exceeds {self.config.speech_positions} positions")
        run_ahead = self.device.type == "cuda" if run_ahead is None else run_ahead
        embeds = self.build_inputs(cond, text_tokens, with_cfg_row=p.cfg_weight > 0)
        batch, prompt_length = embeds.shape[:2]
        # The last generated token is never fed back, hence the capacity.
        cache = KVCache(self, batch, capacity=prompt_length + p.max_new_tokens - 1)
        seen = torch.full((1, p.max_new_tokens + 1), START_SPEECH_TOKEN, dtype=torch.long, device=self.device)
        positions = self.speech_pos_emb.emb.weight

        hidden = self.forward_cached(embeds, cache)[:, -1:]  # prefill
        for step in range(p.max_new_tokens):
            token = self.next_token(hidden, seen[:, : step + 1], p, generator, step, on_logits)  # (1, 1)
            seen[:, step + 1 : step + 2] = token
            last = step + 1 == p.max_new_tokens
            # Generated token k sits at speech position k; both rows get it.
            step_embeds = (self.speech_emb(token) + positions[step + 1]).expand(batch, -1, -1)  # (B, 1, C)

            # The one host transfer of a step: the caller streams ints (and we check the stop).
            if run_ahead and not last:
                host = token.to("cpu", non_blocking=True)  # queued before the next step's kernels
                copied = torch.cuda.Event() if token.is_cuda else None
                if copied is not None:
                    copied.record()
                hidden = self.forward_cached(step_embeds, cache)
                if copied is not None:
                    copied.synchronize()  # this token only, not the step just started
                token_id = int(host)
            else:
                token_id = int(token)
            yield token_id
            if token_id == STOP_SPEECH_TOKEN or last:
                return
            if not run_ahead:
                hidden = self.forward_cached(step_embeds, cache)


def drop_invalid_tokens(tokens: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """T3 output -> the ids S3Gen can read (1-D int64; may be empty).

    After the first start token if there is one, before the first stop token, and then
    only codebook ids (< 6561).
    """
    tokens = torch.as_tensor(tokens, dtype=torch.long).reshape(-1)
    starts = (tokens == START_SPEECH_TOKEN).nonzero()
    if len(starts):
        tokens = tokens[int(starts[0]) + 1:]
    stops = (tokens == STOP_SPEECH_TOKEN).nonzero()
    if len(stops):
        tokens = tokens[: int(stops[0])]
    return tokens[tokens < SPEECH_CODEBOOK_SIZE]
