"""Reading safetensors files and loading them into modules without silent gaps.

Every component loads through `load_strict`: a missing, unexpected or mis-shaped key
is an error that names the key, so a renamed layer can never leave random weights in
place. The only tolerated gaps are the ones a caller lists explicitly.
"""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence

import torch
from safetensors import safe_open
from torch import nn

from . import registry
from .packed_linear import pack_linears, packing_available
from .registry import HubFiles

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .fast_modes import LoadOptions


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
# Each takes a component's file (or the checkpoint folder holding it under its released
# name). Constructors never touch files or the network; these functions are the only place
# that reads weights. Device, dtype and the speed options are applied here, once.

VE_FILE, T3_FILE, S3GEN_FILE, TOKENIZER_FILE, CONDS_FILE = (
    registry.VE_FILE, registry.T3_FILE, registry.S3GEN_FILE, registry.TOKENIZER_FILE, registry.CONDS_FILE)
# T3 layers that run at every decoding step (float32 on CPU: packed, see models/packed_linear.py).
T3_PACKED_LAYERS = ("tfmr.layers", "speech_head")
# Layers of a Llama block reading the same input, packed as one weight each (one call per step).
T3_PACKED_GROUPS = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}

# Buffers that the released s3gen.safetensors does not store; the module computes them.
S3GEN_TOLERATED_MISSING = ("tokenizer._mel_filters", "tokenizer.window")


def _built_without_init(factory):
    """Build a module skipping random parameter init (~20 s for T3 on 2 cores): every
    parameter is then overwritten by `load_strict`, which fails if any is missing."""
    from transformers.initialization import no_init_weights

    with no_init_weights():
        return factory()


def _in_folder(path: str | Path, name: str) -> Path:
    path = Path(path)
    return path / name if path.is_dir() else path


def load_text_tokenizer(path: str | Path):
    from .text_tokenizer import TextTokenizer

    return TextTokenizer.from_file(_in_folder(path, TOKENIZER_FILE))


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """A component's tensors: safetensors, or a `.pt` pickle of the multilingual release read
    with torch.load(weights_only=True) (no code execution)."""
    if path.suffix == ".pt":
        from .multilingual.loading import read_pt_state

        return read_pt_state(path)
    return read_safetensors(path)


def load_voice_encoder(path: str | Path, device: str | torch.device = "cpu"):
    """The voice encoder from ve.safetensors or ve.pt (a file, or a folder holding ve.safetensors)."""
    from .voice_encoder import VoiceEncoder, VoiceEncoderConfig

    path = _in_folder(path, VE_FILE)
    model = _built_without_init(lambda: VoiceEncoder(VoiceEncoderConfig()))
    load_strict(model, read_state(path), path.name)
    return model.to(device).eval()


def read_t3(path: Path, build: Callable[[int], nn.Module]) -> nn.Module:
    """A T3 of any architecture from its safetensors file, strictly (`load_strict`), on the CPU.

    `build(text_vocab_size)` makes the module without touching files: a fine-tune may extend
    the text vocabulary, so its size comes from the file's `text_emb.weight`. Raises
    CheckpointError for a file that is not a T3 checkpoint or does not fit the module.
    """
    state = read_safetensors(path)
    if "text_emb.weight" not in state:
        raise CheckpointError(f"{path.name}: no text_emb.weight; is this a T3 checkpoint?")
    model = _built_without_init(lambda: build(state["text_emb.weight"].shape[0]))
    load_strict(model, state, path.name)
    return model


def load_t3(
    path: str | Path,
    device: str | torch.device = "cpu",
    options: "LoadOptions | None" = None,
):
    """T3 from a checkpoint folder or a single T3 safetensors file (fine-tunes ship only this),
    built with the T3 speed options of `options` (models/fast_modes.py)."""
    from .fast_modes import LoadOptions, build_t3
    from .t3 import T3, T3Config

    options = options or LoadOptions()
    model = read_t3(_in_folder(path, T3_FILE), lambda vocab: T3(T3Config(text_tokens_dict_size=vocab)))
    model = model.to(device=device).eval()
    if options.plain_t3 and model.device.type == "cpu" and packing_available():
        # Decoding reads every backbone weight per token: oneDNN's layout reads them ~2x faster.
        pack_linears(model, under=T3_PACKED_LAYERS, groups=T3_PACKED_GROUPS)
        return model
    return build_t3(model, options)


def load_s3gen(path: str | Path, device: str | torch.device = "cpu", flow_steps: int = 10,
               options: "LoadOptions | None" = None):
    """S3Gen from s3gen.safetensors or s3gen.pt (or a checkpoint folder), decoding with `flow_steps` Euler steps
    (`options.flow_steps` wins when set) whether it decodes whole or in streamed blocks."""
    from .fast_modes import LoadOptions, build_s3gen
    from .s3gen.s3gen import S3Gen

    options = options or LoadOptions()
    path = _in_folder(path, S3GEN_FILE)
    steps = options.flow_steps or flow_steps
    model = _built_without_init(lambda: S3Gen(n_timesteps=steps))
    # s3gen.pt holds every entry (the reference loads it strictly); the safetensors lacks two buffers.
    tolerated = () if path.suffix == ".pt" else S3GEN_TOLERATED_MISSING
    load_strict(model, read_state(path), path.name, allowed_missing=tolerated)
    model.fold_weight_norm()
    return build_s3gen(model.to(device).eval(), options)


def _speed_options(spec: "registry.T3Spec | registry.S3GenSpec", options: "LoadOptions") -> "LoadOptions":
    """The options `spec`'s component is built with (`spec.speed_options`), logging each left out."""
    options, left_out = spec.speed_options(options)
    for name, why in left_out.items():
        log.info("%s: %s left out (%s)", spec.files.names[0], name, why)
    return options


@functools.singledispatch
def build_component(spec, path: Path, device: torch.device, options: "LoadOptions"):
    """The module (or object) a registry component spec describes, from its file at `path`.

    One builder per spec type: a new kind of component registers its own.
    """
    raise CheckpointError(f"no builder for a {type(spec).__name__}")


@build_component.register
def _(spec: registry.T3Spec, path, device, options):
    options = _speed_options(spec, options)
    if spec.architecture == "gpt2":
        from .loading_turbo import load_turbo_t3

        return load_turbo_t3(path, device, int8=options.quantize == "int8")
    if spec.architecture != "llama":
        raise CheckpointError(f"T3 architecture {spec.architecture!r} has no builder")
    return load_t3(path, device, options)


@build_component.register
def _(spec: registry.S3GenSpec, path, device, options):
    options = _speed_options(spec, options)
    if spec.meanflow:
        from .loading_turbo import load_turbo_s3gen

        return load_turbo_s3gen(path, device, options.flow_steps or spec.flow_steps)
    return load_s3gen(path, device, spec.flow_steps, options)


@build_component.register
def _(spec: registry.VoiceEncoderSpec, path, device, options):
    return load_voice_encoder(path, device)


@build_component.register
def _(spec: registry.TextSpec, path, device, options):
    if spec.frontend == "turbo":
        from .loading_turbo import load_turbo_tokenizer

        return load_turbo_tokenizer(path)
    if spec.frontend == "multilingual":
        from .multilingual.loading import load_tokenizer

        return load_tokenizer(path.parent)  # the vocabulary with Cangjie5_TC.json beside it
    if spec.frontend != "english":
        raise CheckpointError(f"text front-end {spec.frontend!r} has no builder")
    return load_text_tokenizer(path)


@build_component.register
def _(spec: registry.BuiltinVoiceSpec, path, device, options):
    from .tts import Conditionals

    return Conditionals.from_file(path, device)


# --- the Hugging Face Hub -----------------------------------------------------------
# The only network access of the project. huggingface_hub itself honours HF_HUB_OFFLINE
# (then only its local cache is read) and HF_TOKEN (gated repositories).

BASE_REPO_ID = registry.BASE_REPO_ID


class WeightsUnavailable(RuntimeError):
    """The checkpoint could not be fetched; the message says why and what to do."""


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


def fetch_file(files: HubFiles) -> Path:
    """Path of a component's file on the Hub, trying its known file names in order."""
    from huggingface_hub.errors import EntryNotFoundError

    first_error: WeightsUnavailable | None = None
    for name in files.names:
        try:
            return hub_download(files.repo_id, name)
        except EntryNotFoundError:
            continue
        except WeightsUnavailable as exc:  # e.g. offline with only the other name cached
            first_error = first_error or exc
    raise first_error or WeightsUnavailable(f"{files.repo_id} holds none of {', '.join(files.names)}")


class WeightSources:
    """Where component files come from: local stand-ins for Hub repositories, else the Hub.

    `local` maps a repository id to a folder with that repository's layout, or to a single
    file that stands for the repository's one component (a fine-tune shipping only T3), or
    to several folders holding parts of it (e.g. the English and the multilingual files of
    ResembleAI/chatterbox), searched in order for each file name in turn.
    With `hub=False` a repository without a local stand-in is WeightsUnavailable.
    """

    def __init__(self, local: Mapping[str, str | Path | Sequence[str | Path]] | None = None, hub: bool = True):
        self.local = {repo: tuple(Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths))
                      for repo, paths in (local or {}).items()}
        self.hub = hub

    def path(self, files: HubFiles) -> Path:
        """The local file of `files` (downloading it if needed), its companions beside it.
        Raises CheckpointError for local folders without any of its names or with a
        companion missing, WeightsUnavailable when it cannot be had."""
        stand_ins = self.local.get(files.repo_id)
        if stand_ins:
            if len(stand_ins) == 1 and stand_ins[0].is_file():
                return stand_ins[0]
            for name in files.names:  # an earlier name wins in any folder (the files other models share)
                for folder in stand_ins:
                    if (folder / name).is_file():
                        missing = [c for c in files.companions if not (folder / c).is_file()]
                        if missing:
                            raise CheckpointError(f"{folder} lacks {', '.join(missing)} ({files.repo_id})")
                        return folder / name
            where = ", ".join(str(f) for f in stand_ins)
            raise CheckpointError(f"{where} hold(s) none of {', '.join(files.names)} ({files.repo_id})")
        if not self.hub:
            raise WeightsUnavailable(f"{files.repo_id} has no local copy and Hub downloads are off")
        path = fetch_file(files)
        for name in files.companions:  # the Hub cache keeps a repository's files in one snapshot folder
            hub_download(files.repo_id, name)
        return path


def looks_untrained(ckpt_dir: str | Path) -> bool:
    """True for a checkpoint whose voice encoder still holds its initial similarity scale
    (w = 10, b = -5), as the parity kit's fake checkpoint does; training moves both."""
    try:
        state = read_safetensors(Path(ckpt_dir) / VE_FILE, prefix="similarity_")
    except CheckpointError:
        return False
    return float(state["weight"].reshape(-1)[0]) == 10.0 and float(state["bias"].reshape(-1)[0]) == -5.0
