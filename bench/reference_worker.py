"""Times the reference package (chatterbox-tts 0.1.7) on the workload that bench/run.py gives it.

    REFVENV/bin/python bench/reference_worker.py --checkpoint DIR --workload JSON
                                                 [--family english|turbo] [--device cpu]

Runs under a separate virtualenv that has chatterbox-tts==0.1.7 installed (never a
dependency of this project), so it imports nothing from this repository. Prints the same
figures as our side, as one JSON object on the last stdout line; everything the
reference prints goes to stderr.

`--family english` times `ChatterboxTTS`, `turbo` times `ChatterboxTurboTTS` (a folder with
the chatterbox-turbo layout), each with the same parts and keys.

The reference's T3 loops have no streaming or fixed-token mode, so T3 is timed by
difference: one token and N tokens with the same seed; decode rate = (n - 1) / (t_N - t_1).
English (`t3.inference(max_new_tokens=1)` and `=N`): prefill = t_1 minus one decode step
(its loop runs one backbone step after every sampled token, the last included). Turbo
(`t3.inference_turbo(max_gen_len=0)` and `=N-1`: the first token comes from the prefill,
each later one from one backbone step): prefill = t_1. `generate()` asks for 1000 tokens;
for the end-to-end run the T3 call is wrapped to ask for the workload's `e2e_tokens`
instead, so both sides speak the same number of tokens.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import resource
import sys
import time
from pathlib import Path


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


SPEECH_CODEBOOK_SIZE = 6561  # ids >= this (start, stop) are dropped before S3Gen


class _Timer:
    """Device-synchronised, seeded wall times of one side's parts."""

    def __init__(self, device, seed: int):
        import torch

        self.device, self.seed, self.torch = device, seed, torch

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def best(self, run, repeats: int = 1, inference: bool = False) -> tuple[float, object]:
        """Fastest of `repeats` runs of `run()`, each after seeding torch's global generator
        (inside `torch.inference_mode()` with `inference`): (seconds, its result)."""
        best = None
        for _ in range(repeats):
            self.torch.manual_seed(self.seed)
            start = time.perf_counter()
            with self.torch.inference_mode(inference):
                result = run()
            self.sync()
            elapsed = time.perf_counter() - start
            if best is None or elapsed < best[0]:
                best = (elapsed, result)
        return best


def _start(w: dict, device_name: str, model: str) -> tuple[dict, _Timer]:
    import torch

    torch.set_num_threads(w["threads"])
    torch.set_grad_enabled(False)
    timer = _Timer(torch.device(device_name), w["seed"])
    out = {"side": "reference", "model": model, "package": "chatterbox-tts 0.1.7", "device": device_name,
           "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    return out, timer


def _t3_by_difference(out: dict, timer: _Timer, run_tokens, w: dict, extra_step: bool) -> None:
    """T3 figures from `run_tokens(n)` (draws at most n tokens; returns how many): see the
    module doc. `extra_step`: the loop runs one more backbone step than it draws tokens."""
    repeats = w.get("repeats", 1)  # each timed part: its fastest of this many runs, as on our side
    t_one, _ = timer.best(lambda: run_tokens(1), repeats, inference=True)
    t_all, n = timer.best(lambda: run_tokens(w["t3_tokens"]), repeats, inference=True)
    step = (t_all - t_one) / (n - 1) if n > 1 else math.nan
    out["t3_tokens"] = n
    out["t3_tokens_per_s"] = 1.0 / step if n > 1 else math.nan
    out["t3_prefill_s"] = t_one - step if extra_step and n > 1 else t_one
    out["t3_method"] = f"difference of T3 runs of 1 and N tokens, same seed; best of {repeats}"


def _s3gen(out: dict, timer: _Timer, model, w: dict, **options) -> None:
    """S3Gen on the fixed token list; the vocoder is timed inside the same call."""
    import torch

    speech = torch.tensor(w["s3gen_token_ids"], dtype=torch.long, device=timer.device)
    vocoder: list[float] = []
    hift_inference = model.s3gen.mel2wav.inference

    def timed_vocoder(*args, **kwargs):
        start = time.perf_counter()
        result = hift_inference(*args, **kwargs)
        timer.sync()
        vocoder.append(time.perf_counter() - start)
        return result

    model.s3gen.mel2wav.inference = timed_vocoder
    runs = []
    for _ in range(w.get("repeats", 1)):
        vocoder.clear()
        seconds, wav = timer.best(lambda: model.s3gen.inference(speech_tokens=speech, ref_dict=model.conds.gen,
                                                                **options), inference=True)
        runs.append((seconds, sum(vocoder)))
    del model.s3gen.mel2wav.inference
    wav = wav[0] if isinstance(wav, tuple) else wav
    audio_s = wav.shape[-1] / model.sr
    s3gen_s, vocoder_s = min(r[0] for r in runs), min(r[1] for r in runs)
    out.update(s3gen_s=s3gen_s, s3gen_audio_s=audio_s, s3gen_rtf=s3gen_s / audio_s,
               vocoder_s=vocoder_s, vocoder_rtf=vocoder_s / audio_s)


def _end_to_end(out: dict, timer: _Timer, model, w: dict, t3_method: str, token_limit: dict, generate) -> None:
    """`generate()` (watermark included), voice already prepared, with `model.t3.<t3_method>`
    wrapped to pass `token_limit` (the workload's token count) instead of its 1000."""
    t3_call = getattr(model.t3, t3_method)
    drawn: list[int] = []

    def limited(**kwargs):
        tokens = t3_call(**{**kwargs, **token_limit})
        drawn.append(int((tokens < SPEECH_CODEBOOK_SIZE).sum()))  # what S3Gen decodes
        return tokens

    setattr(model.t3, t3_method, limited)
    e2e_s, wav = timer.best(generate, w.get("repeats", 1))
    delattr(model.t3, t3_method)
    audio_s = wav.shape[-1] / model.sr
    out.update(e2e_s=e2e_s, e2e_audio_s=audio_s, e2e_tokens=drawn[-1], e2e_rtf=e2e_s / audio_s,
               watermarked=True, first_audio_s=e2e_s, first_audio_kind="full_generation")


def _finish(out: dict, timer: _Timer) -> dict:
    out["peak_rss_mb"] = peak_rss_mb()
    if timer.device.type == "cuda":
        out["gpu_peak_mb"] = timer.torch.cuda.max_memory_allocated(timer.device) / 2**20
    return out


def measure_english(ckpt: Path, w: dict, device_name: str) -> dict:
    import torch
    import torch.nn.functional as F
    from chatterbox.tts import ChatterboxTTS, punc_norm

    out, timer = _start(w, device_name, "english")
    out["load_s"], model = timer.best(lambda: ChatterboxTTS.from_local(ckpt, device_name))
    out["conditioning_s"], _ = timer.best(
        lambda: model.prepare_conditionals(w["voice"], exaggeration=w["exaggeration"]))

    # T3, text framed as generate() frames it: two identical rows for CFG, then SOT/EOT.
    text_tokens = model.tokenizer.text_to_tokens(punc_norm(w["text"])).to(timer.device)
    text_tokens = torch.cat([text_tokens, text_tokens], dim=0)
    text_tokens = F.pad(F.pad(text_tokens, (1, 0), value=model.t3.hp.start_text_token),
                        (0, 1), value=model.t3.hp.stop_text_token)

    def t3_run(max_new_tokens: int) -> int:
        tokens = model.t3.inference(t3_cond=model.conds.t3, text_tokens=text_tokens,
                                    max_new_tokens=max_new_tokens, temperature=0.8, cfg_weight=w["cfg_weight"],
                                    repetition_penalty=1.2, min_p=0.05, top_p=1.0)
        return int(tokens.shape[-1])

    _t3_by_difference(out, timer, t3_run, w, extra_step=True)
    _s3gen(out, timer, model, w)
    _end_to_end(out, timer, model, w, "inference", {"max_new_tokens": w["e2e_tokens"]},
                lambda: model.generate(w["text"], exaggeration=w["exaggeration"], cfg_weight=w["cfg_weight"]))
    return _finish(out, timer)


def measure_turbo(ckpt: Path, w: dict, device_name: str) -> dict:
    from chatterbox.tts_turbo import ChatterboxTurboTTS, punc_norm

    out, timer = _start(w, device_name, "turbo")
    out["load_s"], model = timer.best(lambda: ChatterboxTurboTTS.from_local(ckpt, device_name))
    # Loudness normalised to -27 LUFS (its default), as on our side.
    out["conditioning_s"], _ = timer.best(lambda: model.prepare_conditionals(w["voice"]))

    sampling = dict(temperature=w["turbo_temperature"], top_k=w["turbo_top_k"], top_p=w["turbo_top_p"],
                    repetition_penalty=w["turbo_repetition_penalty"])
    text_tokens = model.tokenizer(punc_norm(w["text"]), return_tensors="pt", padding=True,
                                  truncation=True).input_ids.to(timer.device)

    def t3_run(n_tokens: int) -> int:
        tokens = model.t3.inference_turbo(t3_cond=model.conds.t3, text_tokens=text_tokens,
                                          max_gen_len=n_tokens - 1, **sampling)
        return int(tokens.shape[-1])

    _t3_by_difference(out, timer, t3_run, w, extra_step=False)
    _s3gen(out, timer, model, w, n_cfm_timesteps=2)  # what its generate() passes
    _end_to_end(out, timer, model, w, "inference_turbo", {"max_gen_len": w["e2e_tokens"] - 1},
                lambda: model.generate(w["text"], **sampling))
    return _finish(out, timer)


MEASURE = {"english": measure_english, "turbo": measure_turbo}


def main() -> int:
    parser = argparse.ArgumentParser(description="time chatterbox-tts 0.1.7 (run by bench/run.py)")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--workload", required=True, help="JSON written by bench/run.py")
    parser.add_argument("--family", choices=tuple(MEASURE), default="english")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with contextlib.redirect_stdout(sys.stderr):
        result = MEASURE[args.family](args.checkpoint, json.loads(args.workload), args.device)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
