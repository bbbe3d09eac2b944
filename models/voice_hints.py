"""Hints about a reference clip: how much of it each model uses and what may spoil the clone.

Hints are advice shown next to the clip, never refusals (unusable clips are refused by
`models.reference`). Every check is cheap signal statistics except the speaker check, which
compares resemblyzer embeddings of the clip's two halves when a `SpeakerSimilarity` is given.
"""
from __future__ import annotations

import numpy as np

from .reference import MAX_SECONDS_USED
from .registry import PromptSpec

_PROMPT = PromptSpec()           # the English/German models' prompt lengths (registry)

TURBO_PROMPT_SECONDS = 15        # Chatterbox-Turbo's T3 prompt (spec §11.2: first 15 s, 375 tokens)
TURBO_MIN_SECONDS = 5            # Turbo's reference asserts a clip longer than 5 s (spec §11.2)
CLIP_LEVEL = 0.99                # |sample| at or above this counts as clipped
CLIP_FRACTION = 1e-3             # more than 0.1 % clipped samples is audible distortion
LOW_PEAK_DB = -30.0              # a peak below -30 dBFS: very quiet recording
FRAME_S = 0.02                   # level frames of 20 ms
NOISE_GAP_DB = 12.0              # 5th-percentile frames < 12 dB below the 95th: a steady background
                                 # (clean read speech: 20-80 dB; speech + noise at -10 dB SNR: ~7 dB)
SPEAKER_SIMILARITY_MIN = 0.72    # halves of one voice score 0.75-0.90 with resemblyzer, two voices 0.65-0.74
SPEAKER_HALF_MIN_S = 2.0         # shorter halves give unreliable embeddings


def _db(x: float) -> float:
    return 20.0 * np.log10(max(x, 1e-10))


def seconds_used(seconds: float) -> list[str]:
    """One line per model part saying how much of a clip of `seconds` it conditions on."""
    def part(limit: float) -> str:
        return "all of it" if seconds <= limit else f"the first {limit:g} s"

    lines = [
        f"Clip length {seconds:.1f} s.",
        f"Voice timbre (S3Gen, every model and voice conversion): {part(_PROMPT.s3gen_seconds)}.",
        f"Speaking style prompt (English/German T3): {part(_PROMPT.t3_seconds)}.",
        f"Speaker embedding (voice encoder): {part(MAX_SECONDS_USED)}.",
        f"Turbo T3 prompt: {part(TURBO_PROMPT_SECONDS)}"
        + (f" (Turbo needs more than {TURBO_MIN_SECONDS} s)." if seconds <= TURBO_MIN_SECONDS else "."),
    ]
    return lines


def reference_hints(wav: np.ndarray, sample_rate: int, similarity=None) -> list[str]:
    """Hints (plain sentences) for a mono clip; `similarity` (SpeakerSimilarity) enables the speaker check."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1 or wav.size == 0:
        raise ValueError("reference hints need a non-empty mono clip")
    seconds = len(wav) / sample_rate
    hints = seconds_used(seconds)
    peak = float(np.max(np.abs(wav)))
    clipped = float(np.mean(np.abs(wav) >= CLIP_LEVEL))
    if clipped > CLIP_FRACTION:
        hints.append(f"Clipping: {clipped:.1%} of the samples are at full scale; the clone may sound distorted.")
    if _db(peak) < LOW_PEAK_DB:
        hints.append(f"Very low level: the loudest sample is at {_db(peak):.0f} dBFS; record closer or louder.")
    frame = max(1, int(FRAME_S * sample_rate))
    n = len(wav) // frame
    if n >= 10:
        rms = np.sqrt(np.mean(wav[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1))
        loud, quiet = np.percentile(rms, 95), np.percentile(rms, 5)
        gap = _db(loud) - _db(quiet)
        if loud > 0 and gap < NOISE_GAP_DB:
            hints.append(f"Likely background noise or music: the quietest moments are only {gap:.0f} dB below the "
                         f"speech. A clean recording clones better.")
    if similarity is not None and seconds >= 2 * SPEAKER_HALF_MIN_S:
        half = len(wav) // 2
        score = similarity.score(wav[:half], sample_rate, wav[half:], sample_rate)
        if score < SPEAKER_SIMILARITY_MIN:
            hints.append(f"Possibly more than one speaker: the two halves sound like different voices "
                         f"(similarity {score:.2f}). Use a clip of one person.")
    return hints
