"""Loading the Chatterbox-Turbo file set (`ResembleAI/chatterbox-turbo` layout) strictly.

Files of a Turbo folder: ve.safetensors (English VE layout, its own weights),
t3_turbo_v1.safetensors, s3gen_meanflow.safetensors, the five GPT-2 tokenizer files and
the optional built-in voice conds.pt. Every weight file loads through `loading.load_strict`:
a missing, unexpected or mis-shaped key is an error naming it. Unlike the English
s3gen.safetensors, the meanflow file must hold every entry (mel filterbank and window
included), as the reference loads it strictly too.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .loading import _built_without_init, load_strict, load_voice_encoder, read_safetensors, read_t3
from .packed_linear import pack_linears, packing_available

TURBO_REPO_ID = "ResembleAI/chatterbox-turbo"
TURBO_T3_FILE = "t3_turbo_v1.safetensors"
TURBO_S3GEN_FILE = "s3gen_meanflow.safetensors"
TURBO_CONDS_FILE = "conds.pt"
TURBO_TOKENIZER_FILES = ("vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json",
                         "tokenizer_config.json")
TURBO_FILES = ("ve.safetensors", TURBO_T3_FILE, TURBO_S3GEN_FILE, *TURBO_TOKENIZER_FILES, TURBO_CONDS_FILE)


def is_turbo_checkpoint(ckpt_dir: str | Path) -> bool:
    """Whether a folder holds the Turbo T3 or S3Gen weights (rather than the English ones)."""
    ckpt_dir = Path(ckpt_dir)
    return (ckpt_dir / TURBO_T3_FILE).is_file() or (ckpt_dir / TURBO_S3GEN_FILE).is_file()


def load_turbo_t3(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                  pack: bool = True, int8: bool = False):
    """T3-Turbo from a Turbo folder or a single T3 file (a fine-tune such as Kartoffelbox Turbo).

    Strict: all 299 keys (tfmr.wte included), then `tfmr.wte` is deleted as the reference does.
    On a CPU in float32 the backbone's layers are packed for oneDNN (`pack=False` keeps them plain);
    `int8` puts them and the speech head in int8 instead (`fast_modes.int8_turbo`, CPU only:
    ModeError elsewhere).
    """
    from .t3_turbo import T3Turbo, T3TurboConfig, pack_conv1d_layers

    path = Path(path)
    if path.is_dir():
        path = path / TURBO_T3_FILE
    model = read_t3(path, lambda vocab: T3Turbo(T3TurboConfig(text_tokens_dict_size=vocab)))
    model.drop_token_table()
    model = model.to(device=device, dtype=dtype).eval()
    if int8:
        from .fast_modes import int8_turbo

        int8_turbo(model)
        return model
    if pack and model.device.type == "cpu" and dtype == torch.float32 and packing_available():
        # Decoding reads every backbone weight per token: oneDNN's layout reads them ~2x faster.
        pack_conv1d_layers(model)
        pack_linears(model, under=("speech_head",))
    return model


def load_turbo_s3gen(path: str | Path, device: str | torch.device = "cpu", flow_steps: int | None = None):
    """The meanflow S3Gen from its file (or a Turbo folder), every one of its 2491 entries
    required; it decodes with `flow_steps` steps (None: the reference's 2)."""
    from .s3gen.s3gen import S3Gen

    path = Path(path)
    if path.is_dir():
        path = path / TURBO_S3GEN_FILE
    model = _built_without_init(lambda: S3Gen(n_timesteps=flow_steps, meanflow=True))
    load_strict(model, read_safetensors(path), path.name)
    model.fold_weight_norm()
    return model.to(device).eval()


def load_turbo_voice_encoder(ckpt_dir: str | Path, device: str | torch.device = "cpu"):
    """The voice encoder of the Turbo folder (English layout; load it from here, not the English repo)."""
    return load_voice_encoder(ckpt_dir, device=device)


def load_turbo_tokenizer(path: str | Path):
    """The GPT-2 tokenizer from a Turbo folder (or any one of its five files, read beside it)."""
    from .turbo_text import TurboTextTokenizer

    path = Path(path)
    return TurboTextTokenizer.from_dir(path if path.is_dir() else path.parent)


def fetch_turbo_checkpoint(repo_id: str = TURBO_REPO_ID) -> Path:
    """Download (or read from the Hub cache) the Turbo file set; returns the snapshot folder.

    Raises loading.WeightsUnavailable with a user-facing reason when offline, gated, etc.
    """
    from .loading import hub_download

    paths = [hub_download(repo_id, name) for name in TURBO_FILES]
    return paths[0].parent
