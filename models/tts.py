"""The text-to-speech pipeline: load once, then per request prepare a voice and speak.

`ChatterboxTTS` owns one T3 (swappable between models that share everything else),
the voice encoder, S3Gen, the text tokenizer, the built-in voice and the watermarker.
A request's state lives in immutable `Conditionals` and a per-request
`torch.Generator`, so concurrent requests with different voices cannot affect each other.
"""
from __future__ import annotations

import secrets
import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from . import loading
from .audio import resample
from .chunk_audio import BlockChunk, WholeChunk, speech_ids
from .chunking import chunk_seed, noise_seed
from .guard import RunawayGuard
from .reference import ReferenceClip, load_reference
from .s3gen.s3gen import S3GEN_SR, S3_SR, ReferenceEmbedding
from .s3gen.streaming import StreamConfig
from .sampling import SamplingParams
from .t3 import T3Cond, STOP_SPEECH_TOKEN
from .text_prep import ENGLISH_EVENT_TAGS, Pause, plan_request
from .watermark import Watermarker

SAMPLE_RATE = S3GEN_SR
T3_PROMPT_SECONDS = 6            # the reference's ENC_COND_LEN
T3_PROMPT_TOKENS = 150           # 6 s of 25 Hz S3 tokens
MAX_NEW_TOKENS = 1000            # 40 s of speech in one generation (one chunk)
CHUNK_CHARS = 300                # what one generation reliably speaks within MAX_NEW_TOKENS
MAX_TEXT_CHARS = 12_000          # one request: about 13 minutes of read speech
CHUNK_PAUSE_S = 0.15             # silence between chunks, like a sentence pause
LANGUAGES = {"english": "en", "german": "de"}
EXAGGERATION_RANGE = (0.25, 2.0)
MAX_SEED = 2**53 - 1            # seeds travel through JSON and JavaScript numbers exactly
RANDOM_SEEDS = 2**32            # a drawn seed stays short enough to read and type


@dataclass(frozen=True)
class Conditionals:
    """A prepared voice: T3's conditioning and S3Gen's reference embedding.

    `reference` is the validated clip it came from (None for the built-in voice).
    """

    t3: T3Cond
    gen: ReferenceEmbedding
    reference: ReferenceClip | None = None

    def with_exaggeration(self, exaggeration: float) -> "Conditionals":
        if float(self.t3.emotion_adv) == float(exaggeration):
            return self
        return replace(self, t3=replace(self.t3, emotion_adv=float(exaggeration)))

    @classmethod
    def from_file(cls, path: str | Path, device: torch.device | str = "cpu") -> "Conditionals":
        """The reference's `conds.pt` (built-in voice), loaded without pickle code execution."""
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
        t3, gen = raw["t3"], raw["gen"]
        emotion = t3.get("emotion_adv")
        cond = T3Cond(
            speaker_emb=t3["speaker_emb"].float().to(device),
            cond_prompt_speech_tokens=t3["cond_prompt_speech_tokens"].long().to(device),
            emotion_adv=float(emotion.reshape(-1)[0]) if emotion is not None else 0.5,
        )
        ref = ReferenceEmbedding(
            prompt_token=gen["prompt_token"].reshape(-1).long(),
            prompt_feat=gen["prompt_feat"].reshape(-1, gen["prompt_feat"].shape[-1]).float(),
            embedding=gen["embedding"].reshape(-1).float(),
        ).to(device)
        return cls(cond, ref)


@dataclass(frozen=True)
class Synthesis:
    """One generation's audio and what the user should know about it."""

    wav: np.ndarray            # (samples,) float32 at SAMPLE_RATE
    sample_rate: int
    seed: int                  # reproduces this result with the same inputs
    normalized_text: str
    unknown_characters: tuple[str, ...]
    n_speech_tokens: int
    hit_token_limit: bool      # a chunk was stopped by its token limit, not by the model's stop token
    watermarked: bool
    n_chunks: int = 1
    loops_cut: tuple[int, ...] = ()  # chunks whose token stream looped and was cut
    stopped: bool = False            # cancelled by the caller; the audio is what was made until then
    notes: tuple[str, ...] = ()      # what text preparation changed (text_prep.PreparedText.notes)

    @property
    def seconds(self) -> float:
        return len(self.wav) / self.sample_rate


@dataclass(frozen=True)
class StreamEvent:
    """New audio of a streamed generation; the last event also carries the whole result."""

    audio: np.ndarray          # new samples (float32, SAMPLE_RATE); empty on the final event
    chunk: int                 # index of the text chunk the samples belong to
    n_chunks: int
    result: Synthesis | None = None
    chunk_done: bool = False   # the chunk's last audio (or the pause after it)


def check_generation_args(text: str, exaggeration: float, cfg_weight: float, temperature: float,
                          min_p: float, top_p: float, repetition_penalty: float, seed: int | None) -> None:
    """Raise ValueError with a readable reason for any out-of-range request value."""
    if not isinstance(text, str):
        raise ValueError("text must be a string")
    if not text.strip():
        raise ValueError("text is empty: type something to say")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"text is {len(text)} characters; one request speaks at most {MAX_TEXT_CHARS} "
                         f"(about 13 minutes). Split it into several requests.")
    checks = [
        ("exaggeration", exaggeration, EXAGGERATION_RANGE[0], EXAGGERATION_RANGE[1]),
        ("cfg_weight", cfg_weight, 0.0, 1.0),
        ("temperature", temperature, 0.05, 5.0),
        ("min_p", min_p, 0.0, 1.0),
        ("top_p", top_p, 0.0, 1.0),
        ("repetition_penalty", repetition_penalty, 1.0, 2.0),
    ]
    for name, value, lo, hi in checks:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not np.isfinite(value) \
                or not lo <= value <= hi:
            raise ValueError(f"{name} must be a number in [{lo}, {hi}], got {value!r}")
    if top_p == 0:
        raise ValueError("top_p must be > 0 (1.0 disables it)")
    if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool)
                             or not 0 <= int(seed) <= MAX_SEED):
        raise ValueError(f"seed must be an integer in [0, {MAX_SEED}] or None, got {seed!r}")


class ChatterboxTTS:
    """Chatterbox-family TTS: text + voice -> 24 kHz audio.

    Models that differ only in T3 weights (Chatterbox English, Kartoffelbox German) share
    the voice encoder and S3Gen; `t3_sources` maps each model name to a function giving
    its T3 file, called when the model is first needed. T3 is swapped only while no
    generation runs.
    """

    def __init__(self, t3, s3gen, voice_encoder, tokenizer, builtin: Conditionals | None,
                 t3_sources: dict[str, Callable[[], Path]], model: str, label: str = ""):
        self.t3 = t3
        self.s3gen = s3gen
        self.voice_encoder = voice_encoder
        self.tokenizer = tokenizer
        self.builtin = builtin
        self.t3_sources = dict(t3_sources)
        self.label = label
        self.watermarker = Watermarker()
        self._model = model
        self._active = 0
        self._cv = threading.Condition()

    # --- loading -----------------------------------------------------------------------

    @classmethod
    def from_local(cls, ckpt_dir: str | Path, device: str | torch.device | None = None,
                   t3_sources: dict[str, Callable[[], Path]] | None = None, model: str = "english",
                   label: str = "") -> "ChatterboxTTS":
        """Build from a folder with the released layout (ve, t3_cfg, s3gen, tokenizer, conds)."""
        ckpt_dir = Path(ckpt_dir)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        sources = {"english": lambda: ckpt_dir / loading.T3_FILE}
        sources.update(t3_sources or {})
        if model not in sources:
            raise ValueError(f"unknown model {model!r}; known: {', '.join(sources)}")
        t3 = loading.load_t3(sources[model](), device=device)
        s3gen = loading.load_s3gen(ckpt_dir, device=device)
        ve = loading.load_voice_encoder(ckpt_dir, device=device)
        tokenizer = loading.load_text_tokenizer(ckpt_dir)
        conds_path = ckpt_dir / loading.CONDS_FILE
        builtin = Conditionals.from_file(conds_path, device) if conds_path.is_file() else None
        return cls(t3, s3gen, ve, tokenizer, builtin, sources, model, label or f"local checkpoint {ckpt_dir}")

    @classmethod
    def from_pretrained(cls, model: str = "english", device: str | torch.device | None = None) -> "ChatterboxTTS":
        """Download (or read from the Hub cache) what `model` needs, then `from_local`.

        Raises loading.WeightsUnavailable with a user-facing reason when offline, gated, etc.
        """
        base = loading.fetch_base_checkpoint()
        sources = {name: (lambda src=src: loading.fetch_t3_weights(src))
                   for name, src in loading.MODEL_SOURCES.items() if src.repo_id != loading.BASE_REPO_ID}
        return cls.from_local(base, device=device, t3_sources=sources, model=model,
                              label=f"{loading.BASE_REPO_ID} from the Hugging Face Hub")

    @property
    def device(self) -> torch.device:
        return self.t3.device

    @property
    def model(self) -> str:
        return self._model

    @contextmanager
    def _using_model(self, model: str) -> Iterator[None]:
        """Hold `model`'s T3 for one generation, swapping weights only when nothing runs."""
        if model not in self.t3_sources:
            raise ValueError(f"unknown model {model!r}; known: {', '.join(self.t3_sources)}")
        with self._cv:
            while self._model != model and self._active:
                self._cv.wait()
            if self._model != model:
                path = self.t3_sources[model]()  # may download; raises WeightsUnavailable
                device = self.t3.device
                self.t3 = None  # free the old weights before reading the new ones
                self.t3 = loading.load_t3(path, device=device)
                self._model = model
            self._active += 1
        try:
            yield
        finally:
            with self._cv:
                self._active -= 1
                self._cv.notify_all()

    def live_streaming(self, first_block: int | None = None) -> dict:
        """`stream` keywords for live playback on this device.

        Every block reruns the flow over the voice prompt and all tokens so far. A GPU does
        that many times faster than real time, so each chunk streams in growing blocks and
        playback need not stall. On a CPU generation is slower than real time whatever
        the blocks, so only the first chunk streams, with one early block to cut the time
        to first audio, and everything after it is decoded whole: one extra flow pass over
        the prompt and the first block (growing blocks would rerun the flow ~6 times per chunk).
        """
        if self.device.type == "cuda":
            config = StreamConfig()
            chunks = None
        else:
            config = StreamConfig(block=MAX_NEW_TOKENS, max_block=MAX_NEW_TOKENS)
            chunks = 1
        if first_block is not None:
            config = replace(config, first_block=first_block)
        return {"token_blocks": config, "block_chunks": chunks}

    # --- per request -------------------------------------------------------------------

    @torch.inference_mode()
    def prepare_conditionals(self, audio, exaggeration: float = 0.5) -> Conditionals:
        """A reference clip (path or (rate, samples)) -> the voice both models condition on."""
        lo, hi = EXAGGERATION_RANGE
        if not lo <= exaggeration <= hi:
            raise ValueError(f"exaggeration must be in [{lo}, {hi}], got {exaggeration!r}")
        clip = audio if isinstance(audio, ReferenceClip) else load_reference(audio)
        wav16 = resample(clip.wav, SAMPLE_RATE, S3_SR)
        prompt16 = torch.from_numpy(wav16[: T3_PROMPT_SECONDS * S3_SR]).to(self.device)
        prompt_tokens = self.s3gen.tokenizer.tokenize(prompt16, max_len=T3_PROMPT_TOKENS)
        speaker = self.voice_encoder.embed_utterance(wav16)
        t3 = T3Cond(speaker.reshape(1, -1).float(), prompt_tokens.reshape(1, -1).to(self.device),
                    float(exaggeration))
        return Conditionals(t3, self.s3gen.embed_ref(clip.wav), clip)

    def stream(
        self,
        text: str,
        conditionals: Conditionals | None = None,
        exaggeration: float = 0.5,
        cfg_weight: float = 0.5,
        temperature: float = 0.8,
        min_p: float = 0.05,
        top_p: float = 1.0,
        repetition_penalty: float = 1.2,
        seed: int | None = None,
        model: str | None = None,
        watermark: bool = True,
        max_new_tokens: int = MAX_NEW_TOKENS,
        cancel: threading.Event | None = None,
        token_blocks: StreamConfig | None = None,
        block_chunks: int | None = None,
        normalize: bool = True,
    ) -> Iterator[StreamEvent]:
        """Speak `text` chunk by chunk, yielding audio as soon as each piece exists.

        Long text is split at sentence boundaries into chunks of <= CHUNK_CHARS, each
        generated with the same voice and its own seed-derived generator (chunk 0 uses
        `seed` itself, so short text sounds as without chunking). The last event carries
        the whole result. Setting `cancel` (or closing the iterator) stops between steps.

        With `token_blocks`, S3Gen decodes each chunk in token blocks while T3 runs, so audio
        starts after the first block instead of the first chunk (`chunk_audio.BlockChunk`:
        same tokens, slightly different audio); without, each chunk is decoded whole, as the
        reference does. `block_chunks` limits block decoding to the first chunks (None: all);
        `live_streaming` gives both for this device. The text is prepared first
        (`text_prep.plan_request`: markup, tags, pause tags as silence, and with `normalize`
        numbers and symbols as words); text with nothing to say raises ValueError.
        """
        check_generation_args(text, exaggeration, cfg_weight, temperature, min_p, top_p,
                              repetition_penalty, seed)
        if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
            raise ValueError(f"max_new_tokens must be in [1, {MAX_NEW_TOKENS}], got {max_new_tokens!r}")
        model = model or self._model
        if model not in self.t3_sources:
            raise ValueError(f"unknown model {model!r}; known: {', '.join(self.t3_sources)}")
        if conditionals is None:
            if self.builtin is None:
                raise ValueError("no reference voice given and the checkpoint has no built-in voice (conds.pt)")
            conditionals = self.builtin
        conditionals = conditionals.with_exaggeration(exaggeration)
        plan = plan_request(text, LANGUAGES.get(model, "en"), self.tokenizer, CHUNK_CHARS, max_new_tokens,
                            normalize, ENGLISH_EVENT_TAGS)
        chunks = plan.chunks
        seed = 1 + secrets.randbelow(RANDOM_SEEDS - 1) if seed is None else int(seed)
        pause = np.zeros(int(CHUNK_PAUSE_S * SAMPLE_RATE), dtype=np.float32)
        pieces: list[np.ndarray] = []
        n_tokens, hit_limit, loops, stopped = 0, False, [], False
        watermarked = watermark and self.watermarker.available
        marker = self.watermarker if watermarked else None

        # No inference_mode around the yields (it would leak into the caller's thread);
        # T3 and S3Gen enter it themselves.
        with self._using_model(model):
            for position, item in enumerate(plan.items):
                if cancel is not None and cancel.is_set():
                    stopped = True
                    break
                if isinstance(item, Pause):
                    silence = np.zeros(item.samples(SAMPLE_RATE), dtype=np.float32)
                    pieces.append(silence)
                    # Counted with the chunk before it (done), or before chunk 0 when it opens the text.
                    before = [i.index for i in plan.items[:position] if not isinstance(i, Pause)]
                    yield StreamEvent(silence, before[-1] if before else 0, len(chunks), chunk_done=bool(before))
                    continue
                index, limit = item.index, item.token_limit
                generator = torch.Generator(device=self.device).manual_seed(chunk_seed(seed, index))
                params = SamplingParams(temperature=temperature, repetition_penalty=repetition_penalty,
                                        min_p=min_p, top_p=top_p, cfg_weight=cfg_weight, max_new_tokens=limit)
                if token_blocks is None or (block_chunks is not None and index >= block_chunks):
                    audio = WholeChunk(self.s3gen, conditionals.gen, generator, marker, SAMPLE_RATE)
                else:
                    noise = torch.Generator(device=self.device).manual_seed(noise_seed(seed, index))
                    audio = BlockChunk(self.s3gen, conditionals.gen, noise, marker, SAMPLE_RATE,
                                       replace(token_blocks, max_tokens=limit))
                made = len(pieces)
                tokens: list[int] = []
                released = 0  # tokens handed to `audio`: only those the guard can no longer cut
                guard = RunawayGuard()
                decoding = self.t3.stream_tokens(conditionals.t3, self.t3.frame_text(item.tokens.ids), params, generator)
                for token in decoding:
                    tokens.append(token)
                    loop = guard.push(token)
                    if loop is not None:
                        tokens = tokens[: loop.keep]
                        loops.append(index)
                        break
                    if cancel is not None and cancel.is_set():
                        stopped = True
                        break
                    for wav in audio.push(tokens[released:guard.safe]):
                        pieces.append(wav)
                        yield StreamEvent(wav, index, len(chunks))
                    released = max(released, guard.safe)
                decoding.close()
                if stopped and pieces:
                    # Stop promptly; finish a cut chunk only when nothing was made yet. Audio this
                    # chunk already streamed came from the tokens handed to its decoder.
                    if len(pieces) > made:
                        n_tokens += int(speech_ids(tokens[:released]).numel())
                    break
                cut_by_limit = len(tokens) >= limit and tokens[-1] != STOP_SPEECH_TOKEN
                hit_limit = hit_limit or (cut_by_limit and not stopped)
                n_tokens += int(speech_ids(tokens).numel())
                tail = audio.push(tokens[released:]) + audio.finish(trim=True)
                for i, wav in enumerate(tail):
                    pieces.append(wav)
                    yield StreamEvent(wav, index, len(chunks), chunk_done=i == len(tail) - 1)
                if stopped:
                    break
                followed_by_chunk = position + 1 < len(plan.items) and not isinstance(plan.items[position + 1], Pause)
                if followed_by_chunk and len(pieces) > made:
                    # Sent right away: a player can start on a piece only once the next one arrives.
                    pieces.append(pause)
                    yield StreamEvent(pause, index, len(chunks), chunk_done=True)
        if not pieces and not stopped:
            raise RuntimeError("the model produced no speech tokens for this text; try another seed")
        full = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        result = Synthesis(full.astype(np.float32), SAMPLE_RATE, seed, plan.normalized_text, plan.unknown_characters,
                           n_tokens, hit_limit, watermarked, len(chunks), tuple(loops), stopped, plan.prepared.notes)
        yield StreamEvent(np.zeros(0, dtype=np.float32), len(chunks) - 1, len(chunks), result)

    def synthesize(self, text: str, conditionals: Conditionals | None = None, **kwargs) -> Synthesis:
        """Speak `text` in the voice of `conditionals` (the built-in voice if None); see `stream`."""
        for event in self.stream(text, conditionals, **kwargs):
            if event.result is not None:
                return event.result
        raise RuntimeError("generation ended without a result")

    def generate(self, text: str, conditionals: Conditionals | None = None, exaggeration: float = 0.5,
                 cfg_weight: float = 0.5, temperature: float = 0.8, min_p: float = 0.05, top_p: float = 1.0,
                 repetition_penalty: float = 1.2, seed: int | None = None, **kwargs) -> np.ndarray:
        """24 kHz float32 audio of `text` (see `synthesize` for the details of the result)."""
        return self.synthesize(text, conditionals, exaggeration=exaggeration, cfg_weight=cfg_weight,
                               temperature=temperature, min_p=min_p, top_p=top_p,
                               repetition_penalty=repetition_penalty, seed=seed, **kwargs).wav
