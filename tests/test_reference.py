"""Reference clips: every odd input gets a clear ReferenceAudioError, good ones are
converted to mono 24 kHz float32, and long ones say how much was used."""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from models.reference import (MAX_SECONDS_USED, MAX_UPLOAD_BYTES, REF_SR, ReferenceAudioError,
                              load_reference)


@pytest.fixture(scope="module")
def voice() -> tuple[np.ndarray, int]:
    import s3tokenizer

    path = Path(s3tokenizer.__file__).parent / "assets" / "BAC009S0764W0121.wav"
    wav, sr = sf.read(path, dtype="float32")
    return wav, sr


def _resampled(voice, sr):
    import soxr

    wav, src = voice
    return soxr.resample(wav, src, sr).astype(np.float32)


@pytest.mark.parametrize("fmt,ext", [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg"), ("MP3", "mp3")])
@pytest.mark.parametrize("sr", [8000, 16000, 44100, 48000])
def test_formats_and_rates(tmp_path, voice, fmt, ext, sr):
    wav = _resampled(voice, sr)
    path = tmp_path / f"clip.{ext}"
    sf.write(path, wav, sr, format=fmt)
    clip = load_reference(path)
    assert clip.source_rate == sr
    assert clip.wav.dtype == np.float32 and clip.wav.ndim == 1
    expected_len = len(wav) * REF_SR / sr
    assert abs(len(clip.wav) - expected_len) < 0.02 * REF_SR  # mp3 adds codec padding
    assert not clip.truncated


def test_stereo_is_mixed_to_mono(tmp_path, voice):
    wav, sr = voice
    stereo = np.stack([wav, 0.5 * wav], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, sr)
    clip = load_reference(path)
    assert clip.source_channels == 2
    mono = load_reference((sr, 0.75 * wav)).wav
    np.testing.assert_allclose(clip.wav, mono, atol=2e-4)  # 16-bit file quantisation
    assert "2 channels" in clip.describe()


def test_api_tuple_int16_and_channels_first(voice):
    wav, sr = voice
    pcm = (wav * 32767).astype(np.int16)
    a = load_reference((sr, pcm)).wav
    b = load_reference((sr, np.stack([pcm, pcm]))).wav  # (channels, time)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.max(np.abs(a)) <= 1.0


def test_long_clip_is_cut_and_says_so(tmp_path, voice):
    wav, sr = voice
    long = np.tile(wav, int(np.ceil(45 / (len(wav) / sr))))
    path = tmp_path / "long.flac"
    sf.write(path, long, sr)
    clip = load_reference(path)
    assert clip.truncated
    assert clip.seconds_used == pytest.approx(MAX_SECONDS_USED, abs=0.01)
    assert clip.seconds_total > 44
    assert len(clip.wav) == pytest.approx(MAX_SECONDS_USED * REF_SR, abs=2)
    assert "only the first" in clip.describe()


@pytest.mark.parametrize("make,message", [
    (lambda sr, w: (sr, np.zeros(3 * sr, np.float32)), "silent"),
    (lambda sr, w: (sr, w[: sr // 2]), "at least"),
    (lambda sr, w: (sr, np.where(np.arange(len(w)) == 100, np.nan, w).astype(np.float32)), "NaN"),
    (lambda sr, w: (sr, np.where(np.arange(len(w)) == 100, np.inf, w).astype(np.float32)), "NaN or infinite"),
    (lambda sr, w: (sr, 2.0 * w / np.max(np.abs(w))), r"\[-1, 1\]"),
    (lambda sr, w: (0, w), "sample rate"),
    (lambda sr, w: (sr, np.zeros((2, 2, 2), np.float32)), "1-D or 2-D"),
    (lambda sr, w: (sr, np.zeros(0, np.float32)), "no samples"),
    (lambda sr, w: "not a tuple at all", "not found"),
])
def test_bad_api_input(voice, make, message):
    wav, sr = voice
    with pytest.raises(ReferenceAudioError, match=message):
        load_reference(make(sr, wav))


def test_bad_files(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(ReferenceAudioError, match="empty"):
        load_reference(empty)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio at all\n" * 100)
    with pytest.raises(ReferenceAudioError, match="could not decode"):
        load_reference(text)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4)
    with pytest.raises(ReferenceAudioError, match="could not decode"):
        load_reference(corrupt)
    huge = tmp_path / "huge.wav"
    with open(huge, "wb") as f:  # sparse: rejected by size before any decoding
        f.truncate(MAX_UPLOAD_BYTES + 1)
    with pytest.raises(ReferenceAudioError, match="limit"):
        load_reference(huge)
    with pytest.raises(ReferenceAudioError, match="not found"):
        load_reference(tmp_path / "missing.wav")
