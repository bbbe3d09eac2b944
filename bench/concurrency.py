"""Throughput of concurrent requests with T3 decoding batched (models/t3_batching.py).

    python bench/concurrency.py --checkpoint DIR [--requests 4] [--tokens 40] [--json FILE]

One process, one load, side by side on the same voice, texts and seeds:
- T3: aggregate tokens/s of `--requests` concurrent requests through one `T3Batcher`,
  against one request decoding alone (`T3.stream_tokens`): with the prefills (wall time), and
  of the decoding steps alone (`*_decode_*`, as bench/run.py's `t3_tokens_per_s`).
- End to end (`ChatterboxTTS.synthesize`, T3 + S3Gen, watermark off): the same requests run
  one at a time (batch size 1) against all at once from as many threads (batch size =
  requests). Throughput ratio = serial wall time / concurrent wall time; the audio of both
  runs must be equal (`same_audio`).
Every run is timed once: on a shared machine, read the load average printed with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/run.py: idle threads must not spin

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from models.params import GenerationParams  # noqa: E402
from models.sampling import SamplingParams  # noqa: E402
from models.t3_batching import T3Batcher  # noqa: E402
from models.tts import ChatterboxTTS  # noqa: E402

VOICE = REPO / "assets" / "voices" / "aishell_s0764_a.wav"
TEXTS = ["The quick brown fox jumps over the lazy dog.", "A second voice reads a longer sentence today.",
         "Short and sweet.", "Numbers and letters, one after the other."]
SEED = 1234


def in_threads(work, n: int) -> tuple[list, float]:
    """work(i) for i < n, each in its own thread, started together -> (results, wall seconds)."""
    results: list = [None] * n
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, work(i))) for i in range(n)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - start


def t3_figures(tts: ChatterboxTTS, voice, requests: int, tokens: int) -> dict:
    t3 = tts.model().t3
    text_ids = [t3.frame_text(torch.arange(1 + 7 * i, 40 + 9 * i) % 600 + 1) for i in range(requests)]
    params = SamplingParams.of(GenerationParams(), tokens)

    def decode(source, i: int) -> tuple[int, float]:
        """(tokens, seconds after the first token: the decoding steps without the prefill)."""
        generator = torch.Generator().manual_seed(SEED + i)
        tokens, first = 0, 0.0
        for _ in source.stream_tokens(voice.t3, text_ids[i], params, generator):
            tokens += 1
            first = first or time.perf_counter()
        return tokens, time.perf_counter() - first

    decode(t3, 0)  # warm-up (first-call allocations)
    start = time.perf_counter()
    alone_tokens, alone_steps_s = decode(t3, 0)
    alone_s = time.perf_counter() - start
    batcher = T3Batcher(t3, max_batch=requests)
    counts, batched_s = in_threads(lambda i: decode(batcher, i)[0], requests)
    alone_rate, batched_rate = alone_tokens / alone_s, sum(counts) / batched_s
    # Decode rates, as bench/run.py's t3_tokens_per_s: tokens drawn by decoding steps per second of steps.
    alone_decode = (alone_tokens - 1) / alone_steps_s
    batched_decode = batcher.step_tokens / batcher.step_seconds
    return {"t3_alone_tokens": alone_tokens, "t3_alone_tokens_per_s": alone_rate,
            "t3_batched_tokens": counts, "t3_batched_tokens_per_s": batched_rate,
            "t3_speedup": batched_rate / alone_rate,
            "t3_alone_decode_tokens_per_s": alone_decode, "t3_batched_decode_tokens_per_s": batched_decode,
            "t3_decode_speedup": batched_decode / alone_decode, "t3_batched_max_active": batcher.max_active}


def e2e_figures(tts: ChatterboxTTS, voice, requests: int, tokens: int) -> dict:
    def speak(i: int):
        return tts.synthesize(TEXTS[i % len(TEXTS)], voice, GenerationParams(seed=SEED + i),
                              max_new_tokens=tokens, watermark=False)

    tts.batch_size = 1
    start = time.perf_counter()
    serial = [speak(i) for i in range(requests)]
    serial_s = time.perf_counter() - start
    tts.batch_size = requests
    concurrent, concurrent_s = in_threads(speak, requests)
    tts.batch_size = 1
    audio_s = sum(r.seconds for r in serial)
    same = all(np.array_equal(a.wav, b.wav) for a, b in zip(serial, concurrent))
    return {"e2e_audio_s": audio_s, "e2e_serial_s": serial_s, "e2e_concurrent_s": concurrent_s,
            "e2e_serial_audio_s_per_s": audio_s / serial_s, "e2e_concurrent_audio_s_per_s": audio_s / concurrent_s,
            "e2e_speedup": serial_s / concurrent_s, "same_audio": same}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="folder with the released layout")
    parser.add_argument("--requests", type=int, default=4, help="concurrent requests (default 4)")
    parser.add_argument("--tokens", type=int, default=40, help="speech tokens per request at most (default 40)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2, the Space's CPU tier)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    tts = ChatterboxTTS.from_local(args.checkpoint, device=args.device)
    voice = tts.prepare_conditionals(str(VOICE))
    figures = {"requests": args.requests, "tokens": args.tokens, "threads": args.threads, "device": args.device,
               "loadavg_before": list(os.getloadavg())}
    figures |= t3_figures(tts, voice, args.requests, args.tokens)
    figures |= e2e_figures(tts, voice, args.requests, args.tokens)
    figures["loadavg_after"] = list(os.getloadavg())
    for key, value in figures.items():
        print(f"{key:32s} {value:.3f}" if isinstance(value, float) else f"{key:32s} {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
