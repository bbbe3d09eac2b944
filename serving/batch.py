"""Batch jobs: many lines of text in, one zip of audio files and a manifest out.

Input is a .txt file (one text per non-empty line) or a .csv file with a `text` column and
optional `voice`, `seed` and `file` (output file name) columns. Size is bounded up front with a
message that says the bound; file names are made safe and unique. The zip holds one audio file
per line and `manifest.csv` (line, file, text, voice, seed, seconds, notes).
"""
from __future__ import annotations

import csv
import io
import re
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .formats import AudioFormat, audio_format, encode

MAX_LINES = 200               # one job; more is several jobs
MAX_TOTAL_CHARS = 60_000      # about an hour of read speech
MAX_FILE_BYTES = 2_000_000
CSV_COLUMNS = ("text", "voice", "seed", "file")
MANIFEST_COLUMNS = ("line", "file", "text", "voice", "seed", "seconds", "notes")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class BatchItem:
    """One line of a job: what to say, optionally with whom, which seed and under which file name."""

    line: int                 # 1-based line (or CSV row) in the upload
    text: str
    voice: str | None = None
    seed: int | None = None
    file: str | None = None   # stem chosen by the user, made safe; None: numbered


@dataclass(frozen=True)
class BatchResult:
    """A line's audio: float32 mono at `sample_rate`, the seed that made it and notes."""

    wav: np.ndarray
    sample_rate: int
    seed: int
    notes: str = ""


def safe_stem(name: str, fallback: str) -> str:
    """A file stem with only ASCII letters, digits, '.', '_', '-' (accents folded), never hidden or empty."""
    folded = unicodedata.normalize("NFKD", name.replace("ß", "ss")).encode("ascii", "ignore").decode()
    stem = _UNSAFE.sub("_", Path(folded).stem).strip("._-")[:80]
    return stem or fallback


def parse_batch(data: bytes, filename: str) -> list[BatchItem]:
    """The items of an uploaded .txt or .csv. Raises ValueError with the reason for anything unusable."""
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"the batch file is {len(data):,} bytes; at most {MAX_FILE_BYTES:,} are taken")
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the batch file is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    suffix = Path(filename).suffix.lower()
    if suffix == ".txt":
        items = [BatchItem(i, line.strip()) for i, line in enumerate(content.splitlines(), 1) if line.strip()]
    elif suffix == ".csv":
        items = _parse_csv(content)
    else:
        raise ValueError(f"a batch is a .txt (one text per line) or a .csv file, not {suffix or 'no extension'}")
    if not items:
        raise ValueError("the batch file has no text")
    if len(items) > MAX_LINES:
        raise ValueError(f"the batch has {len(items)} lines; one job takes at most {MAX_LINES}: split the file")
    total = sum(len(item.text) for item in items)
    if total > MAX_TOTAL_CHARS:
        raise ValueError(f"the batch has {total:,} characters; one job takes at most {MAX_TOTAL_CHARS:,}")
    return _unique_files(items)


def _parse_csv(content: str) -> list[BatchItem]:
    reader = csv.DictReader(io.StringIO(content))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if "text" not in header:
        raise ValueError(f"the CSV needs a 'text' column (optional: voice, seed, file); found {header or 'none'}")
    extra = sorted(set(header) - set(CSV_COLUMNS))
    if extra:
        raise ValueError(f"unknown CSV column(s) {', '.join(extra)}; the columns are {', '.join(CSV_COLUMNS)}")
    reader.fieldnames = header
    items = []
    for row_number, row in enumerate(reader, 2):
        text = (row.get("text") or "").strip()
        if not text:
            continue
        seed_text = (row.get("seed") or "").strip()
        try:
            seed = int(seed_text) if seed_text else None
        except ValueError:
            raise ValueError(f"row {row_number}: seed {seed_text!r} is not a whole number") from None
        items.append(BatchItem(row_number, text, (row.get("voice") or "").strip() or None, seed,
                               (row.get("file") or "").strip() or None))
    return items


def _unique_files(items: list[BatchItem]) -> list[BatchItem]:
    seen: set[str] = set()
    out = []
    for index, item in enumerate(items, 1):
        stem = safe_stem(item.file, f"{index:03d}") if item.file else f"{index:03d}"
        candidate, n = stem, 2
        while candidate.lower() in seen:
            candidate, n = f"{stem}-{n}", n + 1
        seen.add(candidate.lower())
        out.append(BatchItem(item.line, item.text, item.voice, item.seed, candidate))
    return out


def run_batch(items: list[BatchItem], synthesize: Callable[[BatchItem], BatchResult],
              fmt: str | AudioFormat, out_path: Path) -> Iterator[tuple[int, int, str]]:
    """Synthesise every item into a zip at `out_path`; yields (done, total, message) after each line.

    A line that fails (bad voice, nothing speakable, ...) is recorded in the manifest with its
    error and the job goes on; the zip is complete when the generator ends.
    """
    fmt = fmt if isinstance(fmt, AudioFormat) else audio_format(fmt)
    rows = []
    with zipfile.ZipFile(out_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for done, item in enumerate(items, 1):
            name = f"{item.file}.{fmt.extension}"
            try:
                result = synthesize(item)
            except (ValueError, RuntimeError) as exc:  # e.g. nothing speakable, or no speech tokens drawn
                rows.append((item.line, "", item.text, item.voice or "", item.seed or "", "", f"error: {exc}"))
                yield done, len(items), f"line {item.line}: {exc}"
                continue
            archive.writestr(name, encode(result.wav, result.sample_rate, fmt))
            seconds = f"{len(result.wav) / result.sample_rate:.2f}"
            rows.append((item.line, name, item.text, item.voice or "", result.seed, seconds, result.notes))
            yield done, len(items), f"line {item.line}: {name} ({seconds} s)"
        manifest = io.StringIO()
        writer = csv.writer(manifest)
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows(rows)
        archive.writestr("manifest.csv", manifest.getvalue())
