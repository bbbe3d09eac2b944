"""The multilingual file set on the fake checkpoint: strict loading of the .pt files, a
representative subset of the multilingual goldens (all of them: tools/parity.py), and one
end-to-end generation."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from models.loading import CheckpointError
from models.multilingual import loading


@pytest.fixture(scope="module")
def ve_state(fake_mtl_ckpt):
    return loading.read_pt_state(fake_mtl_ckpt / loading.VE_FILE)


def test_voice_encoder_pt_loads_strictly(tmp_path, fake_mtl_ckpt, ve_state):
    assert len(ve_state) == 16
    loading.load_voice_encoder(fake_mtl_ckpt)
    for broken in ({k: v for k, v in ve_state.items() if k != "proj.weight"},
                   {**ve_state, "extra.weight": torch.zeros(1)}):
        torch.save(broken, tmp_path / loading.VE_FILE)
        with pytest.raises(CheckpointError, match="proj.weight|extra.weight"):
            loading.load_voice_encoder(tmp_path)


def test_pickles_with_code_are_refused(tmp_path):
    torch.save({"weight": torch.zeros(1), "hook": print}, tmp_path / loading.VE_FILE)
    with pytest.raises(CheckpointError, match="not a loadable state dict"):
        loading.read_pt_state(tmp_path / loading.VE_FILE)


def test_old_weight_norm_names_are_mapped(tmp_path):
    torch.save({"conv.weight_g": torch.ones(2), "conv.weight_v": torch.zeros(2)}, tmp_path / "x.pt")
    assert sorted(loading.read_pt_state(tmp_path / "x.pt")) == [
        "conv.parametrizations.weight.original0", "conv.parametrizations.weight.original1"]


def test_tokenizer_files(tmp_path, fake_mtl_ckpt, parity_dir):
    assert loading.find_cangjie(fake_mtl_ckpt) == fake_mtl_ckpt / loading.CANGJIE_FILE
    shutil.copy(fake_mtl_ckpt / loading.TOKENIZER_FILE, tmp_path)
    tok = loading.load_tokenizer(tmp_path, optional_packages=False)  # no Cangjie table: a note, not an error
    assert any("Cangjie" in n for n in tok.notes_for("zh"))
    cache = tmp_path / "models--ResembleAI--chatterbox" / "snapshots" / "abc"
    cache.mkdir(parents=True)
    shutil.copy(fake_mtl_ckpt / loading.CANGJIE_FILE, cache)
    assert loading.find_cangjie(tmp_path) == cache / loading.CANGJIE_FILE
    shutil.copy(parity_dir / "tokenizer.json", tmp_path / loading.TOKENIZER_FILE)  # the English vocabulary
    with pytest.raises(CheckpointError, match="2454"):
        loading.load_tokenizer(tmp_path)


@pytest.fixture(scope="module")
def mtl_ctx(fake_mtl_ckpt):
    from tools.parity import Context

    torch.set_grad_enabled(False)
    ctx = Context(fake_mtl_ckpt)
    assert ctx.family == "multilingual"
    return ctx


def _replay(parity_dir, names, ctx):
    from tools.parity import Report, replay_file

    report = Report()
    with torch.inference_mode():
        for name in names:
            replay_file(parity_dir / "multilingual" / "golden" / name, ctx, report)
    assert report.failed == 0 and report.skipped == 0 and report.passed > 0, "\n".join(report.lines)
    return report


@pytest.mark.slow
def test_goldens_conditioning_teacher_forced_decoding(parity_dir, mtl_ctx):
    _replay(parity_dir, ["e_t3_cond.npz", "f_t3_teacher_forced_zh.npz", "g_t3_greedy_short.npz",
                         "g_t3_sampled_ms.npz"], mtl_ctx)


@pytest.mark.slow
def test_golden_end_to_end(parity_dir, mtl_ctx):
    _replay(parity_dir, ["j_e2e_generate.npz"], mtl_ctx)


@pytest.mark.slow
def test_english_goldens_are_refused_on_a_multilingual_checkpoint(parity_dir, mtl_ctx):
    from tools.parity import Report, replay_file

    report = Report()
    replay_file(parity_dir / "golden" / "b_text_en.npz", mtl_ctx, report)
    assert report.failed == 1 and "golden of the english model" in report.lines[0]


@pytest.mark.slow
def test_generate_japanese_end_to_end(mtl_ctx, fake_mtl_ckpt):
    from models.multilingual.tts import MultilingualTTS
    from models.tts import Conditionals

    builtin = Conditionals.from_file(fake_mtl_ckpt / loading.CONDS_FILE)
    tts = MultilingualTTS(mtl_ctx.t3, mtl_ctx.s3gen, mtl_ctx.voice_encoder,
                          loading.load_tokenizer(fake_mtl_ckpt), builtin)
    result = tts.synthesize("今日は良い天気ですね。", "ja", seed=3, max_new_tokens=40, watermark=False)
    assert result.language == "ja" and result.texts[0].ids[0] == 711  # [ja]
    assert "今日" not in result.texts[0].language_text  # read as kana
    assert 0 < result.n_speech_tokens <= 40 and len(result.wav) > 0 and np.all(np.isfinite(result.wav))
    assert result.notes == tts.notes_for("ja")
    with pytest.raises(ValueError, match="unsupported language"):
        tts.synthesize("Hallo.", "xx")
