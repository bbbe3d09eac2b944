"""Speed benchmark of the pipeline, optionally against the reference chatterbox-tts 0.1.7.

    python bench/run.py --checkpoint DIR [--json FILE] [--smoke] [--modes NAME ...]
                        [--turbo-checkpoint DIR] [--reference-python PATH] [--voice WAV]
                        [--device cpu|cuda]

Every side (our default path, each fast mode, our Turbo, the reference's English and
Turbo) runs in its own process on the same workload (text, voice, seed, token counts,
torch threads, OpenMP settings), so peak RSS and GPU memory are per side and one side's
caches never warm another's. This process only orchestrates: it starts the workers,
reads the JSON each prints as its last stdout line, prints the tables and optionally
writes everything to `--json`.
Figures: model load, conditioning, T3 prefill and decode rate (English: CFG batch 2;
Turbo: one row), S3Gen seconds per audio second (flow + vocoder, and the vocoder alone),
end-to-end real-time factor, time to first streamed audio, peak RSS, peak GPU memory
(CUDA only), and for each fast mode its deviation from the default (T3 greedy agreement,
mel distance).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
REFERENCE_WORKER = Path(__file__).resolve().parent / "reference_worker.py"
PARITY_VOICE = REPO.parent / "shared" / "parity" / "ref_a.wav"
ASSET_VOICE = REPO / "assets" / "voices" / "aishell_s0764_a.wav"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # workers import `models` from this checkout

TEXT = "The quick brown fox jumps over the lazy dog, then naps in the warm afternoon sun."
SEED = 1234
TORCH_THREADS = 2           # both sides: the Space's CPU tier and the reference timings use 2
# Idle OpenMP threads sleep instead of spinning: on a machine whose cores are shared,
# spinning threads of 2-thread torch steal the cores they wait for (measured: the
# reference's T3 ran 13x slower with the default policy while another job was running).
# On an idle machine waking them costs both sides 15-20% (`--omp-wait-policy inherit`).
OMP_WAIT_POLICY = "PASSIVE"
FIRST_BLOCK_TOKENS = 20     # streamed tokens before the first S3Gen run (StreamConfig's default)
TOKEN_STRIDE = 2749         # spreads the fixed S3Gen input over the codebook (prime, so no short cycle)
# Timed parts run this often and report their fastest run (both sides): on a shared machine
# a slower run measures the other jobs, and the first run of a part also pays for warm-up.
REPEATS = 2

TURBO_MODEL = "turbo"       # the registry id of Chatterbox-Turbo, benched with --turbo-checkpoint

# Keys every side reports; `--json` consumers (and tests) rely on them.
FIGURE_KEYS = ("t3_tokens_per_s", "s3gen_rtf", "e2e_rtf", "first_audio_s", "peak_rss_mb")


@dataclass(frozen=True)
class Workload:
    """What every side is asked to do, so their figures compare.

    Token counts are fixed (T3 decodes at most `t3_tokens`; the fake checkpoint reaches its
    stop token only after ~60, so in practice exactly that many); S3Gen decodes a fixed
    token list of `s3gen_tokens` ids (25 tokens = 1 s of audio).
    """

    text: str = TEXT
    voice: str = ""
    seed: int = SEED
    threads: int = TORCH_THREADS
    exaggeration: float = 0.5
    cfg_weight: float = 0.5
    # Turbo's sampling: the reference ChatterboxTurboTTS.generate defaults, which are our Turbo
    # entry's recommended settings too (tests/test_bench.py checks they agree). No CFG.
    turbo_temperature: float = 0.8
    turbo_top_k: int = 1000
    turbo_top_p: float = 0.95
    turbo_repetition_penalty: float = 1.2
    t3_tokens: int = 40
    s3gen_tokens: int = 50
    e2e_tokens: int = 40
    repeats: int = REPEATS

    def params(self, model: str = "english"):
        """The generation controls of every timed run of ours with `model` (the rest at their
        defaults, which that model does not read)."""
        from models.params import GenerationParams

        if model == TURBO_MODEL:
            return GenerationParams(temperature=self.turbo_temperature, top_k=self.turbo_top_k,
                                    top_p=self.turbo_top_p, repetition_penalty=self.turbo_repetition_penalty,
                                    seed=self.seed)
        return GenerationParams(exaggeration=self.exaggeration, cfg_weight=self.cfg_weight, seed=self.seed)

    def s3gen_token_ids(self) -> list[int]:
        from models.constants import SPEECH_CODEBOOK_SIZE  # the ids S3Gen reads

        return [(i * TOKEN_STRIDE) % SPEECH_CODEBOOK_SIZE for i in range(self.s3gen_tokens)]

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "s3gen_token_ids": self.s3gen_token_ids()})


SMOKE = dict(t3_tokens=3, s3gen_tokens=4, e2e_tokens=3, repeats=1)


# --- fast modes --------------------------------------------------------------------------

@dataclass(frozen=True)
class Mode:
    """One way of running our pipeline: which model, and which fast mode is applied after loading.

    `model` is a registry id (its checkpoint folder is the worker's `--checkpoint`).
    `fast_mode` names `models.fast_modes` modes (None: the default pipeline), built in at
    load (`LoadOptions.from_modes`), which counts as model load time. `changes` says which
    outputs the mode can change, so only those deviations are measured. `cuda_only` modes
    are skipped on other devices, with the reason in the JSON.
    """

    name: str
    about: str
    fast_mode: str | None = None
    changes: tuple[str, ...] = ()
    cuda_only: bool = False
    model: str = "english"


BASELINE = Mode("baseline", "ChatterboxTTS.from_local, float32; first audio streamed in token blocks")
TURBO = Mode(TURBO_MODEL, "ChatterboxTTS.from_local(model='turbo'): GPT-2 T3 (float32, no CFG), 2-step "
             "meanflow S3Gen; first audio streamed in token blocks", model=TURBO_MODEL)
# The fast modes Turbo's pipeline takes (LoadOptions it honours); `--turbo-modes` names them.
TURBO_MODES = ("int8",)


def turbo_mode(name: str) -> Mode:
    """Our Turbo with fast mode `name` (a TURBO_MODES name); its worker is named `turbo:NAME`."""
    if name not in TURBO_MODES:
        raise KeyError(name)
    return Mode(name, f"Turbo, {MODES[name].about}", name, ("t3",), model=TURBO_MODEL)


def worker_mode(name: str) -> Mode:
    """The Mode a worker named `name` runs: baseline, turbo, turbo:NAME or a mode of ours."""
    if name in (BASELINE.name, TURBO.name):
        return BASELINE if name == BASELINE.name else TURBO
    if name.startswith(TURBO_MODEL + ":"):
        return turbo_mode(name.split(":", 1)[1])
    return mode_named(name)


def _modes() -> dict[str, Mode]:
    from models.fast_modes import FAST_MODES

    changes = {"fewer_flow_steps": ("s3gen",), "compile": ("t3", "s3gen")}
    return {name: Mode(name, fast.about, name, changes.get(name, ("t3",)),
                       cuda_only=name in ("fp16", "compile", "cuda_graph"))
            for name, fast in FAST_MODES.items()}


# Every fast mode of models/fast_modes.py; `--modes` takes these names, or several joined
# by "+" (applied in that order, e.g. fp16+cuda_graph).
MODES: dict[str, Mode] = _modes()


def mode_named(name: str) -> Mode:
    """MODES[name], or the modes of "a+b+..." as one (KeyError for an unknown part)."""
    if name in MODES:
        return MODES[name]
    parts = [MODES[part] for part in name.split("+")]
    changes = tuple(dict.fromkeys(c for part in parts for c in part.changes))
    return Mode(name, "; ".join(part.about for part in parts), name, changes,
                cuda_only=any(part.cuda_only for part in parts))


# --- measuring one side (runs in a worker process) ---------------------------------------

def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def timing_calls(obj, method: str, durations: list[float], sync: Callable[[], None],
                 first_args: list | None = None) -> Iterator[None]:
    """Record the wall time of every call of `obj.method` made inside the block (and, given
    `first_args`, each call's first argument)."""
    original = getattr(obj, method)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = original(*args, **kwargs)
        sync()
        durations.append(time.perf_counter() - start)
        if first_args is not None:
            first_args.append(args[0] if args else next(iter(kwargs.values())))
        return out

    setattr(obj, method, timed)
    try:
        yield
    finally:
        delattr(obj, method)  # the instance attribute hid the class method; removing it restores it


@contextlib.contextmanager
def forcing_tokens(tokens: list[int]) -> Iterator[None]:
    """Inside the block, T3's sampler returns `tokens` in order: `stream_tokens` is then
    teacher-forced along them, and its `on_logits` shows what the model predicts at each step."""
    import torch

    import models.t3 as t3_module

    original, queue = t3_module.sample_token, iter(tokens)
    t3_module.sample_token = lambda probs, generator=None, greedy=False: torch.full(
        (probs.shape[0], 1), next(queue), dtype=torch.long, device=probs.device)
    try:
        yield
    finally:
        t3_module.sample_token = original


def first_block_tokens(w: Workload) -> int:
    """Tokens of the first streamed block: StreamConfig's default (20), or the whole of a
    shorter workload (a block under the vocoder's hold-back, 7 tokens, yields no audio)."""
    return min(FIRST_BLOCK_TOKENS, w.e2e_tokens)


def streamed_first_audio(tts, w: Workload, conds, params, sync: Callable[[], None]) -> float:
    """Seconds from calling `tts.stream(..., live=...)` to its first event with audio (the
    flow's steps are those the pipeline was built with, as for whole decoding)."""
    from models.s3gen.streaming import StreamConfig
    from models.tts import LivePlayback

    live = LivePlayback(blocks=StreamConfig(first_block=first_block_tokens(w)), chunks=1)
    start = time.perf_counter()
    events = tts.stream(w.text, conds, params, max_new_tokens=w.e2e_tokens, live=live)
    try:
        for event in events:
            if len(event.audio):
                sync()
                return time.perf_counter() - start
    finally:
        events.close()  # stops T3 and S3Gen between steps
    raise RuntimeError("the stream ended without audio")


def deviation(default: dict, mode_logits, mode_mel) -> dict:
    """How far a mode's outputs are from the default's, on the same inputs.

    T3: both sides' CFG logits along the default's sampled tokens (the default's from its
    timed run, the mode's teacher-forced along them); greedy agreement is the share of
    steps whose argmax is the same. S3Gen: the flow's log-mel of the fixed tokens, same
    seed (same noise).
    """
    out: dict = {}
    if mode_logits is not None:
        ref = default["t3_logits"]
        diff = mode_logits - ref
        out.update(t3_deviation_steps=len(ref),
                   t3_greedy_agreement=float((mode_logits.argmax(-1) == ref.argmax(-1)).float().mean()),
                   t3_logits_max_abs_dev=float(diff.abs().max()),
                   t3_logits_rel_dev=float((diff.norm(dim=-1) / ref.norm(dim=-1)).mean()))
    if mode_mel is not None:
        ref = default["mel"]
        diff = mode_mel - ref
        out.update(mel_l1=float(diff.abs().mean()), mel_max_abs_dev=float(diff.abs().max()),
                   mel_rel_dev=float(diff.norm() / ref.norm()))
    return out


def t3_token_stream(model, conds, w: Workload, generator=None, on_logits=None) -> Iterator[int]:
    """T3's tokens for the workload's text, at most `w.t3_tokens`, as a generation runs them:
    the English T3 with CFG (batch 2) on the text framed by SOT/EOT; T3-Turbo on one row
    with its sampling settings (its `max_gen_len` counts the steps after the first token)."""
    from models.sampling import SamplingParams
    from models.t3_turbo import TurboSamplingParams

    ids = model.text.tokenize(w.text).ids
    if model.entry.t3.architecture == "gpt2":
        params = TurboSamplingParams(temperature=w.turbo_temperature, top_k=w.turbo_top_k, top_p=w.turbo_top_p,
                                     repetition_penalty=w.turbo_repetition_penalty, max_gen_len=w.t3_tokens - 1)
        return model.t3.stream_tokens(conds.t3, ids, params, generator, on_logits=on_logits)
    params = SamplingParams(cfg_weight=w.cfg_weight, max_new_tokens=w.t3_tokens)
    return model.t3.stream_tokens(conds.t3, model.t3.frame_text(ids), params, generator, on_logits=on_logits)


def turbo_forced_logits(model, conds, w: Workload, tokens: list[int]):
    """T3-Turbo's raw logits (n, V) at each of the n steps that drew `tokens`, teacher-forced
    along them: one causal pass over [conditioning | text | START | tokens[:-1]]."""
    from models.t3_turbo import TurboKVCache

    t3 = model.t3
    embeds = t3.build_inputs(conds.t3, model.text.tokenize(w.text).ids, tokens[:-1])
    hidden = t3.forward_cached(embeds, TurboKVCache(t3, embeds.shape[1]))
    return t3.speech_head(hidden[0, -len(tokens):]).float().cpu()


def measure_ours(ckpt: Path, w: Workload, mode: Mode, device_name: str | None,
                 save_outputs: Path | None = None, compare_to: Path | None = None) -> dict:
    """Time one side of ours. `save_outputs` keeps the default's T3 logits and mel for the
    modes; `compare_to` reads them back and adds the mode's `deviation`."""
    import torch

    from models.fast_modes import LoadOptions, ModeError
    from models.registry import TURBO_REPO_ID
    from models.tts import SAMPLE_RATE, ChatterboxTTS

    torch.set_num_threads(w.threads)
    torch.set_grad_enabled(False)
    device = torch.device(device_name or ("cuda" if torch.cuda.is_available() else "cpu"))
    sync = lambda: _sync(device)  # noqa: E731
    out: dict = {"side": "ours", "mode": mode.name, "device": str(device), "torch": torch.__version__,
                 "torch_threads": torch.get_num_threads()}
    if mode.cuda_only and device.type != "cuda":
        out["skipped"] = f"{mode.name} runs on CUDA GPUs only; this run is on {device}"
        return out

    start = time.perf_counter()
    try:
        # A Turbo folder stands in for Turbo's repository (the English one is not read).
        tts = ChatterboxTTS.from_local(ckpt, device, local={TURBO_REPO_ID: ckpt}, model=mode.model,
                                       options=LoadOptions.from_modes(mode.fast_mode))
    except ModeError as exc:
        out["skipped"] = str(exc)
        return out
    sync()
    out["load_s"] = time.perf_counter() - start

    start = time.perf_counter()
    conds = tts.prepare_conditionals(w.voice, exaggeration=w.exaggeration)  # Turbo: loudness normalised
    sync()
    out["conditioning_s"] = time.perf_counter() - start

    # T3: timestamps of a streamed generation split prefill (to the first token) from decoding.
    model = tts.model()  # the components of the model it was loaded for (mode.model)
    params = w.params(mode.model)
    prefills, rates, logits = [], [], []
    for run in range(w.repeats):
        generator = torch.Generator(device=device).manual_seed(w.seed)
        stamps, tokens = [], []
        keep = (lambda step, l: logits.append(l.clone())) if save_outputs and run == 0 else None  # noqa: E731
        stream = t3_token_stream(model, conds, w, generator, keep)  # the text is tokenized here, untimed
        start = time.perf_counter()
        for token in stream:
            stamps.append(time.perf_counter())  # int(token) inside the loop already synchronised
            tokens.append(token)
        prefills.append(stamps[0] - start)
        rates.append((len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else math.nan)
    out["t3_prefill_s"] = min(prefills)
    out["t3_tokens"] = len(stamps)
    out["t3_method"] = ("stream_tokens timestamps: prefill = call to first token; decode = later tokens; "
                        f"best of {w.repeats}")
    out["t3_tokens_per_s"] = max(rates)

    # S3Gen on a fixed token list; the vocoder is timed inside the same call.
    speech = torch.tensor(w.s3gen_token_ids(), dtype=torch.long)
    s3gen_runs, vocoder_runs, mels = [], [], []
    for _ in range(w.repeats):
        generator = torch.Generator(device=device).manual_seed(w.seed)
        vocoder: list[float] = []
        with timing_calls(model.s3gen.mel2wav, "inference", vocoder, sync, first_args=mels):
            start = time.perf_counter()
            wav = model.s3gen.inference(speech, conds.gen, generator=generator)
            sync()
            s3gen_runs.append(time.perf_counter() - start)
        vocoder_runs.append(sum(vocoder))
    audio_s = wav.shape[-1] / SAMPLE_RATE
    out.update(s3gen_s=min(s3gen_runs), s3gen_audio_s=audio_s, s3gen_rtf=min(s3gen_runs) / audio_s,
               vocoder_s=min(vocoder_runs), vocoder_rtf=min(vocoder_runs) / audio_s)

    # End to end, as a request runs in the app (voice already prepared, watermark on).
    e2e_runs = []
    for _ in range(w.repeats):
        start = time.perf_counter()
        result = tts.synthesize(w.text, conds, params, max_new_tokens=w.e2e_tokens, watermark=True)
        sync()
        e2e_runs.append(time.perf_counter() - start)
    out.update(e2e_s=min(e2e_runs), e2e_audio_s=result.seconds, e2e_tokens=result.n_speech_tokens,
               e2e_rtf=min(e2e_runs) / result.seconds, watermarked=result.watermarked)

    out["first_audio_s"] = min(streamed_first_audio(tts, w, conds, params, sync) for _ in range(w.repeats))
    out["first_audio_kind"] = "streaming"
    out["first_block_tokens"] = first_block_tokens(w)

    out["peak_rss_mb"] = peak_rss_mb()
    if device.type == "cuda":
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20

    if save_outputs:
        torch.save({"t3_tokens": tokens, "t3_logits": torch.cat(logits).float().cpu(),
                    "mel": mels[0].float().cpu()}, save_outputs)
    if compare_to:  # after the figures above: this extra decoding is not timed
        default = torch.load(compare_to, weights_only=True)
        forced = None
        if "t3" in mode.changes and mode.model == TURBO_MODEL:
            forced = turbo_forced_logits(model, conds, w, default["t3_tokens"])
        elif "t3" in mode.changes:
            forced = []
            with forcing_tokens(default["t3_tokens"]):
                for _ in t3_token_stream(model, conds, w, on_logits=lambda step, l: forced.append(l.float().cpu())):
                    pass
            forced = torch.cat(forced)
        mel = mels[0].float().cpu() if "s3gen" in mode.changes else None
        out.update(deviation(default, forced, mel))
    return out


# --- orchestration -----------------------------------------------------------------------

ROWS = (  # key, label, better ("lower"/"higher")
    ("load_s", "model load (s)", "lower"),
    ("conditioning_s", "conditioning (s)", "lower"),
    ("t3_prefill_s", "T3 prefill (s)", "lower"),
    ("t3_tokens_per_s", "T3 decode (tokens/s)", "higher"),
    ("s3gen_rtf", "S3Gen s per audio s", "lower"),
    ("vocoder_rtf", "vocoder s per audio s", "lower"),
    ("e2e_rtf", "end-to-end RTF", "lower"),
    ("first_audio_s", "first audio (s)", "lower"),
    ("peak_rss_mb", "peak RSS (MB)", "lower"),
    ("gpu_peak_mb", "peak GPU memory (MB)", "lower"),
    ("t3_greedy_agreement", "T3 greedy agreement with ours", "higher"),
    ("t3_logits_rel_dev", "T3 logits rel. deviation", "lower"),
    ("mel_l1", "mel L1 from ours", "lower"),
)


def worker_env(threads: int, wait_policy: str) -> dict[str, str]:
    """The environment of every side: same thread counts, same OpenMP wait policy
    ("inherit": whatever this process has, the OpenMP default when unset)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if wait_policy != "inherit":
        env["OMP_WAIT_POLICY"] = wait_policy
    return env


class WorkerFailed(RuntimeError):
    """A side's process exited with an error or printed no figures."""


def run_worker(cmd: list[str], env: dict[str, str]) -> dict:
    """Run one side; its stderr passes through, its last stdout line is its JSON."""
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        raise WorkerFailed(f"benchmark worker failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-2000:]}")
    return json.loads(lines[-1])


def has_figures(side: dict) -> bool:
    """Whether a side ran (not skipped for its device, not crashed)."""
    return bool(side) and "skipped" not in side and "failed" not in side


def format_table(results: dict, name: str = "ours") -> str:
    """A side's figures (column `name`), its modes', the reference's and the ratios to it."""
    columns = [(name, results)] + [(name, r) for name, r in results.get("modes", {}).items() if has_figures(r)]
    reference = results.get("reference")
    header = ["figure"] + [name for name, _ in columns]
    if reference:
        header += ["reference"] + [f"{name}/ref" for name, _ in columns]
    table = [header]
    for key, label, better in ROWS:
        if not any(key in r for _, r in columns) and not (reference and key in reference):
            continue
        row = [f"{label} [{better} is better]"] + [_fmt(r.get(key)) for _, r in columns]
        if reference:
            row.append(_fmt(reference.get(key)))
            row += [_fmt(_ratio(r.get(key), reference.get(key)), ratio=True) for _, r in columns]
        table.append(row)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) if i == 0 else cell.rjust(width) for i, (cell, width)
                       in enumerate(zip(row, widths))) for row in table]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _loadavg() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _ratio(a, b):
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def _fmt(value, ratio: bool = False) -> str:
    if value is None:
        return "-"
    if ratio:
        return f"{value:.2f}x"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="folder with the released layout")
    parser.add_argument("--json", type=Path, help="write all figures to this file")
    parser.add_argument("--smoke", action="store_true", help="tiny token counts (CI: checks every path, not speed)")
    parser.add_argument("--modes", nargs="*", default=[], metavar="NAME",
                        help=f"fast modes to time as well (known: {', '.join(MODES) or 'none yet'}; "
                             "join names with + to combine them, e.g. fp16+cuda_graph)")
    parser.add_argument("--reference-python", type=Path,
                        help="python of a virtualenv with chatterbox-tts==0.1.7, to time the reference too")
    parser.add_argument("--turbo-checkpoint", type=Path,
                        help="folder with the ResembleAI/chatterbox-turbo layout: time our Turbo too (and, with "
                             "--reference-python, the reference's ChatterboxTurboTTS on the same folder)")
    parser.add_argument("--turbo-modes", nargs="*", default=[], metavar="NAME", choices=TURBO_MODES,
                        help=f"fast modes of our Turbo to time as well (with --turbo-checkpoint; known: "
                             f"{', '.join(TURBO_MODES)})")
    parser.add_argument("--voice", type=Path, help="reference clip (default: the parity kit's ref_a.wav; "
                                                   "Turbo needs one longer than 5 s)")
    parser.add_argument("--device", help="our device (default: cuda if available, else cpu)")
    parser.add_argument("--reference-device", default="cpu", help="the reference's device (default cpu)")
    parser.add_argument("--omp-wait-policy", default=OMP_WAIT_POLICY, choices=("PASSIVE", "ACTIVE", "inherit"),
                        help=f"OMP_WAIT_POLICY of every side (default {OMP_WAIT_POLICY}: right on a shared machine; "
                             "'inherit' keeps this environment's, the OpenMP default when unset)")
    parser.add_argument("--worker", metavar="MODE", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--save-outputs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--compare-to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [m for m in args.modes if not all(part in MODES for part in m.split("+"))]
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(map(repr, unknown))}; known modes: {', '.join(MODES) or 'none yet'}")
    if args.turbo_modes and not args.turbo_checkpoint:
        parser.error("--turbo-modes needs --turbo-checkpoint")
    if args.reference_python and not args.reference_python.is_file():
        parser.error(f"--reference-python {args.reference_python} does not exist (see bench/README.md)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        w = Workload(**{k: v for k, v in json.loads(args.workload).items() if k != "s3gen_token_ids"})
        mode = worker_mode(args.worker)
        with contextlib.redirect_stdout(sys.stderr):  # only the JSON line goes to stdout
            result = measure_ours(args.checkpoint, w, mode, args.device, args.save_outputs, args.compare_to)
        print(json.dumps(result), flush=True)
        return 0

    voice = args.voice or (PARITY_VOICE if PARITY_VOICE.is_file() else ASSET_VOICE)
    if not voice.is_file():
        raise SystemExit(f"voice clip not found: {voice}")
    workload = Workload(voice=str(voice.resolve()))
    if args.smoke:
        workload = replace(workload, **SMOKE)
    checkpoint = str(args.checkpoint.resolve())
    env = worker_env(workload.threads, args.omp_wait_policy)

    def ours(mode: str, *extra: str, folder: str = checkpoint) -> dict:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--checkpoint", folder,
               "--worker", mode, "--workload", workload.to_json(), *extra]
        return run_worker(cmd + (["--device", args.device] if args.device else []), env)

    def reference(family: str, folder: str) -> dict:
        return run_worker([str(args.reference_python), str(REFERENCE_WORKER), "--checkpoint", folder,
                           "--family", family, "--device", args.reference_device,
                           "--workload", workload.to_json()], env)

    def mode_figures(mode: str, *extra: str, folder: str = checkpoint) -> dict:
        """A mode's figures; a mode that crashes is recorded as failed and the others still run."""
        try:
            return ours(mode, *extra, folder=folder)
        except WorkerFailed as exc:
            print(exc, file=sys.stderr)
            return {"mode": mode, "failed": str(exc).splitlines()[0]}

    print(f"benchmark: {'smoke' if args.smoke else 'full'} workload, {workload.threads} torch threads",
          file=sys.stderr)
    results = {"workload": json.loads(workload.to_json()), "checkpoint": checkpoint, "smoke": args.smoke,
               "machine": {"cpus": os.cpu_count(), "platform": sys.platform, "loadavg_start": _loadavg(),
                           "omp_wait_policy": env.get("OMP_WAIT_POLICY", "unset")},
               "modes_known": {name: m.about for name, m in MODES.items()}}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            default_outputs = Path(tmp) / "default_outputs.pt"  # the default's logits and mel, for deviations
            results.update(ours(BASELINE.name, "--save-outputs", str(default_outputs)))
            results["modes"] = {name: mode_figures(name, "--compare-to", str(default_outputs))
                                for name in args.modes}
        if args.reference_python:
            results["reference"] = reference("english", checkpoint)
        if args.turbo_checkpoint:
            turbo_folder = str(args.turbo_checkpoint.resolve())
            with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
                turbo_outputs = Path(tmp) / "turbo_outputs.pt"  # Turbo's logits and mel, for its modes
                results["turbo"] = ours(TURBO.name, "--save-outputs", str(turbo_outputs), folder=turbo_folder)
                results["turbo"]["modes"] = {
                    name: mode_figures(f"{TURBO_MODEL}:{name}", "--compare-to", str(turbo_outputs),
                                       folder=turbo_folder) for name in args.turbo_modes}
            results["turbo"]["checkpoint"] = turbo_folder
            if args.reference_python:
                results["turbo"]["reference"] = reference(TURBO_MODEL, turbo_folder)
    except WorkerFailed as exc:  # without the default's or the reference's figures there is no table
        raise SystemExit(str(exc)) from None

    results["machine"]["loadavg_end"] = _loadavg()  # other jobs on the machine skew every figure
    print(format_table(results))
    if "turbo" in results:
        turbo = results["turbo"]
        turbo["e2e_rtf_english"] = results["e2e_rtf"]  # our English default, same text and voice
        print(f"\nChatterbox-Turbo ({turbo['checkpoint']}):")
        print(format_table(turbo, name=TURBO.name))
        print(f"end-to-end RTF: Turbo {_fmt(turbo['e2e_rtf'])}, our English default {_fmt(results['e2e_rtf'])} "
              f"(Turbo is {_fmt(_ratio(results['e2e_rtf'], turbo['e2e_rtf']), ratio=True)} as fast)")
    for name, r in [*results["modes"].items(),
                    *((f"{TURBO_MODEL}:{k}", v) for k, v in results.get("turbo", {}).get("modes", {}).items())]:
        if "skipped" in r:
            print(f"mode {name} skipped: {r['skipped']}")
        if "failed" in r:
            print(f"mode {name} FAILED: {r['failed']}")
    kinds = {name: r.get("first_audio_kind") for name, r in
             [("ours", results), *results["modes"].items(), ("reference", results.get("reference") or {})]
             if has_figures(r)}
    print(f"first audio: {', '.join(f'{k} {v}' for k, v in kinds.items())}; "
          f"x/ref = figure / reference figure; {workload.threads} torch threads, {os.cpu_count()} CPUs, "
          f"load average {results['machine']['loadavg_start']} -> {results['machine']['loadavg_end']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    modes = [*results["modes"].values(), *results.get("turbo", {}).get("modes", {}).values()]
    return 1 if any("failed" in r for r in modes) else 0


if __name__ == "__main__":
    sys.exit(main())
