"""The speech service on the fake checkpoint: a batch gives one file per line and a manifest (5 lines
in CI; the 50-line case is marked heavy), and a recipe (through its link form) replays to the same
samples."""
from __future__ import annotations

import csv
import io
import zipfile

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


def test_uploaded_clip_recipes_ask_for_the_clip(service):
    recipe = Recipe("Hi.", "english", 1, clip_sha256="0" * 64)
    with pytest.raises(ValueError, match="uploaded clip"):
        service.from_recipe(recipe)


@pytest.mark.parametrize("n_lines", [5, pytest.param(50, marks=pytest.mark.heavy)])
def test_batch_gives_every_file_and_a_manifest(service, tmp_path, n_lines):
    lines = "\n".join(f"Line number {i}." for i in range(1, n_lines + 1)).encode()
    items = parse_batch(lines, "lines.txt")
    checked = {item.line: service.check(item.text, "english", "default", {}, 1000 + item.line) for item in items}

    def synthesize(item: BatchItem) -> BatchResult:
        r = whole(service, checked[item.line])
        return BatchResult(r.wav, r.sample_rate, r.seed)

    progress = list(run_batch(items, synthesize, "flac", tmp_path / "job.zip"))
    assert [p[0] for p in progress] == list(range(1, n_lines + 1))
    with zipfile.ZipFile(tmp_path / "job.zip") as archive:
        names = archive.namelist()
        rows = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
        first, rate = sf.read(io.BytesIO(archive.read("001.flac")))
    assert len([n for n in names if n.endswith(".flac")]) == n_lines and "manifest.csv" in names
    assert [r["seed"] for r in rows] == [str(1000 + i) for i in range(1, n_lines + 1)]
    assert rate == 24_000 and abs(len(first) / rate - float(rows[0]["seconds"])) < 0.01
