"""The Space for programs: the OpenAI-compatible API, MCP tools and batch jobs, wired to the pipeline.

`Integrations` holds what these need (the speech service, the admission gate shared with
the browser, named voices) and adds them to the page and the server: `mcp_and_batch_tab`
builds the "Batch & API" tab, whose functions Gradio also serves as MCP tools when the app
runs with its MCP server on; `mount` adds the `/v1` routes to the running server's app.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr

from models.voice_library import VoiceLibrary
from serving.admission import Admission, Busy
from serving.batch import MAX_LINES, BatchItem, BatchResult, parse_batch, run_batch
from serving.formats import FORMATS, encode
from serving.openai_api import openai_router
from serving.speech_service import SpeechService

DEFAULT_VOICE = "default"
# OpenAI's voice names, so that clients with those built in get the model's built-in voice.
OPENAI_VOICE_ALIASES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage",
                        "shimmer", "verse")
DOWNLOAD_FORMATS = ("wav", "flac", "mp3", "opus")


class LibraryVoices:
    """Named voices for the APIs: "default" (the model's built-in voice) and every voice of the
    library (built-in, example and saved). `prepare(name, model)` gives a listed voice's
    conditionals for that model (None: its built-in voice)."""

    def __init__(self, library: VoiceLibrary | None, prepare):
        self.library, self.prepare = library, prepare

    def voices(self) -> list[dict]:
        listed = [{"id": DEFAULT_VOICE, "name": "the model's built-in voice", "kind": "built-in"}]
        if self.library is not None:
            listed += [{"id": e.name, "name": e.name, "kind": e.kind, "model": e.model} for e in self.library.list()]
        return listed

    def conditionals(self, voice_id: str, model: str):
        if voice_id in (DEFAULT_VOICE, *OPENAI_VOICE_ALIASES):
            return None
        if self.library is None or voice_id not in self.library.names():
            raise LookupError(voice_id)
        return self.prepare(voice_id, model)


@dataclass
class Integrations:
    service: SpeechService
    admission: Admission
    api_key: str | None = None

    # --- functions that Gradio serves (API and MCP tools) ---------------------------------

    def speak(self, text: str, voice: str = DEFAULT_VOICE, model: str = "english", seed: int = 0,
              response_format: str = "wav", language: str | None = None) -> str:
        """Speak text in a voice and return the audio file.

        Args:
            text: what to say (up to 12,000 characters; long text is spoken sentence by sentence).
            voice: a voice id from list_voices ("default" is the model's built-in voice).
            model: a model id from list_models: "english" (Chatterbox), "german" (Kartoffelbox),
                "turbo" (Chatterbox-Turbo) or "multilingual" (23 languages; needs `language`).
            seed: 0 draws a random seed; any other value reproduces a result.
            response_format: wav, flac, mp3 or opus.
            language: for "multilingual": a language id ("ja", "fr", "zh", ...) or its English name
                ("Japanese"); other models speak their own language (leave it empty).
        Returns:
            The path of the audio file (24 kHz mono).
        """
        if response_format not in DOWNLOAD_FORMATS:
            raise gr.Error(f"response_format must be one of {', '.join(DOWNLOAD_FORMATS)}")
        try:
            with self.admission.slot():
                speech = self.service.check(text, model, voice, {}, int(seed) or None, language or None)
                results = []
                pieces = list(self.service.pieces(speech, on_result=results.append))
        except Busy as exc:
            raise gr.Error(str(exc)) from exc
        except (ValueError, LookupError, RuntimeError) as exc:
            raise gr.Error(str(exc.args[0] if exc.args else exc)) from exc
        result = results[-1]
        out = Path(tempfile.mkdtemp(prefix="speak-")) / f"speech-{result.seed}.{FORMATS[response_format].extension}"
        out.write_bytes(encode(result.wav, result.sample_rate, response_format))
        del pieces
        return str(out)

    def list_voices(self) -> str:
        """List the voices that speak and the batch accept, as JSON: id, name, kind (built-in,
        example or saved) and the model a saved voice was prepared for."""
        return json.dumps(self.service.voices(), ensure_ascii=False)

    def list_models(self) -> str:
        """List the model ids that speak accepts, as JSON."""
        return json.dumps(self.service.model_ids())

    def batch(self, upload: str | None, model: str, voice: str, response_format: str,
              language: str | None = None, progress=gr.Progress()) -> tuple[str, str]:
        """Turn many lines into audio files: a .txt (one text per line) or a .csv (columns text,
        voice, seed, file) -> a zip of audio files and manifest.csv, with progress. `language`:
        what the "multilingual" model speaks (an id or English name)."""
        if not upload:
            raise gr.Error("upload a .txt (one text per line) or a .csv (text, voice, seed, file)")
        try:
            items = parse_batch(Path(upload).read_bytes(), Path(upload).name)
            checked = [self.service.check(i.text, model, i.voice or voice, {}, i.seed, language or None)
                       for i in items]
        except (ValueError, LookupError) as exc:
            raise gr.Error(str(exc.args[0] if exc.args else exc)) from exc
        # Each line carries the seed it is made with (drawn by `check` when none was given), so the
        # manifest names it for a line that fails too.
        items = [replace(item, seed=speech.params.seed) for item, speech in zip(items, checked)]
        by_line = {item.line: speech for item, speech in zip(items, checked)}

        def synthesize(item: BatchItem) -> BatchResult:
            results = []
            for _ in self.service.pieces(by_line[item.line], on_result=results.append):
                pass
            r = results[-1]
            return BatchResult(r.wav, r.sample_rate, r.seed, " ".join(r.notes))

        out = Path(tempfile.mkdtemp(prefix="batch-")) / f"batch-{int(time.time())}.zip"
        log = []
        try:
            with self.admission.slot():
                for done, total, message in run_batch(items, synthesize, response_format, out):
                    progress((done, total), desc=message)
                    log.append(message)
        except Busy as exc:
            raise gr.Error(str(exc)) from exc
        return str(out), "  \n".join(log)

    # --- wiring ---------------------------------------------------------------------------

    def mcp_and_batch_tab(self) -> None:
        """The "Batch & API" tab; its events are the API endpoints and MCP tools speak,
        list_voices, list_models and batch."""
        gr.Markdown(f"Many lines at once: a `.txt` file with one text per line, or a `.csv` with the columns "
                    f"`text`, `voice`, `seed`, `file` (at most {MAX_LINES} lines). Programs can also use the "
                    "OpenAI-compatible endpoint `POST /v1/audio/speech` and the MCP server "
                    "(`/gradio_api/mcp/`): see the README.")
        with gr.Row():
            upload = gr.File(label="Lines (.txt or .csv)", file_types=[".txt", ".csv"], type="filepath",
                             elem_id="batch-file")
            with gr.Column():
                model = gr.Dropdown(self.service.model_ids(), value=self.service.model_ids()[0], label="Model")
                voice = gr.Dropdown([v["id"] for v in self.service.voices()], value=DEFAULT_VOICE,
                                    label="Voice (for lines without one)", allow_custom_value=True)
                fmt = gr.Dropdown(list(DOWNLOAD_FORMATS), value="wav", label="Format")
                # An initial value makes it optional for API and MCP callers.
                language = gr.Textbox("", label="Language (Multilingual only: an id such as ja, or a name)")
                run = gr.Button("Make the files", variant="primary", elem_id="batch-run")
        archive = gr.File(label="Zip of the audio files and manifest.csv", elem_id="batch-zip")
        log = gr.Markdown(elem_id="batch-log")
        run.click(self.batch, [upload, model, voice, fmt, language], [archive, log], api_name="batch")
        with gr.Accordion("Tools for programs and agents (MCP)", open=False):
            text = gr.Textbox(label="text")
            seed = gr.Number(0, precision=0, label="seed")
            speak_out = gr.Audio(type="filepath", label="speech")
            listing = gr.Code(language="json", label="voices / models")
            with gr.Row():
                speak_btn = gr.Button("speak")
                voices_btn = gr.Button("list voices")
                models_btn = gr.Button("list models")
            speak_btn.click(self.speak, [text, voice, model, seed, fmt, language], speak_out, api_name="speak")
            voices_btn.click(self.list_voices, None, listing, api_name="list_voices")
            models_btn.click(self.list_models, None, listing, api_name="list_models")

    def mount(self, app) -> None:
        """Add the `/v1` routes to the server's FastAPI app (after launch)."""
        app.include_router(openai_router(self.service, self.admission, self.api_key))
        # Gradio's catch-all routes come first otherwise; ours must be matched before them.
        ours = [r for r in app.router.routes if getattr(r, "path", "").startswith("/v1/")]
        app.router.routes[:] = ours + [r for r in app.router.routes if r not in ours]
