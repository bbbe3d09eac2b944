"""Concurrent generations inside the pipeline (fake checkpoint): sharing T3's steps gives the
audio each gets alone, and S3Gen work interleaves so that streaming is not starved."""
import threading
import time

import numpy as np
import pytest

from conftest import REAL_VOICES
from models.params import GenerationParams
from models.t3_batching import batcher_for
from models.tts import LivePlayback

SHORT = 16  # speech tokens per generation


@pytest.mark.slow
def test_four_concurrent_batched_generations_equal_one_by_one(pipeline):
    voice = pipeline.prepare_conditionals(str(REAL_VOICES / "aishell_s0764_a.wav"))
    builtin = pipeline.model().builtin_voice
    jobs = [("The first voice speaks.", voice, GenerationParams(seed=11)),
            ("A second sentence, a little longer than the first.", builtin, GenerationParams(seed=22)),
            ("Third.", voice, GenerationParams(seed=33, temperature=0.6, cfg_weight=0.0)),
            ("And the fourth one.", builtin, GenerationParams(seed=44, exaggeration=0.9))]

    def run(i: int) -> np.ndarray:
        text, conds, params = jobs[i]
        return pipeline.synthesize(text, conds, params, max_new_tokens=SHORT, watermark=False).wav

    assert pipeline.batch_size == 1
    alone = [run(i) for i in range(len(jobs))]
    batched: list = [None] * len(jobs)

    def worker(i: int) -> None:
        batched[i] = run(i)

    pipeline.batch_size = len(jobs)
    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
    finally:
        pipeline.batch_size = 1
    assert batcher_for(pipeline.model().t3, len(jobs)).max_active >= 2  # they shared steps
    for got, expected in zip(batched, alone):
        assert got is not None
        np.testing.assert_array_equal(got, expected)


@pytest.mark.slow
def test_a_second_streaming_request_plays_before_the_first_has_finished(pipeline):
    """S3Gen work interleaves (models/s3gen/turns.py): a request's first audio does not wait
    behind another request's decode. The first request has played its first block and starts
    decoding the rest as the second's first block is ready (its client reads on once the second
    request's T3 has drawn the block's tokens: the first's flow is then under way while the
    second's thread prepares its block); the second's block goes first."""
    # On a CPU: one early block, then the rest whole. 14 tokens are the fewest whose block has audio
    # to play (the flow's look-ahead and the vocoder's held-back frames wait for later tokens).
    block = 14
    live = LivePlayback(first_block=block)
    voice = pipeline.prepare_conditionals(str(REAL_VOICES / "aishell_s0764_a.wav"))  # a short prompt: quicker
    batcher = batcher_for(pipeline.model().t3, 2)
    times: dict[str, list[float]] = {"first": [], "second": []}
    second_may_start = threading.Event()

    def wait_for(condition) -> None:
        deadline = time.monotonic() + 600
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)

    def speak(name: str, text: str, seed: int) -> None:
        for event in pipeline.stream(text, voice, GenerationParams(seed=seed), max_new_tokens=24,
                                     watermark=False, live=live):
            if event.audio.size:
                times[name].append(time.perf_counter())
                if name == "first" and len(times[name]) == 1:
                    wait_for(lambda: batcher.ended["finished"] > finished_before)  # the first's T3 is done
                    drawn = batcher.step_tokens
                    second_may_start.set()
                    # The second's first token comes from its prefill, the others from steps. (Reading on
                    # one token earlier left the second's last T3 step racing the first's whole flow.)
                    wait_for(lambda: batcher.step_tokens >= drawn + block - 1)

    turns_before, finished_before = pipeline.flow_turns.urgent_steps, batcher.ended["finished"]
    pipeline.batch_size = 2
    try:
        first = threading.Thread(target=speak, args=("first", "The first request is a little longer.", 5))
        first.start()
        assert second_may_start.wait(600)
        second = threading.Thread(target=speak, args=("second", "The second one.", 6))
        second.start()
        first.join(600)
        second.join(600)
    finally:
        pipeline.batch_size = 1
    assert len(times["first"]) >= 2 and times["second"], times
    assert times["second"][0] < times["first"][-1]
    assert pipeline.flow_turns.urgent_steps > turns_before
