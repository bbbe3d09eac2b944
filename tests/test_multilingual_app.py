"""Chatterbox Multilingual served by the Space's one pipeline: its registry entry, the
language a request speaks, per-language planning, weight sources holding the multilingual
files, and (slow) the app's generation path speaking Japanese on the fake checkpoint with
the tokens and audio of the parity-proven MultilingualTTS."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from models import loading
from models.multilingual.chunking import split_text
from models.multilingual.decoding import DEFAULT_EXAGGERATION, DEFAULT_PARAMS
from models.multilingual.languages import LANGUAGE_IDS, LANGUAGES, language_id
from models.multilingual.planning import plan_request
from models.multilingual.text import MultilingualTokenizer
from models.registry import BASE_REPO_ID, MODELS
from models.fast_modes import Int8Linear, LoadOptions
from models.residency import ModelPool
from models.tts import ChatterboxTTS


def test_registry_entry_is_the_multilingual_release():
    entry, english = MODELS["multilingual"], MODELS["english"]
    assert entry.t3.files.names == ("t3_mtl23ls_v2.safetensors",) and entry.t3.files.repo_id == BASE_REPO_ID
    assert entry.t3.alignment_analyzer and not english.t3.alignment_analyzer
    assert entry.text.frontend == "multilingual"
    assert entry.text.files.names == ("grapheme_mtl_merged_expanded_v1.json",)
    assert entry.text.files.companions == ("Cangjie5_TC.json",)
    # Voice encoder, S3Gen and built-in voice are English's (built once); the release's pickles are
    # the second name of each.
    assert (entry.voice_encoder, entry.s3gen, entry.builtin_voice, entry.prompt) == (
        english.voice_encoder, english.s3gen, english.builtin_voice, english.prompt)
    assert entry.voice_encoder.files.names[1] == "ve.pt" and entry.s3gen.files.names[1] == "s3gen.pt"
    assert entry.languages == LANGUAGE_IDS and entry.takes_language and not english.takes_language
    assert not entry.gated
    # The reference multilingual generate()'s defaults.
    rec = entry.recommended
    assert (rec.temperature, rec.repetition_penalty, rec.min_p, rec.top_p, rec.cfg_weight, rec.exaggeration) == (
        DEFAULT_PARAMS.temperature, DEFAULT_PARAMS.repetition_penalty, DEFAULT_PARAMS.min_p, DEFAULT_PARAMS.top_p,
        DEFAULT_PARAMS.cfg_weight, DEFAULT_EXAGGERATION)
    assert rec.repetition_penalty == 2.0
    assert "Multilingual" in MODELS["german"].about  # the second German option is named there


def test_request_language_is_resolved_per_model():
    entry = MODELS["multilingual"]
    assert entry.resolve_language("ja") == "ja" and entry.resolve_language("Japanese") == "ja"
    assert entry.resolve_language(" 日本語 ") == "ja" and language_id("ZH") == "zh"
    with pytest.raises(ValueError, match="needs a language"):
        entry.resolve_language(None)
    with pytest.raises(ValueError, match="unsupported language 'xx'.*ar, da, de"):
        entry.resolve_language("xx")
    assert MODELS["english"].resolve_language(None) == "en" and MODELS["german"].resolve_language("German") == "de"
    with pytest.raises(ValueError, match="speaks en, not 'fr'; Multilingual"):
        MODELS["english"].resolve_language("fr")


def test_plan_chunks_by_the_request_language(mtl_tok):
    sentence = LANGUAGES["zh"].example
    text = " ".join([sentence] * 12)
    plan = plan_request(text, "zh", mtl_tok, max_new_tokens=400)
    assert len(plan.chunks) == len(split_text(text, "zh")) > 1
    assert [c.index for c in plan.chunks] == list(range(len(plan.chunks)))
    for chunk in plan.chunks:
        assert chunk.tokens.language == "zh" and chunk.tokens.normalized_text.endswith("。")
        assert 0 < chunk.token_limit <= 400
    assert plan.notes == mtl_tok.notes_for("zh")
    assert plan_request("Hallo Welt.", "de", mtl_tok).chunks[0].tokens.ids[0] == mtl_tok.bpe.tokenizer.token_to_id("[de]")


def test_plan_leaves_typed_tags_out_and_refuses_nothing_to_say(mtl_tok):
    plan = plan_request("Bonjour [en] tout le monde [cj_a].", "fr", mtl_tok)
    assert "[" not in plan.normalized_text and plan.chunks[0].tokens.tagged_text.count("[fr]") == 1
    assert plan.notes[0] == "Tags this model does not know were left out: [en], [cj_a]"
    with pytest.raises(ValueError, match="nothing to speak"):
        plan_request("[laugh] ...", "fr", mtl_tok)
    with pytest.raises(ValueError, match="choose a language"):
        plan_request("Hello.", "", mtl_tok)


def test_weight_sources_search_several_folders(tmp_path):
    english, mtl = tmp_path / "english", tmp_path / "mtl"
    english.mkdir(), mtl.mkdir()
    for name in ("ve.safetensors", "conds.pt"):
        (english / name).write_bytes(b"x")
    for name in ("ve.pt", "conds.pt", "grapheme_mtl_merged_expanded_v1.json"):
        (mtl / name).write_bytes(b"x")
    sources = loading.WeightSources({BASE_REPO_ID: [english, mtl]}, hub=False)
    entry = MODELS["multilingual"]
    # The first name wins wherever it is: the English voice encoder is shared, not the pickle.
    assert sources.path(entry.voice_encoder.files) == english / "ve.safetensors"
    assert loading.WeightSources({BASE_REPO_ID: mtl}, hub=False).path(entry.voice_encoder.files) == mtl / "ve.pt"
    with pytest.raises(loading.CheckpointError, match="lacks Cangjie5_TC.json"):
        sources.path(entry.text.files)
    (mtl / "Cangjie5_TC.json").write_bytes(b"x")
    assert sources.path(entry.text.files) == mtl / "grapheme_mtl_merged_expanded_v1.json"
    with pytest.raises(loading.CheckpointError, match="none of t3_mtl23ls_v2.safetensors"):
        sources.path(entry.t3.files)


def test_language_notes_build_only_the_text_front_end(mtl_kit, mtl_tok):
    pool = ModelPool(loading.WeightSources({BASE_REPO_ID: mtl_kit}, hub=False), "cpu")
    tts = ChatterboxTTS(pool)
    assert tts.language_notes("Chinese") == mtl_tok.notes_for("zh")
    assert tts.language_notes("fr") == ()
    assert pool.loads == {f"text {BASE_REPO_ID}": 1} and pool.resident == ()
    tts.language_notes("he")
    assert pool.loads == {f"text {BASE_REPO_ID}": 1}  # built once
    with pytest.raises(ValueError, match="unsupported language"):
        tts.language_notes("xx")


# --- the app's pipeline on the fake multilingual checkpoint --------------------------------------

JAPANESE = LANGUAGES["ja"].example
CAP = 12  # speech tokens: the chunk is cut, as the fake model reads the whole text in ~40


@pytest.fixture(scope="module")
def mtl_pipeline(fake_mtl_ckpt):
    """The pipeline on the multilingual files alone (ve.pt, s3gen.pt through the shared specs)."""
    torch.set_grad_enabled(False)
    return ChatterboxTTS.from_local(fake_mtl_ckpt, device="cpu", model="multilingual")


@pytest.mark.slow
def test_the_app_pipeline_speaks_japanese_as_multilingual_tts(mtl_pipeline, fake_mtl_ckpt):
    from models.multilingual.tts import MultilingualTTS

    tts = mtl_pipeline
    m = tts.model("multilingual")
    assert isinstance(m.text, MultilingualTokenizer) and m.t3.config.text_tokens_dict_size == 2454
    params = replace(m.entry.recommended, seed=11)
    result = tts.synthesize(JAPANESE, None, params, model="multilingual", language="Japanese",
                            max_new_tokens=CAP, watermark=False)
    engine = MultilingualTTS(m.t3, m.s3gen, m.voice_encoder, m.text, m.builtin_voice)
    expected = engine.synthesize(JAPANESE, "ja", seed=11, max_new_tokens=CAP, watermark=False)
    assert result.n_chunks == 1 and result.seed == 11
    assert result.n_speech_tokens == expected.n_speech_tokens == CAP and result.hit_token_limit
    # Cut at the cap, both trim the tail the same way: the same samples.
    assert len(result.wav) == len(expected.wav) > 0
    np.testing.assert_allclose(result.wav, expected.wav, atol=1e-5)
    assert result.notes == m.text.notes_for("ja") and result.unknown_characters == ()
    assert result.normalized_text == expected.texts[0].normalized_text
    with pytest.raises(ValueError, match="needs a language"):
        tts.synthesize(JAPANESE, None, params, model="multilingual")


@pytest.mark.slow
def test_long_text_is_chunked_by_its_language(mtl_pipeline):
    text = "。".join([LANGUAGES["ja"].example.rstrip("。")] * 5) + "。"
    chunks = split_text(text, "ja")
    assert len(chunks) >= 2
    params = replace(MODELS["multilingual"].recommended, seed=2)
    events = list(mtl_pipeline.stream(text, None, params, model="multilingual", language="ja", max_new_tokens=4,
                                      watermark=False))
    result = events[-1].result
    assert result.n_chunks == len(chunks)
    assert {e.chunk for e in events if e.audio.size} == set(range(len(chunks)))


@pytest.mark.slow
def test_an_int8_space_speaks_multilingual_as_without_it(mtl_pipeline, fake_mtl_ckpt):
    # int8 would replace the layers the alignment analyzer reads: Multilingual's T3 stays float32.
    int8 = ChatterboxTTS.from_local(fake_mtl_ckpt, device="cpu", model="multilingual",
                                    options=LoadOptions.from_modes("int8"))
    t3 = int8.model("multilingual").t3
    assert t3.fast_step is None and not any(isinstance(layer, Int8Linear) for layer in t3.modules())
    params = replace(MODELS["multilingual"].recommended, seed=5)
    plain, quick = (tts.synthesize(JAPANESE, None, params, model="multilingual", language="ja", max_new_tokens=4,
                                   watermark=False) for tts in (mtl_pipeline, int8))
    assert quick.n_speech_tokens == plain.n_speech_tokens == 4
    np.testing.assert_array_equal(quick.wav, plain.wav)
