"""Shared fixtures: the parity kit beside the checkout and a fake full-size checkpoint.

The fake checkpoint (same files, keys and shapes as the released model) is written once
into a cache folder keyed by the generator's hash, so later test sessions reuse it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PARITY = Path(os.environ.get("CHATTERBOX_PARITY_DIR", REPO.parent / "shared" / "parity"))
GOLDEN = PARITY / "golden"
CKPT_FILES = ("ve.safetensors", "t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json", "conds.pt")


def _cached_checkpoint(name: str, files: tuple[str, ...], family: str, conds: Path,
                       scripts: tuple[Path, ...]) -> Path:
    """Folder `<cache>/<name>-<hash of the generator scripts>` holding a fake checkpoint of `family`;
    made on first use by the kit's make_checkpoint.py (seed 0), plus the kit's `conds` as conds.pt.

    Written to a partial folder first and renamed, so a killed session never leaves a half checkpoint."""
    digest = hashlib.sha256(b"".join(s.read_bytes() for s in scripts)).hexdigest()[:12]
    root = Path(os.environ.get("CHATTERBOX_TEST_CACHE", Path(tempfile.gettempdir()) / "chatterbox-test-cache"))
    out = root / f"{name}-{digest}"
    if all((out / f).is_file() for f in files):
        return out
    tmp = root / f"{name}-{digest}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    subprocess.run([sys.executable, str(PARITY / "make_checkpoint.py"), str(tmp), "--family", family,
                    "--seed", "0"], check=True)
    shutil.copy(conds, tmp / "conds.pt")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def fake_checkpoint_dir() -> Path:
    """Folder holding the fake English checkpoint; made on first use (~30 s, ~4 GB RAM)."""
    return _cached_checkpoint("fake-ckpt", CKPT_FILES, "english", PARITY / "conds.pt",
                              (PARITY / "make_checkpoint.py",))


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    if not PARITY.is_dir():
        pytest.fail(f"parity kit not found at {PARITY} (set CHATTERBOX_PARITY_DIR)")
    return PARITY


@pytest.fixture(scope="session")
def fake_ckpt(parity_dir) -> Path:
    return fake_checkpoint_dir()


TURBO_CKPT_FILES = ("ve.safetensors", "t3_turbo_v1.safetensors", "s3gen_meanflow.safetensors", "vocab.json",
                    "merges.txt", "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json",
                    "conds.pt")


def fake_turbo_checkpoint_dir() -> Path:
    """Folder holding the fake Turbo checkpoint; made on first use (~35 s, ~4 GB RAM)."""
    return _cached_checkpoint("fake-turbo-ckpt", TURBO_CKPT_FILES, "turbo", PARITY / "turbo" / "conds.pt",
                              (PARITY / "make_checkpoint.py",))


@pytest.fixture(scope="session")
def fake_turbo_ckpt(parity_dir) -> Path:
    return fake_turbo_checkpoint_dir()


REAL_VOICES = REPO / "assets" / "voices"


@pytest.fixture(scope="session")
def pipeline(fake_ckpt):
    """The whole TTS pipeline on the fake checkpoint, English loaded once (~3.2 GB). The German
    model's T3 comes from the same file (same weights, its own copy: +2 GB once requested)."""
    import torch

    from models.registry import KARTOFFELBOX_REPO_ID
    from models.tts import ChatterboxTTS

    torch.set_grad_enabled(False)
    return ChatterboxTTS.from_local(fake_ckpt, device="cpu", local={KARTOFFELBOX_REPO_ID: fake_ckpt / CKPT_FILES[1]})


def replay_goldens(parity_dir: Path, stage: str, ctx):
    """Replay every `<stage>_*.npz` golden of the kit through tools/parity.py's stages.

    Fails on any failed or skipped quantity; returns the report for extra checks.
    """
    import torch

    from tools.parity import Report, replay_file

    files = sorted((parity_dir / "golden").glob(f"{stage}_*.npz"))
    assert files, f"no {stage}_*.npz golden files"
    report = Report()
    with torch.inference_mode():
        for path in files:
            replay_file(path, ctx, report)
    assert report.failed == 0 and report.skipped == 0 and report.passed > 0, "\n".join(report.lines)
    return report


MTL_CKPT_FILES = ("ve.pt", "t3_mtl23ls_v2.safetensors", "s3gen.pt", "grapheme_mtl_merged_expanded_v1.json",
                  "Cangjie5_TC.json", "conds.pt")


def fake_multilingual_checkpoint_dir() -> Path:
    """Folder holding the fake multilingual checkpoint; made on first use (~20 s, ~4.5 GB RAM).
    Keyed by both generator scripts (the multilingual one imports the English rules)."""
    return _cached_checkpoint("fake-mtl-ckpt", MTL_CKPT_FILES, "multilingual", PARITY / "conds.pt",
                              (PARITY / "make_checkpoint.py", PARITY / "multilingual" / "make_checkpoint_mtl.py"))


@pytest.fixture(scope="session")
def mtl_kit(parity_dir) -> Path:
    """The multilingual part of the parity kit (tokenizer, Cangjie table, goldens)."""
    return parity_dir / "multilingual"


@pytest.fixture(scope="session")
def mtl_tok(mtl_kit):
    """The multilingual tokenizer from the kit's files."""
    from models.multilingual.text import MultilingualTokenizer

    return MultilingualTokenizer.from_files(mtl_kit / "grapheme_mtl_merged_expanded_v1.json",
                                            mtl_kit / "Cangjie5_TC.json")


@pytest.fixture(scope="session")
def fake_mtl_ckpt(parity_dir) -> Path:
    return fake_multilingual_checkpoint_dir()
