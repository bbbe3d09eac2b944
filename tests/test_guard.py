"""Runaway guards: loop detection on crafted token streams, the text-length token bound,
and trailing-silence trimming. Pure logic, no weights."""
from __future__ import annotations

import random
from typing import Iterable

import numpy as np
import pytest

from models.guard import (
    MAX_NEW_TOKENS,
    S3_TOKEN_RATE,
    GuardConfig,
    Loop,
    RunawayGuard,
    max_tokens_for_text,
    trim_trailing_silence,
)

CODEBOOK = 6561
SILENCE = 4299  # the code Chatterbox pads speech with
SR = 24_000


def take_until_loop(tokens: Iterable[int], config: GuardConfig | None = None) -> tuple[list[int], Loop | None]:
    """Consume a token stream until it ends or loops; a looping stream is closed and cut to
    `keep` (what the pipeline does with T3's stream, on a plain list)."""
    guard = RunawayGuard(config)
    stream = iter(tokens)
    taken: list[int] = []
    for token in stream:
        taken.append(int(token))
        loop = guard.push(token)
        if loop is not None:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            return taken[:loop.keep], loop
    return taken, None


def first_loop(tokens, config=None):
    guard = RunawayGuard(config)
    for token in tokens:
        loop = guard.push(token)
        if loop is not None:
            return loop
    return None


def naive_loop_step(tokens, config):
    """Oracle: the first step whose periodic suffix is long enough, checked from scratch."""
    for t in range(len(tokens)):
        for p in range(1, config.max_period + 1):
            length = p
            while length <= t and tokens[t - length] == tokens[t - length + p]:
                length += 1
            if length >= config.loop_tokens(p):
                return t, p, t - length + 1
    return None


@pytest.mark.parametrize("period", [1, 2, 5, 12, 25])
def test_loop_is_cut_at_the_right_step(period):
    rng = random.Random(period)
    prefix = rng.sample(range(3000), 37)  # distinct: no accidental cycle
    pattern = rng.sample(range(3000, CODEBOOK), period)
    stream = prefix + pattern * 200
    loop = first_loop(stream)
    config = GuardConfig()
    assert loop is not None
    assert (loop.period, loop.start) == (period, len(prefix))
    assert loop.step == len(prefix) + config.loop_tokens(period) - 1
    assert loop.keep == len(prefix) + period
    assert config.loop_tokens(period) >= 2 * S3_TOKEN_RATE  # never under 2 s of audio


def test_defaults_need_two_seconds_and_three_cycles():
    config = GuardConfig()
    assert config.loop_tokens(1) == 50
    assert config.loop_tokens(16) == 50
    assert config.loop_tokens(25) == 75
    # 49 copies of one code (just under 2 s) pass; the 50th is a loop.
    assert first_loop([SILENCE] * 49) is None
    assert first_loop([SILENCE] * 50).step == 49


def test_period_beyond_max_is_not_reported():
    pattern = list(range(26))
    assert first_loop(pattern * 40) is None
    assert first_loop(pattern * 40, GuardConfig(max_period=26)).period == 26


def test_guard_matches_naive_oracle_on_random_streams():
    config = GuardConfig(max_period=6, min_loop_s=0.4, min_repeats=2)  # 10 tokens: loops are common
    for seed in range(200):
        rng = random.Random(seed)
        stream = []
        while len(stream) < 120:
            if rng.random() < 0.3:
                pattern = [rng.randrange(4) for _ in range(rng.randint(1, 7))]
                stream += pattern * rng.randint(1, 4)
            else:
                stream.append(rng.randrange(8))
        loop = first_loop(stream, config)
        expected = naive_loop_step(stream, config)
        got = None if loop is None else (loop.step, loop.period, loop.start)
        assert got == expected, seed


def _speechlike_stream(rng: random.Random, n: int) -> list[int]:
    """Diverse codes with pauses: runs of the silence code up to 1 s, flickers between two codes."""
    tokens: list[int] = []
    while len(tokens) < n:
        tokens += [rng.randrange(CODEBOOK) for _ in range(rng.randint(1, 30))]
        r = rng.random()
        if r < 0.3:
            tokens += [SILENCE] * rng.randint(3, S3_TOKEN_RATE)
        elif r < 0.4:
            a, b = rng.randrange(CODEBOOK), rng.randrange(CODEBOOK)
            tokens += [a, b] * rng.randint(1, 12)
    return tokens[:n]


def test_normal_streams_never_trigger():
    for seed in range(30):
        rng = random.Random(seed)
        assert first_loop([rng.randrange(CODEBOOK) for _ in range(MAX_NEW_TOKENS)]) is None
        assert first_loop(_speechlike_stream(rng, MAX_NEW_TOKENS)) is None


def test_take_until_loop_stops_the_generator():
    produced = []

    def stream():
        for token in [10, 11, 12] + [7, 8] * 500:
            produced.append(token)
            yield token

    gen = stream()
    kept, loop = take_until_loop(gen)
    assert kept == [10, 11, 12, 7, 8]
    assert loop.period == 2 and loop.step == 3 + 50 - 1
    assert len(produced) == loop.step + 1  # decoding stopped at the detecting step
    assert gen.gi_frame is None  # closed

    tokens = list(range(300))
    assert take_until_loop(tokens) == (tokens, None)


def test_guard_stays_triggered():
    guard = RunawayGuard()
    for _ in range(50):
        loop = guard.push(1)
    assert loop is not None and guard.push(2) is loop


def test_config_is_validated():
    for bad in (dict(max_period=0), dict(min_loop_s=0), dict(min_repeats=1)):
        with pytest.raises(ValueError):
            GuardConfig(**bad)


# --- text-length bound --------------------------------------------------------------


def test_token_bound_is_monotone_capped_and_generous():
    bounds = [max_tokens_for_text(n) for n in range(2000)]
    assert all(a <= b for a, b in zip(bounds, bounds[1:]))
    assert max(bounds) == MAX_NEW_TOKENS and bounds[300] == MAX_NEW_TOKENS
    assert bounds[0] >= 2 * S3_TOKEN_RATE  # room for silence around a word
    # At least twice the tokens of normal read speech (~15 characters/s) below the cap.
    normal = [n / 15 * S3_TOKEN_RATE for n in range(2000)]
    assert all(b >= min(2 * t, MAX_NEW_TOKENS) for b, t in zip(bounds, normal))
    assert max_tokens_for_text(3) < 100  # "Hi." cannot run on for 40 s
    assert max_tokens_for_text(10_000, cap=400) == 400
    with pytest.raises(ValueError):
        max_tokens_for_text(-1)


# --- trailing silence ---------------------------------------------------------------


def _speech(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * np.arange(n) / SR) ** 2
    return (0.3 * envelope * rng.standard_normal(n)).astype(np.float32)


def test_trailing_silence_is_trimmed():
    speech = _speech(1.0)
    hiss = 1e-4 * np.random.default_rng(1).standard_normal(2 * SR).astype(np.float32)  # ~ -70 dB
    out = trim_trailing_silence(np.concatenate([speech, hiss]), SR, keep_s=0.1)
    frame = int(0.02 * SR)
    assert len(speech) + int(0.1 * SR) <= len(out) <= len(speech) + int(0.1 * SR) + frame
    np.testing.assert_array_equal(out[:len(speech)], speech)


def test_quiet_word_endings_are_kept():
    speech = _speech(1.0)
    fricative = 0.01 * np.random.default_rng(2).standard_normal(SR // 5).astype(np.float32)  # ~ -30 dB
    wav = np.concatenate([speech, fricative, np.zeros(SR, np.float32)])
    out = trim_trailing_silence(wav, SR, keep_s=0.0)
    assert len(speech) + len(fricative) <= len(out) < len(speech) + len(fricative) + int(0.02 * SR)


def test_audio_without_silent_tail_is_unchanged():
    speech = _speech(1.5)
    assert len(trim_trailing_silence(speech, SR)) == len(speech)
    silent = np.zeros(SR, np.float32)
    assert len(trim_trailing_silence(silent, SR)) == SR
    assert len(trim_trailing_silence(np.zeros(0, np.float32), SR)) == 0
    with pytest.raises(ValueError):
        trim_trailing_silence(np.zeros((2, 10)), SR)


def test_safe_prefix_is_never_cut_and_lags_little_on_speech():
    # Streaming hands the decoder only guard.safe tokens; a later loop must not cut into them.
    config = GuardConfig(max_period=6, min_loop_s=0.4, min_repeats=2)
    cut_streams = 0
    for seed in range(200):
        rng = random.Random(seed)
        stream = []
        while len(stream) < 150:
            if rng.random() < 0.3:
                stream += [rng.randrange(4) for _ in range(rng.randint(1, 7))] * rng.randint(1, 4)
            else:
                stream.append(rng.randrange(8))
        guard, safe = RunawayGuard(config), []
        for token in stream:
            loop = guard.push(token)
            if loop is not None:
                cut_streams += 1
                assert max(safe, default=0) <= loop.keep, seed
                assert guard.safe == loop.keep
                break
            safe.append(guard.safe)
            assert 0 <= guard.safe <= len(safe)
        assert safe == sorted(safe)  # never moves back
    assert cut_streams > 50  # the check above ran on many loops

    rng = random.Random(1)
    guard = RunawayGuard()
    lags = []
    for n, token in enumerate(_speechlike_stream(rng, MAX_NEW_TOKENS), start=1):
        assert guard.push(token) is None
        lags.append(n - guard.safe)
    # Held back only while something repeats: pauses (runs of the silence code) up to 1 s.
    assert np.median(lags) <= 1 and max(lags) <= S3_TOKEN_RATE


def test_tail_is_trimmed_against_the_loudness_before_it():
    rng = np.random.default_rng(0)
    hiss = (rng.standard_normal(SR) * 1e-4).astype(np.float32)
    # Alone, hiss is its own loudest frame and stays; after speech at RMS 0.1 it is silence.
    assert len(trim_trailing_silence(hiss, SR)) == SR
    assert len(trim_trailing_silence(hiss, SR, keep_s=0.1, peak_rms=0.1)) == round(0.1 * SR)
    loud = hiss.copy()
    loud[: SR // 2] = 0.1
    assert len(trim_trailing_silence(loud, SR, keep_s=0.0, peak_rms=0.05)) == SR // 2
