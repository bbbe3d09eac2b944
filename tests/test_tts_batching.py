"""Concurrent generations inside the pipeline (fake checkpoint): sharing T3's steps gives the
audio each gets alone, and S3Gen work interleaves so that streaming is not starved."""
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

from conftest import REAL_VOICES
from models.params import GenerationParams
from models.s3gen.turns import FlowTurns
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


class _MeetingTurns(FlowTurns):
    """Flow turns whose first step of a request that has played already waits, holding the cores,
    until a newcomer's step queues behind it: the newcomer's block then surely arrives while the
    other's decode is under way (on its own, a fast machine may finish that decode first)."""

    def __init__(self) -> None:
        super().__init__()
        self.met = threading.Event()

    @contextmanager
    def step(self, urgent: bool):
        with super().step(urgent):
            if not urgent and not self.met.is_set():
                deadline = time.monotonic() + 600
                while not self.urgent_waiting and time.monotonic() < deadline:
                    time.sleep(0.005)
                self.met.set()
            yield


@pytest.mark.slow
def test_a_second_streaming_request_plays_before_the_first_has_finished(pipeline):
    """S3Gen work interleaves (models/s3gen/turns.py): a request's first audio does not wait
    behind another request's decode. The first request has played its first block and is
    decoding the rest when the second's first block arrives; the second's block goes first."""
    # On a CPU: one early block, then the rest whole. 14 tokens are the fewest whose block has audio
    # to play (the flow's look-ahead and the vocoder's held-back frames wait for later tokens).
    live = LivePlayback(first_block=14)
    voice = pipeline.prepare_conditionals(str(REAL_VOICES / "aishell_s0764_a.wav"))  # a short prompt: quicker
    batcher = batcher_for(pipeline.model().t3, 2)
    times: dict[str, list[float]] = {"first": [], "second": []}
    second_may_start = threading.Event()

    def speak(name: str, text: str, seed: int) -> None:
        for event in pipeline.stream(text, voice, GenerationParams(seed=seed), max_new_tokens=24,
                                     watermark=False, live=live):
            if event.audio.size:
                times[name].append(time.perf_counter())
                if name == "first" and len(times[name]) == 1:
                    deadline = time.monotonic() + 600  # the first's T3 is done: only S3Gen work is left
                    while batcher.ended["finished"] == finished_before and time.monotonic() < deadline:
                        time.sleep(0.01)
                    second_may_start.set()

    turns, finished_before = _MeetingTurns(), batcher.ended["finished"]
    plain_turns, pipeline.flow_turns, pipeline.batch_size = pipeline.flow_turns, turns, 2
    try:
        first = threading.Thread(target=speak, args=("first", "The first request is a little longer.", 5))
        first.start()
        assert second_may_start.wait(600)
        urgent_before = turns.urgent_steps
        second = threading.Thread(target=speak, args=("second", "The second one.", 6))
        second.start()
        first.join(600)
        second.join(600)
    finally:
        pipeline.flow_turns, pipeline.batch_size = plain_turns, 1
    assert turns.met.is_set()
    assert len(times["first"]) >= 2 and times["second"], times
    assert times["second"][0] < times["first"][-1]
    assert turns.urgent_steps > urgent_before
