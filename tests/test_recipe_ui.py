"""The text-to-speech tab's result files and recipes, without a model: downloads in every format
decode back at the chosen rate; a result's recipe fills the form with what made it (file and link);
unusable recipes change nothing and say why; share links use the page's public address."""
from __future__ import annotations

import io
import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
from starlette.requests import Request as StarletteRequest

import recipe_ui
from models.params import CONTROLS, GenerationParams
from models.reference import ReferenceClip
from models.registry import MODELS
from serving.recipes import Recipe

VOICES = ["aishell_s0764_a", "My voice"]


def page_params(model: str = "english", **values) -> GenerationParams:
    from dataclasses import replace
    return replace(MODELS[model].recommended, **values)


def round_trip(recipe: Recipe, via: str) -> Recipe:
    return Recipe.from_json(recipe.to_json()) if via == "json" else Recipe.from_link_param(recipe.to_link_param())


@pytest.mark.parametrize("via", ["json", "link"])
@pytest.mark.parametrize("model", list(MODELS))
def test_a_results_recipe_fills_the_form_with_what_made_it(via, model):
    entry = MODELS[model]
    params = page_params(model, temperature=0.65, top_p=0.9, repetition_penalty=1.4)
    recipe = recipe_ui.recipe_of("Hello 5 € there.", model, params, 987654321, voice="My voice",
                                 watermark=False, norm_loudness=False, normalize=False,
                                 language="ja" if entry.takes_language else None)
    values = recipe_ui.form_values(round_trip(recipe, via), VOICES)
    assert values.language == ("ja" if entry.takes_language else None)
    assert values.text == "Hello 5 € there." and values.model_label == entry.label and values.voice == "My voice"
    assert values.controls == {name: getattr(params, name) for name in CONTROLS}
    assert (values.seed, values.watermark, values.norm_loudness, values.normalize) == (987654321, False, False, False)
    assert values.clip_sha256 is None
    # The page builds its params from these values: the same params, so the same audio.
    assert GenerationParams(**values.controls, seed=values.seed) == page_params(
        model, temperature=0.65, top_p=0.9, repetition_penalty=1.4, seed=987654321)


def test_a_multilingual_recipe_needs_a_language_the_model_speaks():
    params = page_params("multilingual")
    by_name = recipe_ui.recipe_of("こんにちは。", "multilingual", params, 7, language="Japanese")
    assert recipe_ui.form_values(by_name, VOICES).language == "ja"
    for language, says in ((None, "needs a language"), ("Klingon", "Klingon")):
        with pytest.raises(ValueError, match=says):
            recipe_ui.form_values(recipe_ui.recipe_of("Hi.", "multilingual", params, 7, language=language), VOICES)
    # A one-language model's recipe restores no language, whatever the file says.
    english = recipe_ui.recipe_of("Hi.", "english", page_params(), 7, language="en")
    assert recipe_ui.form_values(english, VOICES).language is None


def test_an_uploaded_clip_is_named_by_the_hash_of_its_samples_and_the_builtin_voice_by_nothing():
    wav = np.sin(np.linspace(0, 300, 24_000)).astype(np.float32)
    clip = ReferenceClip(wav, 1.0, 1.0, 24_000, 1)
    recipe = recipe_ui.recipe_of("Hi.", "english", page_params(), 5, clip=clip)
    assert recipe.voice is None and recipe.clip_sha256 == recipe_ui.clip_sha256(clip)
    other = ReferenceClip(wav * 0.5, 1.0, 1.0, 24_000, 1)
    assert recipe_ui.clip_sha256(other) != recipe.clip_sha256
    values = recipe_ui.form_values(recipe, VOICES)
    assert values.voice == "" and values.clip_sha256 == recipe.clip_sha256
    assert "upload the same clip" in recipe_ui.loaded_message(values, "the file")
    # A listed voice wins over its clip (examples are clips too); no voice at all is the built-in one.
    assert recipe_ui.recipe_of("Hi.", "english", page_params(), 5, "aishell_s0764_a", clip).clip_sha256 is None
    builtin = recipe_ui.recipe_of("Hi.", "english", page_params(), 5)
    assert (builtin.voice, builtin.clip_sha256) == (None, None)
    assert recipe_ui.form_values(builtin, VOICES).voice == ""
    # The APIs' name for the built-in voice means the same in the page.
    api = Recipe("Hi.", "english", 5, voice="default")
    assert recipe_ui.form_values(api, VOICES).voice == ""


def test_older_recipes_without_the_options_get_the_pages_defaults():
    raw = json.loads(Recipe("Hi.", "english", 5).to_json())
    for name in ("normalize", "norm_loudness"):
        del raw[name]
    values = recipe_ui.form_values(Recipe.from_json(json.dumps(raw)), VOICES)
    assert values.normalize and values.norm_loudness
    assert values.controls == {name: getattr(MODELS["english"].recommended, name) for name in CONTROLS}


@pytest.mark.parametrize("recipe,message", [
    (Recipe("Hi.", "klingon", 5), "model 'klingon', which this Space does not have"),
    (Recipe("Hi.", "english", 5, voice="Nobody"), "voice 'Nobody' is not one of this Space's voices"),
    (Recipe("Hi.", "english", 5, settings={"speed": 1.0}), "unknown setting"),
    (Recipe("Hi.", "english", 5, settings={"temperature": 9.0}), r"temperature must be a number in \[0.05, 5.0\]"),
    (Recipe("Hi.", "english", 0), "seed is 0"),
    (Recipe("x" * 12_001, "english", 5), "one request speaks at most"),
])
def test_recipes_the_page_cannot_use_are_refused_with_the_reason(recipe, message):
    with pytest.raises(ValueError, match=message):
        recipe_ui.form_values(recipe, VOICES)


@pytest.fixture(scope="module")
def form() -> recipe_ui.Form:
    import ui

    with gr.Blocks():
        text, model, voice = gr.Textbox(), gr.Dropdown([e.label for e in MODELS.values()]), gr.Dropdown()
        sliders = [gr.Slider() for _ in CONTROLS]
        note = gr.Markdown()
        tags = [gr.Column() for e in MODELS.values() if e.tags]
        return recipe_ui.Form(text, model, voice, gr.Audio(), sliders, gr.Number(), gr.Checkbox(), gr.Checkbox(),
                              gr.Checkbox(), [note, *tags], ui.control_updates, lambda: [("none", "")] + VOICES,
                              lambda: VOICES)


def _value(update):
    return update.get("value") if isinstance(update, dict) else update


def test_loading_a_recipe_file_sets_every_field_and_shows_the_models_controls(form, tmp_path):
    turbo = MODELS["turbo"]
    params = page_params("turbo", top_k=40, temperature=0.5)
    recipe = recipe_ui.recipe_of("Well [laugh] hi.", "turbo", params, 77, voice="My voice", norm_loudness=False)
    path = recipe_ui.write_recipe(recipe)
    assert Path(path).name == "recipe-turbo-77.json"
    out = form.restore(lambda: recipe_ui.read_recipe_file(path), "the file")
    assert len(out) == len(form.outputs()) + 1
    fields = dict(zip(form.outputs(), out))
    assert fields[form.text] == "Well [laugh] hi." and fields[form.model] == turbo.label
    assert _value(fields[form.voice]) == "My voice" and fields[form.reference] is None  # the voice replaces a clip
    for name, slider in zip(CONTROLS, form.sliders):
        assert fields[slider]["value"] == getattr(params, name)
        assert fields[slider]["visible"] == (name in turbo.controls)
    assert (fields[form.seed], fields[form.watermark], fields[form.normalize]) == (77, True, True)
    assert fields[form.norm_loudness] == {"__type__": "update", "value": False, "visible": True}
    assert fields[form.model_outputs[1]]["visible"]  # Turbo's tag buttons
    assert out[-1].startswith("✅ Recipe loaded from the file") and "seed **77**" in out[-1]



def test_a_recipe_of_other_speed_modes_loads_and_says_the_audio_will_differ(form):
    from dataclasses import replace

    recipe = recipe_ui.recipe_of("Hi.", "english", page_params(), 5, speed="quantize=int8")
    assert Recipe.from_json(recipe.to_json()).speed == "quantize=int8"
    loaded = form.restore(lambda: recipe, "the link")[-1]
    assert "speed modes `quantize=int8`" in loaded and "this Space runs no speed modes" in loaded, loaded
    same = replace(form, speed="quantize=int8").restore(lambda: recipe, "the link")[-1]
    assert "Press Generate to make the same audio again" in same and "⚠️" not in same, same
    plain = form.restore(lambda: recipe_ui.recipe_of("Hi.", "english", page_params(), 5), "the link")[-1]
    assert "⚠️" not in plain, plain

@pytest.mark.parametrize("content,message", [
    (b"not json at all", "not valid JSON"),
    (b'{"kind": "something-else"}', "not a recipe of this Space"),
    (Recipe("Hi.", "klingon", 5).to_json().encode(), "does not have"),
    (Recipe("Hi.", "english", 5, voice="Nobody").to_json().encode(), "not one of this Space's voices"),
    (b"\xff\xfe\x00\x01", "not valid JSON"),
])
def test_a_bad_recipe_file_changes_nothing_and_says_why(form, tmp_path, content, message):
    path = tmp_path / "upload.json"
    path.write_bytes(content)
    out = form.restore(lambda: recipe_ui.read_recipe_file(path), "the file")
    assert all(isinstance(u, dict) and u.get("__type__") == "update" and set(u) == {"__type__"}
               for u in out[:-1]), out[:-1]  # gr.skip() everywhere
    assert out[-1].startswith("⚠️ Not loaded, the form is unchanged") and message in out[-1], out[-1]


def test_a_damaged_link_changes_nothing_and_no_link_does_nothing(form):
    token = Recipe("Hello there.", "english", 5).to_link_param()
    out = form.restore(lambda: Recipe.from_link_param(token[:-10]), "the link")
    assert "damaged" in out[-1]
    assert form.restore(lambda: None, "the link")[-1] == gr.skip()


def _request(path: str, headers: dict[str, str]) -> gr.Request:
    scope = {"type": "http", "method": "POST", "path": path, "query_string": b"", "scheme": "http",
             "server": ("127.0.0.1", 7860), "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    return gr.Request(StarletteRequest(scope))


def test_share_links_use_the_pages_public_address_and_carry_the_recipe():
    recipe = Recipe("Hello there.", "english", 42, {"temperature": 0.7}, voice="My voice")
    local = recipe_ui.page_url(_request("/gradio_api/queue/join", {"host": "127.0.0.1:7860"}))
    assert local == "http://127.0.0.1:7860"
    proxied = recipe_ui.page_url(_request("/gradio_api/queue/join", {
        "host": "10.0.0.5:7860", "x-forwarded-host": "someone-chatterbox.hf.space", "x-forwarded-proto": "https"}))
    assert proxied == "https://someone-chatterbox.hf.space"
    link = recipe_ui.share_link(recipe, proxied)
    base, token = link.split("/?recipe=")
    assert base == proxied and Recipe.from_link_param(token) == recipe
    assert recipe_ui.page_url(None) == "" and recipe_ui.share_link(recipe, "").startswith("/?recipe=")
    noise = np.random.default_rng(0).integers(0x4E00, 0x9FFF, 20_000)   # text that does not compress
    huge = Recipe("".join(map(chr, noise)), "english", 1)
    assert recipe_ui.share_link(huge, proxied).startswith("(no link:")


@pytest.fixture(scope="module")
def shown_audio() -> tuple[int, np.ndarray]:
    """What the page's numpy Audio hands back for a result: 24 kHz 16-bit samples."""
    t = np.arange(int(1.3 * 24_000)) / 24_000
    wav = 0.4 * np.sin(2 * np.pi * 220 * t) * np.exp(-t)
    return 24_000, np.round(wav * 32767).astype(np.int16)


@pytest.mark.parametrize("fmt,rate", [("wav", 24_000), ("flac", 44_100), ("mp3", 22_050), ("opus", 48_000),
                                      ("opus", 24_000), ("mp3", 16_000)])
def test_downloads_decode_at_the_chosen_rate_with_the_same_duration(shown_audio, fmt, rate):
    path, note = recipe_ui.audio_file(shown_audio, fmt, rate)
    assert note == "" and path.endswith(f"chatterbox-{rate}hz.{'opus' if fmt == 'opus' else fmt}")
    data = Path(path).read_bytes()
    decoded, decoded_rate = sf.read(io.BytesIO(data), dtype="float32")
    assert decoded_rate == rate
    # Exact, to a sample, but for mp3: a piped encode carries no gapless header, so decoders keep
    # LAME's 1105-sample delay and the last frame's padding (at most 1152 samples).
    extra = len(decoded) - round(1.3 * rate)
    assert 0 <= extra <= 1105 + 1152 if fmt == "mp3" else abs(extra) <= 1, extra
    if fmt == "wav":  # the model's rate: the very samples the page shows
        assert np.array_equal(np.round(decoded * 32768).astype(np.int16), shown_audio[1])


def test_a_rate_the_format_cannot_carry_says_so_and_no_audio_gives_no_file(shown_audio):
    path, note = recipe_ui.audio_file(shown_audio, "opus", 44_100)
    assert path is None and "opus carries only" in note and "48000" in note
    assert recipe_ui.audio_file(None, "mp3", 24_000) == (None, "")
