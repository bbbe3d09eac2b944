"""What a request may set about one generation: `GenerationParams`, its defaults and ranges.

The app's sliders, the API's checks and the pipeline all read `CONTROLS` and
`GenerationParams`; a value outside its range is a ValueError naming the control, raised
when the params are built. Which controls a model honours, and its recommended values,
are the model's registry entry (models/registry.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from .constants import MAX_SEED, MAX_TEXT_CHARS


@dataclass(frozen=True)
class Control:
    """The range of one generation control, as a slider shows it."""

    label: str
    lo: float
    hi: float
    step: float
    about: str = ""  # one line shown under the control


CONTROLS: dict[str, Control] = {
    "exaggeration": Control("Exaggeration", 0.25, 2.0, 0.05, "neutral 0.5; extreme values can be unstable"),
    "cfg_weight": Control("CFG / pace", 0.0, 1.0, 0.05, "classifier-free guidance; 0 turns it off"),
    "temperature": Control("Temperature", 0.05, 5.0, 0.05),
    "min_p": Control("min_p", 0.0, 1.0, 0.01, "0 disables"),
    "top_p": Control("top_p", 0.0, 1.0, 0.01, "1.0 disables; must be > 0"),
    "repetition_penalty": Control("Repetition penalty", 1.0, 2.0, 0.1),
    "top_k": Control("top_k", 0, 1000, 1, "0 disables"),
}


@dataclass(frozen=True)
class GenerationParams:
    """The controls of one generation; the defaults are the reference `generate`'s.

    `seed` None draws a random seed per request (the result reports it). Construction
    validates every value (ValueError with a readable message).
    """

    exaggeration: float = 0.5
    cfg_weight: float = 0.5
    temperature: float = 0.8
    min_p: float = 0.05
    top_p: float = 1.0
    repetition_penalty: float = 1.2
    top_k: int = 1000          # Turbo's reference default; the English models do not read it
    seed: int | None = None

    def __post_init__(self):
        for name, control in CONTROLS.items():
            value = getattr(self, name)
            if (not isinstance(value, (int, float, np.floating, np.integer)) or isinstance(value, bool)
                    or not math.isfinite(value) or not control.lo <= value <= control.hi):
                raise ValueError(f"{name} must be a number in [{control.lo}, {control.hi}], got {value!r}")
        if float(self.top_k) != int(self.top_k):
            raise ValueError(f"top_k must be a whole number (0 disables it), got {self.top_k!r}")
        if self.top_p == 0:
            raise ValueError("top_p must be > 0 (1.0 disables it)")
        seed = self.seed
        if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool)
                                 or not 0 <= int(seed) <= MAX_SEED):
            raise ValueError(f"seed must be an integer in [0, {MAX_SEED}] or None, got {seed!r}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


DEFAULT_PARAMS = GenerationParams()


def check_text(text: str) -> None:
    """Raise ValueError with a readable reason for text that cannot be one request."""
    if not isinstance(text, str):
        raise ValueError("text must be a string")
    if not text.strip():
        raise ValueError("text is empty: type something to say")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"text is {len(text)} characters; one request speaks at most {MAX_TEXT_CHARS} "
                         f"(about 13 minutes). Split it into several requests.")
