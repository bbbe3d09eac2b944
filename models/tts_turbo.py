"""Chatterbox-Turbo end to end: prepare a voice from a clip, then speak text in it.

text -> Turbo punctuation clean-up -> GPT-2 ids (tags included) -> T3-Turbo (GPT-2 medium,
no guidance) -> speech tokens + 3 silence tokens -> meanflow S3Gen (2 steps) -> HiFT ->
24 kHz wav. The components are built from one Turbo folder (`loading_turbo`); a model
registry can wrap this class as one entry. Facts: chatterbox-spec.md §11.2.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import loading_turbo
from .constants import MAX_NEW_TOKENS, MAX_SEED, S3GEN_SR, STOP_SPEECH_TOKEN
from .registry import model_entry
from .t3_turbo import TurboSamplingParams, s3gen_tokens
from .tts import Conditionals, conditionals_from_clip
from .watermark import Watermarker

SAMPLE_RATE = S3GEN_SR
TURBO_ENTRY = model_entry("turbo")
MIN_REFERENCE_SECONDS = TURBO_ENTRY.prompt.min_reference_seconds  # the reference asserts a longer clip
T3_PROMPT_SECONDS = int(TURBO_ENTRY.prompt.t3_seconds)  # the reference's ENC_COND_LEN (English: 6)
T3_PROMPT_TOKENS = TURBO_ENTRY.prompt.t3_tokens          # 15 s of 25 Hz S3 tokens
MAX_TEXT_CHARS = 2000           # one generation; longer text is the caller's to split
RANDOM_SEEDS = 2**32

# Controls of the shared UI that Turbo does not use (the reference accepts and ignores them).
IGNORED_CONTROLS = ("exaggeration", "cfg_weight", "min_p")


@dataclass(frozen=True)
class TurboSynthesis:
    """One Turbo generation: audio and what produced it."""

    wav: np.ndarray             # (samples,) float32 at SAMPLE_RATE
    sample_rate: int
    seed: int
    normalized_text: str
    t3_tokens: tuple[int, ...]  # what T3 returned (a final stop token removed)
    hit_token_limit: bool       # stopped by max_new_tokens, not by the model's stop token
    text_truncated: bool        # the text had more than 1024 tokens and was cut
    watermarked: bool

    @property
    def seconds(self) -> float:
        return len(self.wav) / self.sample_rate


def check_turbo_args(text: str, temperature: float, top_k: int, top_p: float, repetition_penalty: float,
                     seed: int | None, max_new_tokens: int) -> None:
    """Raise ValueError with a readable reason for any out-of-range request value."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text is empty: type something to say")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"text is {len(text)} characters; Turbo speaks at most {MAX_TEXT_CHARS} at once")
    for name, value, lo, hi in (("temperature", temperature, 0.05, 5.0), ("top_p", top_p, 0.0, 1.0),
                                ("repetition_penalty", repetition_penalty, 1.0, 2.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) \
                or not lo <= value <= hi:
            raise ValueError(f"{name} must be a number in [{lo}, {hi}], got {value!r}")
    if top_p == 0:
        raise ValueError("top_p must be > 0 (1.0 disables it)")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 0 <= top_k <= 10_000:
        raise ValueError(f"top_k must be an integer in [0, 10000] (0 disables it), got {top_k!r}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
            or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise ValueError(f"max_new_tokens must be an integer in [1, {MAX_NEW_TOKENS}], got {max_new_tokens!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or not 0 <= int(seed) <= MAX_SEED):
        raise ValueError(f"seed must be an integer in [0, {MAX_SEED}] or None, got {seed!r}")


class ChatterboxTurbo:
    """Chatterbox-Turbo TTS: text (with expression tags) + voice -> 24 kHz audio.

    Owns T3-Turbo, the meanflow S3Gen, the voice encoder, the GPT-2 tokenizer, the built-in
    voice and the watermarker. Per request state lives in immutable `Conditionals` and a
    per-request `torch.Generator`. `tags` lists every expression tag the tokenizer knows.
    """

    def __init__(self, t3, s3gen, voice_encoder, tokenizer, builtin: Conditionals | None, label: str = ""):
        self.t3 = t3
        self.s3gen = s3gen
        self.voice_encoder = voice_encoder
        self.tokenizer = tokenizer
        self.builtin = builtin
        self.label = label
        self.watermarker = Watermarker()

    @classmethod
    def from_local(cls, ckpt_dir: str | Path, device: str | torch.device | None = None,
                   t3_file: str | Path | None = None, label: str = "") -> "ChatterboxTurbo":
        """Build from a Turbo folder; `t3_file` swaps in another T3-Turbo (e.g. Kartoffelbox Turbo)."""
        ckpt_dir = Path(ckpt_dir)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        t3 = loading_turbo.load_turbo_t3(t3_file or ckpt_dir, device=device)
        s3gen = loading_turbo.load_turbo_s3gen(ckpt_dir, device=device)
        ve = loading_turbo.load_turbo_voice_encoder(ckpt_dir, device=device)
        tokenizer = loading_turbo.load_turbo_tokenizer(ckpt_dir)
        conds = ckpt_dir / loading_turbo.TURBO_CONDS_FILE
        builtin = Conditionals.from_file(conds, device) if conds.is_file() else None
        return cls(t3, s3gen, ve, tokenizer, builtin, label or f"local Turbo checkpoint {ckpt_dir}")

    @classmethod
    def from_pretrained(cls, device: str | torch.device | None = None) -> "ChatterboxTurbo":
        """`ResembleAI/chatterbox-turbo` from the Hub (or its cache), then `from_local`."""
        folder = loading_turbo.fetch_turbo_checkpoint()
        return cls.from_local(folder, device=device, label=f"{loading_turbo.TURBO_REPO_ID} from the Hugging Face Hub")

    @property
    def device(self) -> torch.device:
        return self.t3.device

    @property
    def tags(self) -> tuple[str, ...]:
        return self.tokenizer.tags

    # --- per request -------------------------------------------------------------------

    def prepare_conditionals(self, audio, norm_loudness: bool = True) -> Conditionals:
        """A reference clip (path, (rate, samples) or ReferenceClip) -> the voice T3 and S3Gen use.

        Raises ReferenceAudioError (a ValueError) for an unusable clip, including one not
        longer than MIN_REFERENCE_SECONDS. With `norm_loudness` the clip is first scaled to
        -27 LUFS. T3's prompt is the first 15 s (375 tokens), S3Gen's the first 10 s; the
        speaker embedding averages the whole clip (`tts.conditionals_from_clip`).
        """
        return conditionals_from_clip(audio, self.voice_encoder, self.s3gen, TURBO_ENTRY.prompt,
                                      label="Chatterbox-Turbo", norm_loudness=norm_loudness)

    def generate(
        self,
        text: str,
        conditionals: Conditionals | None = None,
        temperature: float = 0.8,
        top_k: int = 1000,
        top_p: float = 0.95,
        repetition_penalty: float = 1.2,
        seed: int | None = None,
        max_new_tokens: int = MAX_NEW_TOKENS,
        watermark: bool = True,
    ) -> TurboSynthesis:
        """Speak `text` in the voice of `conditionals` (the built-in voice if None).

        One generator seeded with `seed` (random if None) feeds, in the reference's order,
        T3's draws, the flow noise and the vocoder's source noise; on a CPU this is the
        stream `torch.manual_seed(seed)` gives the reference.
        """
        check_turbo_args(text, temperature, top_k, top_p, repetition_penalty, seed, max_new_tokens)
        if conditionals is None:
            if self.builtin is None:
                raise ValueError("no reference voice given and the checkpoint has no built-in voice (conds.pt)")
            conditionals = self.builtin
        seed = 1 + secrets.randbelow(RANDOM_SEEDS - 1) if seed is None else int(seed)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        tokenized = self.tokenizer.tokenize(text)
        # The reference's max_gen_len counts the steps after the first token.
        params = TurboSamplingParams(temperature=temperature, top_k=int(top_k), top_p=top_p,
                                     repetition_penalty=repetition_penalty, max_gen_len=max_new_tokens - 1)
        drawn = list(self.t3.stream_tokens(conditionals.t3, tokenized.ids, params, generator))
        hit_stop = bool(drawn) and drawn[-1] == STOP_SPEECH_TOKEN and len(drawn) > 1
        t3_tokens = drawn[:-1] if drawn and drawn[-1] == STOP_SPEECH_TOKEN else drawn
        wav = self.s3gen.inference(s3gen_tokens(t3_tokens).to(self.device), conditionals.gen,
                                   generator=generator).cpu().numpy()
        watermarked = watermark and self.watermarker.available
        if watermarked:
            wav = self.watermarker.apply(wav, SAMPLE_RATE)
        return TurboSynthesis(np.asarray(wav, dtype=np.float32), SAMPLE_RATE, seed, tokenized.normalized_text,
                              tuple(t3_tokens), not hit_stop, tokenized.truncated, watermarked)
