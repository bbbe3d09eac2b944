"""Streaming and stopping in the real browser: long text plays while it is generated,
and Stop ends a generation between steps, keeping the audio made so far."""
from __future__ import annotations

import time

import pytest

from app_server import ARTIFACTS, VOICES, shared_server, start_server
from models.tts import CHUNK_CHARS
from test_app_browser import (AUDIO_SRC_JS, CHROMIUM, CHROMIUM_ARGS, FETCH_BYTES_JS, PLAY_JS, UI_MS, VIEWPORT,
                              sync_api)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
expect = sync_api.expect
GENERATION_S = 8 * 60
STREAM_TOKENS = 40  # per chunk on the streaming server: 1.6 s of speech
# Two sentence chunks: the first is played while the second is generated.
LONG_TEXT = ("This first part is long enough to fill a whole chunk of the text on its own, and it keeps "
             "going with more words so that the splitter has to end it at the sentence boundary that "
             "follows. It says one more thing here, for good measure and a little more length. "
             "The second part is spoken after it, once the first part has been generated and sent.")

# Seconds the <audio> under `selector` has played (0 if none is playing yet).
PLAYED_JS = """(selector) => {
  const find = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'AUDIO') return el;
      if (el.shadowRoot) { const a = find(el.shadowRoot); if (a) return a; }
    }
    return null;
  };
  const host = document.querySelector(selector);
  const audio = host ? find(host) : null;
  return audio ? audio.currentTime : 0;
}"""


@pytest.fixture(scope="module")
def app(request, fake_ckpt):
    return shared_server(request.config, fake_ckpt)


@pytest.fixture(scope="module")
def streaming_app(fake_ckpt):
    # Chunks long enough to stream in token blocks: 40 tokens, the first 20 played early.
    server = start_server(fake_ckpt, max_new_tokens=STREAM_TOKENS, extra_args=("--first-block", "20"),
                          log_path=ARTIFACTS / "app-server-streaming.log")
    yield server
    server.stop()


def _open_page(browser, url):
    page = browser.new_context(viewport=VIEWPORT).new_page()
    page.set_default_timeout(UI_MS)
    page.goto(url, wait_until="domcontentloaded")
    page.locator("#generate").wait_for(timeout=60_000)
    page.locator("#reference input[type=file]").first.set_input_files(str(VOICES / "aishell_s0764_a.wav"))
    page.wait_for_function(AUDIO_SRC_JS, arg="#reference", timeout=UI_MS)
    return page


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        # Playback starts when the first piece arrives, long after the click that asked for it.
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=CHROMIUM_ARGS + ["--autoplay-policy=no-user-gesture-required"])
        yield browser
        browser.close()


@pytest.fixture
def page(app, browser):
    return _open_page(browser, app.url)


@pytest.fixture
def streaming_page(streaming_app, browser):
    return _open_page(browser, streaming_app.url)


def _wait(page, condition, what: str, timeout_s: float = GENERATION_S) -> float:
    """Poll `condition()` until true; returns the time it became true."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if page.locator('[data-testid="toast-body"].error').count():
            pytest.fail(f"error while waiting for {what}: {page.locator('[data-testid=toast-body]').inner_text()}")
        if condition():
            return time.monotonic()
        page.wait_for_timeout(250)
    pytest.fail(f"timed out waiting for {what}")


def test_audio_plays_before_the_request_finishes(streaming_page):
    page = streaming_page
    assert len(LONG_TEXT) > CHUNK_CHARS
    page.locator("#text textarea").fill(LONG_TEXT)
    # Unwatermarked, the first 20-token block gives 0.4 s of audio (the watermark would hold
    # back 0.2 s of it for its right context).
    page.get_by_text("Advanced options").click()
    page.get_by_label("Perth watermark (imperceptible)").uncheck()
    page.locator("#generate").click()
    started = _wait(page, lambda: page.evaluate(PLAYED_JS, "#live") > 0, "live playback")
    progress = page.locator("#progress").inner_text()
    finished = _wait(page, lambda: page.evaluate(AUDIO_SRC_JS, "#output") is not None, "the full audio")
    print(f"playback started {finished - started:.1f} s before the request finished ({progress!r})")
    assert started < finished - 1.0, (started, finished)
    assert "chunk 2 of 2 done" not in progress
    expect(page.locator("#notes")).to_contain_text("spoken in 2 parts")
    expect(page.locator("#progress")).to_contain_text("chunk 2 of 2 done")


def test_stop_keeps_partial_audio_and_the_server_serves_on(page):
    page.locator("#text textarea").fill(LONG_TEXT)
    page.locator("#generate").click()
    _wait(page, lambda: "chunk 1 of 2 done" in page.locator("#progress").inner_text(), "the first chunk")
    page.locator("#stop").click()
    expect(page.locator("#notes")).to_contain_text("Stopped on request", timeout=GENERATION_S * 1000)
    expect(page.locator("#progress")).to_contain_text("stopped")
    src = page.evaluate(AUDIO_SRC_JS, "#output")
    assert src is not None
    audio = bytes(page.evaluate(FETCH_BYTES_JS, src))
    assert len(audio) > 44  # a wav with samples
    playback = page.evaluate(PLAY_JS, [src, UI_MS])
    assert playback["error"] is None and playback["duration"] > 0, playback
    # The server still validates and answers right away.
    page.locator("#text textarea").fill("")
    page.locator("#generate").click()
    expect(page.get_by_test_id("toast-body")).to_contain_text("text is empty")
