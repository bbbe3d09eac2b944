"""Reading safetensors files and loading them into modules without silent gaps.

Every component loads through `load_strict`: a missing, unexpected or mis-shaped key
is an error that names the key, so a renamed layer can never leave random weights in
place. The only tolerated gaps are the ones a caller lists explicitly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
from safetensors import safe_open
from torch import nn

from .packed_linear import pack_linears, packing_available


class CheckpointError(ValueError):
    """A checkpoint file does not match the module it is loaded into."""


def read_safetensors(path: str | Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors of `path` whose names start with `prefix`, with the prefix removed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    out: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as f:
        for name in f.keys():
            if name.startswith(prefix):
                out[name[len(prefix):]] = f.get_tensor(name)
    if not out:
        raise CheckpointError(f"{path.name} holds no tensor named {prefix!r}*")
    return out


def load_strict(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    what: str,
    allowed_missing: Iterable[str] = (),
) -> None:
    """Copy `state` into `module`, casting to the module's dtypes.

    Raises CheckpointError naming every missing key (except `allowed_missing`),
    every unexpected key and every shape mismatch.
    """
    own = module.state_dict()
    # Scalars saved as one-element vectors (e.g. BatchNorm num_batches_tracked written
    # through numpy) load as torch itself would load them.
    state = {k: (v.reshape(()) if k in own and own[k].dim() == 0 and v.numel() == 1 else v)
             for k, v in state.items()}
    allowed = set(allowed_missing)
    missing = sorted(k for k in own if k not in state and k not in allowed)
    unexpected = sorted(k for k in state if k not in own)
    wrong_shape = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in state
        if k in own and tuple(state[k].shape) != tuple(own[k].shape)
    )
    problems = []
    if missing:
        problems.append("missing keys: " + ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""))
    if unexpected:
        problems.append("unexpected keys: " + ", ".join(unexpected[:20]) + (" ..." if len(unexpected) > 20 else ""))
    if wrong_shape:
        problems.append("shape mismatch: " + "; ".join(wrong_shape[:20]))
    if problems:
        raise CheckpointError(f"{what}: " + " | ".join(problems))
    cast = {k: v.to(own[k].dtype) if v.is_floating_point() else v for k, v in state.items()}
    module.load_state_dict(cast, strict=False)


# --- component loaders -------------------------------------------------------------
# Each takes the folder of a local checkpoint (the layout of ResembleAI/chatterbox).
# Constructors never touch files or the network; these functions are the only place
# that reads weights. Device and dtype are chosen here, once.

VE_FILE = "ve.safetensors"
T3_FILE = "t3_cfg.safetensors"
S3GEN_FILE = "s3gen.safetensors"
TOKENIZER_FILE = "tokenizer.json"
CONDS_FILE = "conds.pt"
# T3 layers that run at every decoding step (float32 on CPU: packed, see models/packed_linear.py).
T3_PACKED_LAYERS = ("tfmr.layers", "speech_head")

# Buffers that the released s3gen.safetensors does not store; the module computes them.
S3GEN_TOLERATED_MISSING = ("tokenizer._mel_filters", "tokenizer.window")


def _built_without_init(factory):
    """Build a module skipping random parameter init (~20 s for T3 on 2 cores): every
    parameter is then overwritten by `load_strict`, which fails if any is missing."""
    from transformers.initialization import no_init_weights

    with no_init_weights():
        return factory()


def load_text_tokenizer(ckpt_dir: str | Path):
    from .text_tokenizer import TextTokenizer

    return TextTokenizer.from_file(Path(ckpt_dir) / TOKENIZER_FILE)


def load_voice_encoder(ckpt_dir: str | Path, device: str | torch.device = "cpu"):
    from .voice_encoder import VoiceEncoder, VoiceEncoderConfig

    model = _built_without_init(lambda: VoiceEncoder(VoiceEncoderConfig()))
    load_strict(model, read_safetensors(Path(ckpt_dir) / VE_FILE), VE_FILE)
    return model.to(device).eval()


def load_t3(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
):
    """T3 from a checkpoint folder or a single T3 safetensors file (fine-tunes ship only this)."""
    from .t3 import T3, T3Config

    path = Path(path)
    if path.is_dir():
        path = path / T3_FILE
    state = read_safetensors(path)
    if "text_emb.weight" not in state:
        raise CheckpointError(f"{path.name}: no text_emb.weight; is this a T3 checkpoint?")
    # Fine-tunes may extend the text vocabulary: read its size from the file.
    config = T3Config(text_tokens_dict_size=state["text_emb.weight"].shape[0])
    model = _built_without_init(lambda: T3(config))
    load_strict(model, state, path.name)
    del state
    model = model.to(device=device, dtype=dtype).eval()
    if model.device.type == "cpu" and dtype == torch.float32 and packing_available():
        # Decoding reads every backbone weight per token: oneDNN's layout reads them ~2x faster.
        pack_linears(model, under=T3_PACKED_LAYERS)
    return model


def load_s3gen(ckpt_dir: str | Path, device: str | torch.device = "cpu"):
    from .s3gen.s3gen import S3Gen

    model = _built_without_init(S3Gen)
    load_strict(model, read_safetensors(Path(ckpt_dir) / S3GEN_FILE), S3GEN_FILE,
                allowed_missing=S3GEN_TOLERATED_MISSING)
    model.fold_weight_norm()
    return model.to(device).eval()


# --- the Hugging Face Hub -----------------------------------------------------------
# The only network access of the project. huggingface_hub itself honours HF_HUB_OFFLINE
# (then only its local cache is read) and HF_TOKEN (gated repositories).

BASE_REPO_ID = "ResembleAI/chatterbox"
BASE_FILES = (VE_FILE, T3_FILE, S3GEN_FILE, TOKENIZER_FILE, CONDS_FILE)


class WeightsUnavailable(RuntimeError):
    """The checkpoint could not be fetched; the message says why and what to do."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model's T3 weights live; everything else comes from the base repository."""

    label: str
    repo_id: str
    t3_files: tuple[str, ...] = (T3_FILE,)  # tried in order
    gated: bool = False


MODEL_SOURCES: dict[str, ModelSource] = {
    "english": ModelSource("Chatterbox (English)", BASE_REPO_ID),
    # Only T3 was fine-tuned; the repository renamed its file once, so both names are tried.
    "german": ModelSource("Kartoffelbox (German)", "SebastianBodza/Kartoffelbox-v0.1",
                          t3_files=(T3_FILE, "t3_kartoffelbox.safetensors"), gated=True),
}


def _hub_token() -> str | None:
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None


def hub_download(repo_id: str, filename: str) -> Path:
    """One file from the Hub (or its local cache), with errors a user can act on."""
    from huggingface_hub import hf_hub_download
    import httpx
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError)

    try:
        return Path(hf_hub_download(repo_id, filename, token=_hub_token()))
    except GatedRepoError as exc:
        raise WeightsUnavailable(
            f"{repo_id} is gated: accept its licence on huggingface.co and set HF_TOKEN to a token "
            f"with access ({exc.__class__.__name__})") from exc
    except LocalEntryNotFoundError as exc:  # (a subclass of EntryNotFoundError)
        raise WeightsUnavailable(
            f"{repo_id}/{filename} is not in the local Hugging Face cache and cannot be downloaded "
            f"(offline or HF_HUB_OFFLINE=1). Download it once online, or pass a local folder "
            f"with --checkpoint") from exc
    except EntryNotFoundError:
        raise
    except RepositoryNotFoundError as exc:
        raise WeightsUnavailable(f"{repo_id} was not found on the Hub (or needs HF_TOKEN)") from exc
    except (HfHubHTTPError, httpx.HTTPError, OSError) as exc:  # bad token, network down mid-way, disk full
        raise WeightsUnavailable(
            f"could not fetch {repo_id}/{filename}: {exc.__class__.__name__}: {exc}. Check the connection "
            f"and HF_TOKEN, or pass a local folder with --checkpoint") from exc


def fetch_base_checkpoint(repo_id: str = BASE_REPO_ID) -> Path:
    """Download the five base files; returns the snapshot folder holding them."""
    paths = [hub_download(repo_id, name) for name in BASE_FILES]
    return paths[0].parent


def fetch_t3_weights(source: ModelSource) -> Path:
    """Path of the T3 safetensors file of `source`, trying its known file names in order."""
    from huggingface_hub.errors import EntryNotFoundError

    first_error: WeightsUnavailable | None = None
    for name in source.t3_files:
        try:
            return hub_download(source.repo_id, name)
        except EntryNotFoundError:
            continue
        except WeightsUnavailable as exc:  # e.g. offline with only the other name cached
            first_error = first_error or exc
    raise first_error or WeightsUnavailable(f"{source.repo_id} holds none of {', '.join(source.t3_files)}")


def resolve_t3_file(path: str | Path) -> Path:
    """A local T3 file, or the T3 file inside a folder (either known name)."""
    path = Path(path)
    if path.is_file():
        return path
    for name in MODEL_SOURCES["german"].t3_files:
        if (path / name).is_file():
            return path / name
    raise WeightsUnavailable(f"no T3 weights at {path} (looked for {', '.join(MODEL_SOURCES['german'].t3_files)})")


def looks_untrained(ckpt_dir: str | Path) -> bool:
    """True for a checkpoint whose voice encoder still holds its initial similarity scale
    (w = 10, b = -5), as the parity kit's fake checkpoint does; training moves both."""
    try:
        state = read_safetensors(Path(ckpt_dir) / VE_FILE, prefix="similarity_")
    except CheckpointError:
        return False
    return float(state["weight"].reshape(-1)[0]) == 10.0 and float(state["bias"].reshape(-1)[0]) == -5.0
