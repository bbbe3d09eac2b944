"""The text-to-speech tab's result files and recipes: downloads, recipe JSON, share link, restoring the form.

Every result can be downloaded as WAV, FLAC, MP3 or Ogg Opus at 24 kHz or a chosen rate
(encoded by serving/formats.py from the full audio the page shows), and carries its recipe
(serving/recipes.py: text, model, voice id or clip hash, every setting, seed, options,
version) as a JSON file and as a share link: the page's own address with `?recipe=...`.
Gradio's deep link is not used: it points at session state the server keeps for a while,
while a recipe link holds everything itself and outlives restarts.

A recipe file uploaded in the form, or a `?recipe=` link the page is opened with, fills
every control; a file that is not a recipe, or names a model or voice this Space does not
have, changes nothing and says why. The functions here are plain (testable without a
browser); `result_downloads` and `recipe_loader` build and wire the components.
"""
from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gradio as gr
import numpy as np

from models.params import CONTROLS, GenerationParams, check_text
from models.registry import MODELS, entry_by_label
from models.tts import SAMPLE_RATE
from serving.formats import audio_format, check_rate, encode
from serving.recipes import MAX_RECIPE_BYTES, Recipe, speed_mismatch

log = logging.getLogger("chatterbox-space")

DOWNLOAD_FORMATS = [("WAV", "wav"), ("FLAC", "flac"), ("MP3", "mp3"), ("Ogg Opus", "opus")]
DOWNLOAD_RATES = [(f"{r / 1000:g} kHz" + (" (the model's)" if r == SAMPLE_RATE else ""), r)
                  for r in (8000, 16000, 22050, 24000, 32000, 44100, 48000)]
# Voice ids that mean "the model's built-in voice" (the APIs' names for it); the form shows none.
BUILT_IN_VOICE_IDS = ("default", "alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage",
                      "shimmer", "verse")
# The form's option checkboxes, by the Recipe field each one sets.
OPTIONS = ("watermark", "norm_loudness", "normalize")


def clip_sha256(clip) -> str:
    """The hash a recipe names an uploaded clip by: SHA-256 of its decoded samples (models.reference)."""
    return hashlib.sha256(np.ascontiguousarray(clip.wav).tobytes()).hexdigest()


def recipe_of(text: str, model: str, params: GenerationParams, seed: int, voice: str = "", clip=None,
              watermark: bool = True, norm_loudness: bool = True, normalize: bool = True,
              language: str | None = None, speed: str = "") -> Recipe:
    """The recipe of one page generation: `params` as used (every control), `seed` the one drawn or
    given, `voice` a listed voice's name (else `clip`, an uploaded ReferenceClip, by hash; neither:
    the built-in voice), `language` the id a multilingual model spoke (None for the others), `speed`
    the Space's speed modes (`LoadOptions.changed()`)."""
    settings = {name: float(getattr(params, name)) for name in CONTROLS}
    return Recipe(text, model, int(seed), settings, voice=voice or None,
                  clip_sha256=clip_sha256(clip) if clip is not None and not voice else None,
                  watermark=bool(watermark), normalize=bool(normalize), norm_loudness=bool(norm_loudness),
                  language=language, speed=speed)


def write_recipe(recipe: Recipe) -> str:
    """The recipe as a JSON file in a fresh temporary folder (Gradio serves it from there); its path."""
    path = Path(tempfile.mkdtemp(prefix="recipe-")) / f"recipe-{recipe.model}-{recipe.seed}.json"
    path.write_text(recipe.to_json(), encoding="utf-8")
    return str(path)


def page_url(request: gr.Request | None) -> str:
    """The public address of the page (no trailing slash) as the browser reached it, behind proxies
    too (Gradio's own root-URL rules); "" when unknown (a link then starts at `?recipe=`)."""
    raw = getattr(request, "request", None) if request is not None else None
    if raw is None:
        return ""
    try:
        from gradio import route_utils

        return route_utils.get_root_url(raw, route_utils.get_api_call_path(raw), None)
    except Exception:  # an unknown route shape: a relative link still works on the page
        log.debug("no root URL for the share link", exc_info=True)
        return ""


def share_link(recipe: Recipe, base_url: str) -> str:
    """`base_url/?recipe=...`, or a line saying why there is none (a recipe too long for a link)."""
    try:
        return f"{base_url}/?recipe={recipe.to_link_param()}"
    except ValueError as exc:
        return f"(no link: {exc})"


def result_outputs(recipe: Recipe, request: gr.Request | None) -> tuple[str, str]:
    """The recipe file's path and the share link of a result."""
    return write_recipe(recipe), share_link(recipe, page_url(request))


def audio_file(audio, fmt: str, rate) -> tuple[str | None, str]:
    """The shown full audio (Gradio's (rate, samples) from a numpy Audio) as a file of `fmt` at `rate` Hz,
    and a note ("" or why there is no file: e.g. a rate the format cannot carry)."""
    if audio is None:
        return None, ""
    sample_rate, samples = audio
    samples = np.asarray(samples)
    if samples.ndim == 2:
        samples = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    # The page's wav holds 16-bit samples written as round(x * 32767); dividing back re-encodes them exactly.
    wav = samples.astype(np.float32) / 32767 if samples.dtype.kind == "i" else samples.astype(np.float32)
    try:
        spec = audio_format(fmt)
        rate = check_rate(spec, int(rate))
        data = encode(wav, int(sample_rate), spec, rate)
    except (ValueError, RuntimeError, TypeError) as exc:
        return None, f"⚠️ {exc}"
    path = Path(tempfile.mkdtemp(prefix="download-")) / f"chatterbox-{rate}hz.{spec.extension}"
    path.write_bytes(data)
    return str(path), ""


# --- restoring the form -------------------------------------------------------------------------

@dataclass(frozen=True)
class FormValues:
    """What a recipe puts in the form: `voice` is a listed voice's name ("" for the built-in voice or
    an uploaded clip, `clip_sha256` then says which clip)."""

    text: str
    model_label: str
    voice: str
    controls: dict[str, float]
    seed: int
    watermark: bool
    norm_loudness: bool
    normalize: bool
    clip_sha256: str | None = None
    language: str | None = None   # the language id, for a model taking one
    speed: str = ""               # the speed modes the recipe was made with ("" = none)


def form_values(recipe: Recipe, voice_names: list[str]) -> FormValues:
    """The form a recipe describes. ValueError naming the problem: an unknown model, voice or setting,
    a value out of range, seed 0 (the page's "random"), or text the page cannot take."""
    entry = MODELS.get(recipe.model)
    if entry is None:
        raise ValueError(f"the recipe names the model {recipe.model!r}, which this Space does not have "
                         f"(it has: {', '.join(MODELS)})")
    unknown = sorted(set(recipe.settings) - set(CONTROLS))
    if unknown:
        raise ValueError(f"the recipe has unknown setting(s) {', '.join(unknown)}; known: {', '.join(CONTROLS)}")
    check_text(recipe.text)
    if recipe.seed == 0:
        raise ValueError("the recipe's seed is 0, which this page reads as 'draw a random seed'")
    controls = {name: recipe.settings.get(name, getattr(entry.recommended, name)) for name in CONTROLS}
    controls["top_k"] = int(controls["top_k"]) if float(controls["top_k"]).is_integer() else controls["top_k"]
    GenerationParams(**controls, seed=recipe.seed)  # ValueError naming a value out of range
    voice = recipe.voice or ""
    if voice in BUILT_IN_VOICE_IDS:
        voice = ""
    elif voice and voice not in voice_names:
        raise ValueError(f"the recipe's voice {voice!r} is not one of this Space's voices; save a voice under "
                         "that name (Saved voices tab) or pick another")
    # ValueError for a language the model does not speak (or a missing one where it needs one)
    language = entry.resolve_language(recipe.language) if entry.takes_language else None
    return FormValues(recipe.text, entry.label, voice, controls, recipe.seed, recipe.watermark,
                      recipe.norm_loudness, recipe.normalize, recipe.clip_sha256, language, recipe.speed)


def read_recipe_file(path: str | Path) -> Recipe:
    """The recipe in an uploaded file; ValueError saying why it is not one."""
    path = Path(path)
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise ValueError(f"the file is {path.stat().st_size:,} bytes; a recipe is at most {MAX_RECIPE_BYTES:,}")
    return Recipe.from_json(path.read_bytes())


def loaded_message(values: FormValues, source: str, space_speed: str = "") -> str:
    """The line under the loader once a recipe has filled the form (Markdown); `space_speed`: this
    Space's speed modes, which decide whether Generate can give the recipe's samples."""
    voice = f"voice **{values.voice}**" if values.voice else "the built-in voice"
    if values.clip_sha256:
        voice = (f"an uploaded clip (SHA-256 `{values.clip_sha256[:12]}…`): upload the same clip to hear the same "
                 "voice")
    loaded = f"✅ Recipe loaded from {source}: {values.model_label}, {voice}, seed **{values.seed}**. "
    mismatch = speed_mismatch(values.speed, space_speed, quote="`")
    if mismatch:
        return loaded + f"⚠️ It was {mismatch}."
    return loaded + "Press Generate to make the same audio again."


@dataclass(frozen=True)
class Form:
    """The components a recipe fills. `model_updates(label)` gives the model dropdown's dependent
    updates: each slider's (in CONTROLS order), then one per `model_outputs` component, then any
    more (the loudness box's, which is a field here and is set from the model's entry)."""

    text: gr.Textbox
    model: gr.Dropdown
    voice: gr.Dropdown
    reference: gr.Audio
    sliders: list
    seed: gr.Number
    watermark: gr.Checkbox
    norm_loudness: gr.Checkbox
    normalize: gr.Checkbox
    model_outputs: list
    model_updates: Callable[[str], list]
    voice_choices: Callable[[], list]
    voice_names: Callable[[], list]
    language: gr.Dropdown | None = None
    speed: str = ""  # this Space's speed modes (recipes record theirs)

    def outputs(self) -> list:
        return [self.text, self.model, self.voice, self.reference, *self.sliders, self.seed, self.watermark,
                self.norm_loudness, self.normalize, *self.model_outputs,
                *([self.language] if self.language is not None else [])]

    def fill(self, values: FormValues) -> list:
        """Updates for `outputs()`: every control set, the model's controls shown, a named or built-in
        voice replacing any clip (a clip recipe leaves the uploaded clip as it is)."""
        dependent = self.model_updates(values.model_label)
        n = len(self.sliders)
        sliders = [gr.update(value=values.controls[name], visible=u.get("visible"))
                   for name, u in zip(CONTROLS, dependent[:n])]
        reference = gr.skip() if values.clip_sha256 else None
        loudness = gr.update(value=values.norm_loudness, visible=entry_by_label(values.model_label).loudness_toggle)
        return [values.text, values.model_label, gr.update(value=values.voice, choices=self.voice_choices()),
                reference, *sliders, values.seed, values.watermark, loudness, values.normalize,
                *dependent[n:n + len(self.model_outputs)],
                *([values.language or gr.skip()] if self.language is not None else [])]

    def unchanged(self) -> list:
        return [gr.skip() for _ in self.outputs()]

    def restore(self, load: Callable[[], Recipe | None], source: str) -> list:
        """`outputs()` updates and the loader's message; nothing changes when the recipe is unusable."""
        try:
            recipe = load()
            if recipe is None:
                return [*self.unchanged(), gr.skip()]
            values = form_values(recipe, self.voice_names())
        except (ValueError, OSError) as exc:
            return [*self.unchanged(), f"⚠️ Not loaded, the form is unchanged: {exc}"]
        return [*self.fill(values), loaded_message(values, source, self.speed)]


def recipe_loader(form: Form, demo: gr.Blocks | None) -> None:
    """The "Load a recipe" upload and its message; also restores the form when the page is opened
    with `?recipe=...`."""
    with gr.Accordion("Load a recipe (a result's .json file; a share link does this on opening)", open=False):
        upload = gr.File(label="Recipe (.json)", file_types=[".json"], type="filepath", elem_id="recipe-upload")
    message = gr.Markdown(elem_id="recipe-message")

    def from_file(path):
        # The box is emptied again, ready for the next file; the message says what this one did.
        return [*form.restore(lambda: read_recipe_file(path) if path else None, "the file"), None]

    def from_link(request: gr.Request):
        token = dict(getattr(request, "query_params", None) or {}).get("recipe") if request else None
        return form.restore(lambda: Recipe.from_link_param(token) if token else None, "the link")

    upload.upload(from_file, upload, [*form.outputs(), message, upload], queue=False, api_visibility="private")
    if demo is not None:
        demo.load(from_link, None, [*form.outputs(), message], queue=False, api_visibility="private")


def result_downloads(audio: gr.Audio) -> tuple[gr.File, gr.Textbox]:
    """Below the full audio: format and rate pickers with the file they make, the recipe file and the
    share link. Returns (recipe file, share link), which the generate event fills."""
    with gr.Row():
        fmt = gr.Dropdown(DOWNLOAD_FORMATS, value="wav", label="Download format", elem_id="download-format")
        rate = gr.Dropdown(DOWNLOAD_RATES, value=SAMPLE_RATE, label="Sample rate", elem_id="download-rate")
    download = gr.File(label="Audio file", interactive=False, elem_id="download-file")
    note = gr.Markdown(elem_id="download-note")
    recipe = gr.File(label="Recipe (JSON: text, model, voice, settings, seed; load it to make this again)",
                     interactive=False, elem_id="recipe-file")
    link = gr.Textbox(label="Share link (opens the page with these settings)", interactive=False,
                      buttons=["copy"], elem_id="share-link")
    gr.on([audio.change, fmt.change, rate.change], audio_file, [audio, fmt, rate], [download, note],
          api_visibility="private")
    return recipe, link
