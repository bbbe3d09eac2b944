"""Batched T3 decoding inside the pipeline (fake checkpoint): concurrent generations sharing
T3's steps give the audio each gets alone."""
import threading

import numpy as np
import pytest

from conftest import REAL_VOICES
from models.params import GenerationParams
from models.t3_batching import batcher_for

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
