"""Loading the Chatterbox Multilingual file set (repository ResembleAI/chatterbox).

    ve.pt                                 voice encoder state dict (torch.save)
    s3gen.pt                              S3Gen state dict (torch.save), all 2490 entries
    t3_mtl23ls_v2.safetensors             multilingual T3 (text vocabulary 2454)
    grapheme_mtl_merged_expanded_v1.json  text tokenizer
    Cangjie5_TC.json                      Chinese glyph -> Cangjie code table
    conds.pt                              built-in voice (optional; the English file is valid)

The two pickles are read with `torch.load(weights_only=True)` (no code execution) and, like
every file here, loaded strictly: a missing, unexpected or mis-shaped key is an error.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import loading, registry
from ..loading import CheckpointError
from .text import MultilingualTokenizer

REPO_ID = registry.BASE_REPO_ID
VE_FILE = registry.VE_PICKLE
S3GEN_FILE = registry.S3GEN_PICKLE
T3_FILE = registry.MULTILINGUAL_T3_FILE
TOKENIZER_FILE = registry.MULTILINGUAL_TOKENIZER_FILE
CANGJIE_FILE = registry.CANGJIE_FILE
CONDS_FILE = registry.CONDS_FILE
FILES = (VE_FILE, T3_FILE, S3GEN_FILE, TOKENIZER_FILE, CONDS_FILE, CANGJIE_FILE)
TEXT_VOCAB_SIZE = 2454  # text_emb rows of t3_mtl23ls_v2

# Old-style weight-norm names that torch's parametrization also accepts on load; the
# released pickle may use either, so they are mapped to the names our modules hold.
WEIGHT_NORM_RENAMES = ((".weight_g", ".parametrizations.weight.original0"),
                       (".weight_v", ".parametrizations.weight.original1"))


def is_multilingual_checkpoint(ckpt_dir: str | Path) -> bool:
    return (Path(ckpt_dir) / T3_FILE).is_file()


def read_pt_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict saved with torch.save, read without executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses anything but tensors and plain containers
        raise CheckpointError(f"{path.name} is not a loadable state dict: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path.name}: expected a dict of tensors")
    renamed = {}
    for key, value in state.items():
        for old, new in WEIGHT_NORM_RENAMES:
            if key.endswith(old):
                key = key[: -len(old)] + new
        renamed[key] = value
    return renamed


def load_voice_encoder(ckpt_dir: str | Path, device: str | torch.device = "cpu"):
    """The voice encoder from ve.pt (strict; models/loading.py reads the pickle with `read_pt_state`)."""
    return loading.load_voice_encoder(Path(ckpt_dir) / VE_FILE, device)


def load_s3gen(ckpt_dir: str | Path, device: str | torch.device = "cpu"):
    """S3Gen from s3gen.pt, strict: the speech tokenizer's mel filters and window included."""
    return loading.load_s3gen(Path(ckpt_dir) / S3GEN_FILE, device)


def load_t3(ckpt_dir: str | Path, device: str | torch.device = "cpu", options=None):
    """The multilingual T3 (strict; CheckpointError if its text vocabulary is not 2454), built
    with the speed `options` (models/fast_modes.LoadOptions; int8 hides what the analyzer reads)."""
    path = Path(ckpt_dir)
    path = path / T3_FILE if path.is_dir() else path
    model = loading.load_t3(path, device=device, options=options)
    if model.config.text_tokens_dict_size != TEXT_VOCAB_SIZE:
        raise CheckpointError(f"{path.name}: text vocabulary {model.config.text_tokens_dict_size}, "
                              f"the multilingual T3 has {TEXT_VOCAB_SIZE}")
    return model


def find_cangjie(ckpt_dir: str | Path) -> Path | None:
    """Cangjie5_TC.json beside the vocabulary, or in a Hugging Face cache layout inside the folder
    (where the reference's tokenizer looks for it); None if neither exists."""
    ckpt_dir = Path(ckpt_dir)
    if (ckpt_dir / CANGJIE_FILE).is_file():
        return ckpt_dir / CANGJIE_FILE
    cached = sorted(ckpt_dir.glob(f"models--{REPO_ID.replace('/', '--')}/snapshots/*/{CANGJIE_FILE}"))
    return cached[0] if cached else None


def load_tokenizer(ckpt_dir: str | Path, optional_packages: bool = True) -> MultilingualTokenizer:
    """The front-end; a missing Cangjie table is not fatal (Chinese then gets a note)."""
    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / TOKENIZER_FILE).is_file():
        raise CheckpointError(f"checkpoint file not found: {ckpt_dir / TOKENIZER_FILE}")
    tokenizer = MultilingualTokenizer.from_files(ckpt_dir / TOKENIZER_FILE, find_cangjie(ckpt_dir),
                                                 optional_packages=optional_packages)
    if tokenizer.vocab_size != TEXT_VOCAB_SIZE:
        raise CheckpointError(f"{TOKENIZER_FILE}: {tokenizer.vocab_size} ids, the multilingual T3 reads "
                              f"{TEXT_VOCAB_SIZE}")
    return tokenizer


def fetch_checkpoint(repo_id: str = REPO_ID) -> Path:
    """Download (or find in the Hub cache) the six multilingual files; returns their folder.

    Raises loading.WeightsUnavailable with a user-facing reason (offline, gated, ...).
    """
    paths = [loading.hub_download(repo_id, name) for name in FILES]
    return paths[0].parent
