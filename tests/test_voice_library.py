"""Saved-voice library: round trip without pickle, names, bounds, read-only voices, restarts,
and 20 concurrent saves from threads and from processes."""
from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from models.reference import ReferenceClip
from models.s3gen.s3gen import ReferenceEmbedding
from models.t3 import T3Cond
from models.tts import Conditionals
from models.voice_library import ReadOnlyVoice, VoiceLibrary, VoiceLibraryError, clean_name


def make_conds(seed: int = 0, with_clip: bool = True) -> Conditionals:
    g = torch.Generator().manual_seed(seed)
    t3 = T3Cond(torch.randn(1, 256, generator=g), torch.randint(0, 6561, (1, 150), generator=g), 0.5 + seed / 100)
    gen = ReferenceEmbedding(torch.randint(0, 6561, (97,), generator=g), torch.randn(194, 80, generator=g),
                             torch.randn(192, generator=g))
    clip = None
    if with_clip:
        wav = (0.1 * torch.randn(24_000, generator=g)).clamp(-1, 1).numpy()
        clip = ReferenceClip(wav, 1.0, 1.0, 24_000, 1)
    return Conditionals(t3, gen, clip)


def builtin_voices(tmp_path: Path) -> dict[str, ReadOnlyVoice]:
    conds = make_conds(99, with_clip=False)
    return {"Built-in": ReadOnlyVoice("built-in", conditionals=lambda: conds),
            "Example A": ReadOnlyVoice("example", clip=tmp_path / "a.wav")}


def test_round_trip_restores_every_tensor_and_the_clip(tmp_path):
    lib = VoiceLibrary(tmp_path / "lib")
    conds = make_conds(1)
    entry = lib.save("My voice", conds, settings={"exaggeration": 0.7}, model="english")
    assert entry.kind == "saved" and entry.settings == {"exaggeration": 0.7} and entry.model == "english"
    back = VoiceLibrary(tmp_path / "lib").load("my VOICE")  # a fresh instance: survives a restart
    assert torch.equal(back.t3.speaker_emb, conds.t3.speaker_emb)
    assert torch.equal(back.t3.cond_prompt_speech_tokens, conds.t3.cond_prompt_speech_tokens)
    assert back.t3.emotion_adv == pytest.approx(conds.t3.emotion_adv)
    for field in ("prompt_token", "prompt_feat", "embedding"):
        assert torch.equal(getattr(back.gen, field), getattr(conds.gen, field))
    np.testing.assert_allclose(back.reference.wav, conds.reference.wav, atol=1 / 32768)
    stored = list((tmp_path / "lib").rglob("*"))
    assert not any(p.suffix in (".pt", ".pkl", ".pickle") for p in stored)


def test_names_are_sanitised_and_unique_case_insensitively(tmp_path):
    lib = VoiceLibrary(tmp_path)
    assert clean_name("  ../../etc/passwd\n ") == "etcpasswd"
    assert clean_name("Anna  \t Schmidt") == "Anna Schmidt"
    for bad in ("", "   ", "\x00\x01", "x" * 49, 5):
        with pytest.raises(VoiceLibraryError):
            clean_name(bad)
    lib.save("../evil", make_conds())
    assert all(p.parent == tmp_path for p in tmp_path.iterdir())  # nothing escapes the folder
    lib.save("Zoë", make_conds())
    with pytest.raises(VoiceLibraryError, match="exists already"):
        lib.save("ZOË", make_conds())
    lib.save("ZOË", make_conds(2), overwrite=True)
    assert [e.name for e in lib.list()] == ["evil", "ZOË"]


def test_rename_delete_and_read_only_voices(tmp_path):
    lib = VoiceLibrary(tmp_path / "lib", read_only=builtin_voices(tmp_path))
    lib.save("first", make_conds(1))
    assert [(e.name, e.kind) for e in lib.list()] == [("Built-in", "built-in"), ("Example A", "example"),
                                                     ("first", "saved")]
    lib.rename("first", "second")
    assert lib.names()[-1] == "second"
    assert torch.equal(lib.load("second").gen.embedding, make_conds(1).gen.embedding)
    with pytest.raises(VoiceLibraryError, match="cannot be deleted"):
        lib.delete("built-in")
    with pytest.raises(VoiceLibraryError, match="cannot be renamed"):
        lib.rename("Example A", "x")
    with pytest.raises(VoiceLibraryError, match="built-in voice name"):
        lib.save("Built-in", make_conds())
    assert torch.equal(lib.load("Built-in").gen.embedding, make_conds(99).gen.embedding)
    with pytest.raises(VoiceLibraryError, match="example clip"):
        lib.load("Example A")
    lib.delete("second")
    with pytest.raises(VoiceLibraryError, match="no voice"):
        lib.load("second")
    assert lib.names() == ["Built-in", "Example A"]


def test_count_and_size_bounds_give_a_clear_error(tmp_path):
    lib = VoiceLibrary(tmp_path / "a", max_voices=2)
    lib.save("one", make_conds())
    lib.save("two", make_conds())
    with pytest.raises(ValueError, match="most it keeps"):
        lib.save("three", make_conds())
    lib.save("two", make_conds(3), overwrite=True)  # replacing does not count twice
    small = VoiceLibrary(tmp_path / "b", max_total_bytes=150_000)
    small.save("one", make_conds(with_clip=False))
    with pytest.raises(ValueError, match="MB"):
        small.save("big", make_conds())
    assert small.names() == ["one"]
    assert not [p for p in (tmp_path / "b").iterdir() if p.name.startswith(".tmp")]


def _save_in_process(root: str, i: int) -> str:
    VoiceLibrary(root, max_voices=40).save(f"proc {i}", make_conds(i))
    return f"proc {i}"


@pytest.mark.slow  # four spawned processes each import torch
def test_twenty_concurrent_saves_from_threads_and_processes_lose_nothing(tmp_path):
    root = tmp_path / "lib"
    lib = VoiceLibrary(root, max_voices=40)
    with ThreadPoolExecutor(20) as pool:
        list(pool.map(lambda i: lib.save(f"thread {i}", make_conds(i)), range(20)))
    ctx = mp.get_context("spawn")
    with ctx.Pool(4) as pool:
        done = pool.starmap(_save_in_process, [(str(root), i) for i in range(20)])
    names = set(VoiceLibrary(root).names())
    assert names == {f"thread {i}" for i in range(20)} | set(done) and len(names) == 40
    for i in (0, 7, 19):
        assert torch.equal(lib.load(f"proc {i}").gen.prompt_feat, make_conds(i).gen.prompt_feat)
    # The bound holds under concurrency too: 20 more racing saves into a full library all fail.
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda i: _try_save(lib, f"extra {i}"), range(20)))
    assert results == [False] * 20 and len(VoiceLibrary(root).names()) == 40


def _try_save(lib: VoiceLibrary, name: str) -> bool:
    try:
        lib.save(name, make_conds())
        return True
    except VoiceLibraryError:
        return False
