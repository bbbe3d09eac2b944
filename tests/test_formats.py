"""Every download/API format decodes back with the right rate and duration; streams match files."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from serving import formats

SR = 24_000
needs_ffmpeg = pytest.mark.skipif(not shutil.which("ffprobe"), reason="ffmpeg/ffprobe not installed")


def tone(seconds: float = 2.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def probe(data: bytes, fmt: str) -> tuple[int, float]:
    """(sample rate, seconds) as ffprobe decodes them (pcm is read as s16le at 24 kHz)."""
    with tempfile.NamedTemporaryFile(suffix="." + formats.FORMATS[fmt].extension) as f:
        f.write(data)
        f.flush()
        raw = ["-f", "s16le", "-ar", str(SR), "-ac", "1"] if fmt == "pcm" else []
        out = subprocess.run(["ffprobe", "-v", "error", *raw, "-show_entries",
                              "stream=sample_rate:format=duration", "-of", "json", f.name],
                             capture_output=True, text=True, check=True).stdout
    info = json.loads(out)
    # Streamed FLAC has no length in its header: count the decoded samples instead.
    duration = info["format"].get("duration")
    if duration in (None, "N/A"):
        pcm = subprocess.run(["ffmpeg", "-v", "error", "-i", "pipe:0", "-f", "s16le", "-ac", "1", "pipe:1"],
                             input=data, capture_output=True, check=True).stdout
        duration = len(pcm) / 2 / int(info["streams"][0]["sample_rate"])
    return int(info["streams"][0]["sample_rate"]), float(duration)


@needs_ffmpeg
@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus", "aac", "pcm"])
def test_whole_and_streamed_files_decode_to_the_input_duration(fmt):
    wav = tone(2.0)
    whole = formats.encode(wav, SR, fmt)
    streamed = b"".join(formats.stream(np.array_split(wav, 7), SR, fmt))
    for data in (whole, streamed):
        rate, seconds = probe(data, fmt)
        # Opus always decodes at 48 kHz; lossy codecs pad up to one frame (mp3 1152, aac 1024 samples).
        assert rate == (48_000 if fmt == "opus" else SR)
        assert 2.0 <= seconds <= 2.0 + 0.07, (fmt, seconds)


def test_lossless_formats_round_trip_the_samples():
    wav = tone(0.5)
    for fmt in ("wav", "flac"):
        back, sr = sf.read(io.BytesIO(formats.encode(wav, SR, fmt)), dtype="float32")
        assert sr == SR and np.max(np.abs(back - wav)) < 1 / 32767 + 1e-6
    pcm = np.frombuffer(formats.encode(wav, SR, "pcm"), dtype="<i2") / 32767
    assert np.max(np.abs(pcm - wav)) < 1 / 32767 + 1e-6


def test_streamed_wav_equals_the_samples_of_the_whole_file():
    wav = tone(1.0)
    streamed = b"".join(formats.stream(np.array_split(wav, 5), SR, "wav"))
    back, sr = sf.read(io.BytesIO(streamed), dtype="int16")
    whole, _ = sf.read(io.BytesIO(formats.encode(wav, SR, "wav")), dtype="int16")
    assert sr == SR and np.array_equal(back, whole)


@pytest.mark.parametrize("rate", [16_000, 44_100, 48_000])
def test_a_chosen_rate_resamples_and_keeps_the_duration(rate):
    back, sr = sf.read(io.BytesIO(formats.encode(tone(1.0), SR, "flac", rate=rate)))
    assert sr == rate and len(back) == rate


@needs_ffmpeg
@pytest.mark.parametrize("speed", [0.5, 2.0, 4.0])
def test_speed_changes_the_duration_not_the_rate(speed):
    data = formats.encode(tone(2.0), SR, "wav", tempo=speed)
    back, sr = sf.read(io.BytesIO(data))
    assert sr == SR
    assert abs(len(back) / sr - 2.0 / speed) < 0.05
    # Pitch kept: the strongest frequency is still 220 Hz.
    spectrum = np.abs(np.fft.rfft(back[: sr // 2]))
    assert abs(np.argmax(spectrum) * 2 - 220) <= 4


def test_bad_format_rate_and_speed_are_refused_with_reasons():
    with pytest.raises(ValueError, match="unknown audio format 'xyz'"):
        formats.encode(tone(0.1), SR, "xyz")
    with pytest.raises(ValueError, match="opus carries only"):
        formats.encode(tone(0.1), SR, "opus", rate=44_100)
    with pytest.raises(ValueError, match="sample rate must be"):
        formats.encode(tone(0.1), SR, "wav", rate=100)
    with pytest.raises(ValueError, match="speed must be"):
        formats.encode(tone(0.1), SR, "wav", tempo=5.0)


@needs_ffmpeg
def test_an_abandoned_stream_leaves_no_encoder_process():
    chunks = formats.stream(iter([tone(0.5)] * 100), SR, "mp3")
    next(chunks)
    chunks.close()      # the client went away
    children = subprocess.run(["pgrep", "-P", str(__import__("os").getpid()), "ffmpeg"],
                              capture_output=True, text=True).stdout.split()
    assert children == []
