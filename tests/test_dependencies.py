"""The dependency traps users of the reference hit: every import must work after
`pip install -r requirements.txt`, and nothing may silently degrade to None."""
import importlib

import pytest


@pytest.mark.parametrize("name", [
    "torch", "torchaudio", "transformers", "tokenizers", "safetensors", "huggingface_hub",
    "s3tokenizer", "resemblyzer", "perth", "soundfile", "soxr", "librosa", "gradio", "spaces", "num2words",
    "pyloudnorm", "matplotlib", "filelock", "mcp", "pykakasi",
])
def test_imports(name):
    importlib.import_module(name)


def test_torchaudio_matches_torch():
    # s3tokenizer imports torchaudio, whose native library only loads next to the torch
    # release it was built for.
    import torch
    import torchaudio

    assert torchaudio.__version__.split("+")[0] == torch.__version__.split("+")[0]
    from s3tokenizer.model_v2 import S3TokenizerV2  # the network we use

    assert S3TokenizerV2 is not None


def test_perth_watermarker_is_real():
    # resemble-perth turns the class into None when pkg_resources is missing.
    import perth

    assert perth.PerthImplicitWatermarker is not None


def test_resemblyzer_ships_its_encoder():
    from pathlib import Path

    import resemblyzer

    weights = Path(resemblyzer.__file__).parent / "pretrained.pt"
    assert weights.is_file() and weights.stat().st_size > 1_000_000
