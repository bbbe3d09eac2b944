"""Checkpoint loading: strict key checks, S3Gen's tolerated gaps, and the Hub cache offline.

Everything runs on real files: edited copies of the fake checkpoint, and for T3 (2.1 GB)
hand-written sparse safetensors files that hold every T3 key at its real shape but occupy
almost no disk. Hub tests build a genuine Hugging Face cache folder and run our fetchers
in a subprocess, because huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE at import.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from transformers.initialization import no_init_weights

from conftest import CKPT_FILES
from models import loading
from models.registry import MODELS
from models.loading import (
    S3GEN_TOLERATED_MISSING,
    CheckpointError,
    load_strict,
    load_t3,
    load_voice_encoder,
    read_safetensors,
)

REPO = Path(__file__).resolve().parents[1]
KARTOFFEL_T3_FILE = "t3_kartoffelbox.safetensors"
FLOAT32_BYTES = 4


# --- voice encoder: small enough to copy and edit -------------------------------------

@pytest.fixture(scope="module")
def ve_state(fake_ckpt) -> dict[str, torch.Tensor]:
    return read_safetensors(fake_ckpt / loading.VE_FILE)


def write_ve(folder: Path, state: dict[str, torch.Tensor]) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / loading.VE_FILE))
    return folder


def test_voice_encoder_loads_untouched_file(fake_ckpt, ve_state):
    model = load_voice_encoder(fake_ckpt)
    own = model.state_dict()
    assert set(own) == set(ve_state)
    for name, tensor in ve_state.items():
        assert torch.equal(own[name], tensor), name
    assert not model.training


def test_voice_encoder_renamed_key_names_both_sides(tmp_path, ve_state):
    state = dict(ve_state)
    state["projection.weight"] = state.pop("proj.weight")
    with pytest.raises(CheckpointError) as err:
        load_voice_encoder(write_ve(tmp_path, state))
    message = str(err.value)
    assert "missing keys: proj.weight" in message
    assert "unexpected keys: projection.weight" in message


def test_voice_encoder_changed_shape_names_key_and_both_shapes(tmp_path, ve_state):
    state = dict(ve_state)
    n_out, n_in = state["lstm.weight_ih_l0"].shape
    state["lstm.weight_ih_l0"] = torch.zeros(n_out, 2 * n_in)  # as if made for 80 mel bands
    with pytest.raises(CheckpointError) as err:
        load_voice_encoder(write_ve(tmp_path, state))
    message = str(err.value)
    assert "lstm.weight_ih_l0" in message
    assert str((n_out, 2 * n_in)) in message and str((n_out, n_in)) in message
    assert "missing keys" not in message and "unexpected keys" not in message


def test_bfloat16_file_is_cast_to_the_model_dtype(tmp_path, ve_state):
    # Fine-tunes are often published in bf16; the model keeps its own float32.
    state = {k: v.bfloat16() for k, v in ve_state.items()}
    model = load_voice_encoder(write_ve(tmp_path, state))
    weight = model.state_dict()["proj.weight"]
    assert weight.dtype == torch.float32
    assert torch.equal(weight, state["proj.weight"].float())


def test_missing_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="ve.safetensors"):
        load_voice_encoder(tmp_path)


# --- T3: sparse full-shape files --------------------------------------------------------

def write_sparse_safetensors(path: Path, shapes: dict[str, tuple[int, ...]],
                             data: dict[str, torch.Tensor] | None = None) -> None:
    """A float32 safetensors file with tensors of `shapes`: zeros except those in `data`.

    The data section is left as a hole (file truncated to its full length), so a 2 GB
    state costs no disk and no write time; safetensors reads the hole as zeros.
    """
    data = data or {}
    entries, offset = {}, 0
    for name in sorted(shapes):
        size = math.prod(shapes[name]) * FLOAT32_BYTES
        entries[name] = {"dtype": "F32", "shape": list(shapes[name]), "data_offsets": [offset, offset + size]}
        offset += size
    header = json.dumps({"__metadata__": {"format": "pt"}, **entries}).encode()
    header += b" " * (-len(header) % 8)  # the format aligns the data section to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        start = f.tell()
        for name, tensor in data.items():
            assert tuple(tensor.shape) == tuple(shapes[name]), name
            f.seek(start + entries[name]["data_offsets"][0])
            f.write(tensor.float().contiguous().numpy().tobytes())
        f.truncate(start + offset)


@pytest.fixture(scope="module")
def t3_shapes(fake_ckpt) -> dict[str, tuple[int, ...]]:
    """Every key and shape of the full-size T3 file, read from its header only."""
    with safe_open(str(fake_ckpt / loading.T3_FILE), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def load_t3_fast(path: Path):
    # load_t3 itself skips the random init that loading overwrites.
    return load_t3(path)


def test_t3_renamed_key_names_missing_and_unexpected(tmp_path, t3_shapes):
    shapes = dict(t3_shapes)
    shapes["tfmr.layers.7.self_attn.q.weight"] = shapes.pop("tfmr.layers.7.self_attn.q_proj.weight")
    write_sparse_safetensors(tmp_path / loading.T3_FILE, shapes)
    with pytest.raises(CheckpointError) as err:
        load_t3_fast(tmp_path)  # a checkpoint folder
    message = str(err.value)
    assert "missing keys: tfmr.layers.7.self_attn.q_proj.weight |" in message
    assert "unexpected keys: tfmr.layers.7.self_attn.q.weight" in message
    assert "shape mismatch" not in message


def test_t3_missing_key_in_otherwise_complete_file(tmp_path, t3_shapes):
    shapes = {k: v for k, v in t3_shapes.items() if k != "cond_enc.emotion_adv_fc.weight"}
    path = tmp_path / "t3_finetune.safetensors"
    write_sparse_safetensors(path, shapes)
    with pytest.raises(CheckpointError) as err:
        load_t3_fast(path)  # a single fine-tune file
    assert str(err.value) == "t3_finetune.safetensors: missing keys: cond_enc.emotion_adv_fc.weight"


def test_t3_text_vocabulary_size_comes_from_text_emb(tmp_path, t3_shapes):
    # text_emb says 710 ids, text_head still has the 704 of the base model: the model is
    # built with 710, so it is text_head that mismatches.
    dim = t3_shapes["text_emb.weight"][1]
    shapes = {**t3_shapes, "text_emb.weight": (710, dim)}
    path = tmp_path / "t3.safetensors"
    write_sparse_safetensors(path, shapes)
    with pytest.raises(CheckpointError) as err:
        load_t3_fast(path)
    message = str(err.value)
    assert f"text_head.weight: file {t3_shapes['text_head.weight']} vs model {(710, dim)}" in message
    assert "text_emb.weight" not in message


def test_t3_needs_text_emb(fake_ckpt):
    with pytest.raises(CheckpointError, match="text_emb.weight"):
        load_t3(fake_ckpt / loading.VE_FILE)


@pytest.mark.slow  # materialises two full-size T3 states (~4-5 GB) for a moment
def test_t3_with_extended_vocabulary_loads(tmp_path, t3_shapes):
    dim = t3_shapes["text_emb.weight"][1]
    shapes = {**t3_shapes, "text_emb.weight": (710, dim), "text_head.weight": (710, dim)}
    text_emb = torch.randn(710, dim, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "t3.safetensors"
    write_sparse_safetensors(path, shapes, {"text_emb.weight": text_emb})
    model = load_t3_fast(path)
    assert model.config.text_tokens_dict_size == 710
    assert model.text_head.out_features == 710
    assert torch.equal(model.text_emb.weight, text_emb)
    # every other tensor came from the file's zeros, not from leftover memory
    state = model.state_dict()  # packed layers included (they hold no parameters)
    assert set(state) == set(shapes)
    assert all(not v.any() for k, v in state.items() if k != "text_emb.weight")
    assert not model.training


# --- S3Gen: the two buffers the released file lacks ----------------------------------------

@pytest.fixture(scope="module")
def s3_tokenizer_case(fake_ckpt):
    """A module holding the real S3Tokenizer under S3Gen's name, and the file's `tokenizer.*`."""
    from models.s3gen.tokenizer import S3Tokenizer

    holder = nn.Module()
    with no_init_weights():  # every parameter is loaded (or the load fails) below
        holder.tokenizer = S3Tokenizer()
    state = {f"tokenizer.{k}": v for k, v in read_safetensors(fake_ckpt / loading.S3GEN_FILE, "tokenizer.").items()}
    released = {k: v for k, v in state.items() if k not in S3GEN_TOLERATED_MISSING}
    return holder, state, released


def test_tolerated_names_are_the_tokenizer_buffers(s3_tokenizer_case):
    holder, state, released = s3_tokenizer_case
    buffers = {f"tokenizer.{name}" for name, _ in holder.tokenizer.named_buffers()}
    assert set(S3GEN_TOLERATED_MISSING) <= buffers
    assert len(state) - len(released) == len(S3GEN_TOLERATED_MISSING)
    # Tolerating their absence is only safe because the module computes what the file holds.
    own = holder.state_dict()
    for name in S3GEN_TOLERATED_MISSING:
        torch.testing.assert_close(own[name], state[name], rtol=0, atol=1e-6)


def test_released_s3gen_layout_loads_without_the_buffers(s3_tokenizer_case):
    holder, _, released = s3_tokenizer_case
    before = {k: holder.state_dict()[k].clone() for k in S3GEN_TOLERATED_MISSING}
    load_strict(holder, released, "s3gen.safetensors", allowed_missing=S3GEN_TOLERATED_MISSING)
    own = holder.state_dict()
    for name, tensor in released.items():
        assert torch.equal(own[name], tensor), name
    for name, value in before.items():
        assert torch.equal(own[name], value), f"{name} changed though the file lacks it"


def test_buffers_are_missing_keys_unless_tolerated(s3_tokenizer_case):
    holder, _, released = s3_tokenizer_case
    with pytest.raises(CheckpointError) as err:
        load_strict(holder, released, "s3gen.safetensors")
    assert "missing keys: tokenizer._mel_filters, tokenizer.window" in str(err.value)


def test_tolerance_covers_only_the_listed_keys(s3_tokenizer_case):
    holder, _, released = s3_tokenizer_case
    gap = "tokenizer.quantizer._codebook.project_down.bias"
    state = {k: v for k, v in released.items() if k != gap}
    with pytest.raises(CheckpointError) as err:
        load_strict(holder, state, "s3gen.safetensors", allowed_missing=S3GEN_TOLERATED_MISSING)
    assert str(err.value) == f"s3gen.safetensors: missing keys: {gap}"


def test_tolerated_buffers_are_read_when_present(s3_tokenizer_case):
    holder, state, _ = s3_tokenizer_case
    # A file that stores the buffers (as the fake one does) is not an error; its values win.
    doctored = dict(state)
    doctored["tokenizer.window"] = state["tokenizer.window"] * 0.5
    load_strict(holder, doctored, "s3gen.safetensors", allowed_missing=S3GEN_TOLERATED_MISSING)
    assert torch.equal(holder.tokenizer.window, doctored["tokenizer.window"])


# --- the Hub, offline, from a real cache layout -----------------------------------------

OFFLINE_SCRIPT = """
import json, sys
from models import loading
from models.registry import MODELS
results = []
for expr in sys.argv[1:]:
    try:
        results.append({"value": str(eval(expr, {"loading": loading, "MODELS": MODELS}))})
    except Exception as exc:
        results.append({"error": type(exc).__name__, "message": str(exc)})
print(json.dumps(results))
"""


def make_hub_cache(cache: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """Lay out `files` as huggingface_hub's cache holds one commit of `repo_id`; returns its snapshot.

    <cache>/models--<owner>--<name>/refs/main holds the commit id; snapshots/<commit>/<file>
    are relative links into blobs/, which here link to the fake checkpoint's files.
    """
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()  # any 40-hex id
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)  # no newline: the hub reads the file verbatim
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for name, target in files.items():
        # Real blobs are named by etag; offline lookups only follow the snapshot link.
        blob = repo / "blobs" / hashlib.sha256(f"{repo_id}/{name}".encode()).hexdigest()
        blob.symlink_to(target.resolve())
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


def run_offline(cache: Path, home: Path, *exprs: str) -> list[dict]:
    """Evaluate `exprs` in a fresh interpreter whose huggingface_hub sees only `cache`, offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HUB_CACHE=str(cache), HF_HOME=str(home), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, *exprs], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


BOTH_NAMES_REPO = "someone/t3-both-names"


@pytest.fixture(scope="module")
def cached_hub(fake_ckpt, tmp_path_factory):
    """One offline run against a cache holding the base repo and two T3-only repos."""
    root = tmp_path_factory.mktemp("hub")
    cache = root / "hub-cache"
    base = make_hub_cache(cache, loading.BASE_REPO_ID, {name: fake_ckpt / name for name in CKPT_FILES})
    german = MODELS["german"].t3.files
    make_hub_cache(cache, german.repo_id, {KARTOFFEL_T3_FILE: fake_ckpt / loading.T3_FILE})
    t3 = fake_ckpt / loading.T3_FILE
    make_hub_cache(cache, BOTH_NAMES_REPO, {loading.T3_FILE: t3, KARTOFFEL_T3_FILE: t3})
    both = f"loading.HubFiles({BOTH_NAMES_REPO!r}, {german.names!r})"
    results = run_offline(cache, root / "hf-home",
                          "loading.WeightSources().path(MODELS['english'].t3.files).parent",
                          "loading.fetch_file(MODELS['german'].t3.files)",
                          f"loading.fetch_file({both})")
    return base, dict(zip(("base", "german", "both"), results))


def test_base_files_come_from_the_cached_snapshot(cached_hub, fake_ckpt):
    snapshot, results = cached_hub
    assert "value" in results["base"], results["base"]
    folder = Path(results["base"]["value"])
    assert folder.resolve() == snapshot.resolve()
    for name in CKPT_FILES:
        assert (folder / name).resolve() == (fake_ckpt / name).resolve(), name


def test_german_t3_falls_back_to_the_renamed_file(cached_hub, fake_ckpt):
    _, results = cached_hub
    assert "value" in results["german"], results["german"]
    path = Path(results["german"]["value"])
    assert path.name == KARTOFFEL_T3_FILE
    assert "models--SebastianBodza--Kartoffelbox-v0.1" in path.parts
    assert path.resolve() == (fake_ckpt / loading.T3_FILE).resolve()


def test_first_listed_t3_name_wins_when_both_are_cached(cached_hub):
    _, results = cached_hub
    assert "value" in results["both"], results["both"]
    assert Path(results["both"]["value"]).name == loading.T3_FILE


def test_empty_cache_offline_says_how_to_proceed(tmp_path):
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    results = run_offline(cache, tmp_path / "hf-home",
                          "loading.WeightSources().path(MODELS['english'].t3.files)",
                          "loading.fetch_file(MODELS['german'].t3.files)")
    for result in results:
        assert result.get("error") == "WeightsUnavailable", result
        assert "HF_HUB_OFFLINE" in result["message"] and "--checkpoint" in result["message"]
    assert loading.BASE_REPO_ID in results[0]["message"]
    assert MODELS["german"].t3.files.repo_id in results[1]["message"]
    assert not any(cache.iterdir()), "an offline lookup must not write into the cache"


def test_turbo_tokenizer_is_fetched_with_its_companion_files(fake_turbo_ckpt, tmp_path):
    """vocab.json names the component; the other four tokenizer files come into the same snapshot."""
    files = MODELS["turbo"].text.files
    names = (*files.names, *files.companions)
    full, partial = tmp_path / "full", tmp_path / "partial"
    snapshot = make_hub_cache(full, files.repo_id, {n: fake_turbo_ckpt / n for n in names})
    make_hub_cache(partial, files.repo_id, {n: fake_turbo_ckpt / n for n in names[:-1]})
    expr = "loading.WeightSources().path(MODELS['turbo'].text.files)"
    (found,) = run_offline(full, tmp_path / "home-full", expr)
    assert Path(found["value"]) == snapshot / "vocab.json", found
    (missing,) = run_offline(partial, tmp_path / "home-partial", expr)
    assert missing.get("error") == "WeightsUnavailable" and names[-1] in missing["message"], missing
