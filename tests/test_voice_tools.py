"""Watermark check, reference-quality hints and the voice lab, on real voices."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import PARITY, REAL_VOICES
from models.audio import resample
from models.similarity import SpeakerSimilarity
from models.voice_hints import reference_hints, seconds_used
from models.voice_lab import build_map, pca_2d, render
from models.watermark import Watermarker, check_watermark


def voice(path) -> np.ndarray:
    wav, rate = sf.read(str(path), dtype="float32")
    return resample(wav, rate, 24_000)


@pytest.fixture(scope="module")
def similarity():
    return SpeakerSimilarity()


@pytest.fixture(scope="module")
def watermarker():
    marker = Watermarker()
    assert marker.available, marker.reason
    return marker


def test_watermark_present_on_a_converted_file_and_absent_on_its_reference(watermarker, tmp_path):
    from test_vc import real_voice, tiny_s3gen, tiny_target
    from models.vc import VoiceConverter

    with torch.inference_mode():
        out = VoiceConverter(tiny_s3gen(), watermarker).convert(real_voice(3.0), tiny_target(), seed=0)
    path = tmp_path / "generated.wav"
    sf.write(path, out, 24_000)  # through a 16-bit file, as a user would upload it
    generated, rate = sf.read(path, dtype="float32")
    marked = check_watermark(watermarker, generated, rate)
    assert marked.detected and marked.confidence > 0.9, marked
    reference = check_watermark(watermarker, voice(REAL_VOICES / "aishell_s0764_a.wav"), 24_000)
    assert not reference.detected and reference.confidence > 0.9, reference
    assert "no Perth watermark" in reference.describe()
    with pytest.raises(ValueError, match="too short"):
        check_watermark(watermarker, generated[:1000], rate)


def test_seconds_used_per_model():
    short, long = seconds_used(4.2), seconds_used(40.0)
    assert "all of it" in short[1] and "all of it" in short[2] and "needs more than 5 s" in short[4]
    assert "first 10 s" in long[1] and "first 6 s" in long[2] and "first 30 s" in long[3] and "first 15 s" in long[4]


def test_hints_flag_clipping_low_level_noise_and_two_speakers(similarity):
    clean = voice(REAL_VOICES / "aishell_s0764_a.wav")
    base = reference_hints(clean, 24_000, similarity)
    assert len(base) == 5, base  # only the seconds-used lines
    loud = np.clip(clean * 60, -1, 1)  # peak 0.05 -> many samples at full scale
    assert any("Clipping" in h for h in reference_hints(loud, 24_000))
    assert any("Very low level" in h for h in reference_hints(clean * 0.005, 24_000))
    rms = float(np.sqrt(np.mean(clean ** 2)))
    noise = np.random.default_rng(0).normal(0, 0.5 * rms, len(clean)).astype(np.float32)  # SNR 6 dB
    assert any("background" in h for h in reference_hints(clean + noise, 24_000))
    two = np.concatenate([voice(PARITY / "ref_a.wav"), voice(PARITY / "ref_b.wav")])
    assert any("more than one speaker" in h for h in reference_hints(two, 24_000, similarity))
    one = voice(PARITY / "ref_a.wav")
    assert not any("speaker" in h.lower() and "more" in h for h in reference_hints(one, 24_000, similarity))


def test_pca_map_recovers_the_dominant_directions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 2)) @ np.array([[3.0, 0, 0, 0], [0, 1.0, 0, 0]]) + 5
    coords = pca_2d(x)
    # distances are preserved when the data lies in a plane
    d_in = np.linalg.norm(x[:, None] - x[None], axis=-1)
    d_out = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    np.testing.assert_allclose(d_out, d_in, atol=1e-9)
    assert np.var(coords[:, 0]) >= np.var(coords[:, 1])


def test_voice_lab_matrix_map_and_plot(similarity):
    clips = [("aishell a", voice(REAL_VOICES / "aishell_s0764_a.wav"), 24_000),
             ("aishell b", voice(REAL_VOICES / "aishell_s0764_b.wav"), 24_000),
             ("ref_a", voice(PARITY / "ref_a.wav"), 24_000),
             ("ref_b", voice(PARITY / "ref_b.wav"), 24_000)]
    vmap = build_map(similarity, clips, pairs=[(0, 1)])
    sim = vmap.similarity
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-5)
    np.testing.assert_allclose(sim, sim.T, atol=1e-6)
    assert sim[0, 1] > max(sim[0, 2], sim[0, 3], sim[1, 2], sim[1, 3])  # same speaker closest
    d = np.linalg.norm(vmap.coords[:, None] - vmap.coords[None], axis=-1)
    assert d[0, 1] < min(d[0, 2], d[0, 3])
    image = render(vmap)
    assert image.shape == (480, 1100, 3) and image.dtype == np.uint8 and image.std() > 10
    with pytest.raises(ValueError, match="2 to"):
        build_map(similarity, clips[:1])
    with pytest.raises(ValueError, match="own label"):
        build_map(similarity, [clips[0], clips[0]])
