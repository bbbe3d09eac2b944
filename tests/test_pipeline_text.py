"""Text preparation inside the pipeline (fake checkpoint): pause tags and separators become
silence, the notes say what was read, unspeakable text is refused before generation, and a
single-chunk result loses its silent tail."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.params import GenerationParams
from models.text_prep import SEPARATOR_PAUSE_S
from models.tts import SAMPLE_RATE


def test_unspeakable_text_is_refused_before_generation(pipeline):
    with pytest.raises(ValueError, match="choose Multilingual for Chinese"):
        pipeline.synthesize("\u4f60\u597d\uff0c\u4e16\u754c\u3002", max_new_tokens=1)
    with pytest.raises(ValueError, match="nothing to speak"):
        pipeline.synthesize("***\n\U0001F600", max_new_tokens=1)


@pytest.mark.slow
def test_pauses_and_separators_are_silence_and_the_notes_say_what_was_read(pipeline):
    text = "Tickets cost 5 \u20ac.\n\n* * *\n\nGood [pause:1.5s] bye <haha>."
    events = list(pipeline.stream(text, None, GenerationParams(seed=3), max_new_tokens=3, watermark=False))
    result = events[-1].result
    assert result.n_chunks == 3
    assert result.normalized_text == "Tickets cost five euros. [pause 1 s] Good. [pause 1.5 s] Bye."
    assert "1 separator line(s) read as a pause" in result.notes
    assert any("<haha>" in n for n in result.notes)
    audio = [e.audio for e in events[:-1]]
    np.testing.assert_array_equal(np.concatenate(audio), result.wav)
    silences = [len(a) for a in audio if len(a) and not np.any(a)]
    assert silences == [round(SEPARATOR_PAUSE_S * SAMPLE_RATE), round(1.5 * SAMPLE_RATE)]


@pytest.mark.slow
def test_single_chunk_result_loses_its_silent_tail(pipeline, monkeypatch):
    s3gen = pipeline.model().s3gen
    original = s3gen.inference

    def with_silent_tail(*args, **kwargs):  # 3 s of silence after the speech, as reported
        return torch.cat([original(*args, **kwargs), torch.zeros(3 * SAMPLE_RATE)])

    monkeypatch.setattr(s3gen, "inference", with_silent_tail)
    result = pipeline.synthesize("Hello there.", None, GenerationParams(seed=7), max_new_tokens=12, watermark=False)
    assert result.n_chunks == 1
    speech = 960 * result.n_speech_tokens
    assert speech <= len(result.wav) <= speech + round(0.12 * SAMPLE_RATE)  # at most a short natural pause kept
