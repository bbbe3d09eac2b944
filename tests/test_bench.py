"""The benchmark script: every measurement path runs and reports sane figures (no timing limits)."""
import importlib.util
import json
import math
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = REPO / "bench" / "run.py"
_spec = importlib.util.spec_from_file_location("bench_run", SCRIPT)
bench = sys.modules["bench_run"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_smoke_run_writes_every_figure(fake_ckpt, tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--checkpoint", str(fake_ckpt),
                           "--json", str(out)], capture_output=True, text=True, cwd=REPO, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    for key in bench.FIGURE_KEYS + ("load_s", "conditioning_s", "t3_prefill_s", "vocoder_rtf", "e2e_s"):
        assert _positive_finite(figures[key]), (key, figures.get(key))
    assert figures["smoke"] is True and figures["modes"] == {} and "reference" not in figures
    assert figures["t3_tokens"] == bench.SMOKE["t3_tokens"]  # the fake model never stops this early
    assert figures["s3gen_audio_s"] == pytest.approx(bench.SMOKE["s3gen_tokens"] * 0.04)
    assert figures["first_audio_kind"] == "full_generation"
    assert figures["first_audio_s"] == figures["e2e_s"]
    assert "T3 decode" in proc.stdout and "end-to-end RTF" in proc.stdout


def test_unknown_mode_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--checkpoint", str(tmp_path), "--modes", "warp-speed"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert "unknown mode(s) 'warp-speed'" in proc.stderr and "known modes" in proc.stderr


def test_table_shows_modes_reference_and_ratios():
    ours = {"t3_tokens_per_s": 4.0, "e2e_rtf": 10.0, "peak_rss_mb": 4000.0}
    results = {**ours, "modes": {"fast": {"t3_tokens_per_s": 8.0, "e2e_rtf": 5.0}},
               "reference": {"t3_tokens_per_s": 2.0, "e2e_rtf": 20.0, "peak_rss_mb": 8000.0}}
    lines = bench.format_table(results).splitlines()
    assert lines[0].split() == ["figure", "ours", "fast", "reference", "ours/ref", "fast/ref"]
    decode = next(line for line in lines if line.startswith("T3 decode"))
    assert decode.split()[-5:] == ["4", "8", "2", "2.00x", "4.00x"]
    rss = next(line for line in lines if line.startswith("peak RSS"))
    assert rss.split()[-5:] == ["4000", "-", "8000", "0.50x", "-"]
    assert not any(line.startswith("peak GPU") for line in lines)  # no side measured it
