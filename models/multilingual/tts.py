"""Chatterbox Multilingual end to end: text in one of 23 languages + a voice -> 24 kHz audio.

    text --chunking (per script)--> chunks --front-end (tag, NFKD, language step)--> ids
        --T3 + alignment analyzer--> speech tokens --keep codebook ids--> S3Gen --> watermark

`MultilingualTTS` owns its components (T3 with the 2454-id text vocabulary, and the voice
encoder and S3Gen it shares with English) and nothing per request: a request's voice is an
immutable `Conditionals`, its randomness a `torch.Generator` seeded per chunk.
"""
from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..audio import resample
from ..chunk_audio import WholeChunk
from ..chunking import chunk_seed
from ..guard import RunawayGuard
from ..reference import ReferenceClip, load_reference
from ..s3gen.s3gen import S3GEN_SR, S3_SR
from ..sampling import SamplingParams
from ..t3 import STOP_SPEECH_TOKEN, T3Cond, drop_invalid_tokens
from ..constants import MAX_NEW_TOKENS
from ..params import GenerationParams, check_text
from ..registry import PromptSpec
from ..tts import CHUNK_PAUSE_S, RANDOM_SEEDS, Conditionals
from ..watermark import Watermarker
from . import loading
from .chunking import max_tokens_for, split_text
from .decoding import DEFAULT_EXAGGERATION, DEFAULT_PARAMS, stream_tokens
from .languages import ACCENT_NOTE, LANGUAGES
from .text import MultilingualText, MultilingualTokenizer, check_language

SAMPLE_RATE = S3GEN_SR
PROMPT = PromptSpec()  # the English prompt lengths: T3 6 s (150 tokens), S3Gen 10 s


@dataclass(frozen=True)
class MultilingualSynthesis:
    """One generation's audio and what the user should know about it."""

    wav: np.ndarray                  # (samples,) float32 at SAMPLE_RATE
    sample_rate: int
    seed: int                        # reproduces this result with the same inputs
    language: str
    texts: tuple[MultilingualText, ...]  # each chunk as T3 read it
    n_speech_tokens: int
    hit_token_limit: bool            # a chunk ended at its token limit, not at the stop token
    forced_stops: int                # chunks the alignment analyzer stopped (long tail, repetition)
    loops_cut: tuple[int, ...]       # chunks whose token stream looped and was cut
    watermarked: bool
    stopped: bool = False            # cancelled; the audio is what was made until then

    @property
    def notes(self) -> tuple[str, ...]:
        """Front-end steps skipped for this language (each once)."""
        return tuple(dict.fromkeys(n for t in self.texts for n in t.notes))

    @property
    def unknown_characters(self) -> tuple[str, ...]:
        return tuple(c for t in self.texts for c in t.unknown_characters)

    @property
    def seconds(self) -> float:
        return len(self.wav) / self.sample_rate


@dataclass(frozen=True)
class ChunkAudio:
    """Audio of one finished chunk of a streamed generation; the last event carries the result."""

    audio: np.ndarray
    chunk: int
    n_chunks: int
    result: MultilingualSynthesis | None = None


@torch.inference_mode()
def prepare_conditionals(voice_encoder, s3gen, audio, exaggeration: float = DEFAULT_EXAGGERATION) -> Conditionals:
    """A reference clip (path, (rate, samples) or ReferenceClip) -> the voice T3 and S3Gen condition on.

    As the reference's `prepare_conditionals`: speaker embedding of the whole clip at 16 kHz,
    T3 prompt = S3 tokens of its first 6 s (<= 150), S3Gen embedding of its first 10 s.
    """
    GenerationParams(exaggeration=exaggeration)  # the one place values are checked
    clip = audio if isinstance(audio, ReferenceClip) else load_reference(audio)
    device = s3gen.device
    wav16 = resample(clip.wav, SAMPLE_RATE, S3_SR)
    prompt16 = torch.from_numpy(wav16[: int(PROMPT.t3_seconds * S3_SR)]).to(device)
    prompt_tokens = s3gen.tokenizer.tokenize(prompt16, max_len=PROMPT.t3_tokens)
    speaker = voice_encoder.embed_utterance(wav16)
    t3 = T3Cond(speaker.reshape(1, -1).float().to(device), prompt_tokens.reshape(1, -1).to(device),
                float(exaggeration))
    return Conditionals(t3, s3gen.embed_ref(clip.wav), clip)


class MultilingualTTS:
    """Chatterbox Multilingual: 23 languages, voice cloning from a reference clip.

    Built from loaded components (see `from_local`); holds no per-request state, so
    concurrent requests with different voices and languages do not interact.
    """

    accent_note = ACCENT_NOTE
    languages = LANGUAGES

    def __init__(self, t3, s3gen, voice_encoder, tokenizer: MultilingualTokenizer,
                 builtin: Conditionals | None = None, label: str = ""):
        self.t3 = t3
        self.s3gen = s3gen
        self.voice_encoder = voice_encoder
        self.tokenizer = tokenizer
        self.builtin = builtin
        self.label = label
        self.watermarker = Watermarker()

    @classmethod
    def from_local(cls, ckpt_dir: str | Path, device: str | torch.device | None = None) -> "MultilingualTTS":
        """Build from a folder with the release's files (loading.FILES); strict loads."""
        ckpt_dir = Path(ckpt_dir)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        t3 = loading.load_t3(ckpt_dir, device=device)
        s3gen = loading.load_s3gen(ckpt_dir, device=device)
        ve = loading.load_voice_encoder(ckpt_dir, device=device)
        tokenizer = loading.load_tokenizer(ckpt_dir)
        conds = ckpt_dir / loading.CONDS_FILE
        builtin = Conditionals.from_file(conds, device) if conds.is_file() else None
        return cls(t3, s3gen, ve, tokenizer, builtin, f"local checkpoint {ckpt_dir}")

    @classmethod
    def from_pretrained(cls, device: str | torch.device | None = None) -> "MultilingualTTS":
        """Download (or read from the Hub cache) the release's files, then `from_local`."""
        return cls.from_local(loading.fetch_checkpoint(), device=device)

    @property
    def device(self) -> torch.device:
        return self.t3.device

    def notes_for(self, language: str) -> tuple[str, ...]:
        """Front-end steps this installation skips for `language` (show them when it is chosen)."""
        return self.tokenizer.notes_for(language)

    def prepare_conditionals(self, audio, exaggeration: float = DEFAULT_EXAGGERATION) -> Conditionals:
        """A reference clip (path or (rate, samples)) -> the voice T3 and S3Gen condition on."""
        return prepare_conditionals(self.voice_encoder, self.s3gen, audio, exaggeration)

    def stream(self, text: str, language: str, conditionals: Conditionals | None = None,
               exaggeration: float = DEFAULT_EXAGGERATION, cfg_weight: float = DEFAULT_PARAMS.cfg_weight,
               temperature: float = DEFAULT_PARAMS.temperature, min_p: float = DEFAULT_PARAMS.min_p,
               top_p: float = DEFAULT_PARAMS.top_p, repetition_penalty: float = DEFAULT_PARAMS.repetition_penalty,
               seed: int | None = None, watermark: bool = True, max_new_tokens: int = MAX_NEW_TOKENS,
               cancel: threading.Event | None = None) -> Iterator[ChunkAudio]:
        """Speak `text` in `language` chunk by chunk, yielding each chunk's audio when it is done.

        Chunk 0 is sampled with `seed` itself, later chunks with seeds derived from it. The
        last event carries the whole result. ValueError for bad input (an unsupported
        language names the 23 ids).
        """
        language = check_language(language)
        if not language:
            raise ValueError("choose a language")
        check_text(text)
        GenerationParams(exaggeration=exaggeration, cfg_weight=cfg_weight, temperature=temperature, min_p=min_p,
                         top_p=top_p, repetition_penalty=repetition_penalty, seed=seed)
        if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
            raise ValueError(f"max_new_tokens must be in [1, {MAX_NEW_TOKENS}], got {max_new_tokens!r}")
        if conditionals is None:
            if self.builtin is None:
                raise ValueError("no reference voice given and the checkpoint has no built-in voice (conds.pt)")
            conditionals = self.builtin
        conditionals = conditionals.with_exaggeration(exaggeration)
        texts = [self.tokenizer.tokenize(chunk, language) for chunk in split_text(text, language)]
        if not texts:
            raise ValueError("text is empty: type something to say")
        seed = 1 + secrets.randbelow(RANDOM_SEEDS - 1) if seed is None else int(seed)
        marker = self.watermarker if watermark and self.watermarker.available else None
        pause = np.zeros(int(CHUNK_PAUSE_S * SAMPLE_RATE), dtype=np.float32)
        pieces: list[np.ndarray] = []
        n_tokens, hit_limit, forced, loops, stopped = 0, False, 0, [], False

        for index, chunk in enumerate(texts):
            if cancel is not None and cancel.is_set():
                stopped = True
                break
            generator = torch.Generator(device=self.device).manual_seed(chunk_seed(seed, index))
            limit = min(max_new_tokens, max_tokens_for(chunk.normalized_text, language))
            params = SamplingParams(temperature=temperature, repetition_penalty=repetition_penalty, min_p=min_p,
                                    top_p=top_p, cfg_weight=cfg_weight, max_new_tokens=limit)
            guard = RunawayGuard()
            steps = []
            tokens: list[int] = []
            decoding = stream_tokens(self.t3, conditionals.t3, self.t3.frame_text(chunk.ids), params, generator,
                                     on_step=steps.append)
            for token in decoding:
                tokens.append(token)
                if guard.push(token) is not None:
                    tokens = tokens[: guard.loop.keep]
                    loops.append(index)
                    break
                if cancel is not None and cancel.is_set():
                    stopped = True
                    break
            decoding.close()
            forced += any(s.alignment.stop_forced for s in steps)
            hit_limit = hit_limit or (len(tokens) >= limit and tokens[-1] != STOP_SPEECH_TOKEN and not stopped)
            n_tokens += int(drop_invalid_tokens(tokens).numel())  # codebook ids only: all S3Gen can read
            audio = WholeChunk(self.s3gen, conditionals.gen, generator, marker, SAMPLE_RATE)
            audio.push(tokens)
            cut = stopped or (loops and loops[-1] == index) or tokens[-1:] != [STOP_SPEECH_TOKEN]
            wav = audio.finish(trim=len(texts) > 1 or bool(cut))
            if wav:
                out = np.concatenate([pause, wav[0]]) if pieces else wav[0]  # a sentence pause between chunks
                pieces.append(out)
                yield ChunkAudio(out, index, len(texts))
            if stopped:
                break
        if not pieces and not stopped:
            raise RuntimeError("the model produced no speech tokens for this text; try another seed")
        full = np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, dtype=np.float32)
        result = MultilingualSynthesis(full, SAMPLE_RATE, seed, language, tuple(texts), n_tokens, hit_limit, forced,
                                       tuple(loops), marker is not None, stopped)
        yield ChunkAudio(np.zeros(0, dtype=np.float32), len(texts) - 1, len(texts), result)

    def synthesize(self, text: str, language: str, conditionals: Conditionals | None = None,
                   **kwargs) -> MultilingualSynthesis:
        """The whole result of `stream`."""
        for event in self.stream(text, language, conditionals, **kwargs):
            if event.result is not None:
                return event.result
        raise RuntimeError("generation ended without a result")

    def generate(self, text: str, language: str, conditionals: Conditionals | None = None, **kwargs) -> np.ndarray:
        """24 kHz float32 audio of `text` in `language` (see `stream` for the options)."""
        return self.synthesize(text, language, conditionals, **kwargs).wav
