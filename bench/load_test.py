"""Load test: concurrent clients on loopback against a launched Space, through gradio_client and the OpenAI API.

    python bench/load_test.py --checkpoint DIR [--clients 20] [--requests 200] [--tokens 10]
                              [--batch-size 4] [--json FILE]

Starts `app.py` on the checkpoint (`--batch-size` generations share T3's steps, as many run at
once, the queue holds every client), saves a short voice (1.5 s: S3Gen's cost is mostly the
voice prompt) and sends requests with fixed seeds, half through `gradio_client` (`/generate`),
half through the `openai` package (`/v1/audio/speech`, pcm). Then it checks:
- every request is answered exactly once, and its audio equals the same request run alone
  (each distinct request is first run one at a time: the serial reference);
- p50/p95 time to first audio and to completion, per channel and together;
- the server's RSS after 200 requests against after 20 (`rss_growth`, target within 5 %);
- a client that leaves mid-generation frees its T3 rows: through each channel, a three-chunk
  request is dropped once its first chunk has joined the batch (the OpenAI client closes the
  connection, the gradio client cancels its job); the server's log must then show the batch
  empty (`t3 batch: ... (0 active)`) and no further chunk of that request starting.
Each run is timed once; on a shared machine, read the load average printed with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from app_server import ARTIFACTS, AppServer, start_server  # noqa: E402  (tests/app_server.py)
from models.constants import CHUNK_CHARS  # noqa: E402

VOICE_CLIP = REPO / "assets" / "voices" / "aishell_s0764_a.wav"
VOICE_NAME = "load test voice"
VOICE_SPAN_S = (1.0, 2.5)        # the part of the clip saved as the voice
TEXTS = ("The quick brown fox jumps.", "A second voice reads this.", "Short and sweet.",
         "Numbers and letters.", "Every request is answered once.", "Loud and clear today.")
SEED = 1000
FULL_AUDIO_LABEL = "Full audio"
GENERATION_TIMEOUT_S = 900
RSS_EARLY = 20                   # requests done when the first RSS is read
FREE_ROW_TIMEOUT_S = 60          # a dropped request's rows must be free by then
BATCH_LINE = re.compile(r"t3 batch: a request (\w+) \((\d+) active")
GENERATE_ARGS = dict(exaggeration=0.5, cfg_weight=0.5, temperature=0.8, min_p=0.05, top_p=1.0,
                     repetition_penalty=1.2, watermark=True, model_choice="English (Chatterbox)")


@dataclass(frozen=True)
class Spec:
    """One distinct request: the channel it goes through, its text and seed."""

    channel: str   # "gradio" or "openai"
    text: str
    seed: int


@dataclass
class Outcome:
    """What a client saw of one request."""

    index: int
    spec: Spec
    audio: np.ndarray | None = None    # int16 samples
    first_s: float = float("nan")      # from sending to the first audio
    done_s: float = float("nan")       # from sending to the end
    error: str | None = None


def specs(n: int) -> list[Spec]:
    """`n` distinct requests alternating between the channels."""
    return [Spec("gradio" if i % 2 == 0 else "openai", TEXTS[i % len(TEXTS)], SEED + i) for i in range(n)]


def launch(checkpoint: Path, tokens: int, batch_size: int, clients: int, log_path: Path) -> AppServer:
    """app.py on `checkpoint`, batching `batch_size` generations, queueing every client."""
    extra = ("--batch-size", str(batch_size), "--concurrency", str(batch_size), "--max-queue", str(clients + 4))
    return start_server(checkpoint, max_new_tokens=tokens, extra_args=extra, log_path=log_path)


def gradio_client(url: str, downloads: Path):
    from gradio_client import Client

    return Client(url, verbose=False, analytics_enabled=False, download_files=str(downloads))


def save_voice(url: str, downloads: Path) -> str:
    """Save the short voice through the page's `/save_voice` and return its name."""
    from gradio_client import handle_file

    wav, rate = sf.read(VOICE_CLIP, dtype="float32")
    clip = downloads / "voice.wav"
    sf.write(clip, wav[int(VOICE_SPAN_S[0] * rate): int(VOICE_SPAN_S[1] * rate)], rate)
    gradio_client(url, downloads).predict(VOICE_NAME, handle_file(str(clip)), 0.5, api_name="/save_voice")
    return VOICE_NAME


class Channels:
    """Sends a request through its channel and times it. One per client thread (gradio's
    Client is not shared between threads)."""

    def __init__(self, url: str, voice: str, downloads: Path):
        import openai

        self.url, self.voice, self.downloads = url, voice, downloads
        downloads.mkdir(parents=True, exist_ok=True)
        self.openai = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0,
                                    timeout=GENERATION_TIMEOUT_S)
        self._gradio = None
        self._full_audio = None

    def gradio(self):
        if self._gradio is None:
            self._gradio = gradio_client(self.url, self.downloads)
            returns = self._gradio.view_api(print_info=False, return_format="dict")["named_endpoints"]["/generate"]
            self._full_audio = [r["label"] for r in returns["returns"]].index(FULL_AUDIO_LABEL)
        return self._gradio

    def send(self, index: int, spec: Spec) -> Outcome:
        out = Outcome(index, spec)
        start = time.perf_counter()
        try:
            if spec.channel == "gradio":
                job = self.gradio().submit(text=spec.text, reference=None, seed=spec.seed, voice=self.voice,
                                           api_name="/generate", **GENERATE_ARGS)
                for _ in job:  # the first update carries the first audio (live or full)
                    out.first_s = time.perf_counter() - start
                    break
                values = job.result(timeout=GENERATION_TIMEOUT_S)
                wav, rate = sf.read(values[self._full_audio], dtype="int16")
                out.audio = wav
            else:
                chunks = []
                with self.openai.audio.speech.with_streaming_response.create(
                        model="english", voice=self.voice, input=spec.text, response_format="pcm",
                        extra_body={"seed": spec.seed}) as response:
                    for chunk in response.iter_bytes():
                        if chunk and not chunks:
                            out.first_s = time.perf_counter() - start
                        chunks.append(chunk)
                out.audio = np.frombuffer(b"".join(chunks), dtype="<i2")
        except Exception as exc:  # noqa: BLE001 - recorded: a failed request is a finding
            out.error = f"{type(exc).__name__}: {exc}"
        out.done_s = time.perf_counter() - start
        return out


def serve_all(url: str, voice: str, downloads: Path, requests: list[Spec], clients: int,
              on_done=None) -> list[Outcome]:
    """`clients` threads take the requests in order until none is left; outcomes by request index."""
    outcomes: list[Outcome | None] = [None] * len(requests)
    answers = [0] * len(requests)
    lock = threading.Lock()
    next_index = iter(range(len(requests)))

    def client(k: int) -> None:
        channels = Channels(url, voice, downloads / f"client{k}")
        while True:
            with lock:
                index = next(next_index, None)
            if index is None:
                return
            out = channels.send(index, requests[index])
            with lock:
                answers[index] += 1
                outcomes[index] = out
                done = sum(answers)
            if on_done is not None:
                on_done(done)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if answers != [1] * len(requests):
        raise AssertionError(f"requests not answered exactly once: {answers}")
    return outcomes  # type: ignore[return-value]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def percentiles(values: list[float]) -> dict:
    v = np.asarray([x for x in values if np.isfinite(x)])
    return {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)), "n": int(v.size)} if v.size \
        else {"p50": None, "p95": None, "n": 0}


def batch_lines(server: AppServer, offset: int) -> list[tuple[str, int]]:
    """The batcher's join/leave lines of the server log after byte `offset`: (how, active)."""
    with server.log_path.open("rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    return [(m.group(1), int(m.group(2))) for m in BATCH_LINE.finditer(text)]


def log_size(server: AppServer) -> int:
    return server.log_path.stat().st_size


def drop_mid_generation(server: AppServer, voice: str, channel: str, downloads: Path) -> dict:
    """Send a three-chunk request, drop it once its first chunk has joined the batch, and
    report whether the batch emptied and the request stopped (no further chunk started)."""
    sentence = "This sentence is long enough to be a chunk of its own when it is repeated. "
    text = " ".join([sentence * (CHUNK_CHARS // len(sentence))] * 3)
    offset = log_size(server)
    result: dict = {"channel": channel}

    def joined() -> bool:
        return any(how == "joined" for how, _ in batch_lines(server, offset))

    def wait_joined() -> None:
        deadline = time.monotonic() + GENERATION_TIMEOUT_S
        while not joined() and time.monotonic() < deadline:
            time.sleep(0.05)

    start = time.perf_counter()
    if channel == "openai":
        import httpx

        body = dict(model="english", voice=voice, input=text, response_format="pcm", seed=SEED)
        with httpx.Client(timeout=GENERATION_TIMEOUT_S) as http:
            with http.stream("POST", server.url + "/v1/audio/speech", json=body):
                wait_joined()
                dropped = time.perf_counter()
    else:
        job = gradio_client(server.url, downloads).submit(text=text, reference=None, seed=SEED, voice=voice,
                                                          api_name="/generate", **GENERATE_ARGS)
        wait_joined()
        job.cancel()
        dropped = time.perf_counter()
    deadline = time.monotonic() + FREE_ROW_TIMEOUT_S
    lines = batch_lines(server, offset)
    while time.monotonic() < deadline:
        lines = batch_lines(server, offset)
        if lines and lines[-1][0] != "joined" and lines[-1][1] == 0:
            break
        time.sleep(0.1)
    freed = time.perf_counter() - dropped
    time.sleep(5)  # a request that went on would start its next chunk by now
    lines = batch_lines(server, offset)
    result.update(joined=sum(how == "joined" for how, _ in lines), chunks=3,
                  cancelled=sum(how == "cancelled" for how, _ in lines),
                  empty=bool(lines) and lines[-1][0] != "joined" and lines[-1][1] == 0,
                  seconds_to_free=round(freed, 2), seconds_before_drop=round(dropped - start, 2))
    result["freed"] = result["empty"] and result["joined"] < result["chunks"]
    return result


def run(checkpoint: Path, clients: int, total: int, tokens: int, batch_size: int, distinct: int,
        work_dir: Path, log_path: Path, rss: bool = True, drops: tuple[str, ...] = ("openai", "gradio")) -> dict:
    """The whole load test; returns the figures (raises nothing for a failed check: see `ok`)."""
    figures: dict = {"clients": clients, "requests": total, "tokens": tokens, "batch_size": batch_size,
                     "distinct": distinct, "loadavg_before": list(os.getloadavg())}
    started = time.perf_counter()
    server = launch(checkpoint, tokens, batch_size, clients, log_path)
    try:
        figures["server_start_s"] = round(time.perf_counter() - started, 1)
        voice = save_voice(server.url, work_dir)
        distinct_specs = specs(distinct)
        # The serial reference: each distinct request alone, one at a time.
        start = time.perf_counter()
        reference = serve_all(server.url, voice, work_dir, distinct_specs, clients=1)
        figures["serial_s"] = round(time.perf_counter() - start, 1)
        figures["serial_per_request_s"] = round(figures["serial_s"] / distinct, 2)
        failed = [o.error for o in reference if o.error]
        if failed:
            raise RuntimeError(f"a serial request failed: {failed[0]}")

        rss_at: dict[str, float] = {}

        def on_done(done: int) -> None:
            if rss and done == min(RSS_EARLY, total):
                rss_at["early"] = rss_mb(server.process.pid)

        requests = [distinct_specs[i % distinct] for i in range(total)]
        start = time.perf_counter()
        outcomes = serve_all(server.url, voice, work_dir, requests, clients, on_done)
        wall = time.perf_counter() - start
        if rss:
            rss_at["late"] = rss_mb(server.process.pid)
        errors = [o.error for o in outcomes if o.error]
        same = [o.error is None and np.array_equal(o.audio, reference[o.index % distinct].audio) for o in outcomes]
        figures.update(
            load_s=round(wall, 1), requests_per_s=round(total / wall, 3),
            speedup_vs_serial=round(figures["serial_per_request_s"] * total / wall, 2),
            answered_once=True, errors=len(errors), first_error=errors[0] if errors else None,
            equal_to_serial=int(sum(same)),
            first_audio_s={ch: percentiles([o.first_s for o in outcomes if ch in ("all", o.spec.channel)])
                           for ch in ("all", "gradio", "openai")},
            done_s={ch: percentiles([o.done_s for o in outcomes if ch in ("all", o.spec.channel)])
                    for ch in ("all", "gradio", "openai")})
        if rss:
            figures.update(rss_after_early_mb=round(rss_at["early"], 1), rss_after_all_mb=round(rss_at["late"], 1),
                           rss_growth=round(rss_at["late"] / rss_at["early"] - 1, 4))
        figures["drops"] = [drop_mid_generation(server, voice, channel, work_dir) for channel in drops]
        figures["max_active_seen"] = max((active for _, active in batch_lines(server, 0)), default=0)
    finally:
        server.stop()
    figures["loadavg_after"] = list(os.getloadavg())
    figures["ok"] = (figures["errors"] == 0 and figures["equal_to_serial"] == total
                     and all(d["freed"] for d in figures["drops"])
                     and (not rss or abs(figures["rss_growth"]) <= 0.05))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="folder with the released layout")
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients (default 20)")
    parser.add_argument("--requests", type=int, default=200, help="requests in all (default 200)")
    parser.add_argument("--tokens", type=int, default=10, help="server's --max-new-tokens (default 10)")
    parser.add_argument("--batch-size", type=int, default=4, help="server's --batch-size and --concurrency")
    parser.add_argument("--distinct", type=int, default=8, help="distinct requests, repeated (default 8)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="load-test-") as tmp:
        figures = run(args.checkpoint, args.clients, args.requests, args.tokens, args.batch_size, args.distinct,
                      Path(tmp), ARTIFACTS / "load-test-server.log")
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
