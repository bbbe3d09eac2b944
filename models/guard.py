"""Guards against runaway generation: token loops, unbounded length, trailing silence.

LLM-style TTS can get stuck repeating itself; users hear a garbled or repeating ending
and then silence until the token limit. `RunawayGuard` watches the speech tokens of one
generation and reports an exact short cycle; `max_tokens_for_text` bounds a generation
by its text length; `trim_trailing_silence` removes the silent tail. With the defaults
none of them changes the output of a healthy generation.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from .constants import MAX_NEW_TOKENS, S3_TOKEN_RATE

# Read speech runs at about 14-15 characters per second (~150 words/min); 6 is well under half
# of that, slower than Chatterbox speaks even at low CFG ("pace") and high exaggeration.
SLOWEST_CHARS_PER_S = 6.0
LEAD_TAIL_S = 2.0  # silence before the first word and after the last one
TRIM_FRAME_S = 0.02  # loudness is measured over 20 ms frames


@dataclass(frozen=True)
class GuardConfig:
    """When a stretch of speech tokens counts as a runaway loop.

    A loop is a stretch where every token equals the one `period` steps earlier, for some
    period <= max_period, lasting at least `min_loop_s` and holding >= `min_repeats` cycles.
    Why these defaults: an S3 token is 40 ms from a 6561-code book and healthy streams are
    very diverse (sampling at temperature 0.8 with a repetition penalty). Pauses do repeat
    the silence codes, but a sentence break lasts well under a second, so a pure cycle of
    2 s (50 tokens) is far past anything natural. A false alarm would drop the rest of a
    chunk, so the threshold errs long: a true loop costs at most 2 s of audio before the cut.
    Periods up to 1 s cover a stuck code (1), alternating codes (2) and a repeated syllable
    or short word; an exact repeat of anything longer is not the observed failure.
    """

    max_period: int = 25  # tokens (1 s)
    min_loop_s: float = 2.0
    min_repeats: int = 3

    def __post_init__(self):
        if self.max_period < 1:
            raise ValueError(f"max_period must be >= 1, got {self.max_period}")
        if not self.min_loop_s > 0:
            raise ValueError(f"min_loop_s must be > 0, got {self.min_loop_s}")
        if self.min_repeats < 2:
            raise ValueError(f"min_repeats must be >= 2, got {self.min_repeats}")

    def loop_tokens(self, period: int) -> int:
        """Length of a pure period-`period` stretch that counts as a loop."""
        return max(math.ceil(self.min_loop_s * S3_TOKEN_RATE), self.min_repeats * period)


@dataclass(frozen=True)
class Loop:
    """A detected loop: `step` is the index of the token that completed it, `start` the
    index of the first token of the periodic stretch. `keep` tokens precede the loop plus
    one cycle of it (the word or pause said once)."""

    step: int
    period: int
    start: int

    @property
    def keep(self) -> int:
        return self.start + self.period


class RunawayGuard:
    """Watches one generation's speech tokens, fed one at a time with `push`.

    For each period p it keeps how many consecutive recent tokens equal the token p steps
    earlier, so a step costs O(max_period). Once a loop is found it stays reported; use a
    new guard for the next generation. It never alters tokens itself.
    """

    def __init__(self, config: GuardConfig | None = None):
        self.config = config or GuardConfig()
        self._recent: deque[int] = deque(maxlen=self.config.max_period)
        self._runs = [0] * (self.config.max_period + 1)  # index = period; 0 unused
        self._steps = 0
        self.loop: Loop | None = None

    def push(self, token: int) -> Loop | None:
        """Take the next token; the loop if one is now complete (or was before), else None."""
        if self.loop is not None:
            return self.loop
        token = int(token)
        found = None
        for period in range(1, self.config.max_period + 1):
            repeats = period <= len(self._recent) and self._recent[-period] == token
            self._runs[period] = self._runs[period] + 1 if repeats else 0
            stretch = self._runs[period] + period  # tokens of the periodic stretch ending here
            if found is None and stretch >= self.config.loop_tokens(period):
                found = period
        self._recent.append(token)
        step = self._steps
        self._steps += 1
        if found is not None:
            self.loop = Loop(step=step, period=found, start=step - (self._runs[found] + found) + 1)
        return self.loop

    @property
    def safe(self) -> int:
        """How many leading tokens no loop found later can cut (`Loop.keep` will be >= this).

        A loop of period p cuts back to where p's current run of repeats began, so tokens
        before the longest current run are final. Streaming releases only these to the
        decoder: on normal speech runs are short, so little is held back.
        """
        if self.loop is not None:
            return self.loop.keep
        return self._steps - max(self._runs)


def max_tokens_for_text(n_chars: int, cap: int = MAX_NEW_TOKENS) -> int:
    """A generous bound on the speech tokens of a text of `n_chars` characters (as T3 reads it).

    Time at SLOWEST_CHARS_PER_S plus LEAD_TAIL_S, at 25 tokens/s, capped at `cap`: more
    than twice what normal speech needs, so it only stops a generation that has run away
    (e.g. "Hi." gets 63 tokens, 2.5 s, instead of 40 s). From 228 characters on it is the cap.
    """
    if n_chars < 0:
        raise ValueError(f"n_chars must be >= 0, got {n_chars}")
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    seconds = n_chars / SLOWEST_CHARS_PER_S + LEAD_TAIL_S
    return min(cap, math.ceil(seconds * S3_TOKEN_RATE))


def frame_rms(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """RMS of each TRIM_FRAME_S frame of 1-D `wav` (the last frame zero-padded)."""
    frame = max(1, round(TRIM_FRAME_S * sample_rate))
    n_frames = math.ceil(len(wav) / frame)
    padded = np.zeros(n_frames * frame, dtype=np.float64)
    padded[:len(wav)] = wav
    return np.sqrt(np.mean(padded.reshape(n_frames, frame) ** 2, axis=1))


def trim_trailing_silence(wav: np.ndarray, sample_rate: int, threshold_db: float = -50.0,
                          keep_s: float = 0.1, peak_rms: float = 0.0) -> np.ndarray:
    """`wav` (1-D) without its silent tail, keeping `keep_s` after the last sound (a view).

    A 20 ms frame is sound if its RMS is within `threshold_db` of the loudest frame's: -50 dB
    keeps soft word endings (fricatives, breathy decays sit ~20-40 dB down) and removes
    vocoder hiss and silence. Everything up to the end of the last sound frame is kept,
    so speech is never cut; silent or empty audio is returned unchanged. `peak_rms` is the
    loudest frame RMS of audio before `wav` (the tail of a streamed chunk is measured against
    the whole chunk, not against itself).
    """
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise ValueError(f"wav must be 1-D, got shape {wav.shape}")
    if sample_rate <= 0 or keep_s < 0:
        raise ValueError(f"need sample_rate > 0 and keep_s >= 0, got {sample_rate} and {keep_s}")
    if len(wav) == 0:
        return wav
    frame = max(1, round(TRIM_FRAME_S * sample_rate))
    rms = frame_rms(wav, sample_rate)
    peak = max(float(rms.max()), float(peak_rms))
    if peak == 0:
        return wav
    sound = np.flatnonzero(rms >= peak * 10 ** (threshold_db / 20))
    end = ((int(sound[-1]) + 1) * frame if len(sound) else 0) + round(keep_s * sample_rate)
    return wav[:min(len(wav), end)]
