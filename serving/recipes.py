"""Recipes: everything needed to make a result again, as a JSON file or inside a link.

A recipe names the text, the model, the voice (a named voice, or the SHA-256 of an uploaded
clip, which cannot travel in a link), every generation setting, the seed and the project
version, the options (watermark, text normalisation, reference loudness) and the Space's speed
modes (int8 and the like change the samples). The same recipe on the same machine type gives the same samples, because the seed
fixes every random draw. In a link it is compact JSON, zlib-compressed and base64url-encoded
in the `recipe` query parameter.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import re
import zlib
from dataclasses import asdict, dataclass, field

PROJECT_VERSION = "0.12.0"
RECIPE_KIND = "chatterbox-space-recipe"
MAX_LINK_CHARS = 32_000        # a link longer than this is refused rather than cut
MAX_RECIPE_BYTES = 200_000
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def speed_mismatch(made: str, here: str, quote: str = "") -> str | None:
    """What replaying a recipe made with speed modes `made` gives under this Space's `here` (both as
    `LoadOptions.changed()` writes them), None when they agree. `quote` wraps the modes (Markdown)."""
    if made == here:
        return None
    recorded, running = (f"speed modes {quote}{s}{quote}" if s else "no speed modes" for s in (made, here))
    return f"made with {recorded} and this Space runs {running}: the audio is nearly, not exactly, the same"


@dataclass(frozen=True)
class Recipe:
    """One result's inputs. `settings` maps generation parameter names to numbers."""

    text: str
    model: str
    seed: int
    settings: dict[str, float] = field(default_factory=dict)
    voice: str | None = None          # built-in, example or saved voice id
    clip_sha256: str | None = None    # uploaded clip (hex digest of its decoded samples)
    watermark: bool = True
    normalize: bool = True            # numbers, amounts and symbols read as words
    norm_loudness: bool = True        # the reference clip normalised to -27 LUFS (Turbo)
    version: str = PROJECT_VERSION
    language: str | None = None       # what a multilingual model speaks (an id, e.g. "ja")
    speed: str = ""                   # the Space's speed modes (LoadOptions.changed()); "" = none

    def __post_init__(self):
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError("recipe: 'text' must be a non-empty string")
        if not isinstance(self.model, str) or not self.model:
            raise ValueError("recipe: 'model' must be a model id")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError("recipe: 'seed' must be a non-negative integer")
        if not isinstance(self.settings, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(v) for k, v in self.settings.items()):
            raise ValueError("recipe: 'settings' must map names to finite numbers")
        if self.voice is not None and not isinstance(self.voice, str):
            raise ValueError("recipe: 'voice' must be a voice id")
        if self.clip_sha256 is not None and not _SHA256.match(str(self.clip_sha256)):
            raise ValueError("recipe: 'clip_sha256' must be 64 lower-case hex digits")
        if self.voice is not None and self.clip_sha256 is not None:
            raise ValueError("recipe: give 'voice' or 'clip_sha256', not both")
        for name in ("watermark", "normalize", "norm_loudness"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"recipe: {name!r} must be true or false")
        if self.language is not None and not isinstance(self.language, str):
            raise ValueError("recipe: 'language' must be a language id")
        if not isinstance(self.speed, str):
            raise ValueError("recipe: 'speed' must be a string (the speed modes, \"\" for none)")

    def to_json(self) -> str:
        return json.dumps({"kind": RECIPE_KIND, **asdict(self)}, ensure_ascii=False, indent=2)

    @classmethod
    def from_json(cls, data: str | bytes) -> "Recipe":
        """Parse a recipe file. Raises ValueError naming what is wrong."""
        if len(data) > MAX_RECIPE_BYTES:
            raise ValueError(f"recipe is {len(data):,} bytes; at most {MAX_RECIPE_BYTES:,}")
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"recipe is not valid JSON: {exc}") from None
        if not isinstance(raw, dict) or raw.pop("kind", None) != RECIPE_KIND:
            raise ValueError(f"not a recipe of this Space (expected \"kind\": \"{RECIPE_KIND}\")")
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ValueError(f"recipe has unknown field(s): {', '.join(unknown)}")
        missing = sorted({"text", "model", "seed"} - set(raw))
        if missing:
            raise ValueError(f"recipe lacks {', '.join(missing)}")
        return cls(**raw)

    def to_link_param(self) -> str:
        """The value of the `recipe` query parameter. Raises ValueError if the link would be too long."""
        compact = json.dumps({"kind": RECIPE_KIND, **asdict(self)}, ensure_ascii=False, separators=(",", ":"))
        token = base64.urlsafe_b64encode(zlib.compress(compact.encode(), 9)).decode().rstrip("=")
        if len(token) > MAX_LINK_CHARS:
            raise ValueError(f"this recipe makes a {len(token):,}-character link; download the JSON instead")
        return token

    @classmethod
    def from_link_param(cls, token: str) -> "Recipe":
        if len(token) > MAX_LINK_CHARS:
            raise ValueError("the recipe in the link is too long")
        try:
            packed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            inflater = zlib.decompressobj()
            data = inflater.decompress(packed, MAX_RECIPE_BYTES)
            complete = inflater.eof
        except (binascii.Error, ValueError, zlib.error):
            complete = False
        if not complete:
            raise ValueError("the recipe in the link is damaged (it may have been cut off)")
        return cls.from_json(data)
