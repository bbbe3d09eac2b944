"""Chatterbox voice cloning Space: text + a reference voice -> speech, in the browser.

Wiring only: the pipeline is built once at module scope (the default model loaded, the
others on their first request, all kept resident within `--max-resident-gb`), input is
validated before the GPU window, and one thin `@spaces.GPU` function does the model
work. The page is built in ui.py from the model registry, the voice tabs in voice_tabs.py
(saved voices live in `--data-dir`). Weights come from the Hugging
Face Hub, or from a local folder (`--checkpoint DIR` / CHATTERBOX_CHECKPOINT). If no
weights can be had the page still opens and says why.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import gradio as gr
import numpy as np
import spaces
import torch

import recipe_ui
import ui
from integrations import Integrations, LibraryVoices
from models import loading
from models.constants import MAX_NEW_TOKENS
from models.fast_modes import FAST_MODES, LoadOptions, ModeError
from models.params import CONTROLS, GenerationParams, check_text
from models.reference import MAX_UPLOAD_BYTES, REF_SR, ReferenceClip, load_reference
from models.registry import BASE_REPO_ID, KARTOFFELBOX_REPO_ID, MODELS, TURBO_REPO_ID, entry_by_label
from models.similarity import SpeakerSimilarity
from models.tts import SAMPLE_RATE, ChatterboxTTS, LivePlayback
from models.voice_library import VoiceLibrary, default_data_dir
from serving.admission import Admission, Busy
from serving.speech_service import SpeechService
from voice_tabs import VoiceResolver, pipeline_tools, shipped_voices

log = logging.getLogger("chatterbox-space")
ASSETS = Path(__file__).resolve().parent / "assets"
# Gradio encodes streamed audio with ffmpeg; without it only the full audio is shown.
CAN_STREAM = bool(shutil.which("ffmpeg") and shutil.which("ffprobe"))


def parse_args() -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description="Chatterbox voice-cloning Space")
    p.add_argument("--checkpoint", default=env("CHATTERBOX_CHECKPOINT"),
                   help="local folder with ve/t3_cfg/s3gen .safetensors, tokenizer.json, conds.pt")
    p.add_argument("--german-t3", default=env("CHATTERBOX_GERMAN_T3"),
                   help=f"local German T3 .safetensors or folder (default: {KARTOFFELBOX_REPO_ID}, needs HF_TOKEN)")
    p.add_argument("--turbo-checkpoint", default=env("CHATTERBOX_TURBO_CHECKPOINT"),
                   help=f"local folder with the {TURBO_REPO_ID} files (default: the Hub, on first use)")
    p.add_argument("--multilingual-checkpoint", default=env("CHATTERBOX_MULTILINGUAL_CHECKPOINT"),
                   help="local folder with the multilingual files of ResembleAI/chatterbox (t3_mtl23ls_v2, "
                        "grapheme_mtl_merged_expanded_v1.json, Cangjie5_TC.json), searched after --checkpoint")
    p.add_argument("--host", default=env("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(env("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    p.add_argument("--data-dir", default=str(default_data_dir()),
                   help="folder for saved voices (env CHATTERBOX_DATA_DIR; default under the user's cache)")
    p.add_argument("--batch-size", type=int, default=int(env("CHATTERBOX_BATCH_SIZE", "1")),
                   help="generations whose T3 decoding shares one batch (README: Serving many users)")
    p.add_argument("--concurrency", type=int, default=env("CHATTERBOX_CONCURRENCY"),
                   help="generations running at once (default: the batch size)")
    p.add_argument("--max-queue", type=int, default=int(env("CHATTERBOX_MAX_QUEUE", "16")),
                   help="requests waiting for a turn (browser and APIs together) before 'busy' answers")
    p.add_argument("--api-key", default=env("CHATTERBOX_API_KEY"),
                   help="key the OpenAI-compatible API (/v1) requires as 'Authorization: Bearer KEY'")
    p.add_argument("--max-new-tokens", type=int, default=int(env("CHATTERBOX_MAX_NEW_TOKENS", str(MAX_NEW_TOKENS))),
                   help="cap on speech tokens per generation (25 per second of audio)")
    p.add_argument("--first-block", type=int, default=int(env("CHATTERBOX_FIRST_BLOCK", "20")),
                   help="speech tokens decoded before live playback starts (the first streamed block)")
    p.add_argument("--speed", default=env("CHATTERBOX_SPEED", ""),
                   help="speed modes joined by '+', applied to every model at load: "
                        f"{', '.join(FAST_MODES)} (bench/README.md; e.g. int8 on a CPU). "
                        "Default: none, the reference's arithmetic")
    p.add_argument("--max-resident-gb", type=float, default=env("CHATTERBOX_MAX_RESIDENT_GB"),
                   help="memory the loaded models may take before idle ones are unloaded "
                        "(default: 60%% of the GPU's or the machine's memory)")
    args, _ = p.parse_known_args()
    if args.batch_size < 1:
        p.error(f"--batch-size must be >= 1, got {args.batch_size}")
    args.concurrency = int(args.concurrency) if args.concurrency is not None else args.batch_size
    if args.first_block < 1:
        p.error(f"--first-block must be >= 1, got {args.first_block}")
    if args.multilingual_checkpoint and not args.checkpoint:
        p.error("--multilingual-checkpoint is searched after --checkpoint's folder: give both (or neither: the Hub)")
    if args.max_resident_gb is not None and float(args.max_resident_gb) <= 0:
        p.error(f"--max-resident-gb must be > 0, got {args.max_resident_gb}")
    try:  # a mode this machine cannot run is the operator's mistake: refuse to start, saying why
        args.options = LoadOptions.from_modes(args.speed)
        args.options.check("cuda" if torch.cuda.is_available() else "cpu")
    except ModeError as exc:
        p.error(f"--speed: {exc}")
    return args


def speed_note(options: LoadOptions) -> str:
    """What the page says of the speed modes in use ("" for none): the audio is then not the
    reference's arithmetic, so a recipe replays only on a Space started with the same modes."""
    if not options.changed():
        return ""
    note = f" Speed modes: {options.changed()} (faster; the audio differs slightly from the reference's)."
    for entry in MODELS.values():
        left_out = entry.t3.speed_options(options)[1] | entry.s3gen.speed_options(options)[1]
        if left_out:
            reasons = "; ".join(sorted(set(left_out.values())))
            note += f" {entry.label} leaves out {', '.join(left_out)} ({reasons})."
    return note


def load_pipeline(args: argparse.Namespace) -> tuple[ChatterboxTTS | None, str]:
    """The pipeline and a line saying what weights it runs, or None and why there are none."""
    budget = int(float(args.max_resident_gb) * 2**30) if args.max_resident_gb else None
    local = {repo: Path(path) for repo, path in ((KARTOFFELBOX_REPO_ID, args.german_t3),
                                                 (TURBO_REPO_ID, args.turbo_checkpoint),
                                                 (BASE_REPO_ID, args.multilingual_checkpoint)) if path}
    try:
        if args.checkpoint:
            base = Path(args.checkpoint)
            label = (f"**Test weights** (untrained checkpoint in `{base}`): the output is not speech."
                     if loading.looks_untrained(base) else f"Local checkpoint `{base}`.")
            label += speed_note(args.options)
            return ChatterboxTTS.from_local(base, local=local, label=label, max_resident_bytes=budget,
                                            batch_size=args.batch_size, options=args.options), label
        label = f"Weights: `{loading.BASE_REPO_ID}` from the Hugging Face Hub." + speed_note(args.options)
        return ChatterboxTTS.from_pretrained(local=local, max_resident_bytes=budget,
                                             batch_size=args.batch_size, options=args.options), label
    except (loading.WeightsUnavailable, loading.CheckpointError, OSError) as exc:
        log.error("no model weights: %s", exc)
        return None, (f"**No model weights could be loaded**, so nothing can be generated: {exc}  \n"
                      "Run `python app.py --checkpoint DIR` with a local copy of `ResembleAI/chatterbox`, "
                      "or start it online (set `HF_TOKEN` for the gated German model).")


ARGS = parse_args()
PIPELINE, WEIGHTS_NOTE = load_pipeline(ARGS)
LIVE = LivePlayback(first_block=ARGS.first_block) if CAN_STREAM else None
SIMILARITY = SpeakerSimilarity()
EXAMPLES = json.loads((ASSETS / "examples.json").read_text(encoding="utf-8"))
LIBRARY = VoiceLibrary(Path(ARGS.data_dir) / "voices", read_only=shipped_voices(PIPELINE, ASSETS / "voices"))
VOICES = VoiceResolver(PIPELINE, LIBRARY)
TOOLS = pipeline_tools(PIPELINE, LIBRARY, SIMILARITY, WEIGHTS_NOTE.replace("**", ""), can_stream=CAN_STREAM,
                       gpu=spaces.GPU(duration=120))


def _gpu_seconds(text: str, *args, **kwargs) -> int:
    # ~1 s of speech per 15 characters; on a GPU about 0.1 s of compute per second of speech.
    return int(min(120, 20 + len(text) / 15 * 2))


@spaces.GPU(duration=_gpu_seconds)
def synthesize_stream(text: str, clip: ReferenceClip | None, params: GenerationParams, model: str,
                      watermark: bool, cancel: threading.Event, norm_loudness: bool = True, normalize: bool = True,
                      saved: str | None = None, language: str | None = None):
    conds = VOICES.conditionals(clip, saved, model, norm_loudness)
    yield from PIPELINE.stream(text, conds, params, model=model, language=language, watermark=watermark,
                               normalize=normalize, max_new_tokens=ARGS.max_new_tokens, cancel=cancel, live=LIVE)


_cancels: dict[str, threading.Event] = {}


def request_stop(request: gr.Request) -> None:
    """Stop the caller's running generation after its current step; what exists is kept."""
    event = _cancels.get(request.session_hash or "")
    if event is not None:
        event.set()


def _pcm16(wav: np.ndarray) -> np.ndarray:
    return (np.clip(wav, -1.0, 1.0) * 32767).astype(np.int16)


def _params(model_choice: str, seed, controls: dict, language: str | None = None
            ) -> tuple[str, GenerationParams, str | None]:
    """The model id, the request's params (the model's honoured controls as given, the others
    at its recommended values) and its language (for a model taking one; the page's hidden
    language choice is ignored for the others). ValueError for an unknown model, language or
    a bad value."""
    entry = entry_by_label(model_choice)
    seed = None if seed in (None, 0) else int(seed) if float(seed).is_integer() else seed
    given = {name: value for name, value in controls.items() if name in entry.controls}
    language = entry.resolve_language(language) if entry.takes_language else None
    return entry.id, replace(entry.recommended, **given, seed=seed), language


def generate(text, reference, exaggeration, cfg_weight, temperature, min_p, top_p, repetition_penalty, top_k,
             seed, watermark, model_choice, norm_loudness=True, normalize=True, voice=None, language=None,
             request: gr.Request = None):
    """Stream (live audio, full audio, seed used, similarity, notes, progress, recipe file, share link)
    as generation goes.

    `voice` names a listed voice (built-in, example or saved); an uploaded `reference` wins.
    `language` (an id such as "ja", or a name) is what a multilingual model speaks."""
    if PIPELINE is None:
        raise gr.Error(WEIGHTS_NOTE.replace("**", ""))
    values = (exaggeration, cfg_weight, temperature, min_p, top_p, repetition_penalty, top_k)
    try:
        check_text(text)
        model, params, language = _params(model_choice, seed, dict(zip(CONTROLS, values)), language)
        clip = load_reference(reference) if reference else None
        voice = voice if voice and clip is None else ""
        clip, saved = VOICES.named(voice) if voice else (clip, None)
    except (ValueError, TypeError) as exc:
        raise gr.Error(str(exc)) from exc

    session = request.session_hash if request is not None and request.session_hash else str(id(request))
    cancel = _cancels[session] = threading.Event()
    started = time.monotonic()
    result = None
    skip = gr.skip()
    try:
        with ADMISSION.slot():  # the one gate of the browser and the APIs
            for event in synthesize_stream(text, clip, params, model, bool(watermark), cancel, bool(norm_loudness),
                                           bool(normalize), saved, language):
                if event.result is not None:
                    result = event.result
                elif event.audio.size:
                    done = event.chunk + event.chunk_done
                    piece = (SAMPLE_RATE, _pcm16(event.audio)) if CAN_STREAM else skip
                    progress = ui.progress_html(done, event.n_chunks, started)
                    yield piece, skip, skip, skip, skip, progress, skip, skip
    except (ValueError, Busy, loading.WeightsUnavailable, loading.CheckpointError) as exc:
        raise gr.Error(str(exc)) from exc
    except Exception as exc:  # keep serving; the log has the traceback
        log.exception("generation failed")
        raise gr.Error(f"generation failed ({exc.__class__.__name__}); please try again") from exc
    finally:
        _cancels.pop(session, None)
    if result is None:
        raise gr.Error("generation ended without audio; please try again")
    similarity = (round(SIMILARITY.score(clip.wav, REF_SR, result.wav, result.sample_rate), 3)
                  if clip and len(result.wav) else None)
    full = (result.sample_rate, _pcm16(result.wav)) if len(result.wav) else None
    recipe = recipe_ui.recipe_of(text, model, params, result.seed, voice, clip, bool(watermark),
                                 bool(norm_loudness), bool(normalize), language, ARGS.options.changed())
    yield (skip, full, result.seed, similarity,
           ui.result_notes(result, clip, similarity, PIPELINE.watermarker, voice),
           ui.progress_html(result.n_chunks, result.n_chunks, started)
           if not result.stopped else "<div>stopped: the audio made so far is kept</div>",
           *recipe_ui.result_outputs(recipe, request))


ADMISSION = Admission(max(1, ARGS.concurrency), max(0, ARGS.max_queue))
INTEGRATIONS = Integrations(SpeechService(PIPELINE, LibraryVoices(LIBRARY, VOICES.listed),
                                          WEIGHTS_NOTE.replace("**", ""), LIVE, ARGS.max_new_tokens),
                            ADMISSION, ARGS.api_key)


def build_demo() -> gr.Blocks:
    voices = sorted(str(p) for p in (ASSETS / "voices").glob("*.wav"))
    examples = [[t, voices[i % len(voices)] if voices else None]
                for i, t in enumerate(EXAMPLES["english"] + EXAMPLES["german"])]
    notes = PIPELINE.language_notes if PIPELINE is not None else ui.no_language_notes
    handlers = ui.Handlers(generate, request_stop, TOOLS, notes, ARGS.options.changed())
    return ui.build_demo(handlers, WEIGHTS_NOTE, examples, CAN_STREAM,
                         extra_tabs={"Batch & API": INTEGRATIONS.mcp_and_batch_tab})


demo = build_demo()

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    # Gradio lets every waiting request in; the admission gate queues and refuses (one limit for all).
    demo.queue(default_concurrency_limit=ADMISSION.max_running + ADMISSION.max_waiting, max_size=None).launch(
        server_name=ARGS.host, server_port=ARGS.port, share=ARGS.share, max_file_size=MAX_UPLOAD_BYTES,
        show_error=True, mcp_server=True, prevent_thread_lock=True)
    INTEGRATIONS.mount(demo.app)
    demo.block_thread()
