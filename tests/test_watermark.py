"""Perth watermark on streamed audio: pieces watermarked as they come equal one whole-clip call."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from models.audio import resample
from models.watermark import StreamingWatermark, Watermarker

SR = 24_000
VOICE = Path(__file__).resolve().parents[1] / "assets" / "voices" / "aishell_s0764_a.wav"


@pytest.fixture(scope="module")
def marker():
    wm = Watermarker()
    assert wm.available, wm.reason
    return wm


@pytest.fixture(scope="module")
def speech():
    wav, sr = sf.read(VOICE, dtype="float32")
    return resample(wav, sr, SR)


@pytest.mark.parametrize("sizes", [[SR // 2] * 9, [960, 4800, 30_000, 960, 960, 50_000], [SR * 3]])
def test_pieces_equal_the_whole_clip_watermark(marker, speech, sizes):
    whole = marker.apply(speech, SR)
    stream = StreamingWatermark(marker, SR)
    out, pos = [], 0
    for size in sizes:
        out.append(stream.push(speech[pos:pos + size]))
        pos += size
    out.append(stream.push(speech[pos:]))
    out.append(stream.finish())
    joined = np.concatenate(out)
    assert len(joined) == len(speech)
    # Held back while its right context is missing, never longer.
    assert all(len(o) <= s for o, s in zip(out, sizes))
    np.testing.assert_allclose(joined, whole, atol=1e-6)
    assert marker.detect(joined, SR) > 0.9


def test_nothing_held_after_finish(marker, speech):
    stream = StreamingWatermark(marker, SR)
    assert len(stream.push(speech[:1000])) == 0  # shorter than the right context
    assert len(stream.finish()) == 1000
    assert len(stream.finish()) == 0
