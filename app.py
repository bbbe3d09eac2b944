"""Chatterbox voice cloning Space: text + a reference voice -> speech, in the browser.

Wiring only: models are loaded once at module scope, input is validated before the GPU
window, and one thin `@spaces.GPU` function does the model work. Weights come from the
Hugging Face Hub, or from a local folder (`--checkpoint DIR` / CHATTERBOX_CHECKPOINT).
If no weights can be had the page still opens and says why.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections import OrderedDict
from pathlib import Path

import gradio as gr
import numpy as np
import spaces

from models import loading
from models.reference import MAX_UPLOAD_BYTES, REF_SR, ReferenceClip, load_reference
from models.similarity import SpeakerSimilarity
from models.tts import (CHUNK_CHARS, EXAGGERATION_RANGE, MAX_NEW_TOKENS, MAX_TEXT_CHARS, SAMPLE_RATE,
                        ChatterboxTTS, Conditionals, Synthesis, check_generation_args)

log = logging.getLogger("chatterbox-space")
ASSETS = Path(__file__).resolve().parent / "assets"
MODEL_CHOICES = {"English (Chatterbox)": "english", "German (Kartoffelbox)": "german"}
VOICE_CACHE_SIZE = 16
# Gradio encodes streamed audio with ffmpeg; without it only the full audio is shown.
CAN_STREAM = bool(shutil.which("ffmpeg") and shutil.which("ffprobe"))


def parse_args() -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description="Chatterbox voice-cloning Space")
    p.add_argument("--checkpoint", default=env("CHATTERBOX_CHECKPOINT"),
                   help="local folder with ve/t3_cfg/s3gen .safetensors, tokenizer.json, conds.pt")
    p.add_argument("--german-t3", default=env("CHATTERBOX_GERMAN_T3"),
                   help="local German T3 .safetensors (default: SebastianBodza/Kartoffelbox-v0.1, needs HF_TOKEN)")
    p.add_argument("--host", default=env("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(env("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    p.add_argument("--concurrency", type=int, default=int(env("CHATTERBOX_CONCURRENCY", "1")),
                   help="generations running at once")
    p.add_argument("--max-new-tokens", type=int, default=int(env("CHATTERBOX_MAX_NEW_TOKENS", str(MAX_NEW_TOKENS))),
                   help="cap on speech tokens per generation (25 per second of audio)")
    p.add_argument("--first-block", type=int, default=int(env("CHATTERBOX_FIRST_BLOCK", "20")),
                   help="speech tokens decoded before live playback starts (the first streamed block)")
    args, _ = p.parse_known_args()
    if args.first_block < 1:
        p.error(f"--first-block must be >= 1, got {args.first_block}")
    return args


def load_pipeline(args: argparse.Namespace) -> tuple[ChatterboxTTS | None, str]:
    """The pipeline and a line saying what weights it runs, or None and why there are none."""
    try:
        german = loading.MODEL_SOURCES["german"]
        sources = {"german": (lambda: loading.resolve_t3_file(args.german_t3)) if args.german_t3
                   else (lambda: loading.fetch_t3_weights(german))}
        if args.checkpoint:
            base = Path(args.checkpoint)
            label = (f"**Test weights** (untrained checkpoint in `{base}`): the output is not speech."
                     if loading.looks_untrained(base) else f"Local checkpoint `{base}`.")
        else:
            base = loading.fetch_base_checkpoint()
            label = f"Weights: `{loading.BASE_REPO_ID}` from the Hugging Face Hub."
        return ChatterboxTTS.from_local(base, t3_sources=sources, label=label), label
    except (loading.WeightsUnavailable, loading.CheckpointError, OSError) as exc:
        log.error("no model weights: %s", exc)
        return None, (f"**No model weights could be loaded**, so nothing can be generated: {exc}  \n"
                      "Run `python app.py --checkpoint DIR` with a local copy of `ResembleAI/chatterbox`, "
                      "or start it online (set `HF_TOKEN` for the gated German model).")


ARGS = parse_args()
PIPELINE, WEIGHTS_NOTE = load_pipeline(ARGS)
SIMILARITY = SpeakerSimilarity()
EXAMPLES = json.loads((ASSETS / "examples.json").read_text(encoding="utf-8"))
_voices: OrderedDict[str, Conditionals] = OrderedDict()
_voices_lock = threading.Lock()


def _voice(clip: ReferenceClip) -> Conditionals:
    """Prepared conditionals per distinct clip, so example and repeated voices are embedded once."""
    key = hashlib.sha256(clip.wav.tobytes()).hexdigest()
    with _voices_lock:
        if key in _voices:
            _voices.move_to_end(key)
            return _voices[key]
    conds = PIPELINE.prepare_conditionals(clip)
    with _voices_lock:
        _voices[key] = conds
        while len(_voices) > VOICE_CACHE_SIZE:
            _voices.popitem(last=False)
    return conds


def _gpu_seconds(text: str, *args, **kwargs) -> int:
    # ~1 s of speech per 15 characters; on a GPU about 0.1 s of compute per second of speech.
    return int(min(120, 20 + len(text) / 15 * 2))


@spaces.GPU(duration=_gpu_seconds)
def synthesize_stream(text: str, clip: ReferenceClip | None, exaggeration: float, cfg_weight: float,
                      temperature: float, min_p: float, top_p: float, repetition_penalty: float,
                      seed: int | None, watermark: bool, model: str, cancel: threading.Event):
    conds = _voice(clip) if clip is not None else None
    yield from PIPELINE.stream(text, conds, exaggeration=exaggeration, cfg_weight=cfg_weight,
                               temperature=temperature, min_p=min_p, top_p=top_p,
                               repetition_penalty=repetition_penalty, seed=seed, model=model,
                               watermark=watermark, max_new_tokens=ARGS.max_new_tokens, cancel=cancel,
                               **(PIPELINE.live_streaming(ARGS.first_block) if CAN_STREAM else {}))


_cancels: dict[str, threading.Event] = {}


def request_stop(request: gr.Request) -> None:
    """Stop the caller's running generation after its current step; what exists is kept."""
    event = _cancels.get(request.session_hash or "")
    if event is not None:
        event.set()


def _pcm16(wav: np.ndarray) -> np.ndarray:
    return (np.clip(wav, -1.0, 1.0) * 32767).astype(np.int16)


def _progress_html(done: int, total: int, started: float) -> str:
    elapsed = time.monotonic() - started
    left = elapsed / done * (total - done) if done else None
    eta = f" · about {left:.0f} s left" if left is not None and done < total else ""
    return (f'<progress value="{done}" max="{total}" style="width:100%"></progress>'
            f"<div>chunk {done} of {total} done{eta}</div>")


def generate(text, reference, exaggeration, cfg_weight, temperature, min_p, top_p, repetition_penalty,
             seed, watermark, model_choice, request: gr.Request):
    """Stream (live audio, full audio, seed used, similarity, notes, progress) as generation goes."""
    if PIPELINE is None:
        raise gr.Error(WEIGHTS_NOTE.replace("**", ""))
    model = MODEL_CHOICES.get(model_choice)
    if model is None:
        raise gr.Error(f"unknown model {model_choice!r}; choose one of: {', '.join(MODEL_CHOICES)}")
    try:
        seed = None if seed in (None, 0) else int(seed) if float(seed).is_integer() else seed
        check_generation_args(text, exaggeration, cfg_weight, temperature, min_p, top_p,
                              repetition_penalty, seed)
        clip = load_reference(reference) if reference else None
    except (ValueError, TypeError) as exc:
        raise gr.Error(str(exc)) from exc

    session = request.session_hash if request is not None and request.session_hash else str(id(request))
    cancel = _cancels[session] = threading.Event()
    started = time.monotonic()
    result = None
    skip = gr.skip()
    try:
        for event in synthesize_stream(text, clip, exaggeration, cfg_weight, temperature, min_p, top_p,
                                       repetition_penalty, seed, bool(watermark), model, cancel):
            if event.result is not None:
                result = event.result
            elif event.audio.size:
                done = event.chunk + event.chunk_done
                piece = (SAMPLE_RATE, _pcm16(event.audio)) if CAN_STREAM else skip
                yield piece, skip, skip, skip, skip, _progress_html(done, event.n_chunks, started)
    except (ValueError, loading.WeightsUnavailable, loading.CheckpointError) as exc:
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
    yield (skip, full, result.seed, similarity, _notes(result, clip, similarity),
           _progress_html(result.n_chunks if not result.stopped else 0, result.n_chunks, started)
           if not result.stopped else "<div>stopped: the audio made so far is kept</div>")


def _notes(result: Synthesis, clip: ReferenceClip | None, similarity: float | None) -> str:
    lines = [f"{result.seconds:.2f} s of audio from {result.n_speech_tokens} speech tokens, seed **{result.seed}**."]
    lines.append(clip.describe() + "." if clip else "Voice: the built-in voice.")
    if similarity is not None:
        lines.append(f"Speaker similarity to the reference (resemblyzer cosine): **{similarity:.3f}**.")
    if result.watermarked:
        lines.append("Carries the imperceptible Perth watermark.")
    elif not PIPELINE.watermarker.available:
        lines.append(f"Watermark off: {PIPELINE.watermarker.reason}.")
    else:
        lines.append("Watermark off (turned off in the advanced options).")
    if result.hit_token_limit:
        lines.append("⚠️ A part hit its speech-token limit before the model finished it: its end may be "
                     "missing. Rephrase or shorten that sentence.")
    if result.n_chunks > 1:
        lines.append(f"Long text: spoken in {result.n_chunks} parts of at most {CHUNK_CHARS} characters.")
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


def build_demo() -> gr.Blocks:
    voices = sorted(str(p) for p in (ASSETS / "voices").glob("*.wav"))
    with gr.Blocks(title="Chatterbox voice cloning") as demo:
        gr.Markdown("# Chatterbox voice cloning\nType text, give a reference voice (upload or record a few "
                    "seconds of speech), and hear it spoken in that voice.")
        gr.Markdown(WEIGHTS_NOTE, elem_id="weights-note")
        with gr.Row():
            with gr.Column():
                text = gr.Textbox(label="Text to speak", value=EXAMPLES["english"][0], lines=4,
                                  max_lines=8, elem_id="text")
                counter = gr.Markdown(count_chars(EXAMPLES["english"][0]), elem_id="char-count")
                reference = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                     label="Reference voice (optional; the built-in voice if empty)",
                                     elem_id="reference")
                model = gr.Dropdown(list(MODEL_CHOICES), value=next(iter(MODEL_CHOICES)), label="Model",
                                    elem_id="model")
                exaggeration = gr.Slider(*EXAGGERATION_RANGE, value=0.5, step=0.05, elem_id="exaggeration",
                                         label="Exaggeration (neutral 0.5; extreme values can be unstable)")
                cfg_weight = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="CFG / pace", elem_id="cfg")
                with gr.Accordion("Advanced options", open=False):
                    temperature = gr.Slider(0.05, 5.0, value=0.8, step=0.05, label="Temperature")
                    min_p = gr.Slider(0.0, 1.0, value=0.05, step=0.01, label="min_p (0 disables)")
                    top_p = gr.Slider(0.0, 1.0, value=1.0, step=0.01, label="top_p (1.0 disables)")
                    repetition_penalty = gr.Slider(1.0, 2.0, value=1.2, step=0.1, label="Repetition penalty")
                    seed = gr.Number(value=0, precision=0, label="Seed (0 = random)")
                    watermark = gr.Checkbox(value=True, label="Perth watermark (imperceptible)")
                with gr.Row():
                    button = gr.Button("Generate", variant="primary", elem_id="generate")
                    stop = gr.Button("Stop", variant="stop", elem_id="stop")
            with gr.Column():
                live = gr.Audio(label="Live playback (starts while the rest is generated)", streaming=True,
                                autoplay=True, interactive=False, elem_id="live", visible=CAN_STREAM)
                progress = gr.HTML(elem_id="progress")
                audio = gr.Audio(label="Full audio", type="numpy", format="wav", elem_id="output",
                                 interactive=False)
                seed_used = gr.Number(label="Seed used", precision=0, interactive=False, elem_id="seed-used")
                similarity = gr.Number(label="Speaker similarity", interactive=False, elem_id="similarity")
                notes = gr.Markdown(elem_id="notes")
        gr.Examples([[t, voices[i % len(voices)] if voices else None] for i, t in
                     enumerate(EXAMPLES["english"] + EXAMPLES["german"])], inputs=[text, reference])
        text.change(count_chars, text, counter, queue=False, api_visibility="private")
        button.click(generate, [text, reference, exaggeration, cfg_weight, temperature, min_p, top_p,
                                repetition_penalty, seed, watermark, model],
                     [live, audio, seed_used, similarity, notes, progress], api_name="generate")
        stop.click(request_stop, None, None, queue=False, api_name="stop")
    return demo


demo = build_demo()

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    demo.queue(default_concurrency_limit=ARGS.concurrency, max_size=32).launch(
        server_name=ARGS.host, server_port=ARGS.port, share=ARGS.share,
        max_file_size=MAX_UPLOAD_BYTES, show_error=True)
