"""The text-to-speech pipeline: models resident in a pool; per request a voice and a text.

`ChatterboxTTS` serves every model of the registry (models/registry.py) from one
`ModelPool` (models/residency.py): a model loads on its first request and stays resident,
sharing the components it has in common with the others. A request's state lives in
immutable `Conditionals`, a `GenerationParams` and per-chunk `torch.Generator`s, so
concurrent requests (on one model or several) cannot affect each other.
"""
from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch

from . import loading
from .audio import resample
from .chunk_audio import BlockChunk, WholeChunk, speech_ids
from .chunking import chunk_seed, noise_seed
from .constants import CHUNK_CHARS, MAX_NEW_TOKENS, MAX_TEXT_CHARS, S3_SR, S3GEN_SR, STOP_SPEECH_TOKEN
from .fast_modes import LoadOptions
from .guard import RunawayGuard
from .params import GenerationParams, check_text
from .loudness import TARGET_LUFS, normalize_loudness
from .multilingual import decoding as multilingual_decoding
from .multilingual.planning import MultilingualPlan
from .multilingual.planning import plan_request as plan_multilingual_request
from .reference import ReferenceAudioError, ReferenceClip, load_reference
from .registry import BASE_REPO_ID, DEFAULT_MODEL, ModelEntry, PromptSpec
from .residency import LoadedModel, ModelPool
from .s3gen.s3gen import ReferenceEmbedding
from .s3gen.streaming import StreamConfig
from .s3gen.turns import FlowTurns, sharing
from .sampling import SamplingParams
from .t3 import T3Cond
from .t3_batching import batcher_for
from .t3_turbo import S3GEN_SILENCE_TOKEN, SILENCE_TOKENS_APPENDED, TurboSamplingParams
from .text_prep import ENGLISH_EVENT_TAGS, Pause, PlannedChunk, RequestPlan, plan_request
from .watermark import Watermarker

SAMPLE_RATE = S3GEN_SR
CHUNK_PAUSE_S = 0.15             # silence between chunks, like a sentence pause
RANDOM_SEEDS = 2**32             # a drawn seed stays short enough to read and type
__all__ = ["CHUNK_CHARS", "MAX_NEW_TOKENS", "MAX_TEXT_CHARS", "SAMPLE_RATE", "ChatterboxTTS", "Conditionals",
           "GenerationParams", "LivePlayback", "StreamEvent", "Synthesis"]


def voice_specs(entry: ModelEntry) -> tuple:
    """What a prepared voice depends on: models with equal specs can share their voices."""
    return entry.voice_encoder, entry.s3gen, entry.prompt


@dataclass(frozen=True)
class Conditionals:
    """A prepared voice: T3's conditioning and S3Gen's reference embedding.

    `reference` is the validated clip it came from (None for the built-in voice);
    `prepared_for` the voice encoder, S3Gen and prompt specs it was made with (None: unknown),
    so that a voice is never used by a model that embeds voices differently.
    """

    t3: T3Cond
    gen: ReferenceEmbedding
    reference: ReferenceClip | None = None
    prepared_for: tuple | None = None

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


@torch.inference_mode()
def conditionals_from_clip(audio, voice_encoder, s3gen, prompt: PromptSpec, *, label: str,
                           exaggeration: float = GenerationParams.exaggeration, norm_loudness: bool = False,
                           prepared_for: tuple | None = None) -> Conditionals:
    """A reference clip (path, (rate, samples) or ReferenceClip) -> the voice T3 and S3Gen condition on.

    As the reference's `prepare_conditionals`: with `norm_loudness` the clip is first scaled
    to -27 LUFS (Turbo); the speaker embedding averages the whole clip at 16 kHz, T3's prompt
    is the S3 tokens of its first `prompt.t3_seconds` (<= `prompt.t3_tokens`), S3Gen's
    embedding its first 10 s. Raises ReferenceAudioError (a ValueError) for an unusable
    clip, including one not longer than `prompt.min_reference_seconds` (`label` names the
    model in that message).
    """
    clip = audio if isinstance(audio, ReferenceClip) else load_reference(audio)
    wav = clip.wav
    seconds = len(wav) / SAMPLE_RATE
    if seconds <= prompt.min_reference_seconds:
        raise ReferenceAudioError(f"the reference clip is {seconds:.2f} s long; {label} needs more than "
                                  f"{prompt.min_reference_seconds:g} s of the voice")
    if norm_loudness:
        wav = normalize_loudness(wav, SAMPLE_RATE, TARGET_LUFS)
    device = s3gen.device
    wav16 = resample(wav, SAMPLE_RATE, S3_SR)
    prompt16 = torch.from_numpy(wav16[: int(prompt.t3_seconds * S3_SR)]).to(device)
    prompt_tokens = s3gen.tokenizer.tokenize(prompt16, max_len=prompt.t3_tokens)
    speaker = voice_encoder.embed_utterance(wav16)
    t3 = T3Cond(speaker.reshape(1, -1).float(), prompt_tokens.reshape(1, -1).to(device), float(exaggeration))
    return Conditionals(t3, s3gen.embed_ref(wav), clip, prepared_for)


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


@dataclass(frozen=True)
class LivePlayback:
    """Live playback: S3Gen decodes chunks in token blocks while T3 still runs.

    Every block reruns the flow over the voice prompt and all tokens so far. A GPU does
    that many times faster than real time, so by default each chunk streams in growing
    blocks and playback need not stall. On a CPU generation is slower than real time
    whatever the blocks, so only the first chunk streams, with one early block to cut the
    time to first audio, and the rest is decoded whole: one extra flow pass over the prompt
    and the first block (growing blocks would rerun the flow ~6 times per chunk).
    `blocks` and `chunks` override that choice (chunks None: the device's choice).
    """

    first_block: int = StreamConfig.first_block   # tokens before the first audio
    blocks: StreamConfig | None = None
    chunks: int | None = None

    def __post_init__(self):
        if self.first_block < 1:
            raise ValueError(f"first_block must be >= 1, got {self.first_block}")

    def plan(self, device: torch.device) -> tuple[StreamConfig, int | None]:
        """(block schedule, number of chunks decoded in blocks; None: all) on `device`."""
        gpu = device.type == "cuda"
        blocks = self.blocks
        if blocks is None:
            blocks = StreamConfig(first_block=self.first_block) if gpu else StreamConfig(
                first_block=self.first_block, block=MAX_NEW_TOKENS, max_block=MAX_NEW_TOKENS)
        chunks = self.chunks if self.chunks is not None else (None if gpu else 1)
        return blocks, chunks


@dataclass
class _ChunkOutcome:
    """What one chunk's generation left for the result."""

    n_tokens: int = 0
    hit_limit: bool = False
    loop_cut: bool = False
    stopped: bool = False
    made_audio: bool = False


class ChatterboxTTS:
    """Chatterbox-family TTS: text + voice -> 24 kHz audio, for every model of the registry.

    Owns the `ModelPool` (models and their shared components, loaded on first use) and the
    watermarker. `model(id)` gives a model's components (T3, S3Gen, voice encoder, text
    front-end, built-in voice). With `batch_size` N > 1, up to N concurrent generations on
    one T3 decode as rows of one batch (models/t3_batching.py); 1 decodes each alone.
    The S3Gen flows of concurrent generations take turns step by step, a generation that has
    not played anything yet first (`flow_turns`, models/s3gen/turns.py).
    """

    def __init__(self, pool: ModelPool, default_model: str = DEFAULT_MODEL, label: str = "",
                 batch_size: int = 1):
        pool.entry(default_model)  # ValueError for an unknown id
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.pool = pool
        self.batch_size = batch_size
        self.default_model = default_model
        self.label = label
        self.watermarker = Watermarker()
        self.flow_turns = FlowTurns()

    # --- loading -----------------------------------------------------------------------

    @classmethod
    def from_local(cls, ckpt_dir: str | Path, device: str | torch.device | None = None,
                   local: Mapping[str, str | Path | Sequence[str | Path]] | None = None,
                   model: str = DEFAULT_MODEL, label: str = "", options: LoadOptions | None = None,
                   max_resident_bytes: int | None = None, batch_size: int = 1) -> "ChatterboxTTS":
        """Build from a folder with the released layout of ResembleAI/chatterbox (ve, t3_cfg,
        s3gen, tokenizer, conds; or the multilingual files, with ve.pt and s3gen.pt), loading
        `model` now. `local` maps more repository ids to local stand-ins (a folder, or a T3
        file; for ResembleAI/chatterbox itself, folders searched after `ckpt_dir`, e.g. one
        with its multilingual files); other repositories come from the Hub."""
        local = dict(local or {})
        more = local.pop(BASE_REPO_ID, ())
        more = [more] if isinstance(more, (str, Path)) else list(more)
        sources = loading.WeightSources({BASE_REPO_ID: [Path(ckpt_dir), *more], **local})
        return cls._loaded(sources, device, model, label or f"local checkpoint {ckpt_dir}", options,
                           max_resident_bytes, batch_size)

    @classmethod
    def from_pretrained(cls, model: str = DEFAULT_MODEL, device: str | torch.device | None = None,
                        local: Mapping[str, str | Path] | None = None, options: LoadOptions | None = None,
                        max_resident_bytes: int | None = None, batch_size: int = 1) -> "ChatterboxTTS":
        """Download (or read from the Hub cache) what `model` needs and load it; other models
        are fetched on their first request (`local`: repositories with a local stand-in, as in
        `from_local`). Raises loading.WeightsUnavailable with a user-facing reason when
        offline, gated, etc."""
        return cls._loaded(loading.WeightSources(local), device, model, "the Hugging Face Hub", options,
                           max_resident_bytes, batch_size)

    @classmethod
    def _loaded(cls, sources, device, model, label, options, max_resident_bytes, batch_size=1) -> "ChatterboxTTS":
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        tts = cls(ModelPool(sources, device, options, max_resident_bytes), model, label, batch_size)
        tts.pool.get(model)
        return tts

    @property
    def device(self) -> torch.device:
        return self.pool.device

    def entry(self, model: str | None = None) -> ModelEntry:
        return self.pool.entry(model or self.default_model)

    def model(self, model: str | None = None) -> LoadedModel:
        """The components of `model` (default: the default model), loaded if needed."""
        return self.pool.get(model or self.default_model)

    def language_notes(self, language: str, model: str = "multilingual") -> tuple[str, ...]:
        """What `model`'s text front-end skips for `language` on this installation (e.g. Chinese
        word segmentation, which needs a download), for the page to show when it is chosen.
        Builds only the front-end if the model is not loaded. ValueError for a language the
        model does not speak."""
        language = self.entry(model).resolve_language(language)
        notes_for = getattr(self.pool.component(model, "text"), "notes_for", None)
        return tuple(notes_for(language)) if notes_for is not None else ()

    # --- per request -------------------------------------------------------------------

    @torch.inference_mode()
    def prepare_conditionals(self, audio, exaggeration: float = GenerationParams.exaggeration,
                             model: str | None = None, norm_loudness: bool = True) -> Conditionals:
        """A reference clip (path or (rate, samples)) -> the voice `model` conditions on.

        The prompt lengths are the model's (registry `PromptSpec`); models sharing the voice
        encoder and S3Gen (English, German) can use each other's conditionals. For a model
        offering it (Turbo, `entry.loudness_toggle`), `norm_loudness` first scales the clip to
        -27 LUFS, as the reference does. Raises ReferenceAudioError (a ValueError) for an
        unusable clip, including one not longer than the model's `min_reference_seconds`.
        """
        GenerationParams(exaggeration=exaggeration)  # the one place values are checked
        with self.pool.use(model or self.default_model) as m:
            return conditionals_from_clip(audio, m.voice_encoder, m.s3gen, m.entry.prompt, label=m.entry.label,
                                          exaggeration=exaggeration,
                                          norm_loudness=m.entry.loudness_toggle and norm_loudness,
                                          prepared_for=voice_specs(m.entry))

    def stream(
        self,
        text: str,
        conditionals: Conditionals | None = None,
        params: GenerationParams | None = None,
        *,
        model: str | None = None,
        language: str | None = None,
        watermark: bool = True,
        max_new_tokens: int = MAX_NEW_TOKENS,
        cancel: threading.Event | None = None,
        live: LivePlayback | None = None,
        normalize: bool = True,
    ) -> Iterator[StreamEvent]:
        """Speak `text` chunk by chunk, yielding audio as soon as each piece exists.

        `params` default to the model's recommended settings. `language` (an id or name) is
        what a multilingual model speaks (required there); other models speak their own (None,
        or that language). Long text is split at the sentence ends of that language into
        chunks (<= CHUNK_CHARS; Multilingual: its script's length), each generated with the same voice
        and its own seed-derived generator (chunk 0 uses the seed itself, so short text
        sounds as without chunking). The last event carries the whole result. Setting
        `cancel` (or closing the iterator) stops between steps.

        With `live`, S3Gen decodes chunks in token blocks while T3 runs, so audio starts after
        the first block instead of the first chunk (`chunk_audio.BlockChunk`: same tokens,
        slightly different audio); without, each chunk is decoded whole, as the reference does.
        The text is prepared first (`text_prep.plan_request`: markup, tags, pause tags as
        silence, and with `normalize` numbers and symbols as words); text with nothing to say
        raises ValueError.
        """
        check_text(text)
        model = model or self.default_model
        entry = self.pool.entry(model)
        language = entry.resolve_language(language)  # ValueError for one the model does not speak
        params = params if params is not None else entry.recommended
        if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
            raise ValueError(f"max_new_tokens must be in [1, {MAX_NEW_TOKENS}], got {max_new_tokens!r}")
        seed = 1 + secrets.randbelow(RANDOM_SEEDS - 1) if params.seed is None else int(params.seed)
        blocks, block_chunks = live.plan(self.device) if live is not None else (None, 0)
        watermarked = watermark and self.watermarker.available
        marker = self.watermarker if watermarked else None
        pause = np.zeros(int(CHUNK_PAUSE_S * SAMPLE_RATE), dtype=np.float32)

        # No inference_mode around the yields (it would leak into the caller's thread);
        # T3 and S3Gen enter it themselves.
        with self.pool.use(model) as m:
            voice = conditionals if conditionals is not None else m.builtin_voice
            if voice is None:
                raise ValueError("no reference voice given and the checkpoint has no built-in voice (conds.pt)")
            if voice.prepared_for not in (None, voice_specs(entry)):
                raise ValueError(f"this voice was prepared for a model that embeds voices differently from "
                                 f"{entry.label}; prepare it again with model={model!r}")
            voice = voice.with_exaggeration(params.exaggeration)
            plan = _plan(m, text, language, max_new_tokens, normalize)
            chunks = plan.chunks
            pieces: list[np.ndarray] = []
            outcomes: list[_ChunkOutcome] = []
            for position, item in enumerate(plan.items):
                if cancel is not None and cancel.is_set():
                    outcomes.append(_ChunkOutcome(stopped=True))
                    break
                if isinstance(item, Pause):
                    silence = np.zeros(item.samples(SAMPLE_RATE), dtype=np.float32)
                    pieces.append(silence)
                    # Counted with the chunk before it (done), or before chunk 0 when it opens the text.
                    before = [i.index for i in plan.items[:position] if isinstance(i, PlannedChunk)]
                    yield StreamEvent(silence, before[-1] if before else 0, len(chunks), chunk_done=bool(before))
                    continue
                index = item.index
                in_blocks = blocks is not None and (block_chunks is None or index < block_chunks)
                outcome = _ChunkOutcome()
                for event in self._speak_chunk(m, item, len(chunks), voice, params, seed, marker,
                                               blocks if in_blocks else None, cancel, bool(pieces), outcome):
                    pieces.append(event.audio)
                    yield event
                outcomes.append(outcome)
                if outcome.stopped:
                    break
                followed_by_chunk = position + 1 < len(plan.items) and isinstance(plan.items[position + 1],
                                                                                   PlannedChunk)
                if followed_by_chunk and outcome.made_audio:
                    # Sent right away: a player can start on a piece only once the next one arrives.
                    pieces.append(pause)
                    yield StreamEvent(pause, index, len(chunks), chunk_done=True)
        stopped = any(o.stopped for o in outcomes)
        if not pieces and not stopped:
            raise RuntimeError("the model produced no speech tokens for this text; try another seed")
        full = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        result = Synthesis(full.astype(np.float32), SAMPLE_RATE, seed, plan.normalized_text, plan.unknown_characters,
                           sum(o.n_tokens for o in outcomes), any(o.hit_limit for o in outcomes), watermarked,
                           len(chunks), tuple(i for i, o in enumerate(outcomes) if o.loop_cut), stopped,
                           plan.notes)
        yield StreamEvent(np.zeros(0, dtype=np.float32), len(chunks) - 1, len(chunks), result)

    def _speak_chunk(self, m: LoadedModel, chunk: PlannedChunk, n_chunks: int, voice: Conditionals,
                     params: GenerationParams, seed: int, marker: Watermarker | None,
                     blocks: StreamConfig | None, cancel: threading.Event | None, audio_before: bool,
                     outcome: _ChunkOutcome) -> Iterator[StreamEvent]:
        """One chunk: T3's tokens through the runaway guard into S3Gen, its audio as events.

        Fills `outcome`. A cancel stops promptly; a cut chunk is still finished when no audio
        was made before it (`audio_before` False), so that a stop always returns some audio.
        """
        index, limit = chunk.index, chunk.token_limit
        generator = torch.Generator(device=self.device).manual_seed(chunk_seed(seed, index))
        decoding, tail = self._decode_tokens(m, chunk, voice, params, generator)
        if blocks is None:
            audio = WholeChunk(m.s3gen, voice.gen, generator, marker, SAMPLE_RATE, tail)
        else:
            noise = torch.Generator(device=self.device).manual_seed(noise_seed(seed, index))
            audio = BlockChunk(m.s3gen, voice.gen, noise, marker, SAMPLE_RATE,
                               replace(blocks, max_tokens=limit + len(tail)), tail)
        tokens: list[int] = []
        released = 0  # tokens handed to `audio`: only those the guard can no longer cut
        guard = RunawayGuard()
        for token in decoding:
            tokens.append(token)
            loop = guard.push(token)
            if loop is not None:
                tokens = tokens[: loop.keep]
                outcome.loop_cut = True
                break
            if cancel is not None and cancel.is_set():
                outcome.stopped = True
                break
            with sharing(self.flow_turns, urgent=not (audio_before or outcome.made_audio)):
                pieces = audio.push(tokens[released:guard.safe])
            for wav in pieces:
                outcome.made_audio = True
                yield StreamEvent(wav, index, n_chunks)
            released = max(released, guard.safe)
        decoding.close()
        if outcome.stopped and (audio_before or outcome.made_audio):
            # Audio this chunk already streamed came from the tokens handed to its decoder.
            if outcome.made_audio:
                outcome.n_tokens = int(speech_ids(tokens[:released]).numel())
            return
        cut_by_limit = len(tokens) >= limit and tokens[-1] != STOP_SPEECH_TOKEN
        outcome.hit_limit = cut_by_limit and not outcome.stopped
        outcome.n_tokens = int(speech_ids(tokens).numel())
        # Every chunk's silent tail goes, single-chunk results too (a short natural pause stays).
        with sharing(self.flow_turns, urgent=not (audio_before or outcome.made_audio)):
            tail = audio.push(tokens[released:]) + audio.finish(trim=True)
        for i, wav in enumerate(tail):
            outcome.made_audio = True
            yield StreamEvent(wav, index, n_chunks, chunk_done=i == len(tail) - 1)

    def _decode_tokens(self, m: LoadedModel, chunk: PlannedChunk, voice: Conditionals, params: GenerationParams,
                       generator: torch.Generator) -> tuple[Iterator[int], tuple[int, ...]]:
        """The chunk's T3 token stream for the model's architecture, and the tokens S3Gen
        decodes after its speech (Turbo: three silence tokens, as the reference appends)."""
        limit = chunk.token_limit
        if m.entry.t3.architecture == "gpt2":
            # The reference's max_gen_len counts the steps after the first token.
            sampling = TurboSamplingParams(temperature=params.temperature, top_k=int(params.top_k),
                                           top_p=params.top_p, repetition_penalty=params.repetition_penalty,
                                           max_gen_len=limit - 1)
            tokens = m.t3.stream_tokens(voice.t3, chunk.tokens.ids, sampling, generator)
            return _without_first_stop(tokens), (S3GEN_SILENCE_TOKEN,) * SILENCE_TOKENS_APPENDED
        if m.entry.t3.alignment_analyzer:
            # Alone, never batched: the analyzer reads this request's attention at every step.
            tokens = multilingual_decoding.stream_tokens(m.t3, voice.t3, m.t3.frame_text(chunk.tokens.ids),
                                                         SamplingParams.of(params, limit), generator)
            return tokens, ()
        decoder = batcher_for(m.t3, self.batch_size)  # m.t3 itself when batch_size is 1
        tokens = decoder.stream_tokens(voice.t3, m.t3.frame_text(chunk.tokens.ids), SamplingParams.of(params, limit),
                                       generator)
        return tokens, ()

    def synthesize(self, text: str, conditionals: Conditionals | None = None,
                   params: GenerationParams | None = None, **options) -> Synthesis:
        """Speak `text` in the voice of `conditionals` (the built-in voice if None); see `stream`."""
        for event in self.stream(text, conditionals, params, **options):
            if event.result is not None:
                return event.result
        raise RuntimeError("generation ended without a result")

    def generate(self, text: str, conditionals: Conditionals | None = None,
                 params: GenerationParams | None = None, **options) -> np.ndarray:
        """24 kHz float32 audio of `text` (see `synthesize` for the details of the result)."""
        return self.synthesize(text, conditionals, params, **options).wav


def _plan(m: LoadedModel, text: str, language: str, max_new_tokens: int,
          normalize: bool) -> RequestPlan | MultilingualPlan:
    """The request's chunks by the model's text front-end: the multilingual one chunks by the
    request's language and reads text as the reference does (no number normalisation); the
    others prepare it first (text_prep: markup, tags, pauses, numbers as words)."""
    frontend = m.entry.text.frontend
    if frontend == "multilingual":
        return plan_multilingual_request(text, language, m.text, max_new_tokens)
    # Turbo's tags are its own (a tag typed in the text becomes its token).
    tags = m.entry.tags if frontend == "turbo" else ENGLISH_EVENT_TAGS
    return plan_request(text, language, m.text, CHUNK_CHARS, max_new_tokens, normalize, tags)


def _without_first_stop(tokens: Iterator[int]) -> Iterator[int]:
    """T3-Turbo's stream without a stop token drawn first: the reference never stops there
    (decoding goes on) and drops that token before S3Gen, while the pipeline's chunk decoders
    read a stop as the end of speech."""
    try:
        for i, token in enumerate(tokens):
            if i == 0 and token == STOP_SPEECH_TOKEN:
                continue
            yield token
    finally:
        tokens.close()  # a chunk cut early ends T3's decoding now
