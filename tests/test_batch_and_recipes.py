"""Batch files are parsed with bounds and safe names; recipes round-trip through files and links."""
from __future__ import annotations

import csv
import io
import zipfile

import numpy as np
import pytest

from serving import batch
from serving.batch import BatchItem, BatchResult, parse_batch, run_batch
from serving.recipes import MAX_LINK_CHARS, Recipe


def test_txt_gives_one_item_per_non_empty_line():
    items = parse_batch("first line\n\n  second line  \r\nthird\n".encode(), "lines.txt")
    assert [(i.line, i.text, i.file) for i in items] == [(1, "first line", "001"), (3, "second line", "002"),
                                                          (4, "third", "003")]


def test_csv_columns_seeds_and_file_names_are_read_and_made_safe():
    data = ("text,voice,seed,file\nHello there.,alice,42,../../etc/passwd\n"
            "Again.,,,Grüße aus Köln\nThird.,bob,7,grüße aus köln\n,,,\n").encode()
    items = parse_batch(data, "job.CSV")
    assert [(i.text, i.voice, i.seed) for i in items] == [("Hello there.", "alice", 42), ("Again.", None, None),
                                                          ("Third.", "bob", 7)]
    assert [i.file for i in items] == ["passwd", "Grusse_aus_Koln", "grusse_aus_koln-2"]
    assert all("/" not in i.file and not i.file.startswith(".") for i in items)


@pytest.mark.parametrize("data,name,message", [
    (b"", "a.txt", "no text"),
    (b"x\n" * (batch.MAX_LINES + 1), "a.txt", f"at most {batch.MAX_LINES}"),
    (("y" * 1000 + "\n").encode() * 61, "a.txt", "characters"),
    (b"words,seed\nhi,1\n", "a.csv", "needs a 'text' column"),
    (b"text,speed\nhi,1\n", "a.csv", "unknown CSV column"),
    (b"text,seed\nhi,one\n", "a.csv", "row 2: seed 'one'"),
    (b"\xff\xfe\x00", "a.txt", "not UTF-8"),
    (b"hello", "a.docx", "a .txt"),
])
def test_unusable_batches_are_refused_with_the_reason(data, name, message):
    with pytest.raises(ValueError, match=message):
        parse_batch(data, name)


def test_run_batch_writes_every_file_and_a_manifest_and_records_failures(tmp_path):
    items = parse_batch(b"one\ntwo\nbad\nfour\n", "job.txt")

    def synthesize(item: BatchItem) -> BatchResult:
        if item.text == "bad":
            raise ValueError("nothing to speak")
        n = 2400 * len(item.text)
        return BatchResult(np.full(n, 0.1, dtype=np.float32), 24_000, seed=len(item.text))

    progress = list(run_batch(items, synthesize, "flac", tmp_path / "out.zip"))
    assert [p[:2] for p in progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        assert sorted(archive.namelist()) == ["001.flac", "002.flac", "004.flac", "manifest.csv"]
        rows = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    assert [r["file"] for r in rows] == ["001.flac", "002.flac", "", "004.flac"]
    assert rows[0]["seconds"] == "0.30" and rows[2]["notes"] == "error: nothing to speak"


def recipe(**changes) -> Recipe:
    values = dict(text="Hello there, friend.", model="english", seed=1234,
                  settings={"exaggeration": 0.5, "cfg_weight": 0.5, "temperature": 0.8}, voice="built-in")
    values.update(changes)
    return Recipe(**values)


def test_recipe_round_trips_through_json_and_link():
    r = recipe(text="Grüße — 5 € [pause:1s]")
    assert Recipe.from_json(r.to_json()) == r
    token = r.to_link_param()
    assert all(c.isalnum() or c in "-_" for c in token)
    assert Recipe.from_link_param(token) == r


@pytest.mark.parametrize("text,message", [
    ('{"kind": "other"}', "not a recipe"),
    ('{"kind": "chatterbox-space-recipe", "text": "x", "model": "english"}', "lacks seed"),
    ('{"kind": "chatterbox-space-recipe", "text": "x", "model": "english", "seed": 1, "colour": 2}',
     "unknown field"),
    ('{"kind": "chatterbox-space-recipe", "text": "x", "model": "english", "seed": -1}', "seed"),
    ('{"kind": "chatterbox-space-recipe", "text": "x", "model": "e", "seed": 1, "clip_sha256": "abc"}', "hex"),
    ('{"kind": "chatterbox-space-recipe", "text": "x", "model": "e", "seed": 1, "speed": 8}', "speed"),
    ("not json", "not valid JSON"),
])
def test_bad_recipes_are_refused_with_the_reason(text, message):
    with pytest.raises(ValueError, match=message):
        Recipe.from_json(text)


def test_damaged_or_huge_links_are_refused():
    token = recipe().to_link_param()
    with pytest.raises(ValueError, match="damaged"):
        Recipe.from_link_param(token[: len(token) // 2])
    with pytest.raises(ValueError, match="too long"):
        Recipe.from_link_param("A" * (MAX_LINK_CHARS + 1))
