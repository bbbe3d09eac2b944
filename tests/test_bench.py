"""The benchmark script: every measurement path runs and reports sane figures (no timing limits)."""
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

SCRIPT = REPO / "bench" / "run.py"
_spec = importlib.util.spec_from_file_location("bench_run", SCRIPT)
bench = sys.modules["bench_run"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def short_voice(parity_dir, tmp_path_factory) -> Path:
    """The first 5.5 s of the parity voice: S3Gen reruns its flow over the whole prompt, so a
    short one keeps the smoke run short; Turbo needs more than 5 s."""
    import soundfile as sf

    samples, rate = sf.read(parity_dir / "ref_a.wav")
    path = tmp_path_factory.mktemp("bench") / "voice5s.wav"
    sf.write(path, samples[: int(5.5 * rate)], rate)
    return path


@pytest.mark.slow
def test_smoke_run_writes_every_figure(fake_ckpt, fake_turbo_ckpt, short_voice, tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--checkpoint", str(fake_ckpt),
                           "--voice", str(short_voice), "--modes", "int8", "fewer_flow_steps", "fp16",
                           "--turbo-checkpoint", str(fake_turbo_ckpt), "--turbo-modes", "int8",
                           "--json", str(out)], capture_output=True, text=True, cwd=REPO, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    modes, turbo = figures["modes"], figures["turbo"]
    for side in (figures, modes["int8"], modes["fewer_flow_steps"], turbo, turbo["modes"]["int8"]):
        for key in bench.FIGURE_KEYS + ("load_s", "conditioning_s", "t3_prefill_s", "vocoder_rtf", "e2e_s"):
            assert _positive_finite(side[key]), (side["mode"], key, side.get(key))
        assert side["first_audio_kind"] == "streaming"
        assert side["first_block_tokens"] == bench.SMOKE["e2e_tokens"]
        assert side["t3_tokens"] == bench.SMOKE["t3_tokens"]  # the fake model never stops this early
        # 2 mel frames (960 samples) per token, one frame fewer when the voice's prompt mel is odd
        assert side["s3gen_audio_s"] * 24_000 in (pytest.approx(960 * bench.SMOKE["s3gen_tokens"]),
                                                  pytest.approx(960 * bench.SMOKE["s3gen_tokens"] - 480))
    assert figures["smoke"] is True and "reference" not in figures
    assert figures["machine"]["omp_wait_policy"] == bench.OMP_WAIT_POLICY

    # Deviations: int8 changes T3 only, fewer flow steps S3Gen only; fp16 needs a GPU.
    int8 = modes["int8"]
    assert int8["t3_deviation_steps"] == bench.SMOKE["t3_tokens"]
    assert 0.0 <= int8["t3_greedy_agreement"] <= 1.0
    assert 0.0 < int8["t3_logits_rel_dev"] < 0.2  # measured 0.04 on the fake checkpoint
    assert "mel_l1" not in int8
    flow = modes["fewer_flow_steps"]
    assert flow["mel_l1"] > 0 and "t3_greedy_agreement" not in flow
    assert "CUDA" in modes["fp16"]["skipped"] and "t3_tokens_per_s" not in modes["fp16"]
    assert "T3 decode" in proc.stdout and "mode fp16 skipped" in proc.stdout

    # Turbo: its own model (GPT-2 T3, meanflow S3Gen), quoted next to our English default.
    assert turbo["mode"] == "turbo" and turbo["checkpoint"] == str(fake_turbo_ckpt.resolve())
    assert turbo["e2e_rtf_english"] == figures["e2e_rtf"]
    assert turbo["s3gen_rtf"] < figures["s3gen_rtf"]  # 2 meanflow steps against 10 CFG steps
    turbo_int8 = turbo["modes"]["int8"]
    assert turbo_int8["t3_deviation_steps"] == bench.SMOKE["t3_tokens"]
    assert 0.0 < turbo_int8["t3_logits_rel_dev"] < 0.2  # measured 0.025 over 40 steps
    assert "Chatterbox-Turbo" in proc.stdout and "our English default" in proc.stdout


def test_turbo_workload_uses_the_recommended_settings():
    from models.registry import model_entry

    recommended = model_entry(bench.TURBO_MODEL).recommended
    params = bench.Workload(seed=5).params(bench.TURBO_MODEL)
    assert (params.temperature, params.top_k, params.top_p, params.repetition_penalty, params.seed) == (
        recommended.temperature, recommended.top_k, recommended.top_p, recommended.repetition_penalty, 5)
    english = bench.Workload().params()
    assert (english.exaggeration, english.cfg_weight, english.top_p) == (0.5, 0.5, 1.0)
    assert bench.worker_mode("turbo:int8").model == bench.TURBO_MODEL
    assert bench.worker_mode("turbo:int8").fast_mode == "int8" and bench.worker_mode("turbo") is bench.TURBO
    with pytest.raises(SystemExit):
        bench.parse_args(["--checkpoint", ".", "--turbo-modes", "int8"])  # needs --turbo-checkpoint


def test_every_fast_mode_is_registered():
    from models.fast_modes import FAST_MODES

    assert set(bench.MODES) == set(FAST_MODES)
    assert {name for name, mode in bench.MODES.items() if mode.cuda_only} == {"fp16", "compile", "cuda_graph"}


def test_modes_joined_by_plus_combine_what_they_change():
    both = bench.mode_named("fp16+fewer_flow_steps")
    assert both.fast_mode == "fp16+fewer_flow_steps" and both.cuda_only
    assert both.changes == ("t3", "s3gen")
    assert not bench.mode_named("int8+fewer_flow_steps").cuda_only
    assert bench.parse_args(["--checkpoint", ".", "--modes", "fp16+cuda_graph"]).modes == ["fp16+cuda_graph"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--checkpoint", ".", "--modes", "fp16+int4"])


def test_deviation_counts_argmax_agreement_and_distances():
    torch = pytest.importorskip("torch")
    ref = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0], [0.0, 0.0, 5.0], [1.0, 2.0, 0.0]])
    mode = ref.clone()
    mode[1] = torch.tensor([0.0, 4.0, 1.0])  # another argmax at step 1 only
    mel = torch.ones(80, 10)
    out = bench.deviation({"t3_logits": ref, "mel": mel}, mode, mel + 0.5)
    assert out["t3_greedy_agreement"] == 0.75 and out["t3_deviation_steps"] == 4
    assert out["t3_logits_max_abs_dev"] == 4.0
    assert out["mel_l1"] == pytest.approx(0.5) and out["mel_rel_dev"] == pytest.approx(0.5)
    assert bench.deviation({"t3_logits": ref}, ref, None) == {
        "t3_deviation_steps": 4, "t3_greedy_agreement": 1.0, "t3_logits_max_abs_dev": 0.0, "t3_logits_rel_dev": 0.0}


def test_forced_tokens_replay_a_generation_and_its_logits():
    torch = pytest.importorskip("torch")
    from test_fast_modes import decode, tiny_t3
    from models.sampling import SamplingParams
    from models.t3 import T3Cond

    model = tiny_t3()
    g = torch.Generator().manual_seed(1)
    cond = T3Cond(torch.randn(1, 256, generator=g), torch.randint(0, 6561, (1, 20), generator=g), 0.7)
    text = model.frame_text(torch.arange(1, 6))
    params = SamplingParams(max_new_tokens=6, temperature=1.0, min_p=0.0)
    sampled, first = [], []
    for token in model.stream_tokens(cond, text, params, torch.Generator().manual_seed(3),
                                     on_logits=lambda step, l: first.append(l.clone())):
        sampled.append(token)
    replayed = []
    with bench.forcing_tokens(sampled):
        tokens = list(model.stream_tokens(cond, text, params, on_logits=lambda step, l: replayed.append(l.clone())))
    assert tokens == sampled
    torch.testing.assert_close(torch.cat(replayed), torch.cat(first), atol=0, rtol=0)
    assert decode(model, cond)[0] != sampled  # sampling, not the greedy path: the forcing did it


def test_workers_get_the_same_threads_and_wait_policy(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    env = bench.worker_env(2, "PASSIVE")
    assert (env["OMP_WAIT_POLICY"], env["OMP_NUM_THREADS"], env["MKL_NUM_THREADS"]) == ("PASSIVE", "2", "2")
    assert bench.worker_env(2, "inherit")["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert "OMP_WAIT_POLICY" not in bench.worker_env(2, "inherit")


def test_worker_figures_are_its_last_line_and_a_crash_is_reported():
    ok = bench.run_worker([sys.executable, "-c", "print('warming up'); print('{\"x\": 1}')"], {})
    assert ok == {"x": 1}
    with pytest.raises(bench.WorkerFailed, match="exit 3"):
        bench.run_worker([sys.executable, "-c", "print('{}'); raise SystemExit(3)"], {})


def test_first_block_fits_the_workload():
    assert bench.first_block_tokens(bench.Workload()) == bench.FIRST_BLOCK_TOKENS
    assert bench.first_block_tokens(bench.Workload(e2e_tokens=3)) == 3


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
