"""The Space in a real Chromium: type, upload a voice, move a slider, generate, play the result.

Drives Debian's chromium through Playwright against the session's `app.py` (fake checkpoint,
10-token cap; tests/app_server.py). Gradio renders audio players with wavesurfer, whose
<audio> element lives in a shadow root, so the page scripts below search shadow roots.
A screenshot of the finished page is saved to test-artifacts/app-screenshot.png.
"""
from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field

import pytest

from app_server import ARTIFACTS, OUTPUT_SR, VOICES, AppServer, check_generated_audio, shared_server
from models.tts import MAX_TEXT_CHARS

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 1000}
PAGE_LOAD_MS = 60_000
UI_MS = 15_000
GENERATION_MS = 6 * 60_000
VOICE = VOICES / "aishell_s0764_b.wav"
TEXT = "Hello from the browser test."
EXAGGERATION_STEPS = 3           # ArrowRight presses on the 0.05-step slider from 0.5
SCREENSHOT = ARTIFACTS / "app-screenshot.png"
FAILURE_SCREENSHOT = ARTIFACTS / "app-screenshot-failure.png"

# The src of the first <audio> with one under `selector`, looking inside shadow roots.
AUDIO_SRC_JS = """(selector) => {
  const find = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'AUDIO' && el.src) return el.src;
      if (el.shadowRoot) { const src = find(el.shadowRoot); if (src) return src; }
    }
    return null;
  };
  const host = document.querySelector(selector);
  return host ? find(host) : null;
}"""

# The output's audio src once it has one, or the text of an error toast if one shows first.
RESULT_OR_ERROR_JS = """() => {
  const toast = document.querySelector('[data-testid="toast-body"].error');
  if (toast) return {error: toast.innerText};
  const src = (%s)('#output');
  return src ? {src} : null;
}""" % AUDIO_SRC_JS

FETCH_BYTES_JS = """async (src) => {
  const resp = await fetch(src);
  return Array.from(new Uint8Array(await resp.arrayBuffer()));
}"""

# Load the audio in a fresh element and play it to the end (headless Chromium plays to a null sink).
# With `lastS`, start it, then jump to its last `lastS` seconds and let it end there (a 3-minute file
# would take 3 minutes to play through in real time).
PLAY_JS = """async ([src, timeoutMs, lastS]) => {
  const a = new Audio(src);
  const waitFor = (ok) => new Promise((resolve) => {
    a.addEventListener(ok, () => resolve(ok), {once: true});
    a.addEventListener('error', () => resolve('error'), {once: true});
    setTimeout(() => resolve('timeout'), timeoutMs);
  });
  const loaded = await waitFor('loadedmetadata');
  const duration = a.duration;
  let played;
  try {
    const ended = waitFor('ended');
    await a.play();
    let jumped = '';
    if (lastS) {
      await new Promise((r) => setTimeout(r, 300));
      jumped = ' after ' + a.currentTime.toFixed(2) + ' s';
      a.currentTime = Math.max(0, duration - lastS);
    }
    played = (await ended) + jumped;
  } catch (e) { played = 'play() failed: ' + e; }
  return {loaded, duration, played, currentTime: a.currentTime, error: a.error ? a.error.code : null};
}"""


@dataclass
class Ui:
    """One open page of the app and the uncaught script errors it has raised so far."""

    page: sync_api.Page
    js_errors: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def app(request, fake_ckpt) -> AppServer:
    return shared_server(request.config, fake_ckpt)


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not found (./dev test installs Debian's chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def ui(browser, app):
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(UI_MS)
    session = Ui(page)
    page.on("pageerror", lambda exc: session.js_errors.append(str(exc)))
    page.goto(app.url, wait_until="domcontentloaded")
    page.locator("#generate").wait_for(timeout=PAGE_LOAD_MS)
    yield session
    context.close()


def counter_text(n: int) -> re.Pattern:
    return re.compile(rf"^\s*{n} / {MAX_TEXT_CHARS} characters")


def test_empty_text_shows_error_and_page_recovers(ui):
    page = ui.page
    page.locator("#text textarea").fill("")
    expect(page.locator("#char-count")).to_have_text(counter_text(0))
    page.locator("#generate").click()

    toast = page.get_by_test_id("toast-body")
    expect(toast).to_be_visible()
    expect(toast).to_contain_text("Error")
    expect(toast).to_contain_text("text is empty")
    assert page.evaluate(AUDIO_SRC_JS, "#output") is None

    # Still alive: the toast closes, and typing reaches the server and updates the counter.
    toast.locator(".toast-close").click()
    expect(toast).to_have_count(0)
    page.locator("#text textarea").fill("Back again.")
    expect(page.locator("#char-count")).to_have_text(counter_text(len("Back again.")))
    expect(page.locator("#generate")).to_be_enabled()
    assert ui.js_errors == []


def test_generate_in_browser(ui, app, fake_ckpt):
    page = ui.page
    note = page.locator("#weights-note")
    expect(note).to_contain_text("Test weights")
    expect(note).to_contain_text(fake_ckpt.name)

    page.locator("#text textarea").fill(TEXT)
    expect(page.locator("#char-count")).to_have_text(counter_text(len(TEXT)))

    page.locator("#reference input[type=file]").first.set_input_files(str(VOICE))
    page.wait_for_function(AUDIO_SRC_JS, arg="#reference", timeout=UI_MS)

    slider = page.locator("#exaggeration input[type=range]")
    number = page.locator("#exaggeration input[type=number]")
    expect(number).to_have_value("0.5")
    slider.focus()
    for _ in range(EXAGGERATION_STEPS):
        slider.press("ArrowRight")
    expect(number).to_have_value("0.65")
    assert slider.input_value() == "0.65"

    page.locator("#generate").click()
    outcome = page.wait_for_function(RESULT_OR_ERROR_JS, timeout=GENERATION_MS).json_value()
    if "error" in outcome:
        page.screenshot(path=str(FAILURE_SCREENSHOT), full_page=True)
        pytest.fail(f"generation failed (see {FAILURE_SCREENSHOT.name}): {outcome['error']}")
    src = outcome["src"]
    notes = page.locator("#notes")
    expect(notes).to_contain_text("speech tokens")
    notes_text = notes.inner_text()

    wav = check_generated_audio(bytes(page.evaluate(FETCH_BYTES_JS, src)), notes_text, app.max_new_tokens)
    playback = page.evaluate(PLAY_JS, [src, UI_MS])
    assert playback["loaded"] == "loadedmetadata" and playback["error"] is None, playback
    assert playback["duration"] == pytest.approx(len(wav) / OUTPUT_SR, abs=0.01), playback
    assert playback["played"] == "ended", playback

    similarity = float(page.locator("#similarity input").input_value())
    assert -1.0 <= similarity <= 1.0
    assert "Speaker similarity" in notes_text and f"{similarity:.3f}" in notes_text
    shown_seed = page.locator("#seed-used input").input_value()
    assert re.fullmatch(r"[1-9]\d*", shown_seed), f"seed used box shows {shown_seed!r}"

    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert ui.js_errors == []
    # Typing the shown seed back in must reproduce this audio, so it has to be exact.
    noted_seed = re.search(r"seed (\d+)", notes_text).group(1)
    assert shown_seed == noted_seed, f"seed box shows {shown_seed}, the generation used {noted_seed}"


def _shown(value: float) -> re.Pattern:
    """A number input's text for `value` ("0.6", "1" or "1.0")."""
    return re.compile(rf"^{re.escape(f'{value:g}')}(\.0*)?$")


def test_model_picker_lists_the_registry_and_applies_each_models_settings(ui):
    from models.params import CONTROLS
    from models.registry import MODELS

    page = ui.page
    page.get_by_text("Advanced options").click()
    assert {e.recommended for e in MODELS.values()} != {MODELS["english"].recommended}  # settings differ
    for entry in [*MODELS.values(), MODELS["english"]]:  # each model, then back to the first
        page.locator("#model input").click()
        options = page.get_by_role("option")
        expect(options).to_have_count(len(MODELS))
        # (the selected option also shows a check mark on a line of its own)
        assert [t.split("\n")[-1].strip() for t in options.all_inner_texts()] == [e.label for e in MODELS.values()]
        options.filter(has_text=entry.label).click()
        expect(page.locator("#model input")).to_have_value(entry.label)
        expect(page.locator("#model-note")).to_contain_text(entry.licence)
        for name in CONTROLS:
            box = page.locator(f"#{name} input[type=number]")
            if name in entry.controls:
                expect(box).to_have_value(_shown(getattr(entry.recommended, name)))
            else:
                expect(box).to_be_hidden()
    assert ui.js_errors == []


def test_turbo_tag_button_inserts_at_the_cursor_and_turbo_speaks(ui, app):
    from models.registry import MODELS

    turbo = MODELS["turbo"]
    page = ui.page
    tags = page.locator("#tags-turbo")
    expect(tags).to_be_hidden()
    page.locator("#model input").click()
    page.get_by_role("option").filter(has_text=turbo.label).click()
    expect(tags).to_be_visible()
    expect(tags).to_contain_text("only")  # the note that other models drop tags
    expect(tags.locator("button")).to_have_text(list(turbo.tags))
    page.get_by_text("Advanced options").click()
    expect(page.locator("#top_k input[type=number]")).to_have_value(_shown(1000))
    expect(page.locator("#norm-loudness")).to_be_visible()
    for name in ("exaggeration", "cfg_weight", "min_p"):
        expect(page.locator(f"#{name}")).to_be_hidden()

    box = page.locator("#text textarea")
    box.fill("Hello there friend.")
    box.evaluate("(el) => { el.focus(); el.setSelectionRange(5, 5); }")  # after "Hello"
    tags.get_by_role("button", name="[laugh]", exact=True).click()
    expect(box).to_have_value("Hello [laugh] there friend.")
    # the caret lands right after the inserted tag, where a following tag would go
    page.wait_for_function("() => document.querySelector('#text textarea').selectionStart === 13",
                           timeout=UI_MS)
    box.evaluate("(el) => el.setSelectionRange(el.value.length - 1, el.value.length - 1)")  # before "."
    tags.get_by_role("button", name="[sigh]", exact=True).click()
    expect(box).to_have_value("Hello [laugh] there friend [sigh].")

    page.locator("#generate").click()  # the built-in Turbo voice
    outcome = page.wait_for_function(RESULT_OR_ERROR_JS, timeout=GENERATION_MS).json_value()
    if "error" in outcome:
        page.screenshot(path=str(FAILURE_SCREENSHOT), full_page=True)
        pytest.fail(f"Turbo generation failed (see {FAILURE_SCREENSHOT.name}): {outcome['error']}")
    notes = page.locator("#notes")
    expect(notes).to_contain_text("speech tokens")
    wav = check_generated_audio(bytes(page.evaluate(FETCH_BYTES_JS, outcome["src"])), notes.inner_text(),
                                app.max_new_tokens, tail_tokens=3)
    playback = page.evaluate(PLAY_JS, [outcome["src"], UI_MS])
    assert playback["loaded"] == "loadedmetadata" and playback["error"] is None, playback
    assert playback["duration"] == pytest.approx(len(wav) / OUTPUT_SR, abs=0.01), playback
    assert playback["played"] == "ended", playback
    assert ui.js_errors == []


# --- text preparation and the voice tools in the page ----------------------------------------------

PREP_TEXT = "It costs 5 €. [pause:1.5s]\n***\nBye."
SAVED_VOICE = "Browser Voice"
GENERATED_WAV = ARTIFACTS / "app-generated-prepared.wav"
LAB_SCREENSHOT = ARTIFACTS / "voice-lab-plot.png"
DOWNLOAD_JS = """(selector) => {
  const count = (root) => {
    let n = 0;
    for (const el of root.querySelectorAll('*')) {
      const label = (el.getAttribute('aria-label') || el.getAttribute('title') || '').toLowerCase();
      if ((el.tagName === 'A' && el.hasAttribute('download')) || label === 'download') n++;
      if (el.shadowRoot) n += count(el.shadowRoot);
    }
    return n;
  };
  const host = document.querySelector(selector);
  return host ? count(host) : -1;
}"""


def _generate_and_wait(ui: Ui) -> str:
    """Click Generate; the full audio's src once it exists (fails on an error toast)."""
    page = ui.page
    page.locator("#generate").click()
    outcome = page.wait_for_function(RESULT_OR_ERROR_JS, timeout=GENERATION_MS).json_value()
    if "error" in outcome:
        page.screenshot(path=str(FAILURE_SCREENSHOT), full_page=True)
        pytest.fail(f"generation failed (see {FAILURE_SCREENSHOT.name}): {outcome['error']}")
    expect(page.locator("#notes")).to_contain_text("speech tokens")
    return outcome["src"]


def test_text_preparation_notes_and_result_boxes(ui):
    page = ui.page
    # Nothing is known before a result: no 0 in the seed and similarity boxes.
    expect(page.locator("#seed-used")).to_be_hidden()
    expect(page.locator("#similarity")).to_be_hidden()
    expect(page.locator("#normalize input")).to_be_checked()
    page.locator("#text textarea").fill(PREP_TEXT)
    src = _generate_and_wait(ui)

    notes = page.locator("#notes").inner_text()
    read_as = next(line for line in notes.splitlines() if line.startswith("Read as:"))
    assert "five euros" in read_as and "Bye." in read_as, read_as
    assert re.search(r"\[pause \d+(\.\d+)? s\]", read_as), read_as
    spoken = re.sub(r"\[pause [^\]]*\]", "", read_as)
    for raw in ("€", "*", "[", re.compile(r"\d")):
        found = raw.search(spoken) if isinstance(raw, re.Pattern) else raw in spoken
        assert not found, f"{raw!r} reached the model: {read_as}"
    assert "1 separator line(s) read as a pause" in notes
    assert "Voice: the built-in voice." in notes
    # Two spoken parts around the pause: more audio than one part's token cap.
    wav_bytes = bytes(page.evaluate(FETCH_BYTES_JS, src))
    GENERATED_WAV.write_bytes(wav_bytes)
    expect(page.locator("#seed-used")).to_be_visible()
    assert re.fullmatch(r"[1-9]\d*", page.locator("#seed-used input").input_value())
    expect(page.locator("#similarity")).to_be_hidden()  # no reference clip: no similarity to show
    # The streamed player offers no download (it has no file behind it); the full audio does.
    assert page.evaluate(DOWNLOAD_JS, "#output") > 0
    assert page.evaluate(DOWNLOAD_JS, "#live") == 0
    assert ui.js_errors == []


def test_normalisation_can_be_turned_off(ui):
    page = ui.page
    page.locator("#text textarea").fill("Room 5.")
    page.locator("#normalize input").uncheck()
    _generate_and_wait(ui)
    notes = page.locator("#notes").inner_text()
    assert "five" not in notes and "Read as:" not in notes, notes


def test_save_voice_reload_pick_generate_and_keep_it_after_restart(ui, app):
    from models.voice_library import VoiceLibrary

    page = ui.page
    page.locator("#reference input[type=file]").first.set_input_files(str(VOICE))
    expect(page.locator("#reference-hints")).to_contain_text("Clip length")

    page.get_by_role("tab", name="Saved voices").click()
    page.locator("#lib-name input").fill(SAVED_VOICE)
    page.locator("#lib-clip input[type=file]").first.set_input_files(str(VOICE))
    page.wait_for_function(AUDIO_SRC_JS, arg="#lib-clip", timeout=UI_MS)
    page.locator("#lib-save").click()
    expect(page.locator("#lib-message")).to_contain_text(f"Saved {SAVED_VOICE}", timeout=GENERATION_MS)

    page.reload(wait_until="domcontentloaded")
    page.locator("#generate").wait_for(timeout=PAGE_LOAD_MS)
    page.locator("#text textarea").fill(TEXT)
    page.locator("#voice input").click()
    page.get_by_role("option").filter(has_text=SAVED_VOICE).click()
    expect(page.locator("#voice input")).to_have_value(SAVED_VOICE)
    src = _generate_and_wait(ui)
    notes = page.locator("#notes").inner_text()
    assert f"Voice: {SAVED_VOICE}" in notes, notes
    assert "Speaker similarity" in notes  # the saved clip is the reference it is compared with
    playback = page.evaluate(PLAY_JS, [src, UI_MS])
    assert playback["loaded"] == "loadedmetadata" and playback["played"] == "ended", playback
    assert ui.js_errors == []

    # A restarted app reads the same data folder: the voice is there, with its conditionals.
    again = VoiceLibrary(app.data_dir / "voices")
    assert SAVED_VOICE in again.names() and again.entry(SAVED_VOICE).kind == "saved"
    conds = again.load(SAVED_VOICE)
    assert conds.reference is not None and conds.t3.speaker_emb.shape[-1] == 256


def test_voice_lab_plot_and_watermark_check(ui):
    page = ui.page
    page.get_by_role("tab", name="Voice lab").click()
    others = sorted(VOICES.glob("*.wav"))
    page.locator("#lab-files input[type=file]").first.set_input_files([str(p) for p in others])
    page.locator("#lab-compare").click()
    plot = page.locator("#lab-plot img")
    expect(plot).to_be_visible(timeout=GENERATION_MS)
    expect(page.locator("#lab-matrix")).to_contain_text(others[0].stem)
    page.locator("#lab-plot").screenshot(path=str(LAB_SCREENSHOT))

    # The output of the text-preparation test above (it runs first in this file) and its voice.
    assert GENERATED_WAV.is_file(), "test_text_preparation_notes_and_result_boxes saves the generated file"
    for path, expected in ((GENERATED_WAV, r"^\s*Perth watermark detected \(confidence"),
                           (VOICE, r"^\s*no Perth watermark detected \(confidence")):
        page.reload(wait_until="domcontentloaded")
        page.get_by_role("tab", name="Watermark check").click()
        page.locator("#wm-audio input[type=file]").first.set_input_files(str(path))
        page.wait_for_function(AUDIO_SRC_JS, arg="#wm-audio", timeout=UI_MS)
        page.locator("#wm-check").click()
        expect(page.locator("#wm-verdict")).to_have_text(re.compile(expected), timeout=GENERATION_MS)
    assert ui.js_errors == []


# --- voice conversion of a long source -----------------------------------------------------------

VC_TARGET = VOICES / "aishell_s0764_b.wav"
VC_SHORT_S = 30.0                # three windows, two joins: the CI version (~2 min on 2 cores)
VC_LONG_S = 180.0                # the 3-minute source (~10 min on 2 cores): `-m heavy`
VC_MS_PER_SOURCE_S = 10_000      # CPU conversion with the fake checkpoint runs at ~3 s per source second

# The converted audio's src once it has one, or the text of an error toast if one shows first.
VC_RESULT_OR_ERROR_JS = """() => {
  const toast = document.querySelector('[data-testid="toast-body"].error');
  if (toast) return {error: toast.innerText};
  const src = (%s)('#vc-output');
  return src ? {src} : null;
}""" % AUDIO_SRC_JS

def _convert_long_source_in_browser(ui: Ui, tmp_path, seconds: float) -> None:
    """Upload `seconds` of real speech (the two AISHELL clips looped) and a target clip in the Voice
    conversion tab, convert, and check the downloaded result: length from the source's tokens, it plays
    to its end with that duration, and no join between the conversion's windows makes a larger sample
    step than any stretch inside the windows."""
    import numpy as np
    import soundfile as sf

    from models.vc import VCConfig, load_source, piece_bounds
    from test_vc import join_steps, real_voice

    page = ui.page
    source = tmp_path / f"source_{seconds:.0f}s.wav"
    sf.write(source, real_voice(seconds), 16_000)
    page.get_by_role("tab", name="Voice conversion").click()
    page.locator("#vc-source input[type=file]").first.set_input_files(str(source))
    page.wait_for_function(AUDIO_SRC_JS, arg="#vc-source", timeout=UI_MS)
    page.locator("#vc-target input[type=file]").first.set_input_files(str(VC_TARGET))
    page.wait_for_function(AUDIO_SRC_JS, arg="#vc-target", timeout=UI_MS)
    expect(page.locator("#vc-hints")).to_contain_text("Clip length")
    page.locator("#vc-convert").click()
    timeout = int(VC_MS_PER_SOURCE_S * seconds) + PAGE_LOAD_MS
    outcome = page.wait_for_function(VC_RESULT_OR_ERROR_JS, timeout=timeout, polling=1000).json_value()
    if "error" in outcome:
        page.screenshot(path=str(FAILURE_SCREENSHOT), full_page=True)
        pytest.fail(f"conversion failed (see {FAILURE_SCREENSHOT.name}): {outcome['error']}")
    notes = page.locator("#vc-notes")
    expect(notes).to_contain_text("watermarked (Perth)")

    wav_bytes = bytes(page.evaluate(FETCH_BYTES_JS, outcome["src"]))
    (ARTIFACTS / f"vc-converted-{seconds:.0f}s.wav").write_bytes(wav_bytes)
    wav, rate = sf.read(io.BytesIO(wav_bytes), dtype="float32")
    wav16 = load_source(source)
    n_tokens = -(-(len(wav16) // 160) // 4)  # the S3 tokenizer: 4 frames of 10 ms per token
    lost, rest = divmod(960 * n_tokens - len(wav), 480)
    assert rate == OUTPUT_SR and rest == 0 and lost in (0, 1), f"{len(wav)} samples for {n_tokens} tokens"
    assert f"{len(wav) / OUTPUT_SR:.1f} s" in notes.inner_text()
    playback = page.evaluate(PLAY_JS, [outcome["src"], UI_MS, 1.0])
    assert playback["loaded"] == "loadedmetadata" and playback["error"] is None, playback
    assert playback["duration"] == pytest.approx(len(wav) / OUTPUT_SR, abs=0.01), playback
    assert playback["played"].startswith("ended"), playback

    config = VCConfig()
    bounds = piece_bounds(wav16, n_tokens, config)  # the plan the server converted by
    at_joins, inside = join_steps(wav, bounds, lost, config)
    print(f"{seconds:.0f} s source, {len(at_joins)} joins at tokens {bounds[1:-1]}: largest step in a join "
          f"region {max(at_joins):.4f} (each: {', '.join(f'{s:.4f}' for s in at_joins)}), inside windows "
          f"{inside:.4f}")
    assert len(at_joins) == len(bounds) - 2 >= 2
    assert max(at_joins) <= inside, (at_joins, inside)
    assert np.all(np.isfinite(wav)) and np.abs(wav).max() < 1.0
    assert ui.js_errors == []


def test_voice_conversion_of_a_long_source_has_no_audible_join(ui, tmp_path):
    _convert_long_source_in_browser(ui, tmp_path, VC_SHORT_S)


@pytest.mark.heavy
def test_voice_conversion_of_a_three_minute_source_has_no_audible_join(ui, tmp_path):
    _convert_long_source_in_browser(ui, tmp_path, VC_LONG_S)


# --- Multilingual: language picker, example text, per-language notes ------------------------------

def test_multilingual_speaks_japanese_and_shows_each_languages_notes(ui, app):
    import importlib.util

    from models.multilingual.languages import LANGUAGES
    from models.multilingual.text import HEBREW_NOTE
    from models.registry import MODELS

    page = ui.page
    language, note, box = page.locator("#language"), page.locator("#language-note"), page.locator("#text textarea")
    expect(language).to_be_hidden()  # English takes no language
    page.locator("#model input").click()
    page.get_by_role("option").filter(has_text=MODELS["multilingual"].label).click()
    expect(language).to_be_visible()
    expect(note).to_contain_text("accent")
    expect(note).to_contain_text("CFG")

    def choose(name: str) -> None:
        page.locator("#language input").click()
        page.get_by_role("option").filter(has_text=name).click()

    choose("Japanese")
    expect(box).to_have_value(LANGUAGES["ja"].example)
    src = _generate_and_wait(ui)  # the built-in voice
    notes = page.locator("#notes").inner_text()
    wav = check_generated_audio(bytes(page.evaluate(FETCH_BYTES_JS, src)), notes, app.max_new_tokens)
    playback = page.evaluate(PLAY_JS, [src, UI_MS])
    assert playback["loaded"] == "loadedmetadata" and playback["error"] is None, playback
    assert playback["duration"] == pytest.approx(len(wav) / OUTPUT_SR, abs=0.01), playback
    assert playback["played"] == "ended", playback

    # A language whose front-end step cannot run here says so when it is chosen.
    choose("Hebrew")
    expect(box).to_have_value(LANGUAGES["he"].example)
    expect(note).to_contain_text(HEBREW_NOTE)
    choose("Chinese")
    expect(box).to_have_value(LANGUAGES["zh"].example)
    if importlib.util.find_spec("spacy_pkuseg") is None:  # not installed (requirements leave it out)
        expect(note).to_contain_text("Chinese: no word segmentation")

    # Back on a one-language model the picker and its note go.
    page.locator("#model input").click()
    page.get_by_role("option").filter(has_text=MODELS["english"].label).click()
    expect(language).to_be_hidden()
    expect(note).to_be_hidden()


# --- result downloads, recipes and share links ------------------------------------------------------

RECIPE_TEXT = "Recipes make it again."
RECIPE_SCREENSHOT = ARTIFACTS / "app-result-downloads.png"
# The href of the first file link under `selector` (Gradio's File shows one per file), inside shadow roots too.
FILE_HREF_JS = """(selector) => {
  const find = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'A' && el.href && el.href.includes('/file=')) return el.href;
      if (el.shadowRoot) { const href = find(el.shadowRoot); if (href) return href; }
    }
    return null;
  };
  const host = document.querySelector(selector);
  return host ? find(host) : null;
}"""
FETCH_TEXT_JS = "async (src) => (await fetch(src)).text()"


def _file_href(page, selector: str, suffix: str) -> str:
    """The href of the file shown under `selector` once it ends with `suffix`."""
    handle = page.wait_for_function(f"""(sel) => {{
      const href = ({FILE_HREF_JS})(sel);
      return href && href.split('?')[0].endsWith({suffix!r}) ? href : null;
    }}""", arg=selector, timeout=UI_MS)
    return handle.json_value()


def _pick(page, selector: str, option: str) -> None:
    page.locator(f"{selector} input").click()
    page.get_by_role("option").filter(has_text=option).first.click()
    expect(page.locator(f"{selector} input")).to_have_value(re.compile(re.escape(option)))


def test_downloads_recipe_and_share_link_reproduce_the_result(ui, app, tmp_path):
    import io

    import numpy as np
    import soundfile as sf

    from models.registry import MODELS
    from serving.recipes import Recipe

    page = ui.page
    page.locator("#text textarea").fill(RECIPE_TEXT)
    slider = page.locator("#exaggeration input[type=range]")
    slider.focus()
    for _ in range(2):
        slider.press("ArrowRight")
    expect(page.locator("#exaggeration input[type=number]")).to_have_value("0.6")
    first_src = _generate_and_wait(ui)   # seed 0: a drawn seed, which the recipe keeps
    first = bytes(page.evaluate(FETCH_BYTES_JS, first_src))
    seed = int(page.locator("#seed-used input").input_value())

    # The recipe file: what made this result.
    recipe = Recipe.from_json(page.evaluate(FETCH_TEXT_JS, _file_href(page, "#recipe-file", ".json")))
    assert (recipe.text, recipe.model, recipe.seed, recipe.voice) == (RECIPE_TEXT, "english", seed, None)
    assert recipe.settings["exaggeration"] == pytest.approx(0.6) and recipe.watermark and recipe.normalize
    # The share link: this page's address with the same recipe.
    link = page.locator("#share-link textarea").input_value()
    assert link.startswith(f"{app.url}/?recipe="), link
    assert Recipe.from_link_param(link.split("?recipe=", 1)[1]) == recipe

    # The audio as wav at 24 kHz (the samples shown), then as Ogg Opus at 48 kHz.
    wav, rate = sf.read(io.BytesIO(first), dtype="int16")
    wav_download = bytes(page.evaluate(FETCH_BYTES_JS, _file_href(page, "#download-file", "-24000hz.wav")))
    assert np.array_equal(sf.read(io.BytesIO(wav_download), dtype="int16")[0], wav) and rate == OUTPUT_SR
    _pick(page, "#download-format", "Ogg Opus")
    _pick(page, "#download-rate", "48 kHz")
    opus = bytes(page.evaluate(FETCH_BYTES_JS, _file_href(page, "#download-file", "-48000hz.opus")))
    (tmp_path / "download.opus").write_bytes(opus)
    decoded, decoded_rate = sf.read(tmp_path / "download.opus", dtype="float32")
    assert decoded_rate == 48_000 and abs(len(decoded) - 2 * len(wav)) <= 1, (len(decoded), len(wav))
    assert np.max(np.abs(decoded)) > 0
    page.screenshot(path=str(RECIPE_SCREENSHOT), full_page=True)

    # Opened with the link, the page restores the form; generating again gives the same samples.
    page.goto(link, wait_until="domcontentloaded")
    page.locator("#generate").wait_for(timeout=PAGE_LOAD_MS)
    expect(page.locator("#recipe-message")).to_contain_text("Recipe loaded from the link")
    expect(page.locator("#text textarea")).to_have_value(RECIPE_TEXT)
    expect(page.locator("#model input")).to_have_value(MODELS["english"].label)
    expect(page.locator("#exaggeration input[type=number]")).to_have_value("0.6")
    page.get_by_text("Advanced options").click()
    expect(page.locator("#seed input")).to_have_value(str(seed))
    again = bytes(page.evaluate(FETCH_BYTES_JS, _generate_and_wait(ui)))
    assert page.locator("#seed-used input").input_value() == str(seed)
    assert np.array_equal(sf.read(io.BytesIO(again), dtype="int16")[0], wav), "the replayed audio differs"
    assert again == first
    assert ui.js_errors == []


def test_recipe_upload_fills_the_form_and_a_bad_one_changes_nothing(ui, tmp_path):
    from models.registry import MODELS
    from serving.recipes import Recipe

    turbo = MODELS["turbo"]
    page = ui.page
    page.get_by_text("Load a recipe").click()
    upload = page.locator("#recipe-upload input[type=file]").first
    good = Recipe("Loaded [laugh] from a file.", "turbo", 4321, {"temperature": 0.55, "top_k": 50})
    bad = Recipe("Someone else.", "english", 7, voice="Nobody here")
    (tmp_path / "bad.json").write_text(bad.to_json(), encoding="utf-8")
    (tmp_path / "good.json").write_text(good.to_json(), encoding="utf-8")
    (tmp_path / "notes.json").write_text('{"hello": 1}', encoding="utf-8")

    before = page.locator("#text textarea").input_value()
    for name, message in (("bad.json", "'Nobody here' is not one of this Space's voices"),
                          ("notes.json", "not a recipe of this Space")):
        upload.set_input_files(str(tmp_path / name))
        expect(page.locator("#recipe-message")).to_contain_text(message)
        expect(page.locator("#recipe-message")).to_contain_text("the form is unchanged")
        expect(page.locator("#text textarea")).to_have_value(before)
        expect(page.locator("#model input")).to_have_value(MODELS["english"].label)

    upload.set_input_files(str(tmp_path / "good.json"))
    expect(page.locator("#recipe-message")).to_contain_text("Recipe loaded from the file")
    expect(page.locator("#text textarea")).to_have_value(good.text)
    expect(page.locator("#model input")).to_have_value(turbo.label)
    expect(page.locator("#tags-turbo")).to_be_visible()
    page.get_by_text("Advanced options").click()
    expect(page.locator("#temperature input[type=number]")).to_have_value(_shown(0.55))
    expect(page.locator("#top_k input[type=number]")).to_have_value(_shown(50))
    expect(page.locator("#exaggeration")).to_be_hidden()  # Turbo's controls only
    expect(page.locator("#seed input")).to_have_value("4321")
    assert ui.js_errors == []
