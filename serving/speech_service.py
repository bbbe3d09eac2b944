"""The Space's speech functions for programs: OpenAI endpoint, MCP tools and batch jobs.

`SpeechService` turns a request that names things (model id, voice id, settings) into a
stream of audio pieces from the pipeline, checking everything before any model work
starts, so an API can still answer with the right status. Voices are resolved by a
`VoiceDirectory` (built-in, example and saved voices by id).
"""
from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Protocol

import numpy as np

from models.constants import MAX_NEW_TOKENS, MAX_TEXT_CHARS
from models.params import CONTROLS, GenerationParams, check_text
from models.registry import DEFAULT_MODEL, MODELS
from models.tts import SAMPLE_RATE, ChatterboxTTS, Conditionals, LivePlayback, Synthesis

from .openai_api import SpeechRequest, SpeechStream, TextTooLong, Unavailable, UnknownName
from .recipes import Recipe, speed_mismatch

# OpenAI's model names, so that clients with those names built in reach the default model.
OPENAI_MODEL_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
RANDOM_SEEDS = 2**32          # a drawn seed stays short enough to read and type


class VoiceDirectory(Protocol):
    """Named voices: `voices()` lists them (dicts with at least `id`, `name`, `kind`);
    `conditionals(voice_id, model)` gives the prepared voice (None: the model's built-in
    voice) or raises LookupError for an unknown id."""

    def voices(self) -> list[dict]: ...

    def conditionals(self, voice_id: str, model: str) -> Conditionals | None: ...


@dataclass(frozen=True)
class Speech:
    """A checked request: what the pipeline is asked to do."""

    text: str
    model: str
    voice: str
    conditionals: Conditionals | None
    params: GenerationParams
    watermark: bool = True
    notes: tuple[str, ...] = ()
    language: str | None = None   # the language id a multilingual model speaks (None: the model's own)
    normalize: bool = True          # numbers, amounts and symbols read as words


class SpeechService:
    """Checks requests against the registry and voices, then streams them through the pipeline."""

    def __init__(self, pipeline: ChatterboxTTS | None, voices: VoiceDirectory, unavailable: str = "",
                 live: LivePlayback | None = None, max_new_tokens: int = MAX_NEW_TOKENS):
        self.pipeline, self.directory, self.unavailable = pipeline, voices, unavailable
        self.live, self.max_new_tokens = live, max_new_tokens

    def model_ids(self) -> list[str]:
        return list(MODELS)

    def voices(self) -> list[dict]:
        return self.directory.voices()

    def check(self, text: str, model: str, voice: str, settings: dict[str, float | None],
              seed: int | None, language: str | None = None, watermark: bool = True,
              normalize: bool = True) -> Speech:
        """Raise UnknownName (404), TextTooLong (413), ValueError (400) or Unavailable (503); else
        the request with its params: the model's honoured controls as given, the rest at its
        recommended values, and a drawn seed when none was given."""
        if self.pipeline is None:
            raise Unavailable(self.unavailable or "no model weights are loaded")
        model_id = DEFAULT_MODEL if model in OPENAI_MODEL_ALIASES else model
        if model_id not in MODELS:
            raise UnknownName(f"unknown model {model!r}; available: {', '.join(MODELS)}")
        entry = MODELS[model_id]
        if isinstance(text, str) and len(text) > MAX_TEXT_CHARS:
            raise TextTooLong(f"input is {len(text):,} characters; one request speaks at most {MAX_TEXT_CHARS:,}")
        check_text(text)
        language = entry.resolve_language(language)  # a multilingual model needs one (by id or name)
        language = language if entry.takes_language else None  # the others speak their own
        notes = []
        given = {k: v for k, v in settings.items() if v is not None}
        unknown = sorted(set(given) - set(CONTROLS))
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(CONTROLS)}")
        ignored = sorted(set(given) - set(entry.controls))
        if ignored:
            notes.append(f"{model_id} ignores {', '.join(ignored)}")
        honoured = {k: v for k, v in given.items() if k in entry.controls}
        seed = 1 + secrets.randbelow(RANDOM_SEEDS - 1) if seed is None else seed
        params = replace(entry.recommended, **honoured, seed=seed)   # ValueError for a bad value
        try:
            conditionals = self.directory.conditionals(voice, model_id)
        except LookupError:
            names = ", ".join(v["id"] for v in self.directory.voices())
            raise UnknownName(f"unknown voice {voice!r}; available: {names}") from None
        return Speech(text, model_id, voice, conditionals, params, watermark, tuple(notes), language,
                      normalize)

    def pieces(self, speech: Speech, cancel: threading.Event | None = None,
               on_result: Callable[[Synthesis], None] | None = None) -> Iterator[np.ndarray]:
        """The audio of a checked request as it is made (float32, SAMPLE_RATE); closing the
        iterator stops the generation. `on_result` receives the whole result at the end."""
        events = self.pipeline.stream(speech.text, speech.conditionals, speech.params, model=speech.model,
                                      language=speech.language, watermark=speech.watermark,
                                      max_new_tokens=self.max_new_tokens,
                                      cancel=cancel, live=self.live, normalize=speech.normalize)
        try:
            for event in events:
                if event.result is not None:
                    if on_result is not None:
                        on_result(event.result)
                elif event.audio.size:
                    yield event.audio
        finally:
            events.close()

    def recipe(self, speech: Speech) -> Recipe:
        """The recipe of a checked request (its seed is always known: `check` draws one)."""
        settings = {name: float(getattr(speech.params, name)) for name in CONTROLS}
        return Recipe(speech.text, speech.model, int(speech.params.seed), settings, voice=speech.voice,
                      watermark=speech.watermark, language=speech.language, normalize=speech.normalize,
                      speed=self._speed())

    def from_recipe(self, recipe: Recipe) -> Speech:
        """The request a recipe describes, checked as any other. An uploaded clip cannot travel in
        a recipe: such a recipe raises ValueError asking for a named voice. Named voices are
        prepared with the reference's loudness normalised, so a recipe that turned it off for a
        model with that option raises ValueError too (the page replays it)."""
        if recipe.clip_sha256 is not None:
            raise ValueError("this recipe used an uploaded clip (sha256 " + recipe.clip_sha256[:12] + "...): "
                             "upload the same clip in the page, or save it as a voice and name it")
        voice = recipe.voice or "default"
        entry = MODELS.get(recipe.model)
        if not recipe.norm_loudness and entry is not None and entry.loudness_toggle and voice != "default":
            raise ValueError("this recipe turned off the reference's loudness normalisation, which named voices "
                             "here always have: load it in the page instead")
        speech = self.check(recipe.text, recipe.model, voice, recipe.settings, recipe.seed,
                            recipe.language, watermark=recipe.watermark, normalize=recipe.normalize)
        mismatch = speed_mismatch(recipe.speed, self._speed())
        if mismatch:
            speech = replace(speech, notes=(*speech.notes, f"the recipe was {mismatch}"))
        return speech

    def _speed(self) -> str:
        """The speed modes the pipeline was built with, as recipes record them."""
        return self.pipeline.pool.options.changed() if self.pipeline is not None else ""

    def open_speech(self, request: SpeechRequest) -> SpeechStream:
        """The OpenAI endpoint's entry (see serving.openai_api.SpeechService)."""
        settings = {name: getattr(request, name) for name in CONTROLS if hasattr(request, name)}
        speech = self.check(request.input, request.model, request.voice, settings, request.seed,
                            request.language)
        cancel = threading.Event()
        return SpeechStream(self.pieces(speech, cancel), SAMPLE_RATE, speech.params.seed, speech.model,
                            list(speech.notes), cancel)
