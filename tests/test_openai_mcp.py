"""Programs' ways in, against a real app.py: the OpenAI-compatible API through the official
`openai` client, its error statuses, and the MCP server through the `mcp` client.

Generations use the shared server (fake checkpoint, 10-token cap). The statuses that need a
server in another state (401 with a key, 429 with a full queue, 503 without weights) are
checked on the same router mounted in a small FastAPI app with the real service and gate.
"""
from __future__ import annotations

import asyncio
import io
import json
import subprocess
import tempfile
import threading
import urllib.request

import numpy as np
import openai
import pytest
import soundfile as sf
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app_server import AppServer, shared_server
from integrations import LibraryVoices
from serving.admission import Admission
from serving.openai_api import openai_router
from serving.speech_service import SpeechService

pytestmark = pytest.mark.slow
OPENAI_FIELDS = ("model", "input", "voice", "response_format", "speed", "instructions")


@pytest.fixture(scope="module")
def app(request, fake_ckpt) -> AppServer:
    return shared_server(request.config, fake_ckpt)


@pytest.fixture(scope="module")
def client(app) -> openai.OpenAI:
    return openai.OpenAI(base_url=app.url + "/v1", api_key="unused", timeout=600, max_retries=0)


def decode(data: bytes, fmt: str) -> tuple[np.ndarray, int]:
    if fmt == "wav":
        wav, rate = sf.read(io.BytesIO(data), dtype="float32")
        return wav, rate
    with tempfile.NamedTemporaryFile(suffix="." + fmt) as f:
        f.write(data)
        f.flush()
        rate = int(json.loads(subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "stream=sample_rate", "-of", "json", f.name],
            capture_output=True, text=True, check=True).stdout)["streams"][0]["sample_rate"])
        pcm = subprocess.run(["ffmpeg", "-v", "error", "-i", f.name, "-f", "f32le", "-ac", "1", "pipe:1"],
                             capture_output=True, check=True).stdout
    return np.frombuffer(pcm, dtype=np.float32), rate


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_openai_client_gets_speech(client, app, fmt):
    speech = client.audio.speech.create(model="english", voice="default", input="Hello there.",
                                        response_format=fmt, extra_body={"seed": 11})
    wav, rate = decode(speech.content, fmt)
    assert rate == 24_000
    assert 0 < len(wav) <= app.max_new_tokens * 960 + 2048     # mp3 pads up to a frame
    assert np.all(np.isfinite(wav)) and np.abs(wav).max() > 0
    assert speech.response.headers["x-chatterbox-seed"] == "11"


def test_openai_client_streams_the_same_audio(client):
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input="Hello there.", response_format="pcm",
            extra_body={"seed": 12}) as response:
        assert response.headers["content-type"] == "audio/pcm"
        chunks = list(response.iter_bytes())
    streamed = np.frombuffer(b"".join(chunks), dtype="<i2")
    whole = client.audio.speech.create(model="english", voice="default", input="Hello there.",
                                       response_format="pcm", extra_body={"seed": 12})
    # OpenAI's model and voice names reach the default model and voice; same seed, same samples.
    assert streamed.size > 0 and np.array_equal(streamed, np.frombuffer(whole.content, dtype="<i2"))


def test_models_and_voices_are_listed(client):
    assert {m.id for m in client.models.list()} >= {"english", "german"}
    voices = client.get("/audio/voices", cast_to=object)
    assert "default" in [v["id"] for v in voices["data"]]


@pytest.mark.parametrize("body,status,words", [
    (dict(model="nope", voice="default", input="Hi."), 404, "unknown model"),
    (dict(model="english", voice="nobody", input="Hi."), 404, "unknown voice"),
    (dict(model="english", voice="default", input="x" * 12_001), 413, "at most 12,000"),
    (dict(model="english", voice="default", input="Hi.", speed=9.0), 400, "speed"),
    (dict(model="english", voice="default", input="Hi.", response_format="ogg"), 400, "response_format"),
    (dict(model="english", voice="default", input="Hi.", temperature=99.0), 400, "temperature"),
    (dict(model="english", voice="default", input="   "), 400, "empty"),
    (dict(model="english", voice="default", input="Hi.", colour="red"), 400, "unknown field"),
    (dict(model="multilingual", voice="default", input="Hi.", language="xx"), 400, "unsupported language 'xx'"),
    (dict(model="multilingual", voice="default", input="Hi."), 400, "needs a language"),
    (dict(model="english", voice="default", input="Bonjour.", language="fr"), 400, "speaks en, not 'fr'"),
])
def test_bad_requests_get_openai_errors(client, body, status, words):
    known = {k: v for k, v in body.items() if k in OPENAI_FIELDS}
    extra = {k: v for k, v in body.items() if k not in OPENAI_FIELDS}
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.speech.create(**known, extra_body=extra)
    assert caught.value.status_code == status
    error = caught.value.response.json()["error"]
    assert words in error["message"] and error["type"]


def router_app(service: SpeechService, admission: Admission, key: str | None = None) -> TestClient:
    api = FastAPI()
    api.include_router(openai_router(service, admission, key))
    return TestClient(api)


def test_key_is_required_when_set():
    http = router_app(SpeechService(None, LibraryVoices(None, None)), Admission(), key="s3cret")
    body = dict(model="english", voice="default", input="Hi.")
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = http.post("/v1/audio/speech", json=body, headers=headers)
        assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
    assert http.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_no_weights_is_503_and_a_full_queue_is_429():
    gate = Admission(max_running=1, max_waiting=0)
    http = router_app(SpeechService(None, LibraryVoices(None, None), unavailable="no weights here"), gate)
    body = dict(model="english", voice="default", input="Hi.")
    r = http.post("/v1/audio/speech", json=body)
    assert r.status_code == 503 and "no weights here" in r.json()["error"]["message"]
    held, release = threading.Event(), threading.Event()

    def occupy():
        with gate.slot():
            held.set()
            release.wait(30)

    worker = threading.Thread(target=occupy)
    worker.start()
    held.wait(10)
    try:
        r = http.post("/v1/audio/speech", json=body)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "try again in about" in r.json()["error"]["message"]
    finally:
        release.set()
        worker.join()


def test_mcp_client_lists_tools_and_speaks(app):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async def session():
        async with streamablehttp_client(app.url + "/gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as mcp:
                await mcp.initialize()
                tools = {t.name: t for t in (await mcp.list_tools()).tools}
                spoken = await mcp.call_tool("speak", {"text": "Hello there.", "voice": "default",
                                                       "model": "english", "seed": 5, "response_format": "wav"})
                voices = await mcp.call_tool("list_voices", {})
                return tools, spoken, voices

    tools, spoken, voices = asyncio.run(session())
    assert {"speak", "list_voices", "list_models", "batch"} <= set(tools)
    assert "voice id" in json.dumps(tools["speak"].inputSchema)
    # what the multilingual model speaks; optional, so callers that predate it keep working
    assert "language" in tools["speak"].inputSchema["properties"]
    assert "language" not in tools["speak"].inputSchema.get("required", [])
    assert not spoken.isError
    url = spoken.content[0].text.strip()
    with urllib.request.urlopen(url, timeout=30) as resp:
        wav, rate = sf.read(io.BytesIO(resp.read()), dtype="float32")
    assert rate == 24_000 and len(wav) > 0 and np.abs(wav).max() > 0
    assert "default" in voices.content[0].text
