"""A client that leaves a streaming `/v1/audio/speech` response mid-generation stops its generation
at once (its T3 rows are then freed by the batcher) and gives its admission slot back. A real
uvicorn server on loopback with a stand-in service: no weights."""
from __future__ import annotations

import socket
import threading
import time

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI

from serving.admission import Admission
from serving.openai_api import SpeechRequest, SpeechStream, openai_router

PIECE = np.zeros(2400, dtype=np.float32)


class SlowService:
    """One piece at once, then nothing until the stream is cancelled (a generation in progress)."""

    def __init__(self):
        self.cancel: threading.Event | None = None
        self.closed = threading.Event()

    def model_ids(self):
        return ["english"]

    def voices(self):
        return [{"id": "default", "name": "built-in", "kind": "built-in"}]

    def open_speech(self, request: SpeechRequest) -> SpeechStream:
        self.cancel = threading.Event()

        def pieces():
            try:
                yield PIECE
                if not self.cancel.wait(60):  # what the pipeline checks between steps
                    yield PIECE
            finally:
                self.closed.set()

        return SpeechStream(pieces(), 24_000, 1, "english", [], self.cancel)


@pytest.fixture
def server():
    service, admission = SlowService(), Admission(max_running=1, max_waiting=0)
    app = FastAPI()
    app.include_router(openai_router(service, admission))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", service, admission
    uv.should_exit = True
    thread.join(10)


def test_leaving_mid_stream_cancels_the_generation_and_frees_the_slot(server):
    url, service, admission = server
    body = dict(model="english", voice="default", input="Hello.", response_format="pcm")
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", url + "/v1/audio/speech", json=body) as response:
            assert response.status_code == 200
            first = next(response.iter_bytes())
            assert len(first) > 0
            assert admission.running == 1
            left = time.monotonic()
        # Leaving the block closed the connection while the generation waited for its next piece.
    assert service.cancel.wait(10), "the generation was not cancelled"
    assert service.closed.wait(10)
    deadline = time.monotonic() + 10
    while admission.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert admission.running == 0
    assert time.monotonic() - left < 10  # long before the 60 s the stand-in would have run on
