"""Models stay loaded: a memory budget, shared components, least recently used eviction.

`ModelPool` builds a model on its first request and keeps it resident. Components with
equal registry specs (models/registry.py) are built once and shared by every resident
model naming them. A request on a resident model never waits for another model's load:
the pool's lock is held only to look up and update its tables, while a load runs under a
separate lock that serialises loads (two at once would double the memory peak). Before a
load, idle models (no generation running) are evicted, least recently used first, until
the new components fit `budget_bytes`; a busy model is never evicted, so the pool may
exceed its budget until those generations end.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from . import loading
from .fast_modes import LoadOptions
from .registry import MODELS, ModelEntry, model_entry

log = logging.getLogger(__name__)
RESIDENT_SHARE = 0.6  # default budget: this share of the device's memory


def default_budget_bytes(device: torch.device | str) -> int:
    """RESIDENT_SHARE of the GPU's memory (CUDA) or of the machine's RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(total * RESIDENT_SHARE)


def size_bytes(component) -> int:
    """Bytes of a component's parameters and buffers, and of the weights its layers keep
    packed outside them (`packed_bytes`: oneDNN float32, fbgemm int8); 0 for what is not a module."""
    if not isinstance(component, nn.Module):
        return 0
    tensors = list(component.parameters()) + list(component.buffers())
    packed = sum(getattr(module, "packed_bytes", 0) for module in component.modules())
    return sum(t.numel() * t.element_size() for t in tensors) + packed


@dataclass(frozen=True)
class LoadedModel:
    """One resident model: its entry and built components (shared ones are the same objects)."""

    entry: ModelEntry
    t3: object
    s3gen: object
    voice_encoder: object
    text: object
    builtin_voice: object | None  # Conditionals, or None when the checkpoint has no conds.pt


@dataclass
class _Slot:
    model: LoadedModel
    specs: tuple
    active: int = 0
    last_used: int = 0


class ModelPool:
    """Resident models within a memory budget (see the module docstring).

    `loads` counts the builds of each component (`"<role> <repo id>"`), so that tests and
    logs can tell a reuse from a reload.
    """

    def __init__(self, sources: loading.WeightSources, device: torch.device | str,
                 options: LoadOptions | None = None, budget_bytes: int | None = None,
                 models: dict[str, ModelEntry] | None = None):
        self.sources = sources
        self.device = torch.device(device)
        self.options = options or LoadOptions()
        self.options.check(self.device)
        self.budget_bytes = default_budget_bytes(self.device) if budget_bytes is None else int(budget_bytes)
        self.entries = dict(models or MODELS)
        self.loads: Counter[str] = Counter()
        self._components: dict[object, tuple[object, int]] = {}  # spec -> (built, bytes)
        self._slots: dict[str, _Slot] = {}
        self._clock = 0
        self._lock = threading.Lock()        # the tables above; never held during a load
        self._load_lock = threading.Lock()   # one load at a time

    def entry(self, model_id: str) -> ModelEntry:
        if model_id not in self.entries:
            return model_entry(model_id)  # raises ValueError naming the known ids
        return self.entries[model_id]

    @property
    def resident(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._slots)

    @property
    def resident_bytes(self) -> int:
        with self._lock:
            return sum(size for _, size in self._components.values())

    @contextmanager
    def use(self, model_id: str) -> Iterator[LoadedModel]:
        """The model, loaded if needed and kept from eviction for the duration of the block."""
        slot = self._acquire(model_id)
        try:
            yield slot.model
        finally:
            with self._lock:
                slot.active -= 1
                self._tick(slot)
                self._evict_idle(0)  # a load over budget while others ran: trim now

    def get(self, model_id: str) -> LoadedModel:
        """The model (loaded if needed), without holding it: for inspection, not generation."""
        with self.use(model_id) as model:
            return model

    def _acquire(self, model_id: str) -> _Slot:
        entry = self.entry(model_id)
        with self._lock:
            slot = self._slots.get(model_id)
            if slot is not None:
                slot.active += 1
                self._tick(slot)
                return slot
        with self._load_lock:
            with self._lock:
                slot = self._slots.get(model_id)  # loaded by another request meanwhile
                if slot is not None:
                    slot.active += 1
                    self._tick(slot)
                    return slot
            slot = self._load(entry)
            with self._lock:
                self._slots[model_id] = slot
                slot.active += 1
                self._tick(slot)
            return slot

    def _load(self, entry: ModelEntry) -> _Slot:
        specs = entry.components
        with self._lock:
            missing = {role: spec for role, spec in specs.items() if spec not in self._components}
        paths: dict[str, Path | None] = {}
        for role, spec in missing.items():
            try:
                paths[role] = self.sources.path(spec.files)
            except (loading.CheckpointError, loading.WeightsUnavailable) as exc:
                if role != "builtin_voice":
                    raise
                log.warning("%s: no built-in voice (%s)", entry.id, exc)
                paths[role] = None
        needed = sum(p.stat().st_size for p in paths.values() if p is not None)
        with self._lock:
            self._evict_idle(needed, keep=set(specs.values()))
        built = {}
        for role, spec in specs.items():
            with self._lock:
                known = self._components.get(spec)
            if known is not None:
                built[role] = known[0]
                continue
            if paths.get(role) is None:
                built[role] = None
                continue
            log.info("loading %s of %s from %s", role, entry.id, paths[role])
            built[role] = self._build(role, spec, paths[role])
        model = LoadedModel(entry, built["t3"], built["s3gen"], built["voice_encoder"], built["text"],
                            built.get("builtin_voice"))
        return _Slot(model, tuple(specs.values()))

    def component(self, model_id: str, role: str):
        """One component of `model_id` (a `ModelEntry.components` role), built alone when the
        model is not loaded: a cheap look-up (the text front-end's notes for a language) need
        not load a 2 GB T3. Kept and shared like the components of loaded models."""
        spec = self.entry(model_id).components[role]
        with self._lock:
            known = self._components.get(spec)
        if known is not None:
            return known[0]
        with self._load_lock:
            with self._lock:
                known = self._components.get(spec)
            if known is not None:
                return known[0]
            path = self.sources.path(spec.files)
            log.info("loading %s of %s from %s (alone)", role, model_id, path)
            return self._build(role, spec, path)

    def _build(self, role: str, spec, path: Path):
        """Build one component (load lock held) and record it."""
        component = loading.build_component(spec, path, self.device, self.options)
        self.loads[f"{role} {spec.files.repo_id}"] += 1
        with self._lock:
            self._components[spec] = (component, size_bytes(component))
        return component

    def _tick(self, slot: _Slot) -> None:
        self._clock += 1
        slot.last_used = self._clock

    def _evict_idle(self, needed: int, keep: set = frozenset()) -> None:
        """Drop idle models, least recently used first, until `needed` more bytes fit (lock
        held). Components in `keep` (those of the model about to load) stay."""
        def used() -> int:
            return sum(size for _, size in self._components.values())

        idle = sorted((s for s in self._slots.values() if not s.active), key=lambda s: s.last_used)
        for slot in idle:
            if used() + needed <= self.budget_bytes:
                return
            del self._slots[slot.model.entry.id]
            log.info("evicting %s (idle, least recently used)", slot.model.entry.id)
            still_named = {spec for s in self._slots.values() for spec in s.specs}
            for spec in slot.specs:
                if spec not in still_named and spec not in keep:
                    self._components.pop(spec, None)
