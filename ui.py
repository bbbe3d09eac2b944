"""The Space's page: components built from the model registry, and the texts it shows.

`build_demo` lays out the generation tab; its controls, their ranges and their defaults
come from models/params.py (`CONTROLS`) and models/registry.py (each model's honoured
controls and recommended settings, applied when the model is picked). Handlers are
passed in, so this module holds no model state (app.py wires it). The voice tabs
(voice_tabs.py: conversion, saved voices, voice lab, watermark check) sit beside
`generation_tab`; the saved-voice picker of the generation tab reads the same library.
A model that takes a language (Multilingual) shows a language picker: choosing a language
puts its example sentence in the text box and shows the accent note and the front-end steps
this installation skips for it.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import gradio as gr

import recipe_ui
from models.constants import CHUNK_CHARS, MAX_TEXT_CHARS
from models.multilingual.languages import ACCENT_NOTE, LANGUAGES, dropdown_choices
from models.params import CONTROLS
from models.registry import MODELS, ModelEntry, entry_by_label
from voice_tabs import VoiceTools, build_voice_tabs

log = logging.getLogger(__name__)
MAIN_CONTROLS = ("exaggeration", "cfg_weight")  # shown above the advanced options
DEFAULT_LANGUAGE = "en"  # the language picker's first value: the page's example texts are English
TAGGED = [e for e in MODELS.values() if e.tags]  # models with expression-tag buttons

# Inserts `tag` into the text box at its cursor (replacing a selection), spaced from the words
# around it, then puts the cursor after the tag. Gradio passes the box's value and takes the new one.
INSERT_TAG_JS = """(text) => {
  const tag = %s;
  const box = document.querySelector('#text textarea');
  text = text || '';
  const start = box ? box.selectionStart : text.length, end = box ? box.selectionEnd : text.length;
  const before = text.slice(0, start), after = text.slice(end);
  const lead = before && !/\\s$/.test(before) ? ' ' : '';
  const trail = after && !/^[\\s.,!?;:]/.test(after) ? ' ' : '';
  const caret = before.length + lead.length + tag.length + trail.length;
  const result = before + lead + tag + trail + after;
  // Gradio writes the returned value into the box a moment later; place the caret once it has.
  const place = (tries) => {
    if (box.value === result) { box.focus(); box.setSelectionRange(caret, caret); }
    else if (tries > 0) setTimeout(() => place(tries - 1), 20);
  };
  if (box) setTimeout(() => place(50), 0);
  return result;
}"""
NO_VOICE = ("None: the reference clip above, or the model's built-in voice", "")


def no_language_notes(language: str) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class Handlers:
    """The app's functions the page calls. `language_notes(language)`: the front-end steps
    skipped for a language (ChatterboxTTS.language_notes)."""

    generate: Callable
    stop: Callable
    tools: VoiceTools
    language_notes: Callable[[str], Sequence[str]] = no_language_notes
    speed: str = ""  # the speed modes the Space runs with, as recipes record them ("" = none)


def voice_choices(tools: VoiceTools) -> list:
    """The saved-voice picker's choices: none, then built-in, example and saved voices by name."""
    return [NO_VOICE] + tools.voice_names()


def result_notes(result, clip, similarity: float | None, watermarker, voice: str = "") -> str:
    """The notes under a result (Markdown): length, seed, voice, similarity, watermark, what the
    text preparation changed, and warnings. `result` is a models.tts.Synthesis."""
    lines = [f"{result.seconds:.2f} s of audio from {result.n_speech_tokens} speech tokens, seed **{result.seed}**."]
    if voice:
        lines.append(f"Voice: **{voice}**" + (f" ({clip.describe()})." if clip else "."))
    else:
        lines.append(clip.describe() + "." if clip else "Voice: the built-in voice.")
    if similarity is not None:
        lines.append(f"Speaker similarity to the reference (resemblyzer cosine): **{similarity:.3f}**.")
    if result.watermarked:
        lines.append("Carries the imperceptible Perth watermark.")
    elif not watermarker.available:
        lines.append(f"Watermark off: {watermarker.reason}.")
    else:
        lines.append("Watermark off (turned off in the advanced options).")
    lines.extend(result.notes)  # what text preparation changed: the text as read, pauses, tags left out
    if result.hit_token_limit:
        lines.append("⚠️ A part hit its speech-token limit before the model finished it: its end may be "
                     "missing. Rephrase or shorten that sentence.")
    if result.n_chunks > 1:
        lines.append(f"Long text: spoken in {result.n_chunks} parts, split at sentence ends.")
    if result.loops_cut:
        parts = ", ".join(str(i + 1) for i in result.loops_cut)
        lines.append(f"⚠️ The model started repeating itself in part {parts}; that part was cut where the loop began.")
    if result.stopped:
        lines.append("⏹ Stopped on request: this is the audio made until then.")
    if result.unknown_characters:
        chars = " ".join(sorted(set(result.unknown_characters)))
        lines.append(f"⚠️ Characters the model cannot read were skipped: {chars}")
    return "  \n".join(lines)


def count_chars(text: str) -> str:
    n = len(text or "")
    if n > MAX_TEXT_CHARS:
        return f"{n} / {MAX_TEXT_CHARS} characters — too long for one request"
    parts = f" · long text is spoken in parts of up to {CHUNK_CHARS}" if n > CHUNK_CHARS else ""
    return f"{n} / {MAX_TEXT_CHARS} characters{parts}"


def progress_html(done: int, total: int, started: float) -> str:
    elapsed = time.monotonic() - started
    left = elapsed / done * (total - done) if done else None
    eta = f" · about {left:.0f} s left" if left is not None and done < total else ""
    return (f'<progress value="{done}" max="{total}" style="width:100%"></progress>'
            f"<div>chunk {done} of {total} done{eta}</div>")


def model_note(entry: ModelEntry) -> str:
    gated = " Gated on the Hub: needs `HF_TOKEN`." if entry.gated else ""
    return f"{entry.about} Licence: {entry.licence}.{gated}"


def control_updates(label: str) -> list:
    """The picked model's recommended value and visibility for every control, its note, the
    visibility of each tagged model's tag buttons, and of the loudness toggle."""
    entry = entry_by_label(label)
    updates = [gr.update(value=getattr(entry.recommended, name), visible=name in entry.controls)
               for name in CONTROLS]
    tags = [gr.update(visible=e.id == entry.id) for e in TAGGED]
    return updates + [model_note(entry)] + tags + [gr.update(visible=entry.loudness_toggle)]


def language_note(language: str, notes_for: Callable[[str], Sequence[str]]) -> str:
    """The note under the language picker: the accent note, then what is skipped for `language`."""
    try:
        notes = notes_for(language)
    except Exception as exc:  # e.g. the front-end's files cannot be had: the accent note still shows
        log.warning("no front-end notes for %r: %s", language, exc)
        notes = ()
    return "  \n".join([f"ℹ️ {ACCENT_NOTE}", *(f"⚠️ {note}" for note in notes)])


def language_updates(label: str, language: str, notes_for: Callable[[str], Sequence[str]]) -> list:
    """The language picker and its note, shown only for a model that takes a language."""
    shown = entry_by_label(label).takes_language
    note = language_note(language, notes_for) if shown else ""
    return [gr.update(visible=shown), gr.update(value=note, visible=shown)]


def pick_language(language: str, notes_for: Callable[[str], Sequence[str]]) -> list:
    """A language chosen by hand: its example sentence into the text box, and its note."""
    return [LANGUAGES[language].example, language_note(language, notes_for)]


def tag_buttons(entry: ModelEntry, text: gr.Textbox, visible: bool) -> gr.Column:
    """A button per expression tag of `entry`, each inserting its tag at the text box's cursor."""
    with gr.Column(visible=visible, variant="panel", elem_id=f"tags-{entry.id}") as group:
        gr.Markdown(f"**Expression tags** ({entry.label} only; other models drop them): click to insert "
                    f"at the cursor.")
        with gr.Row():
            for tag in entry.tags:
                button = gr.Button(tag, size="sm", min_width=60, elem_classes="tag-button")
                button.click(None, text, text, js=INSERT_TAG_JS % json.dumps(tag), queue=False,
                             api_visibility="private")
    return group


def _slider(name: str, entry: ModelEntry) -> gr.Slider:
    c = CONTROLS[name]
    label = f"{c.label} ({c.about})" if c.about else c.label
    return gr.Slider(c.lo, c.hi, value=getattr(entry.recommended, name), step=c.step, label=label,
                     elem_id=name, visible=name in entry.controls)


def generation_tab(handlers: Handlers, examples: list[list], live_visible: bool,
                   demo: gr.Blocks | None = None) -> gr.Dropdown:
    """The text-to-speech tab; returns its saved-voice picker (refreshed by `build_demo`). With `demo`,
    a `?recipe=` link restores the form when the page opens."""
    first = next(iter(MODELS.values()))
    tools = handlers.tools
    with gr.Row():
        with gr.Column():
            text = gr.Textbox(label="Text to speak", value=examples[0][0], lines=4, max_lines=8, elem_id="text")
            counter = gr.Markdown(count_chars(examples[0][0]), elem_id="char-count")
            normalize = gr.Checkbox(value=True, label="Read numbers, amounts and symbols as words",
                                    elem_id="normalize")
            reference = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                 label="Reference voice (optional; the built-in voice if empty)",
                                 elem_id="reference")
            hints = gr.Markdown(elem_id="reference-hints")
            # The last choice wins: picking a voice clears the clip, giving a clip resets the picker.
            voice = gr.Dropdown(voice_choices(tools), value="", allow_custom_value=True, elem_id="voice",
                                label="…or a saved voice (made in the Saved voices tab; replaces the clip)")
            model = gr.Dropdown([e.label for e in MODELS.values()], value=first.label, label="Model",
                                elem_id="model")
            note = gr.Markdown(model_note(first), elem_id="model-note")
            language = gr.Dropdown(dropdown_choices(), value=DEFAULT_LANGUAGE, label="Language", elem_id="language",
                                   visible=first.takes_language)
            language_info = gr.Markdown(language_note(DEFAULT_LANGUAGE, handlers.language_notes)
                                        if first.takes_language else "", elem_id="language-note",
                                        visible=first.takes_language)
            tag_groups = [tag_buttons(e, text, e.id == first.id) for e in TAGGED]
            controls = {name: _slider(name, first) for name in MAIN_CONTROLS}
            with gr.Accordion("Advanced options", open=False):
                controls.update({name: _slider(name, first) for name in CONTROLS if name not in MAIN_CONTROLS})
                seed = gr.Number(value=0, precision=0, label="Seed (0 = random)", elem_id="seed")
                watermark = gr.Checkbox(value=True, label="Perth watermark (imperceptible)")
                loudness = gr.Checkbox(value=True, label="Normalise the reference's loudness (-27 LUFS)",
                                       elem_id="norm-loudness", visible=first.loudness_toggle)
            with gr.Row():
                button = gr.Button("Generate", variant="primary", elem_id="generate")
                stop = gr.Button("Stop", variant="stop", elem_id="stop")
            sliders = [controls[name] for name in CONTROLS]
            form = recipe_ui.Form(text, model, voice, reference, sliders, seed, watermark, loudness, normalize,
                                  [note, *tag_groups], control_updates, lambda: voice_choices(tools),
                                  tools.voice_names, language, handlers.speed)
            recipe_ui.recipe_loader(form, demo)
        with gr.Column():
            # No download button: a streamed player has no file behind it (the full audio has one).
            live = gr.Audio(label="Live playback (starts while the rest is generated)", streaming=True,
                            autoplay=True, interactive=False, elem_id="live", visible=live_visible, buttons=[])
            progress = gr.HTML(elem_id="progress")
            audio = gr.Audio(label="Full audio", type="numpy", format="wav", elem_id="output", interactive=False)
            # Hidden until a result gives them a value (a number box would show 0).
            seed_used = gr.Number(label="Seed used", precision=0, interactive=False, elem_id="seed-used",
                                  visible=False)
            similarity = gr.Number(label="Speaker similarity", interactive=False, elem_id="similarity",
                                   visible=False)
            notes = gr.Markdown(elem_id="notes")
            recipe_file, share_link = recipe_ui.result_downloads(audio)
    gr.Examples(examples, inputs=[text, reference])
    text.change(count_chars, text, counter, queue=False, api_visibility="private")
    # .input (the user's pick), not .change: a loaded recipe sets the model and its own slider values.
    model.input(control_updates, model, sliders + [note, *tag_groups, loudness], queue=False,
                 api_visibility="private")
    model.change(lambda label, lang: language_updates(label, lang, handlers.language_notes), [model, language],
                 [language, language_info], api_visibility="private")
    language.input(lambda lang: pick_language(lang, handlers.language_notes), language, [text, language_info],
                   api_visibility="private")
    reference.change(tools.hints, reference, hints, api_visibility="private")
    for given in (reference.upload, reference.stop_recording):
        given(lambda: "", None, voice, queue=False, api_visibility="private")
    voice.input(lambda name: None if name else gr.skip(), voice, reference, queue=False, api_visibility="private")
    voice.focus(lambda: gr.update(choices=voice_choices(tools)), None, voice, queue=False,
                api_visibility="private")
    # New inputs go at the end, so positional API calls made before them keep working.
    button.click(handlers.generate,
                 [text, reference, *sliders, seed, watermark, model, loudness, normalize, voice, language],
                 [live, audio, seed_used, similarity, notes, progress, recipe_file, share_link],
                 api_name="generate").then(
        lambda seed, sim: (gr.update(visible=seed is not None), gr.update(visible=sim is not None)),
        [seed_used, similarity], [seed_used, similarity], queue=False, api_visibility="private")
    stop.click(handlers.stop, None, None, queue=False, api_name="stop")
    return voice


def build_demo(handlers: Handlers, weights_note: str, examples: list[list], live_visible: bool,
               extra_tabs: dict[str, Callable[[], None]] | None = None) -> gr.Blocks:
    """The page: the generation tab, then `extra_tabs` (title -> builder called inside its tab)."""
    with gr.Blocks(title="Chatterbox voice cloning") as demo:
        gr.Markdown("# Chatterbox voice cloning\nType text, give a reference voice (upload or record a few "
                    "seconds of speech, or pick a saved one), and hear it spoken in that voice.")
        gr.Markdown(weights_note, elem_id="weights-note")
        with gr.Tab("Text to speech"):
            voice = generation_tab(handlers, examples, live_visible, demo)
        _, _, message = build_voice_tabs(handlers.tools, demo)
        for title, build in (extra_tabs or {}).items():
            with gr.Tab(title):
                build()
        # Saved voices appear in the picker on page load and after every save, rename or delete.
        refresh = lambda: gr.update(choices=voice_choices(handlers.tools))  # noqa: E731
        demo.load(refresh, None, voice, api_visibility="private")
        message.change(refresh, None, voice, queue=False, api_visibility="private")
    return demo
