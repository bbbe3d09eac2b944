"""Chatterbox-Turbo through the one pipeline: registry entry, loading through the pool, text
preparation with Turbo's tags, conditionals, and seeded parity with `ChatterboxTurbo`."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from models import loading
from models.params import CONTROLS, GenerationParams
from models.registry import MODELS, TURBO_REPO_ID, TURBO_TAGS, HubFiles, model_entry
from models.text_prep import plan_request

TURBO = model_entry("turbo")


# --- registry and parameters (no weights) ------------------------------------------------

def test_turbo_entry_reads_only_what_the_reference_reads():
    assert TURBO.t3.architecture == "gpt2" and TURBO.s3gen.meanflow and TURBO.s3gen.flow_steps == 2
    assert {spec.files.repo_id for spec in TURBO.components.values()} == {TURBO_REPO_ID}
    assert not TURBO.gated and TURBO.text.frontend == "turbo" and TURBO.loudness_toggle
    assert (TURBO.prompt.t3_seconds, TURBO.prompt.t3_tokens, TURBO.prompt.min_reference_seconds) == (15, 375, 5)
    assert set(TURBO.controls) == {"temperature", "top_k", "top_p", "repetition_penalty"}
    r = TURBO.recommended
    assert (r.temperature, r.top_k, r.top_p, r.repetition_penalty) == (0.8, 1000, 0.95, 1.2)
    assert len(TURBO.tags) == 19 and len(set(TURBO.tags)) == 19


def test_top_k_is_turbo_only_and_validated():
    for entry in MODELS.values():
        assert ("top_k" in entry.controls) == (entry.t3.architecture == "gpt2")
    assert set(CONTROLS) >= set(TURBO.controls)
    assert GenerationParams().top_k == 1000  # the reference Turbo default; English never reads it
    for bad in (-1, 1001, 2.5, True, float("nan")):
        with pytest.raises(ValueError, match="top_k"):
            GenerationParams(top_k=bad)
    assert GenerationParams(top_k=0).top_k == 0  # disables it


def test_turbo_voices_are_not_shared_with_english():
    english = model_entry("english")
    assert TURBO.voice_encoder != english.voice_encoder and TURBO.s3gen != english.s3gen
    assert TURBO.prompt != english.prompt


def test_local_folder_must_hold_a_components_companion_files(tmp_path):
    (tmp_path / "vocab.json").write_text("{}")
    files = HubFiles(TURBO_REPO_ID, ("vocab.json",), companions=("merges.txt",))
    sources = loading.WeightSources({TURBO_REPO_ID: tmp_path}, hub=False)
    with pytest.raises(loading.CheckpointError, match="merges.txt"):
        sources.path(files)
    (tmp_path / "merges.txt").write_text("")
    assert sources.path(files) == tmp_path / "vocab.json"


# --- text preparation with the Turbo tokenizer (tokenizer files only) ----------------------

@pytest.fixture(scope="module")
def turbo_text(fake_turbo_ckpt):
    return loading.build_component(TURBO.text, fake_turbo_ckpt / "vocab.json", torch.device("cpu"), None)


def test_registry_tags_are_the_tokenizers(turbo_text):
    assert TURBO.tags == turbo_text.tags


@pytest.mark.parametrize("typed, tag", [("[laugh]", "[laugh]"), ("[Laughs]", "[laugh]"),
                                        ("[clear throat]", "[clear throat]"), ("<sigh>", "[sigh]")])
def test_a_typed_tag_becomes_its_token(turbo_text, typed, tag):
    plan = plan_request(f"Well {typed} that was funny.", "en", turbo_text, 300, known_tags=TURBO.tags)
    (chunk,) = plan.chunks
    tag_id = turbo_text.tag_ids()[tag]
    assert tag_id in chunk.tokens.ids and tag in chunk.tokens.normalized_text


def test_unknown_and_control_tags_never_reach_turbo(turbo_text):
    plan = plan_request("Hello [barks] there [STOP] friend <|endoftext|>.", "en", turbo_text, 300,
                        known_tags=TURBO.tags)
    ids = [i for c in plan.chunks for i in c.tokens.ids]
    assert not set(ids) & set(turbo_text.tag_ids().values())
    assert turbo_text.tokenizer.eos_token_id not in ids
    assert {"[barks]", "[STOP]", "<|endoftext|>"} <= set(plan.prepared.removed_tags)
    # A near-miss of a known tag is read as the tag (the English aliases apply).
    (chunk,) = plan_request("Hello [giggles].", "en", turbo_text, 300, known_tags=TURBO.tags).chunks
    assert turbo_text.tag_ids()["[chuckle]"] in chunk.tokens.ids


# --- the pipeline on the fake Turbo checkpoint ---------------------------------------------

@pytest.fixture(scope="module")
def turbo_pipeline(fake_turbo_ckpt):
    from models.registry import TURBO_REPO_ID
    from models.tts import ChatterboxTTS
    from models.residency import ModelPool

    torch.set_grad_enabled(False)
    pool = ModelPool(loading.WeightSources({TURBO_REPO_ID: fake_turbo_ckpt}, hub=False), "cpu")
    return ChatterboxTTS(pool, default_model="turbo")


@pytest.fixture(scope="module")
def golden(parity_dir):
    return np.load(parity_dir / "turbo" / "golden" / "j_e2e_generate.npz")


@pytest.mark.slow
def test_pipeline_turbo_equals_chatterbox_turbo(turbo_pipeline, golden):
    """Seeded, a single-chunk text through `stream` draws ChatterboxTurbo.generate's tokens and
    decodes the same audio; the pipeline only trims the silent tail the reference keeps."""
    from models.tts_turbo import ChatterboxTurbo

    m = turbo_pipeline.model("turbo")
    assert turbo_pipeline.pool.loads["t3 " + TURBO_REPO_ID] == 1
    reference = ChatterboxTurbo(m.t3, m.s3gen, m.voice_encoder, m.text, m.builtin_voice)
    clip = (24_000, golden["ref_wav_24k"])
    conds = turbo_pipeline.prepare_conditionals(clip, model="turbo")
    ref_conds = reference.prepare_conditionals(clip)
    assert conds.t3.cond_prompt_speech_tokens.shape == (1, 375)
    assert torch.equal(conds.t3.cond_prompt_speech_tokens, ref_conds.t3.cond_prompt_speech_tokens)
    assert torch.equal(conds.t3.speaker_emb, ref_conds.t3.speaker_emb)
    assert torch.equal(conds.gen.prompt_feat, ref_conds.gen.prompt_feat)

    text, seed = str(golden["text"]), int(golden["torch_seed"])
    params = replace(TURBO.recommended, seed=seed)  # the recommended Turbo values are the golden's
    assert (params.temperature, params.top_k, params.top_p) == (pytest.approx(float(golden["temperature"])),
                                                                int(golden["top_k"]),
                                                                pytest.approx(float(golden["top_p"])))
    ours = turbo_pipeline.synthesize(text, conds, params, model="turbo", watermark=False, normalize=False)
    (chunk,) = plan_request(text, "en", m.text, 300, normalize=False, known_tags=TURBO.tags).chunks
    theirs = reference.generate(text, ref_conds, seed=seed, max_new_tokens=chunk.token_limit, watermark=False)
    assert ours.normalized_text == theirs.normalized_text == str(golden["normalized_text"])
    assert list(theirs.t3_tokens) == golden["t3_tokens"].tolist()
    assert ours.n_speech_tokens == len(theirs.t3_tokens) and not ours.loops_cut
    assert 0 < len(ours.wav) <= len(theirs.wav)
    np.testing.assert_array_equal(ours.wav, theirs.wav[: len(ours.wav)])


@pytest.mark.slow
def test_turbo_reference_checks_and_loudness_toggle(turbo_pipeline, golden):
    from models.tts import voice_specs

    wav = golden["ref_wav_24k"]
    with pytest.raises(ValueError, match="more than 5 s"):
        turbo_pipeline.prepare_conditionals((24_000, wav[: 24_000 * 4]), model="turbo")
    loud = turbo_pipeline.prepare_conditionals((24_000, wav), model="turbo")
    raw = turbo_pipeline.prepare_conditionals((24_000, wav), model="turbo", norm_loudness=False)
    assert not torch.equal(loud.gen.prompt_feat, raw.gen.prompt_feat)
    english_voice = replace(raw, prepared_for=voice_specs(model_entry("english")))
    with pytest.raises(ValueError, match="prepare it again"):
        turbo_pipeline.synthesize("Hello.", english_voice, model="turbo", max_new_tokens=2)


@pytest.mark.slow
def test_turbo_block_streaming_decodes_the_silence_tail(turbo_pipeline):
    from models.s3gen.streaming import StreamConfig
    from models.tts import LivePlayback

    live = LivePlayback(first_block=4, blocks=StreamConfig(first_block=4, block=4, max_block=8), chunks=None)
    params = GenerationParams(seed=3)
    events = list(turbo_pipeline.stream("Hi [laugh] there.", None, params, model="turbo", watermark=False,
                                        max_new_tokens=30, live=live))
    result = events[-1].result
    pieces = [e.audio for e in events[:-1] if e.audio.size]
    assert len(pieces) >= 2 and result.n_speech_tokens > 0
    assert np.array_equal(np.concatenate(pieces), result.wav)
    # Speech tokens + 3 silence tokens, 960 samples each, before the tail trim.
    assert 0 < len(result.wav) <= (result.n_speech_tokens + 3) * 960


def test_whole_chunk_decodes_turbos_silence_tail_after_the_speech():
    from models.chunk_audio import WholeChunk
    from models.constants import START_SPEECH_TOKEN, STOP_SPEECH_TOKEN
    from models.t3_turbo import S3GEN_SILENCE_TOKEN

    class RecordingS3Gen:  # stands in for S3Gen: 960 samples of sound per token
        def inference(self, tokens, ref, generator=None):
            self.tokens = tokens.tolist()
            return torch.ones(960 * len(tokens))

    s3gen, tail = RecordingS3Gen(), (S3GEN_SILENCE_TOKEN,) * 3
    chunk = WholeChunk(s3gen, None, None, None, 24_000, tail)
    chunk.push([START_SPEECH_TOKEN, 5, 6, STOP_SPEECH_TOKEN, 7])
    (wav,) = chunk.finish(trim=False)
    assert s3gen.tokens == [5, 6, *tail] and len(wav) == 5 * 960
    empty = WholeChunk(s3gen, None, None, None, 24_000, tail)
    empty.push([STOP_SPEECH_TOKEN])
    assert empty.finish(trim=False) == []  # no speech: no silence either


def test_a_stop_drawn_first_does_not_end_a_turbo_chunk():
    from models.constants import STOP_SPEECH_TOKEN
    from models.tts import _without_first_stop

    def stream():
        yield from (STOP_SPEECH_TOKEN, 4, STOP_SPEECH_TOKEN)

    assert list(_without_first_stop(stream())) == [4, STOP_SPEECH_TOKEN]
