"""OpenAI-compatible speech API, served by the Space's own process beside the UI.

`POST /v1/audio/speech` takes OpenAI's fields (`model`, `input`, `voice`, `response_format`,
`speed`, `instructions`) plus this Space's (`exaggeration`, `cfg_weight`, `temperature`, `top_p`,
`min_p`, `repetition_penalty`, `seed`, `language`) and answers with audio that is sent as it is
made (chunked transfer), so a client reading the response as a stream hears the first sentence
early. `GET /v1/models` and `GET /v1/audio/voices` list what can be asked for. Errors have OpenAI's
JSON shape: 400 bad input, 401 missing or wrong key, 404 unknown model or voice, 413 text too
long, 429 queue full, 503 no weights loaded. Every request passes the same `Admission` gate as
the browser's.
"""
from __future__ import annotations

import asyncio
import hmac
import math
import threading
from contextlib import ExitStack
from dataclasses import dataclass, field, fields
from typing import Any, AsyncIterator, Iterator, Protocol

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from .admission import Admission, Busy
from .formats import audio_format, check_tempo, stream

OPENAI_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
DISCONNECT_POLL_S = 0.5  # how often a streaming response checks that its client is still there


class UnknownName(LookupError):
    """A model or voice the Space does not have (HTTP 404)."""


class TextTooLong(ValueError):
    """The input is longer than one request may speak (HTTP 413)."""


class Unavailable(RuntimeError):
    """The Space cannot generate at all, e.g. no weights were loaded (HTTP 503)."""


@dataclass(frozen=True)
class SpeechRequest:
    """The body of `POST /v1/audio/speech`, type-checked; ranges are checked by the service."""

    model: str
    input: str
    voice: str
    response_format: str = "mp3"
    speed: float = 1.0
    instructions: str | None = None
    stream_format: str = "audio"
    exaggeration: float | None = None
    cfg_weight: float | None = None
    temperature: float | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    language: str | None = None

    @classmethod
    def from_json(cls, body: Any) -> "SpeechRequest":
        if not isinstance(body, dict):
            raise ValueError("the request body must be a JSON object")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(body) - set(known))
        if unknown:
            raise ValueError(f"unknown field(s): {', '.join(unknown)}")
        for name in ("model", "input", "voice"):
            if not isinstance(body.get(name), str):
                raise ValueError(f"'{name}' is required and must be a string")
        values = {}
        for name, value in body.items():
            if value is None:
                continue
            kind = known[name].type
            if "str" in kind and not isinstance(value, str):
                raise ValueError(f"'{name}' must be a string")
            if "float" in kind and (isinstance(value, bool) or not isinstance(value, (int, float))
                                    or not math.isfinite(value)):
                raise ValueError(f"'{name}' must be a number")
            if "int" in kind and "float" not in kind and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"'{name}' must be an integer")
            values[name] = value
        return cls(**values)


@dataclass
class SpeechStream:
    """What the service hands back once a request is accepted: audio pieces to come and facts known now."""

    pieces: Iterator[np.ndarray]        # float32 mono pieces at `sample_rate`, in order
    sample_rate: int
    seed: int
    model: str
    notes: list[str] = field(default_factory=list)
    cancel: threading.Event | None = None  # set when the client leaves: the generation stops at its next step


class SpeechService(Protocol):
    """What the app provides to the API. `open_speech` validates everything before any audio is made:
    ValueError (400), TextTooLong (413), UnknownName (404), Unavailable (503)."""

    def model_ids(self) -> list[str]: ...

    def voices(self) -> list[dict]: ...

    def open_speech(self, request: SpeechRequest) -> SpeechStream: ...


def error_response(status: int, message: str, kind: str, code: str | None = None,
                   param: str | None = None, headers: dict | None = None) -> JSONResponse:
    """OpenAI's error body: {"error": {"message", "type", "param", "code"}}."""
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=headers)


def openai_router(service: SpeechService, admission: Admission, api_key: str | None = None) -> APIRouter:
    """The `/v1` routes. With `api_key`, every call must send `Authorization: Bearer <api_key>`."""
    router = APIRouter(prefix="/v1")

    def unauthorized(request: Request) -> JSONResponse | None:
        if not api_key:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            return error_response(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                  "invalid_request_error", "invalid_api_key")
        return None

    @router.get("/models")
    async def list_models(request: Request):
        if (denied := unauthorized(request)) is not None:
            return denied
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "resemble-ai"}
                                           for m in service.model_ids()]}

    @router.get("/audio/voices")
    async def list_voices(request: Request):
        if (denied := unauthorized(request)) is not None:
            return denied
        return {"object": "list", "data": service.voices()}

    @router.post("/audio/speech")
    async def speech(request: Request):
        if (denied := unauthorized(request)) is not None:
            return denied
        try:
            body = await request.json()
        except ValueError:
            return error_response(400, "the request body is not valid JSON", "invalid_request_error")
        stack = ExitStack()
        try:
            req = SpeechRequest.from_json(body)
            if req.stream_format != "audio":
                raise ValueError("only stream_format 'audio' is served (the audio is always streamed)")
            if req.response_format not in OPENAI_FORMATS:
                raise ValueError(f"response_format must be one of {', '.join(OPENAI_FORMATS)}")
            fmt = audio_format(req.response_format)
            check_tempo(req.speed)
            # Waiting for a slot blocks, so it happens on a worker thread; so does the model work.
            await run_in_threadpool(stack.enter_context, admission.slot())
            out = await run_in_threadpool(service.open_speech, req)
            # A client that leaves early closes the response's iterator; that closes the generation.
            stack.callback(getattr(out.pieces, "close", lambda: None))
        except TextTooLong as exc:
            stack.close()
            return error_response(413, str(exc), "invalid_request_error", "text_too_long", "input")
        except UnknownName as exc:
            stack.close()
            return error_response(404, str(exc.args[0] if exc.args else exc), "invalid_request_error",
                                  "not_found")
        except ValueError as exc:
            stack.close()
            return error_response(400, str(exc), "invalid_request_error")
        except Busy as exc:
            return error_response(429, str(exc), "rate_limit_error", "queue_full",
                                  headers={"Retry-After": str(exc.retry_after)})
        except Unavailable as exc:
            stack.close()
            return error_response(503, str(exc), "server_error", "unavailable")

        def encoded() -> Iterator[bytes]:
            with stack:
                yield from stream(out.pieces, out.sample_rate, fmt, tempo=req.speed)

        async def body_bytes() -> AsyncIterator[bytes]:
            # The next piece may be seconds away, and nothing is sent meanwhile that would notice
            # a client that left: watch for it, so that its generation (and T3 rows) end now.
            watcher = asyncio.create_task(_cancel_on_disconnect(request, out.cancel))
            try:
                async for chunk in iterate_in_threadpool(encoded()):
                    yield chunk
            finally:
                watcher.cancel()
                if out.cancel is not None:
                    out.cancel.set()  # no-op after the last piece; stops a generation cut short

        headers = {"X-Chatterbox-Seed": str(out.seed), "X-Chatterbox-Model": out.model}
        notes = out.notes + (["'instructions' is ignored: Chatterbox takes its style from the voice and "
                              "exaggeration"] if req.instructions else [])
        if notes:
            headers["X-Chatterbox-Notes"] = " | ".join(notes).encode("ascii", "replace").decode()
        return StreamingResponse(body_bytes(), media_type=fmt.media_type, headers=headers)

    return router


async def _cancel_on_disconnect(request: Request, cancel: threading.Event | None) -> None:
    """Set `cancel` once the client of `request` has disconnected."""
    if cancel is None:
        return
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_S)
    cancel.set()
