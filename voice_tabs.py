"""Gradio tabs for working with voices: conversion, saved voices, the voice lab, the watermark check.

Each `*_tab` builds its tab inside an open `gr.Blocks`/`gr.Tab` and wires its events; every
dependency comes in through `VoiceTools` (no module state, no model loading here). The event
functions are plain methods, so they are usable and testable without a browser.
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Iterator

import gradio as gr
import numpy as np
import soundfile as sf

from models.reference import REF_SR, ReferenceAudioError, load_reference
from models.registry import MODELS
from models.tts import voice_specs
from models.vc import SAMPLE_RATE, VoiceConverter, load_source
from models.voice_hints import reference_hints
from models.voice_lab import MAX_CLIPS, build_map, render
from models.voice_library import ReadOnlyVoice, VoiceLibrary, VoiceLibraryError
from models.watermark import Watermarker, check_watermark

UPLOAD = "(use the uploaded clip)"


def _pcm16(wav: np.ndarray) -> np.ndarray:
    return (np.clip(wav, -1.0, 1.0) * 32767).astype(np.int16)


@dataclass
class VoiceTools:
    """What the voice tabs need from the app.

    `use_s3gen()` is a context manager yielding the loaded (shared) S3Gen and keeping it loaded
    for the block (e.g. around the residency pool's `use`), or raising with a readable reason;
    `prepare_voice(clip, exaggeration)` makes TTS conditionals for saving (None: saving off);
    `gpu` wraps the functions that run models (e.g. `spaces.GPU(duration=120)`).
    """

    use_s3gen: Callable[[], ContextManager]
    watermarker: Watermarker
    library: VoiceLibrary
    similarity: object
    prepare_voice: Callable | None = None
    model_name: str = "english"
    can_stream: bool = True
    gpu: Callable[[Callable], Callable] = field(default=lambda f: f)

    def __post_init__(self):
        # Wrapped once, at start-up: ZeroGPU registers its functions before the app serves.
        self._convert = self.gpu(self._convert_stream)
        self._prepare = self.gpu(self.prepare_voice) if self.prepare_voice is not None else None

    # --- shared -----------------------------------------------------------------------

    def voice_names(self) -> list[str]:
        return self.library.names()

    def conditionals_for(self, name: str, exaggeration: float = 0.5):
        """TTS conditionals of a listed voice, for the text-to-speech tab and its API `voice` argument:
        a saved or built-in voice as stored (`entry(name).model` says which model it was prepared for),
        an example clip prepared now. Raises VoiceLibraryError for an unknown name."""
        entry = self.library.entry(name)
        if entry.read_only and entry.clip is not None:
            if self._prepare is None:
                raise VoiceLibraryError("preparing a voice needs the model weights")
            return self._prepare(load_reference(entry.clip), float(exaggeration))
        return self.library.load(name).with_exaggeration(float(exaggeration))

    def hints(self, clip_path) -> str:
        """Reference-quality hints for an uploaded clip (Markdown; empty without a clip)."""
        if not clip_path:
            return ""
        try:
            clip = load_reference(clip_path)
        except ReferenceAudioError as exc:
            return f"⚠️ {exc}"
        return "  \n".join(reference_hints(clip.wav, REF_SR, self.similarity))

    def _target(self, converter: VoiceConverter, clip_path, voice_name: str | None):
        if voice_name and voice_name != UPLOAD:
            entry = self.library.entry(voice_name)
            if entry.read_only and entry.clip is not None:  # an example clip: embed it as uploaded
                return converter.embed_target(entry.clip), f"target: {entry.name}"
            return self.library.load(voice_name).gen, f"target: saved voice {entry.name}"
        if not clip_path:
            raise ValueError("give a target voice: upload or record a clip, or pick a saved voice")
        return converter.embed_target(clip_path), "target: the uploaded clip (its first 10 s)"

    # --- voice conversion -------------------------------------------------------------

    def _convert_stream(self, source_path, clip_path, voice_name, seed) -> Iterator[tuple[np.ndarray, str]]:
        wav16 = load_source(source_path)
        with self.use_s3gen() as s3gen:
            converter = VoiceConverter(s3gen, self.watermarker)
            target, what = self._target(converter, clip_path, voice_name)
            for piece in converter.stream(wav16, target, seed=int(seed or 0)):
                yield piece, what

    def convert(self, source_path, clip_path, voice_name, seed):
        """Event: stream (live piece, full audio, notes)."""
        if not source_path:
            raise gr.Error("give the source speech to convert (upload or record)")
        skip, pieces, what = gr.skip(), [], ""
        try:
            for piece, what in self._convert(source_path, clip_path, voice_name, seed):
                pieces.append(piece)
                seconds = sum(len(p) for p in pieces) / SAMPLE_RATE
                yield ((SAMPLE_RATE, _pcm16(piece)) if self.can_stream else skip, skip,
                       f"converting… {seconds:.1f} s done")
        except (ValueError, RuntimeError) as exc:
            raise gr.Error(str(exc)) from exc
        wav = np.concatenate(pieces)
        marked = "watermarked (Perth)" if self.watermarker.available else f"not watermarked: {self.watermarker.reason}"
        yield skip, (SAMPLE_RATE, _pcm16(wav)), f"{len(wav) / SAMPLE_RATE:.1f} s, {what}, {marked}."

    def conversion_tab(self) -> None:
        with gr.Row():
            with gr.Column():
                source = gr.Audio(sources=["upload", "microphone"], type="filepath", elem_id="vc-source",
                                  label="Source speech (its words; up to 10 minutes)")
                target = gr.Audio(sources=["upload", "microphone"], type="filepath", elem_id="vc-target",
                                  label="Target voice clip (first 10 s used)")
                voice = gr.Dropdown([UPLOAD] + self.voice_names(), value=UPLOAD, label="…or a saved voice",
                                    elem_id="vc-voice")
                hints = gr.Markdown(elem_id="vc-hints")
                seed = gr.Number(value=0, precision=0, label="Seed")
                button = gr.Button("Convert", variant="primary", elem_id="vc-convert")
            with gr.Column():
                live = gr.Audio(label="Live playback", streaming=True, autoplay=True, interactive=False,
                                visible=self.can_stream, elem_id="vc-live")
                full = gr.Audio(label="Converted audio", type="numpy", format="wav", interactive=False,
                                elem_id="vc-output")
                notes = gr.Markdown(elem_id="vc-notes")
        target.change(self.hints, target, hints, api_visibility="private")
        voice.focus(lambda: gr.update(choices=[UPLOAD] + self.voice_names()), None, voice, queue=False,
                    api_visibility="private")
        button.click(self.convert, [source, target, voice, seed], [live, full, notes], api_name="convert")

    # --- saved voices -----------------------------------------------------------------

    def voice_table(self) -> list[list]:
        return [[e.name, e.kind, e.model, ", ".join(f"{k} {v}" for k, v in e.settings.items())]
                for e in self.library.list()]

    def save(self, name, clip_path, exaggeration):
        if self._prepare is None:
            raise gr.Error("saving voices needs the model weights")
        if not clip_path:
            raise gr.Error("upload or record the clip to save")
        try:
            clip = load_reference(clip_path)
            conds = self._prepare(clip, float(exaggeration))
            entry = self.library.save(name, conds, settings={"exaggeration": float(exaggeration)},
                                      model=self.model_name)
        except ValueError as exc:
            raise gr.Error(str(exc)) from exc
        return self._refresh(f"Saved **{entry.name}**.")

    def rename(self, old, new):
        try:
            entry = self.library.rename(old or "", new or "")
        except VoiceLibraryError as exc:
            raise gr.Error(str(exc)) from exc
        return self._refresh(f"Renamed to **{entry.name}**.")

    def delete(self, name):
        try:
            self.library.delete(name or "")
        except VoiceLibraryError as exc:
            raise gr.Error(str(exc)) from exc
        return self._refresh(f"Deleted **{name}**.")

    def _refresh(self, message: str):
        return self.voice_table(), gr.update(choices=self.voice_names()), message

    def library_tab(self) -> tuple:
        with gr.Row():
            with gr.Column():
                name = gr.Textbox(label="Name", max_lines=1, elem_id="lib-name")
                clip = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Voice clip",
                                elem_id="lib-clip")
                hints = gr.Markdown(elem_id="lib-hints")
                exaggeration = gr.Slider(0.25, 2.0, value=0.5, step=0.05, label="Exaggeration")
                save = gr.Button("Save voice", variant="primary", elem_id="lib-save")
            with gr.Column():
                table = gr.Dataframe(self.voice_table(), headers=["name", "kind", "model", "settings"],
                                     interactive=False, elem_id="lib-table")
                pick = gr.Dropdown(self.voice_names(), label="Voice", elem_id="lib-pick")
                new_name = gr.Textbox(label="New name", max_lines=1, elem_id="lib-new-name")
                with gr.Row():
                    rename = gr.Button("Rename", elem_id="lib-rename")
                    delete = gr.Button("Delete", variant="stop", elem_id="lib-delete")
                message = gr.Markdown(elem_id="lib-message")
        clip.change(self.hints, clip, hints, api_visibility="private")
        save.click(self.save, [name, clip, exaggeration], [table, pick, message], api_name="save_voice")
        rename.click(self.rename, [pick, new_name], [table, pick, message], api_name="rename_voice")
        delete.click(self.delete, pick, [table, pick, message], api_name="delete_voice")
        gr.Button("Refresh list", size="sm").click(lambda: self._refresh(""), None, [table, pick, message],
                                                   api_name="list_voices")
        return table, pick, message

    # --- voice lab --------------------------------------------------------------------

    def lab(self, files, voice_names, output_path, output_of):
        """Event: clips + saved voices (+ a generated output tied to one of them) -> matrix and plot."""
        clips = []
        try:
            for path in files or []:
                clip = load_reference(path)
                clips.append((os.path.splitext(os.path.basename(str(path)))[0][:24], clip.wav, REF_SR))
            for name in voice_names or []:
                entry = self.library.entry(name)
                if entry.clip is None:
                    raise ValueError(f"{entry.name!r} has no clip to compare")
                wav, rate = sf.read(str(entry.clip), dtype="float32")
                clips.append((entry.name, wav if wav.ndim == 1 else wav.mean(axis=1), rate))
            pairs = []
            if output_path:
                clips.append(("generated", load_reference(output_path).wav, REF_SR))
                labels = [label for label, _, _ in clips]
                if output_of in labels[:-1]:
                    pairs.append((labels.index(output_of), len(clips) - 1))
            vmap = build_map(self.similarity, clips, pairs)
        except ValueError as exc:
            raise gr.Error(str(exc)) from exc
        import pandas as pd  # a Gradio dependency; a DataFrame carries the column labels

        table = pd.DataFrame(np.round(vmap.similarity, 3), columns=list(vmap.labels))
        table.insert(0, "clip", list(vmap.labels))
        return table, render(vmap)

    def lab_tab(self) -> None:
        with gr.Row():
            with gr.Column():
                files = gr.File(file_count="multiple", file_types=["audio"], label=f"Clips (2-{MAX_CLIPS})",
                                elem_id="lab-files")
                voices = gr.Dropdown(self.voice_names(), multiselect=True, label="Saved voices",
                                     elem_id="lab-voices")
                output = gr.Audio(type="filepath", label="A generated output (optional)", elem_id="lab-output")
                output_of = gr.Textbox(label="…cloned from (label of its reference: file name or voice name)",
                                       max_lines=1, elem_id="lab-output-of")
                button = gr.Button("Compare", variant="primary", elem_id="lab-compare")
            with gr.Column():
                plot = gr.Image(label="Similarity and voice map", type="numpy", interactive=False,
                                elem_id="lab-plot")
                matrix = gr.Dataframe(label="Speaker similarity (cosine)", interactive=False,
                                      elem_id="lab-matrix")
        voices.focus(lambda: gr.update(choices=self.voice_names()), None, voices, queue=False,
                     api_visibility="private")
        button.click(self.lab, [files, voices, output, output_of], [matrix, plot], api_name="voice_lab")

    # --- watermark check --------------------------------------------------------------

    def check(self, path) -> tuple[str, dict]:
        if not path:
            raise gr.Error("upload an audio file to check")
        try:
            wav, rate = sf.read(str(path), dtype="float32", always_2d=True)
            result = check_watermark(self.watermarker, wav.mean(axis=1), rate)
        except (ValueError, RuntimeError, sf.LibsndfileError) as exc:
            raise gr.Error(str(exc)) from exc
        return result.describe(), {"watermarked": result.score, "not watermarked": 1.0 - result.score}

    def watermark_tab(self) -> None:
        audio = gr.Audio(sources=["upload"], type="filepath", label="Audio to check", elem_id="wm-audio")
        button = gr.Button("Check", variant="primary", elem_id="wm-check")
        verdict = gr.Markdown(elem_id="wm-verdict")
        label = gr.Label(label="Perth watermark", elem_id="wm-label")
        button.click(self.check, audio, [verdict, label], api_name="watermark_check")


def build_voice_tabs(tools: VoiceTools, demo: gr.Blocks) -> tuple:
    """All four tabs, inside `demo` (open); the saved-voice list is re-read on every page load.

    Returns the Saved voices tab's (table, picker, message): the message changes after every
    save, rename or delete, so other tabs can refresh their voice lists on it."""
    with gr.Tab("Voice conversion"):
        tools.conversion_tab()
    with gr.Tab("Saved voices"):
        library_outputs = tools.library_tab()
    with gr.Tab("Voice lab"):
        tools.lab_tab()
    with gr.Tab("Watermark check"):
        tools.watermark_tab()
    demo.load(lambda: tools._refresh(""), None, list(library_outputs), api_visibility="private")
    return library_outputs


def shipped_voices(pipeline, examples_dir: Path) -> dict[str, ReadOnlyVoice]:
    """The built-in voice (when the loaded checkpoint has one) and the example clips
    (`examples_dir/*.wav`, by file name), listed read-only beside the saved voices."""
    voices = {p.stem: ReadOnlyVoice("example", clip=p) for p in sorted(Path(examples_dir).glob("*.wav"))}
    if pipeline is not None and pipeline.model().builtin_voice is not None:
        builtin = ReadOnlyVoice("built-in", conditionals=lambda: pipeline.model().builtin_voice,
                                model=pipeline.default_model)
        voices = {"Built-in voice": builtin, **voices}
    return voices


def pipeline_tools(pipeline, library: VoiceLibrary, similarity, unavailable: str, *, can_stream: bool,
                   gpu: Callable[[Callable], Callable]) -> VoiceTools:
    """The voice tabs' tools on a models.tts.ChatterboxTTS: its English S3Gen (shared with
    text to speech), its watermarker, voices prepared for the English model. Without a
    pipeline (no weights) the watermark check and the library still work; model work raises
    RuntimeError(`unavailable`)."""
    @contextmanager
    def english_s3gen():
        if pipeline is None:
            raise RuntimeError(unavailable)
        with pipeline.pool.use("english") as m:  # kept loaded for the whole conversion
            yield m.s3gen

    def prepare(clip, exaggeration: float):
        return pipeline.prepare_conditionals(clip, exaggeration, model="english")

    return VoiceTools(use_s3gen=english_s3gen, watermarker=pipeline.watermarker if pipeline else Watermarker(),
                      library=library, similarity=similarity, prepare_voice=prepare if pipeline else None,
                      model_name="english", can_stream=can_stream, gpu=gpu)


class VoiceResolver:
    """The voice a request names, for the model it asks: an uploaded or example clip prepared
    (cached per clip and voice parts, so a voice is embedded once), a saved voice as stored when
    it was made with the same voice parts (else prepared again from its clip), or None for the
    model's built-in voice. Thread-safe."""

    CACHE_SIZE = 16

    def __init__(self, pipeline, library: VoiceLibrary):
        self.pipeline, self.library = pipeline, library
        self._cache: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()

    def prepared(self, clip, model: str, norm_loudness: bool = True):
        """Conditionals of `clip` (a ReferenceClip) for `model`, from the cache when made before."""
        entry = self.pipeline.entry(model)
        loudness = entry.loudness_toggle and bool(norm_loudness)
        key = (hashlib.sha256(clip.wav.tobytes()).hexdigest(), voice_specs(entry), loudness)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        conds = self.pipeline.prepare_conditionals(clip, model=model, norm_loudness=loudness)
        with self._lock:
            self._cache[key] = conds
            while len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        return conds

    def named(self, name: str):
        """A listed voice -> (its clip, the saved voice whose conditionals to load): an example is
        its clip, the built-in voice neither. VoiceLibraryError (a ValueError) for an unknown name."""
        entry = self.library.entry(name)
        return (load_reference(entry.clip) if entry.clip else None), (entry.name if entry.kind == "saved" else None)

    def conditionals(self, clip, saved: str | None, model: str, norm_loudness: bool = True):
        """The voice for `model` from a clip and/or a saved voice's name (None: the built-in voice)."""
        if saved:
            saved_for = self.library.entry(saved).model
            same_parts = saved_for in MODELS and \
                voice_specs(self.pipeline.entry(saved_for)) == voice_specs(self.pipeline.entry(model))
            if same_parts:
                return self.library.load(saved, device=self.pipeline.device)
            if clip is None:
                raise ValueError(f"the saved voice {saved!r} was made for another model and has no clip to "
                                 "prepare again")
        return self.prepared(clip, model, norm_loudness) if clip is not None else None

    def listed(self, name: str, model: str):
        """A listed voice by name, for `model` (the APIs' `voice`)."""
        return self.conditionals(*self.named(name), model)
