"""One `app.py` server per test session, shared by the API and browser tests.

`shared_server` starts the Space as a subprocess on a free 127.0.0.1 port with the fake
checkpoint and a small speech-token cap, waits until it answers HTTP (model loading takes
~20-60 s on 2 cores), and registers its shutdown for the end of the session. Its output goes
to test-artifacts/app-server.log. A start that failed is not retried: later callers fail at once.
`check_generated_audio` holds the checks both suites make on a returned wav. Saved voices go
to a fresh data folder (`AppServer.data_dir`, `--data-dir`) removed with the server.
"""
from __future__ import annotations

import ctypes
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
LOG_PATH = ARTIFACTS / "app-server.log"
VOICES = REPO / "assets" / "voices"
MAX_NEW_TOKENS = 10             # 0.4 s of speech: keeps one CPU generation under a minute
OUTPUT_SR = 24_000
SAMPLES_PER_TOKEN = 960         # 24 kHz / 25 speech tokens per second
READY_TIMEOUT_S = 240
POLL_INTERVAL_S = 1.0
STOP_TIMEOUT_S = 20
LOG_TAIL_CHARS = 4000
PR_SET_PDEATHSIG = 1            # prctl option: signal the child when the test process dies


@dataclass
class AppServer:
    """A running `app.py`: its URL, process and log. `stop` is idempotent."""

    url: str
    process: subprocess.Popen
    log_path: Path
    max_new_tokens: int
    temp_dir: Path
    _log_file: object = field(repr=False, default=None)

    @property
    def data_dir(self) -> Path:
        """The server's `--data-dir` (saved voices in its `voices/`)."""
        return self.temp_dir / "data"

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.alive():
            # The server runs in its own session, so this reaches only it and its children.
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str, timeout: float = 5.0) -> int | None:
    """The HTTP status of GET `url`, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def _die_with_parent() -> None:
    # A killed pytest must not leave a 3 GB server behind on a shared machine.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def start_server(checkpoint: Path, max_new_tokens: int = MAX_NEW_TOKENS,
                 ready_timeout_s: float = READY_TIMEOUT_S, extra_args: tuple[str, ...] = (),
                 log_path: Path = LOG_PATH) -> AppServer:
    """Start app.py on the fake checkpoint and return once its page answers 200."""
    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    temp_dir = Path(tempfile.mkdtemp(prefix="chatterbox-app-test-"))
    env = dict(os.environ, PYTHONUNBUFFERED="1", GRADIO_ANALYTICS_ENABLED="False",
               HF_HUB_OFFLINE="1", GRADIO_TEMP_DIR=str(temp_dir))
    cmd = [sys.executable, str(REPO / "app.py"), "--checkpoint", str(checkpoint), "--host", "127.0.0.1",
           "--port", str(port), "--max-new-tokens", str(max_new_tokens), "--concurrency", "1",
           "--data-dir", str(temp_dir / "data"), *extra_args]
    log_file = log_path.open("w", encoding="utf-8")
    log_file.write(f"$ {' '.join(cmd)}\n")
    log_file.flush()
    process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True,
                               preexec_fn=_die_with_parent)
    server = AppServer(f"http://127.0.0.1:{port}", process, log_path, max_new_tokens, temp_dir, log_file)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if not server.alive():
            server.stop()
            raise RuntimeError(f"app.py exited with code {process.returncode} before serving; "
                               f"log tail:\n{server.log_tail()}")
        if http_status(server.url + "/") == 200:
            return server
        time.sleep(POLL_INTERVAL_S)
    server.stop()
    raise RuntimeError(f"app.py did not answer on {server.url} within {ready_timeout_s:.0f} s; "
                       f"log tail:\n{server.log_tail()}")


def check_generated_audio(wav_file: str | Path | bytes, notes: str, max_new_tokens: int,
                          tail_tokens: int = 0) -> np.ndarray:
    """Decode a generated single-chunk wav; check it against the token count and length in the notes.

    A generation cut at its token limit may lose a silent tail, so the length is bounded by
    the tokens' 960 samples each from above and loosely from below. `tail_tokens`: tokens the
    model decodes after the speech (Turbo's 3 silence tokens).
    """
    source = io.BytesIO(wav_file) if isinstance(wav_file, bytes) else str(wav_file)
    wav, rate = sf.read(source, dtype="float32", always_2d=True)
    assert (rate, wav.shape[1]) == (OUTPUT_SR, 1), f"got {rate} Hz, {wav.shape[1]} channels"
    wav = wav[:, 0]
    tokens = int(re.search(r"from (\d+) speech tokens", notes).group(1))
    assert 1 <= tokens <= max_new_tokens, notes
    assert 0 < len(wav) <= (max_new_tokens + tail_tokens) * SAMPLES_PER_TOKEN, f"{len(wav)} samples"
    assert tokens * SAMPLES_PER_TOKEN // 2 <= len(wav) <= (tokens + tail_tokens) * SAMPLES_PER_TOKEN, \
        f"{len(wav)} samples for {tokens} speech tokens"
    seconds = float(re.search(r"([\d.]+) s of audio", notes).group(1))
    assert abs(seconds - len(wav) / OUTPUT_SR) <= 0.01, notes
    assert np.all(np.isfinite(wav)) and np.any(wav != 0), "audio is not finite or all zeros"
    return wav


_server: AppServer | None = None
_start_error: str | None = None


def shared_server(config: pytest.Config, checkpoint: Path) -> AppServer:
    """The session's server, started on first use and stopped when the session ends."""
    global _server, _start_error
    if _start_error is not None:
        pytest.fail(f"the app server failed to start earlier in this session: {_start_error}")
    if _server is None:
        try:
            from conftest import fake_multilingual_checkpoint_dir, fake_turbo_checkpoint_dir

            # Turbo and Multilingual load on their first request only: they cost nothing to tests
            # that do not pick them.
            _server = start_server(checkpoint, extra_args=(
                "--turbo-checkpoint", str(fake_turbo_checkpoint_dir()),
                "--multilingual-checkpoint", str(fake_multilingual_checkpoint_dir())))
        except RuntimeError as exc:
            _start_error = str(exc)
            pytest.fail(_start_error)
        config.add_cleanup(_stop_shared)
    if not _server.alive():
        pytest.fail(f"the app server died (exit code {_server.process.returncode}); "
                    f"log tail:\n{_server.log_tail()}")
    return _server


def _stop_shared() -> None:
    global _server
    if _server is not None:
        _server.stop()
        _server = None
