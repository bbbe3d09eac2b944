"""Hints about a reference clip: what each model does with it and what may spoil the clone.

Hints are advice shown next to the clip, never refusals (unusable clips are refused by
`models.reference`, and a model with a minimum length refuses shorter clips when asked to
speak). Every check is cheap signal statistics except the speaker check, which looks for the
point where the clip's resemblyzer embeddings change most when a `SpeakerSimilarity` is given.
"""
from __future__ import annotations

import numpy as np

from .reference import MAX_SECONDS_USED
from .registry import DEFAULT_MODEL, MODELS, ModelEntry

CLIP_LEVEL = 0.99                # |sample| at or above this counts as clipped
CLIP_FRACTION = 1e-3             # more than 0.1 % clipped samples is audible distortion
LOW_PEAK_DB = -30.0              # a peak below -30 dBFS: very quiet recording
FRAME_S = 0.02                   # level frames of 20 ms
NOISE_GAP_DB = 12.0              # 5th-percentile frames < 12 dB below the 95th: a steady background
                                 # (clean read speech: 20-80 dB; speech + noise at -10 dB SNR: ~7 dB)
SPEAKER_SIDE_PARTIALS = 3        # each side of a split holds >= 3 resemblyzer windows (~3 s of voice);
                                 # 2 s sides scored one voice 0.63-0.78 and two voices 0.42-0.73: no margin
SPEAKER_SIMILARITY_MIN = 0.70    # worst split, real speech: one voice 0.72-0.89 (AISHELL S0764 clips alone
                                 # and joined, Gradio's Cate Blanchett clips joined, the espeak references),
                                 # two voices 0.49-0.68 (AISHELL + Heath Ledger/Cate Blanchett, m3 + f3)


def _db(x: float) -> float:
    return 20.0 * np.log10(max(x, 1e-10))


def _uses(seconds: float, limit: float) -> str:
    return "all of it" if seconds <= limit else f"the first {limit:g} s"


def model_use(entry: ModelEntry, seconds: float) -> str:
    """What `entry` does with a clip of `seconds`: refuses it, or how much it conditions on (registry prompt facts)."""
    prompt = entry.prompt
    if seconds <= prompt.min_reference_seconds:
        return (f"{entry.label}: refuses this clip (too short: it needs more than "
                f"{prompt.min_reference_seconds:g} s of the voice).")
    return (f"{entry.label}: speaking style from {_uses(seconds, prompt.t3_seconds)}, "
            f"voice timbre from {_uses(seconds, prompt.s3gen_seconds)}.")


def seconds_used(seconds: float) -> list[str]:
    """One line per model (and voice conversion) saying what it does with a clip of `seconds`."""
    conversion = MODELS[DEFAULT_MODEL].prompt.s3gen_seconds  # conversion runs the default model's S3Gen
    return [f"Clip length {seconds:.1f} s.",
            *(model_use(entry, seconds) for entry in MODELS.values()),
            f"Voice conversion target: timbre from {_uses(seconds, conversion)}.",
            f"Speaker embedding (voice encoder, every model): {_uses(seconds, MAX_SECONDS_USED)}."]


def speaker_change(similarity, wav: np.ndarray, sample_rate: int) -> float | None:
    """The lowest cosine similarity between the mean resemblyzer embeddings before and after any
    split of the clip with >= SPEAKER_SIDE_PARTIALS windows on each side (None: too short to judge)."""
    partials = np.asarray(similarity.partials(wav, sample_rate), dtype=np.float64)
    m = SPEAKER_SIDE_PARTIALS
    if len(partials) < 2 * m:
        return None
    scores = []
    for k in range(m, len(partials) - m + 1):
        a, b = partials[:k].mean(axis=0), partials[k:].mean(axis=0)
        scores.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)))
    return min(scores)


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
    if similarity is not None:
        score = speaker_change(similarity, wav, sample_rate)
        if score is not None and score < SPEAKER_SIMILARITY_MIN:
            hints.append(f"Possibly more than one speaker: two parts of the clip sound like different voices "
                         f"(similarity {score:.2f}). Use a clip of one person.")
    return hints
