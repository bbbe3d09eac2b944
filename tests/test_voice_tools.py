"""Watermark check, reference-quality hints and the voice lab, on real voices."""
from __future__ import annotations

from pathlib import Path

import gradio
import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import PARITY, REAL_VOICES
from models.audio import resample
from models.similarity import SpeakerSimilarity
from models.voice_hints import SPEAKER_SIMILARITY_MIN, reference_hints, seconds_used, speaker_change
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


def test_seconds_used_says_what_each_model_does_from_the_registry():
    from models.registry import MODELS

    limited = [e for e in MODELS.values() if e.prompt.min_reference_seconds > 0]
    assert limited, "the registry lists a model with a minimum reference length (Turbo)"
    for entry in MODELS.values():
        p = entry.prompt
        short = p.min_reference_seconds - 0.9 if p.min_reference_seconds > 1 else 2.0
        line = next(h for h in seconds_used(short) if h.startswith(entry.label + ":"))
        if entry in limited:  # what the pipeline does: refuses a clip not longer than the minimum
            assert "refuses" in line and f"more than {p.min_reference_seconds:g} s" in line, line
            assert "speaking style" not in line, line
        else:
            assert line == f"{entry.label}: speaking style from all of it, voice timbre from all of it.", line
        line = next(h for h in seconds_used(40.0) if h.startswith(entry.label + ":"))
        assert line == (f"{entry.label}: speaking style from the first {p.t3_seconds:g} s, "
                        f"voice timbre from the first {p.s3gen_seconds:g} s."), line
    at_min = {e.label: next(h for h in seconds_used(e.prompt.min_reference_seconds) if h.startswith(e.label))
              for e in limited}
    assert all("refuses" in h for h in at_min.values()), at_min  # "longer than", as the pipeline's check
    assert seconds_used(4.1)[0] == "Clip length 4.1 s."
    assert "Speaker embedding (voice encoder, every model): the first 30 s." in seconds_used(40.0)


GRADIO_AUDIO = Path(gradio.__file__).parent / "media_assets" / "audio"  # real speech Gradio ships


def speech(name: str) -> np.ndarray:
    """A real clip at 24 kHz: the AISHELL S0764 clips (one speaker), Gradio's Cate Blanchett and
    Heath Ledger clips, or the espeak references (m3, f3)."""
    for folder in (REAL_VOICES, GRADIO_AUDIO, PARITY):
        path = next(iter(folder.glob(name + ".*")), None)
        if path is not None:
            wav, rate = sf.read(str(path), dtype="float32", always_2d=True)
            return resample(wav.mean(axis=1), rate, 24_000)
    raise FileNotFoundError(name)


def _two_speakers(hints) -> bool:
    return any("more than one speaker" in h for h in hints)


def test_speaker_hint_passes_single_speakers_and_flags_two_speaker_clips(similarity):
    a, b = speech("aishell_s0764_a"), speech("aishell_s0764_b")
    singles = {"aishell a": a, "aishell b": b, "aishell a + b (one speaker)": np.concatenate([a, b]),
               "cate + cate 2": np.concatenate([speech("cate_blanch"), speech("cate_blanch_2")]),
               "ref_a": speech("ref_a")}
    pairs = {"aishell a + heath": np.concatenate([a, speech("heath_ledger")]),
             "aishell b + cate": np.concatenate([b, speech("cate_blanch")]),
             "ref_a + ref_b": np.concatenate([speech("ref_a"), speech("ref_b")])}
    for name, wav in singles.items():
        hints = reference_hints(wav, 24_000, similarity)
        assert not _two_speakers(hints), (name, hints)
    for name, wav in pairs.items():
        hints = reference_hints(wav, 24_000, similarity)
        assert _two_speakers(hints), (name, speaker_change(similarity, wav, 24_000))
    joined = speaker_change(similarity, singles["aishell a + b (one speaker)"], 24_000)
    assert joined is not None and joined > SPEAKER_SIMILARITY_MIN  # long enough to be judged, and one voice
    assert speaker_change(similarity, a, 24_000) is None  # 4.2 s: too short to split reliably


def test_hints_flag_clipping_low_level_and_noise():
    clean = speech("aishell_s0764_a")
    assert reference_hints(clean, 24_000) == seconds_used(len(clean) / 24_000)  # only the seconds-used lines
    loud = np.clip(clean * 60, -1, 1)  # peak 0.05 -> many samples at full scale
    assert any("Clipping" in h for h in reference_hints(loud, 24_000))
    assert any("Very low level" in h for h in reference_hints(clean * 0.005, 24_000))
    rms = float(np.sqrt(np.mean(clean ** 2)))
    noise = np.random.default_rng(0).normal(0, 0.5 * rms, len(clean)).astype(np.float32)  # SNR 6 dB
    assert any("background" in h for h in reference_hints(clean + noise, 24_000))


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
