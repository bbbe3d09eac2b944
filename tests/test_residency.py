"""The model pool on stand-in components (no weights): shared components are built once,
models stay resident within the budget, and only idle models are evicted, least recently
used first. The registry entries themselves are checked here too."""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace

import pytest
import torch
from torch import nn

from models import loading
from models.params import CONTROLS, GenerationParams
from models.registry import MODELS, HubFiles, ModelEntry, entry_by_label, model_entry
from models.residency import ModelPool

MB = 2**20


@dataclass(frozen=True)
class StandIn:
    """A component spec whose builder makes a module of `mb` MiB of parameters."""

    files: HubFiles
    mb: int = 1


@loading.build_component.register
def _(spec: StandIn, path, device, options):
    return nn.Linear(spec.mb * MB // 4, 1, bias=False)


def entry(model_id: str, t3_mb: int = 4) -> ModelEntry:
    shared = StandIn(HubFiles("base", ("shared.bin",)))
    return ModelEntry(id=model_id, label=model_id.title(), languages=("en",),
                      t3=StandIn(HubFiles(model_id, ("t3.bin",)), t3_mb), s3gen=shared,
                      voice_encoder=StandIn(HubFiles("base", ("ve.bin",))),
                      text=StandIn(HubFiles("base", ("text.bin",))), builtin_voice=None, licence="test")


@pytest.fixture
def pool(tmp_path):
    """Three models of 4 MiB T3 + 3 MiB shared parts; the budget (13 MiB) holds two of them."""
    local = {}
    for repo, names in {"base": ("shared.bin", "ve.bin", "text.bin"), "a": ("t3.bin",), "b": ("t3.bin",),
                        "c": ("t3.bin",)}.items():
        folder = tmp_path / repo
        folder.mkdir()
        for name in names:
            (folder / name).write_bytes(b"\0" * (MB if name != "t3.bin" else 4 * MB))
        local[repo] = folder
    models = {m: entry(m) for m in "abc"}
    return ModelPool(loading.WeightSources(local, hub=False), "cpu", budget_bytes=13 * MB, models=models)


def test_shared_components_are_built_once(pool):
    with pool.use("a") as a, pool.use("b") as b:
        assert a.s3gen is b.s3gen and a.voice_encoder is b.voice_encoder and a.t3 is not b.t3
    assert pool.loads == {"t3 a": 1, "t3 b": 1, "s3gen base": 1, "voice_encoder base": 1, "text base": 1}
    pool.get("a")
    pool.get("b")
    assert sum(pool.loads.values()) == 5  # resident: no reload


def test_least_recently_used_idle_model_is_evicted(pool):
    pool.get("a")
    pool.get("b")
    pool.get("a")  # b is now the least recently used
    pool.get("c")
    assert set(pool.resident) == {"a", "c"}
    assert pool.resident_bytes <= pool.budget_bytes
    pool.get("b")  # loaded again: a model evicted is rebuilt on its next request
    assert pool.loads["t3 b"] == 2 and pool.loads["s3gen base"] == 1  # shared parts stayed


def test_busy_models_are_never_evicted(pool):
    with pool.use("a"), pool.use("b"):
        with pool.use("c"):  # over budget while all three run
            assert set(pool.resident) == {"a", "b", "c"}
        # c is idle now and the least recently used idle model: trimmed back to the budget
        assert set(pool.resident) == {"a", "b"}


def test_resident_model_does_not_wait_for_another_load(pool, monkeypatch):
    pool.get("a")
    started, release = threading.Event(), threading.Event()
    build = loading.build_component

    def slow_build(spec, *args):
        if spec.files.repo_id == "b":
            started.set()
            release.wait(10)
        return build(spec, *args)

    monkeypatch.setattr(loading, "build_component", slow_build)
    loader = threading.Thread(target=pool.get, args=("b",))
    loader.start()
    assert started.wait(10)
    with pool.use("a") as a:  # answered while b is still loading
        assert a.entry.id == "a" and loader.is_alive()
    release.set()
    loader.join()
    assert set(pool.resident) == {"a", "b"}


def test_unknown_model_is_a_clear_error(pool):
    with pytest.raises(ValueError, match="unknown model 'z'"):
        pool.get("z")


def test_registry_entries():
    assert set(MODELS) == {"english", "german", "turbo", "multilingual"}
    for e in MODELS.values():
        assert entry_by_label(e.label) is e and model_entry(e.id) is e
        assert set(e.controls) <= set(CONTROLS)
    for e in (MODELS["english"], MODELS["german"], MODELS["multilingual"]):
        # English and German share every component but T3, Multilingual the voice encoder, S3Gen and
        # built-in voice (Turbo shares none: tests/test_turbo_pipeline.py).
        assert e.s3gen == MODELS["english"].s3gen and e.voice_encoder == MODELS["english"].voice_encoder
        assert e.builtin_voice == MODELS["english"].builtin_voice
    german = MODELS["german"]
    assert german.gated and not MODELS["english"].gated
    assert (german.recommended.temperature, german.recommended.cfg_weight) == (0.6, 0.3)
    assert german.t3.files.names == ("t3_cfg.safetensors", "t3_kartoffelbox.safetensors")
    assert MODELS["english"].recommended == GenerationParams()
    with pytest.raises(ValueError, match="unknown generation controls"):
        replace(MODELS["english"], controls=("warp",))
    with pytest.raises(ValueError, match="choose one of"):
        entry_by_label("Klingon")
