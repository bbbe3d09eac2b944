"""The Space's `/generate` API end to end, through `gradio_client` against a real `app.py`.

The server runs the fake checkpoint with a 10-token cap (tests/app_server.py), so a success
takes ~30-60 s on 2 cores; bad inputs must be rejected in well under a second or two, before
any model work. The last test checks that the server still serves after all the bad requests.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from app_server import VOICES, AppServer, check_generated_audio, http_status, shared_server
from models.tts import MAX_TEXT_CHARS
from serving.recipes import Recipe

SEED = 1234
VOICE = VOICES / "aishell_s0764_a.wav"
GENERATION_TIMEOUT_S = 360
FULL_AUDIO_LABEL = "Full audio"  # the whole wav; the live (streamed) player is another output
REJECT_WITHIN_S = 15            # a 10-token generation takes >= 30 s here; a rejection ~0.5 s
DEFAULTS = dict(text="Hello there.", exaggeration=0.5, cfg_weight=0.5, temperature=0.8, min_p=0.05,
                top_p=1.0, repetition_penalty=1.2, seed=SEED, watermark=True,
                model_choice="English (Chatterbox)")


@pytest.fixture(scope="module")
def app(request, fake_ckpt) -> AppServer:
    return shared_server(request.config, fake_ckpt)


@pytest.fixture(scope="module")
def client(app, tmp_path_factory) -> Client:
    return Client(app.url, verbose=False, analytics_enabled=False,
                  download_files=str(tmp_path_factory.mktemp("client-downloads")))


@dataclass(frozen=True)
class Generated:
    """The outputs of one `/generate` call that the tests check."""

    audio: str                  # path of the downloaded full-audio wav
    seed: int
    similarity: float | None
    notes: str                  # markdown
    recipe: Recipe              # from the returned recipe file
    link: str                   # the share link


def generate(client: Client, reference: Path | None, **overrides) -> Generated:
    """One `/generate` call; the outputs are picked by their labels, not their positions."""
    args = {**DEFAULTS, **overrides}
    job = client.submit(reference=handle_file(str(reference)) if reference else None, api_name="/generate", **args)
    values = job.result(timeout=GENERATION_TIMEOUT_S)
    returns = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/generate"]["returns"]
    by_label = {r["label"]: v for r, v in zip(returns, values)}
    notes = [v for r, v in zip(returns, values) if r["component"] == "Markdown"]
    assert len(notes) == 1, f"expected one Markdown output, got {returns}"
    starting = lambda prefix: next(v for label, v in by_label.items() if label.startswith(prefix))  # noqa: E731
    recipe = Recipe.from_json(Path(starting("Recipe")).read_bytes())
    return Generated(by_label[FULL_AUDIO_LABEL], by_label["Seed used"], by_label["Speaker similarity"], notes[0],
                     recipe, starting("Share link"))


def _voice(rate: int, channels: int) -> tuple[np.ndarray, int]:
    wav, sr = sf.read(VOICE, dtype="float32")
    wav = soxr.resample(wav, sr, rate) if rate != sr else wav
    if channels == 2:
        wav = np.stack([wav, 0.5 * wav], axis=1)  # channels differ, as in a real recording
    return wav, rate


@pytest.fixture(scope="module")
def refs(tmp_path_factory) -> dict[str, Path]:
    """Reference files, good and bad, as a user might upload them."""
    d = tmp_path_factory.mktemp("refs")
    rng = np.random.default_rng(0)
    voice, sr = sf.read(VOICE, dtype="float32")
    files = {"voice": VOICE}
    files["corrupt"] = d / "corrupt.wav"
    files["corrupt"].write_bytes(rng.bytes(20_000))
    files["not_audio"] = d / "notes.mp3"
    files["not_audio"].write_text("these are meeting notes, not audio\n" * 50, encoding="utf-8")
    files["silent"] = d / "silent.wav"
    sf.write(files["silent"], np.zeros(2 * sr, np.float32), sr)
    files["short"] = d / "short.wav"
    sf.write(files["short"], voice[sr: sr + sr // 2], sr)  # 0.5 s from inside the speech
    for name, rate, channels in (("stereo44k", 44_100, 2), ("narrow8k", 8_000, 1)):
        files[name] = d / f"{name}.wav"
        sf.write(files[name], *_voice(rate, channels), subtype="PCM_16")
    return files


@pytest.fixture(scope="module")
def first_result(client, app):
    return generate(client, VOICE)


@pytest.mark.slow
def test_generate_returns_audio_and_seed(first_result, app):
    out = first_result
    check_generated_audio(out.audio, out.notes, app.max_new_tokens)
    assert out.seed == SEED
    assert f"seed **{SEED}**" in out.notes
    assert isinstance(out.similarity, float) and -1.0 <= out.similarity <= 1.0
    assert f"**{out.similarity:.3f}**" in out.notes and "similarity" in out.notes.lower()
    assert "Reference: 4.2 s, 16000 Hz, mono" in out.notes
    # Its recipe: the text, model, every setting and seed, and the uploaded clip by the hash of its samples.
    from models.params import CONTROLS
    from models.reference import load_reference
    from recipe_ui import clip_sha256

    recipe = out.recipe
    assert (recipe.text, recipe.model, recipe.seed, recipe.voice) == (DEFAULTS["text"], "english", SEED, None)
    assert recipe.clip_sha256 == clip_sha256(load_reference(str(VOICE)))
    sent = {name: DEFAULTS[name] for name in CONTROLS if name != "top_k"}
    assert recipe.settings == {**sent, "top_k": 1000}  # English does not read top_k: its recommended value
    assert out.link.startswith(f"{app.url}/?recipe=") and Recipe.from_link_param(out.link.split("=", 1)[1]) == recipe


def _range_error(name: str, value: float) -> str:
    # Gradio's own slider check answers first; the app's check is the fallback behind it.
    v = re.escape(str(value))
    return rf"{name} must be a number in .*got {v}|Value {v} is (greater than maximum|less than minimum)"


BAD_INPUTS = [
    pytest.param({"text": ""}, "voice", r"text is empty", id="empty-text"),
    pytest.param({"text": "  \n\t "}, "voice", r"text is empty", id="whitespace-text"),
    pytest.param({"text": "a" * (MAX_TEXT_CHARS + 1)}, "voice", rf"{MAX_TEXT_CHARS + 1} characters.*"
                 rf"at most {MAX_TEXT_CHARS}", id="text-too-long"),
    *[pytest.param({name: value}, "voice", _range_error(name, value), id=f"{name}={value}")
      for name, value in [("exaggeration", 0.1), ("exaggeration", 2.5), ("temperature", 0.0),
                          ("temperature", 6.0), ("top_p", 1.5), ("min_p", -0.1), ("min_p", 1.1),
                          ("repetition_penalty", 0.5), ("repetition_penalty", 2.5),
                          ("cfg_weight", -0.1), ("cfg_weight", 1.5)]],
    pytest.param({"top_p": 0.0}, "voice", r"top_p must be > 0", id="top_p=0"),
    pytest.param({"seed": -1}, "voice", r"seed must be an integer in \[0, \d+\].*got -1", id="negative-seed"),
    pytest.param({"seed": 2**63}, "voice", r"seed must be an integer in \[0, \d+\]", id="seed-too-big"),
    pytest.param({"model_choice": "Klingon"}, "voice", r"Klingon.*not in the list of choices|unknown model",
                 id="unknown-model"),
    pytest.param({}, "corrupt", r"could not decode 'corrupt\.wav' as audio", id="corrupt-wav"),
    pytest.param({}, "not_audio", r"could not decode 'notes\.mp3' as audio", id="text-file-as-mp3"),
    pytest.param({}, "silent", r"reference clip is silent", id="silent-wav"),
    pytest.param({}, "short", r"reference clip is 0\.50 s long; at least 1 s", id="sub-second-wav"),
    pytest.param({"voice": "Nobody Here"}, None, r"no voice named 'Nobody Here'", id="unknown-voice-name"),
    pytest.param({"model_choice": "Multilingual (Chatterbox, 23 languages)", "language": "xx"}, None,
                 r"xx.*not in the list of choices|unsupported language 'xx'", id="unknown-language"),
]


@pytest.mark.parametrize("overrides, ref, message", BAD_INPUTS)
def test_bad_input_is_rejected_before_generation(client, refs, overrides, ref, message):
    start = time.monotonic()
    with pytest.raises(AppError) as err:
        generate(client, refs[ref] if ref else None, **overrides)
    elapsed = time.monotonic() - start
    assert re.search(message, str(err.value)), f"message does not name the problem: {err.value}"
    assert elapsed < REJECT_WITHIN_S, f"rejection took {elapsed:.1f} s: did it generate first?"


@pytest.mark.slow
@pytest.mark.parametrize("ref, described", [("stereo44k", "44100 Hz, 2 channels mixed to mono"),
                                             ("narrow8k", "8000 Hz, mono")])
def test_unusual_but_valid_reference_works(client, refs, app, ref, described):
    out = generate(client, refs[ref])
    check_generated_audio(out.audio, out.notes, app.max_new_tokens)
    assert out.seed == SEED and -1.0 <= out.similarity <= 1.0
    assert described in out.notes, out.notes


def test_new_inputs_come_last_so_positional_calls_keep_working(client):
    params = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/generate"]["parameters"]
    names = [p["parameter_name"] for p in params]
    assert names == ["text", "reference", "exaggeration", "cfg_weight", "temperature", "min_p", "top_p",
                     "repetition_penalty", "top_k", "seed", "watermark", "model_choice", "norm_loudness",
                     "normalize", "voice", "language"]
    defaults = {p["parameter_name"]: p.get("parameter_default") for p in params[-4:]}
    assert defaults == {"norm_loudness": True, "normalize": True, "voice": "", "language": "en"}


@pytest.mark.slow
def test_a_listed_voice_by_name_and_the_watermark_check(client, app):
    # An example voice by name: its clip is the reference (described and compared with).
    out = generate(client, None, voice="aishell_s0764_b", text="It costs 5 €. [pause:1s] Bye.")
    wav, rate = sf.read(out.audio, dtype="float32")
    # Two spoken parts of at most max_new_tokens each (960 samples a token) around 1 s of silence.
    assert rate + 960 <= len(wav) <= rate + 2 * app.max_new_tokens * 960, len(wav)
    assert "Voice: **aishell_s0764_b** (Reference: 4.1 s, 16000 Hz, mono)" in out.notes, out.notes
    assert "Read as: It costs five euros. [pause 1 s] Bye." in out.notes, out.notes
    assert -1.0 <= out.similarity <= 1.0
    assert (out.recipe.voice, out.recipe.clip_sha256, out.recipe.text) == ("aishell_s0764_b", None,
                                                                            "It costs 5 €. [pause:1s] Bye.")
    verdict, label = client.predict(handle_file(out.audio), api_name="/watermark_check")
    assert verdict.startswith("Perth watermark detected"), verdict
    verdict, label = client.predict(handle_file(str(VOICES / "aishell_s0764_b.wav")), api_name="/watermark_check")
    assert verdict.startswith("no Perth watermark detected"), verdict


@pytest.mark.slow
def test_fixed_seed_repeats_and_server_survives_bad_inputs(client, app, first_result):
    # Runs last in this file: after the whole bad-input matrix the server must still serve.
    assert http_status(app.url + "/") == 200
    out = generate(client, VOICE)
    again = check_generated_audio(out.audio, out.notes, app.max_new_tokens)
    first, _ = sf.read(first_result.audio, dtype="float32")
    assert out.seed == first_result.seed == SEED
    np.testing.assert_array_equal(again, first)
    assert app.alive()
