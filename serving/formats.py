"""Audio file formats for downloads and the APIs: whole files and streams.

Lossless files are written by libsndfile (`soundfile`: WAV, FLAC); the lossy formats (MP3, Ogg
Opus, AAC) are encoded by ffmpeg, whole or streamed, with one set of encoder settings (libsndfile's
MP3 defaults to a very low bit rate and it has no AAC). Streams of WAV and raw PCM are written
directly: a streamed WAV header carries the "unknown length" sizes that players accept, as OpenAI's
speech endpoint sends them.
"""
from __future__ import annotations

import io
import shutil
import struct
import subprocess
import threading
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import soundfile as sf

from models.audio import resample


@dataclass(frozen=True)
class AudioFormat:
    """One downloadable format: its name, file extension, MIME type and how it is encoded."""

    name: str
    extension: str
    media_type: str
    soundfile: tuple[str, str] | None   # (format, subtype) of a whole file by libsndfile; None: ffmpeg
    ffmpeg: tuple[str, ...]             # ffmpeg encoder arguments (streams; whole lossy files)
    rates: tuple[int, ...] | None = None  # sample rates the codec accepts; None: any


FORMATS: dict[str, AudioFormat] = {f.name: f for f in (
    AudioFormat("wav", "wav", "audio/wav", ("WAV", "PCM_16"), ()),
    AudioFormat("pcm", "pcm", "audio/pcm", None, ()),   # raw signed 16-bit little-endian mono
    AudioFormat("flac", "flac", "audio/flac", ("FLAC", "PCM_16"), ("-c:a", "flac", "-f", "flac")),
    AudioFormat("mp3", "mp3", "audio/mpeg", None,
                ("-c:a", "libmp3lame", "-b:a", "128k", "-f", "mp3")),
    # Opus codes only these rates (RFC 6716); other rates are refused, not silently changed.
    AudioFormat("opus", "opus", "audio/ogg", None, ("-c:a", "libopus", "-b:a", "64k", "-f", "ogg"),
                rates=(8000, 12000, 16000, 24000, 48000)),
    AudioFormat("aac", "aac", "audio/aac", None, ("-c:a", "aac", "-b:a", "128k", "-f", "adts")),
)}
FORMATS["ogg"] = FORMATS["opus"]          # the UI's name for the same Ogg Opus file
MIN_RATE, MAX_RATE = 8000, 48000


def audio_format(name: str) -> AudioFormat:
    """The format called `name` (case-insensitive). Raises ValueError listing the known ones."""
    fmt = FORMATS.get(str(name).lower())
    if fmt is None:
        raise ValueError(f"unknown audio format {name!r}; choose one of: {', '.join(FORMATS)}")
    return fmt


def check_rate(fmt: AudioFormat, rate: int) -> int:
    """`rate` as an int if `fmt` can carry it; ValueError otherwise."""
    if isinstance(rate, bool) or not float(rate).is_integer() or not MIN_RATE <= int(rate) <= MAX_RATE:
        raise ValueError(f"sample rate must be an integer from {MIN_RATE} to {MAX_RATE} Hz, got {rate!r}")
    rate = int(rate)
    if fmt.rates is not None and rate not in fmt.rates:
        raise ValueError(f"{fmt.name} carries only {', '.join(map(str, fmt.rates))} Hz, not {rate}")
    return rate


MIN_TEMPO, MAX_TEMPO = 0.25, 4.0          # OpenAI's `speed` range
_ATEMPO_MIN = 0.5                          # one ffmpeg atempo stage slows by at most 2x
# WAV and PCM go through ffmpeg only to change the tempo.
_PCM_FFMPEG = {"wav": ("-c:a", "pcm_s16le", "-f", "wav"), "pcm": ("-c:a", "pcm_s16le", "-f", "s16le")}


def check_tempo(tempo: float) -> float:
    """`tempo` (playback speed factor, pitch kept) as a float in [0.25, 4]; ValueError otherwise."""
    if isinstance(tempo, bool) or not isinstance(tempo, (int, float)) or not MIN_TEMPO <= tempo <= MAX_TEMPO:
        raise ValueError(f"speed must be a number from {MIN_TEMPO} to {MAX_TEMPO}, got {tempo!r}")
    return float(tempo)


def _atempo_chain(tempo: float) -> str:
    # ffmpeg's atempo (WSOLA) changes speed without changing pitch; below 0.5 it is chained.
    stages = []
    while tempo < _ATEMPO_MIN:
        stages.append(_ATEMPO_MIN)
        tempo /= _ATEMPO_MIN
    stages.append(tempo)
    return ",".join(f"atempo={t:.6g}" for t in stages)


def _pcm16(wav: np.ndarray) -> bytes:
    return np.round(np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0) * 32767).astype("<i2").tobytes()


def encode(wav: np.ndarray, sample_rate: int, fmt: str | AudioFormat, rate: int | None = None,
           tempo: float = 1.0) -> bytes:
    """A whole file: `wav` (samples,) float32 at `sample_rate` Hz, resampled to `rate` if given,
    played `tempo` times faster (pitch kept) if not 1.

    Raises ValueError for an unknown format or a rate the format cannot carry, RuntimeError
    when ffmpeg (needed for the lossy formats) is missing or fails.
    """
    fmt = fmt if isinstance(fmt, AudioFormat) else audio_format(fmt)
    rate = check_rate(fmt, sample_rate if rate is None else rate)
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    if check_tempo(tempo) != 1.0:
        encoder = StreamEncoder(fmt, sample_rate, rate, tempo)
        return b"".join([encoder.feed(wav), encoder.close()])
    if rate != sample_rate:
        wav = resample(wav, sample_rate, rate)
    if fmt.name == "pcm":
        return _pcm16(wav)
    if fmt.soundfile is not None:
        buf = io.BytesIO()
        # Written from our 16-bit samples, so a whole file and a stream hold the same values.
        samples = np.frombuffer(_pcm16(wav), dtype="<i2")
        sf.write(buf, samples, rate, format=fmt.soundfile[0], subtype=fmt.soundfile[1])
        return buf.getvalue()
    encoder = StreamEncoder(fmt, rate, rate)
    return b"".join([encoder.feed(wav), encoder.close()])


def _wav_stream_header(rate: int) -> bytes:
    # RIFF and data sizes of 0xFFFFFFFF mean "until the stream ends".
    unknown = 0xFFFFFFFF
    return (b"RIFF" + struct.pack("<I", unknown) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", unknown))


class StreamEncoder:
    """Encodes audio as it arrives: `feed(samples)` returns the bytes ready so far, `close()` the rest.

    Input is float32 mono at `sample_rate`; output is `fmt` at `rate`. Resampling is done per
    piece by soxr, whose state-free calls add no gap at 24 kHz -> 24 kHz and a negligible edge
    otherwise. Compressed formats run one ffmpeg process per stream; a reader thread drains its
    output so neither side blocks. Always call `close()` (or use it as a context manager).
    """

    def __init__(self, fmt: str | AudioFormat, sample_rate: int, rate: int | None = None, tempo: float = 1.0):
        self.fmt = fmt if isinstance(fmt, AudioFormat) else audio_format(fmt)
        self.sample_rate = sample_rate
        self.rate = check_rate(self.fmt, sample_rate if rate is None else rate)
        self.tempo = check_tempo(tempo)
        self._pending = bytearray()
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        if self.tempo == 1.0 and self.fmt.name == "wav":
            self._pending += _wav_stream_header(self.rate)
        elif self.tempo != 1.0 or self.fmt.name != "pcm":
            ffmpeg = shutil.which("ffmpeg")
            if ffmpeg is None:
                raise RuntimeError(f"{self.fmt.name} needs ffmpeg, which is not installed")
            tempo_filter = ("-filter:a", _atempo_chain(self.tempo)) if self.tempo != 1.0 else ()
            self._process = subprocess.Popen(
                [ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "s16le", "-ar", str(self.rate),
                 "-ac", "1", "-i", "pipe:0", *tempo_filter, *(self.fmt.ffmpeg or _PCM_FFMPEG[self.fmt.name]),
                 "-flush_packets", "1", "pipe:1"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            self._reader = threading.Thread(target=self._drain, daemon=True)
            self._reader.start()

    def _drain(self) -> None:
        while True:
            data = self._process.stdout.read1(65536)
            if not data:
                return
            with self._lock:
                self._pending += data

    def _take(self) -> bytes:
        with self._lock:
            out = bytes(self._pending)
            self._pending.clear()
        return out

    def feed(self, wav: np.ndarray) -> bytes:
        wav = np.asarray(wav, dtype=np.float32).reshape(-1)
        if wav.size and self.rate != self.sample_rate:
            wav = resample(wav, self.sample_rate, self.rate)
        pcm = _pcm16(wav)
        if self._process is None:
            self._pending += pcm
        elif pcm:
            self._process.stdin.write(pcm)
            self._process.stdin.flush()
        return self._take()

    def close(self) -> bytes:
        if self._process is not None:
            self._process.stdin.close()
            self._reader.join()
            code = self._process.wait()
            err = self._process.stderr.read().decode(errors="replace").strip()
            self._process.stderr.close()
            self._process.stdout.close()
            if code != 0:
                raise RuntimeError(f"ffmpeg could not encode {self.fmt.name}: {err or f'exit {code}'}")
            self._process = None
        return self._take()

    def abort(self) -> None:
        """Stop without output (the client went away)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            for pipe in (self._process.stdin, self._process.stdout, self._process.stderr):
                pipe.close()
            self._process = None

    def __enter__(self) -> "StreamEncoder":
        return self

    def __exit__(self, *exc) -> None:
        self.abort()


def stream(pieces: Iterable[np.ndarray], sample_rate: int, fmt: str | AudioFormat,
           rate: int | None = None, tempo: float = 1.0) -> Iterator[bytes]:
    """Encoded bytes of `pieces` as they come; the encoder is stopped if the consumer leaves early."""
    encoder = StreamEncoder(fmt, sample_rate, rate, tempo)
    try:
        for piece in pieces:
            data = encoder.feed(piece)
            if data:
                yield data
        tail = encoder.close()
        if tail:
            yield tail
    finally:
        encoder.abort()
