"""Saved voices: prepared conditionals kept on disk under a name, next to read-only built-ins.

Layout of the data folder (default `~/.cache/chatterbox-space/voices`, overridable):

    <root>/<slug>/conds.safetensors   the Conditionals' tensors (no pickle: safetensors only)
    <root>/<slug>/clip.wav            the reference clip the voice was prepared from (24 kHz)
    <root>/<slug>/meta.json           display name, settings, model, creation time, sizes
    <root>/.lock                      one file lock serialises every change, across threads and processes

A voice is written into a temporary folder and renamed into place, so a reader never sees
half a voice and a crash leaves at most a stray `.tmp-*` folder (ignored and cleaned up).
Count and total size are checked under the lock, so concurrent saves cannot overshoot them.
Built-in and example voices are listed with the saved ones but refuse rename and delete.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import soundfile as sf
import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file

from .reference import ReferenceClip
from .s3gen.s3gen import ReferenceEmbedding
from .t3 import T3Cond

MAX_VOICES = 200                     # saved voices per data folder
MAX_TOTAL_BYTES = 400 * 2**20        # all saved voices together (a 30 s clip + conds is ~1.6 MB)
MAX_NAME_CHARS = 48
LOCK_TIMEOUT_S = 60.0
FORMAT_VERSION = 1


class VoiceLibraryError(ValueError):
    """A library request cannot be done; the message says why in plain words."""


def default_data_dir() -> Path:
    """`$CHATTERBOX_DATA_DIR`, else `$XDG_CACHE_HOME/chatterbox-space`, else `~/.cache/chatterbox-space`."""
    if os.environ.get("CHATTERBOX_DATA_DIR"):
        return Path(os.environ["CHATTERBOX_DATA_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "chatterbox-space"


def clean_name(name: str) -> str:
    """A display name: NFC, control characters and path separators removed, spaces collapsed.

    Raises VoiceLibraryError when nothing usable is left or it is longer than MAX_NAME_CHARS.
    """
    if not isinstance(name, str):
        raise VoiceLibraryError("a voice name must be text")
    name = unicodedata.normalize("NFC", name)
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C" and ch not in "/\\:*?\"<>|")
    name = re.sub(r"\s+", " ", name).strip(" .")
    if not name:
        raise VoiceLibraryError("a voice name needs at least one letter or digit")
    if len(name) > MAX_NAME_CHARS:
        raise VoiceLibraryError(f"a voice name has at most {MAX_NAME_CHARS} characters, got {len(name)}")
    return name


def _slug(name: str) -> str:
    """Folder name: ASCII letters/digits of the name + a hash of its case-folded form (unique per name)."""
    ascii_part = re.sub(r"[^a-z0-9]+", "-", unicodedata.normalize("NFKD", name).encode("ascii", "ignore")
                        .decode().lower()).strip("-")[:32]
    digest = hashlib.sha1(name.casefold().encode()).hexdigest()[:10]
    return f"{ascii_part or 'voice'}-{digest}"


@dataclass(frozen=True)
class VoiceEntry:
    """One line of the voice list."""

    name: str
    kind: str                       # "saved", "built-in" or "example"
    model: str = ""                 # which model the conditionals were prepared for
    settings: dict = field(default_factory=dict)
    created: float = 0.0            # Unix time
    clip: Path | None = None        # the reference clip, when there is one

    @property
    def read_only(self) -> bool:
        return self.kind != "saved"


@dataclass(frozen=True)
class ReadOnlyVoice:
    """A voice shipped with the app: a clip to prepare, and/or conditionals made on demand."""

    kind: str                                          # "built-in" or "example"
    clip: Path | None = None
    conditionals: Callable[[], object] | None = None   # () -> Conditionals
    model: str = ""


def conditionals_to_tensors(cond) -> dict[str, torch.Tensor]:
    """`Conditionals` -> flat tensors for safetensors (CPU, contiguous)."""
    t = {
        "t3.speaker_emb": cond.t3.speaker_emb,
        "t3.cond_prompt_speech_tokens": cond.t3.cond_prompt_speech_tokens,
        "t3.emotion_adv": torch.tensor([float(cond.t3.emotion_adv)]),
        "gen.prompt_token": cond.gen.prompt_token,
        "gen.prompt_feat": cond.gen.prompt_feat,
        "gen.embedding": cond.gen.embedding,
    }
    return {k: v.detach().cpu().contiguous() for k, v in t.items()}


def conditionals_from_tensors(t: Mapping[str, torch.Tensor], reference: ReferenceClip | None = None,
                              device: torch.device | str = "cpu"):
    """Flat tensors -> `Conditionals` on `device` (the inverse of `conditionals_to_tensors`)."""
    from .tts import Conditionals

    try:
        t3 = T3Cond(t["t3.speaker_emb"].float().to(device), t["t3.cond_prompt_speech_tokens"].long().to(device),
                    float(t["t3.emotion_adv"].reshape(-1)[0]))
        gen = ReferenceEmbedding(t["gen.prompt_token"].long(), t["gen.prompt_feat"].float(),
                                 t["gen.embedding"].float()).to(device)
    except KeyError as exc:
        raise VoiceLibraryError(f"saved voice is missing tensor {exc}") from exc
    return Conditionals(t3, gen, reference)


class VoiceLibrary:
    """Saved voices in one data folder, plus read-only voices given by the app.

    Every public method is safe to call from many threads and processes at once. Names
    compare case-insensitively; a saved voice cannot take a read-only voice's name.
    """

    def __init__(self, root: str | os.PathLike | None = None, read_only: Mapping[str, ReadOnlyVoice] | None = None,
                 max_voices: int = MAX_VOICES, max_total_bytes: int = MAX_TOTAL_BYTES):
        self.root = Path(root) if root is not None else default_data_dir() / "voices"
        self.read_only = {clean_name(k): v for k, v in (read_only or {}).items()}
        self.max_voices, self.max_total_bytes = max_voices, max_total_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.root / ".lock"), timeout=LOCK_TIMEOUT_S)

    # --- reading -------------------------------------------------------------------------

    def list(self) -> list[VoiceEntry]:
        """Read-only voices first (in the order given), then saved voices by name."""
        entries = [VoiceEntry(name, v.kind, v.model, {}, 0.0, v.clip) for name, v in self.read_only.items()]
        saved = []
        for folder in self._folders():
            meta = self._meta(folder)
            if meta is not None:
                clip = folder / "clip.wav"
                saved.append(VoiceEntry(meta["name"], "saved", meta.get("model", ""), meta.get("settings", {}),
                                        float(meta.get("created", 0.0)), clip if clip.is_file() else None))
        return entries + sorted(saved, key=lambda e: e.name.casefold())

    def names(self) -> list[str]:
        return [e.name for e in self.list()]

    def entry(self, name: str) -> VoiceEntry:
        key = clean_name(name).casefold()
        for e in self.list():
            if e.name.casefold() == key:
                return e
        raise VoiceLibraryError(f"no voice named {name!r}")

    def load(self, name: str, device: torch.device | str = "cpu"):
        """The `Conditionals` of a saved voice, or of a built-in one that provides them.

        An example voice that is only a clip raises VoiceLibraryError: prepare its `entry().clip`.
        """
        ro = self._read_only(name)
        if ro is not None:
            if ro.conditionals is None:
                raise VoiceLibraryError(f"{name!r} is an example clip: prepare it from its file")
            return ro.conditionals()
        folder = self._folder_of(name)
        try:
            tensors = load_file(str(folder / "conds.safetensors"))
        except FileNotFoundError as exc:
            raise VoiceLibraryError(f"no voice named {name!r}") from exc
        reference = None
        clip_path = folder / "clip.wav"
        if clip_path.is_file():
            wav, rate = sf.read(str(clip_path), dtype="float32")
            meta = self._meta(folder) or {}
            reference = ReferenceClip(wav, len(wav) / rate, float(meta.get("seconds_total", len(wav) / rate)),
                                      int(meta.get("source_rate", rate)), int(meta.get("source_channels", 1)))
        return conditionals_from_tensors(tensors, reference, device)

    # --- changing ------------------------------------------------------------------------

    def save(self, name: str, conditionals, clip: np.ndarray | None = None, sample_rate: int = 24_000,
             settings: Mapping | None = None, model: str = "", overwrite: bool = False) -> VoiceEntry:
        """Store a prepared voice under `name`; returns its entry.

        `clip` defaults to the conditionals' own reference clip. Raises VoiceLibraryError
        for a bad or taken name (unless `overwrite`) and at the count or size bound.
        """
        name = clean_name(name)
        if self._read_only(name) is not None:
            raise VoiceLibraryError(f"{name!r} is a built-in voice name; choose another")
        if clip is None and getattr(conditionals, "reference", None) is not None:
            clip, sample_rate = conditionals.reference.wav, 24_000
        settings = dict(settings or {})
        json.dumps(settings)  # settings must be plain JSON values; fail before touching the disk
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            save_file(conditionals_to_tensors(conditionals), str(tmp / "conds.safetensors"))
            meta = {"format": FORMAT_VERSION, "name": name, "model": model, "settings": settings,
                    "created": time.time()}
            ref = getattr(conditionals, "reference", None)
            if ref is not None:
                meta.update(seconds_total=ref.seconds_total, source_rate=ref.source_rate,
                            source_channels=ref.source_channels)
            if clip is not None:
                sf.write(str(tmp / "clip.wav"), np.asarray(clip, dtype=np.float32), int(sample_rate), subtype="PCM_16")
            (tmp / "meta.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1))
            size = sum(f.stat().st_size for f in tmp.iterdir())
            with self._lock:
                final = self.root / _slug(name)
                exists = final.is_dir()
                if exists and not overwrite:
                    raise VoiceLibraryError(f"a voice named {name!r} exists already")
                others = [f for f in self._folders() if f != final]
                if len(others) >= self.max_voices:
                    raise VoiceLibraryError(
                        f"the library holds {len(others)} voices, the most it keeps; delete one first")
                used = sum(self._size(f) for f in others)
                if used + size > self.max_total_bytes:
                    raise VoiceLibraryError(
                        f"saving would use {(used + size) / 2**20:.1f} MB; the library keeps at most "
                        f"{self.max_total_bytes / 2**20:.0f} MB. Delete a voice first")
                if exists:
                    shutil.rmtree(final)
                os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self.entry(name)

    def rename(self, old: str, new: str) -> VoiceEntry:
        new = clean_name(new)
        self._refuse_read_only(old, "renamed")
        if self._read_only(new) is not None:
            raise VoiceLibraryError(f"{new!r} is a built-in voice name; choose another")
        with self._lock:
            src, dst = self._folder_of(old), self.root / _slug(new)
            if not src.is_dir():
                raise VoiceLibraryError(f"no voice named {old!r}")
            if dst.is_dir() and dst != src:
                raise VoiceLibraryError(f"a voice named {new!r} exists already")
            meta = self._meta(src) or {}
            meta["name"] = new
            (src / "meta.json.new").write_text(json.dumps(meta, ensure_ascii=False, indent=1))
            os.replace(src / "meta.json.new", src / "meta.json")
            if dst != src:
                os.rename(src, dst)
        return self.entry(new)

    def delete(self, name: str) -> None:
        self._refuse_read_only(name, "deleted")
        with self._lock:
            folder = self._folder_of(name)
            if not folder.is_dir():
                raise VoiceLibraryError(f"no voice named {name!r}")
            trash = self.root / f".tmp-{uuid.uuid4().hex}"
            os.rename(folder, trash)  # gone from the list at once, then removed
        shutil.rmtree(trash, ignore_errors=True)

    # --- helpers -------------------------------------------------------------------------

    def _read_only(self, name: str) -> ReadOnlyVoice | None:
        key = clean_name(name).casefold()
        return next((v for k, v in self.read_only.items() if k.casefold() == key), None)

    def _refuse_read_only(self, name: str, what: str) -> None:
        if self._read_only(name) is not None:
            raise VoiceLibraryError(f"{clean_name(name)!r} is a built-in voice and cannot be {what}")

    def _folder_of(self, name: str) -> Path:
        return self.root / _slug(clean_name(name))

    def _folders(self) -> list[Path]:
        return [f for f in self.root.iterdir() if f.is_dir() and not f.name.startswith(".")]

    @staticmethod
    def _meta(folder: Path) -> dict | None:
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except (OSError, ValueError):
            return None  # a folder being removed, or not ours
        return meta if isinstance(meta, dict) and isinstance(meta.get("name"), str) else None

    @staticmethod
    def _size(folder: Path) -> int:
        try:
            return sum(f.stat().st_size for f in folder.iterdir())
        except OSError:
            return 0
