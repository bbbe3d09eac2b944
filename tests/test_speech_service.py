"""The speech service on the fake checkpoint: a batch gives one file per line, or the line's failure
with its reason, and a manifest (5 lines in CI, one of which draws no speech token; the 50-line case,
every line speaking, is marked heavy), and a recipe (through its link form) replays to the same
samples."""
from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

from integrations import LibraryVoices
from serving.batch import BatchItem, BatchResult, parse_batch, run_batch
from serving.recipes import Recipe
from serving.speech_service import SpeechService

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(pipeline) -> SpeechService:
    return SpeechService(pipeline, LibraryVoices(None, None), max_new_tokens=2)


def whole(service: SpeechService, speech):
    results = []
    pieces = list(service.pieces(speech, on_result=results.append))
    assert np.array_equal(np.concatenate(pieces), results[-1].wav)
    return results[-1]


def test_recipe_replays_bit_identically(service):
    speech = service.check("Hello there.", "english", "default", {"temperature": 0.7}, seed=None)
    first = whole(service, speech)
    recipe = Recipe.from_link_param(service.recipe(speech).to_link_param())
    assert recipe.seed == first.seed and recipe.settings["temperature"] == 0.7
    again = whole(service, service.from_recipe(recipe))
    assert len(first.wav) > 0 and np.array_equal(first.wav, again.wav)
    assert recipe.speed == "" and not any("speed modes" in n for n in service.from_recipe(recipe).notes)
    other = service.from_recipe(replace(recipe, speed="quantize=int8"))
    assert any("speed modes quantize=int8" in n and "not exactly" in n for n in other.notes), other.notes


def test_uploaded_clip_recipes_ask_for_the_clip(service):
    recipe = Recipe("Hi.", "english", 1, clip_sha256="0" * 64)
    with pytest.raises(ValueError, match="uploaded clip"):
        service.from_recipe(recipe)


def test_recipes_carry_the_text_option_and_refuse_what_named_voices_cannot_replay(service):
    speech = service.from_recipe(Recipe("Room 5.", "english", 3, normalize=False))
    assert speech.normalize is False and service.recipe(speech).normalize is False
    with pytest.raises(ValueError, match="loudness normalisation"):
        service.from_recipe(Recipe("Hi.", "turbo", 3, voice="aishell_s0764_a", norm_loudness=False))


# Line n is "Line number n." with seed 1000 + n. With a 2-token cap, seed 1044 draws no speech token on the
# fake checkpoint (the pipeline refuses such a line); with 4 tokens every one of the 50 lines speaks.
@pytest.mark.parametrize("numbers,cap,silent", [
    ((1, 2, 3, 44, 5), 2, {44}),
    pytest.param(tuple(range(1, 51)), 4, set(), marks=pytest.mark.heavy),
], ids=["5", "50"])
def test_batch_gives_a_file_or_a_recorded_failure_per_line_and_a_manifest(pipeline, tmp_path, numbers, cap, silent):
    service = SpeechService(pipeline, LibraryVoices(None, None), max_new_tokens=cap)
    lines = "\n".join(f"Line number {n}." for n in numbers).encode()
    # As the Batch tab does: each line carries the seed it is made with, so a failure names it too.
    items = [replace(item, seed=1000 + n) for item, n in zip(parse_batch(lines, "lines.txt"), numbers)]
    checked = {item.line: service.check(item.text, "english", "default", {}, item.seed) for item in items}

    def synthesize(item: BatchItem) -> BatchResult:
        r = whole(service, checked[item.line])
        return BatchResult(r.wav, r.sample_rate, r.seed)

    progress = list(run_batch(items, synthesize, "flac", tmp_path / "job.zip"))
    assert [p[0] for p in progress] == list(range(1, len(numbers) + 1))
    with zipfile.ZipFile(tmp_path / "job.zip") as archive:
        names = set(archive.namelist())
        rows = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
        audio = {r["line"]: sf.read(io.BytesIO(archive.read(r["file"]))) for r in rows if r["file"]}
    assert len(rows) == len(numbers) and [r["seed"] for r in rows] == [str(1000 + n) for n in numbers]
    # Every line is a file or a failure with its reason, never missing; only the expected lines failed.
    failed = {n for n, r in zip(numbers, rows) if not r["file"]}
    assert failed == silent
    for n, row in zip(numbers, rows):
        if n in silent:
            assert row["notes"] == "error: the model produced no speech tokens for this text; try another seed"
            assert f"line {row['line']}: the model produced no speech tokens" in progress[int(row["line"]) - 1][2]
        else:
            wav, rate = audio[row["line"]]
            assert row["file"] in names and rate == 24_000 and len(wav) > 0
            assert abs(len(wav) / rate - float(row["seconds"])) < 0.01
    assert names == {r["file"] for r in rows if r["file"]} | {"manifest.csv"}
    assert len(names) - 1 == len(numbers) - len(silent)   # the 50-line job: 50 files and the manifest
