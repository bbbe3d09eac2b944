"""Times the reference package (chatterbox-tts 0.1.7) on the workload that bench/run.py gives it.

    REFVENV/bin/python bench/reference_worker.py --checkpoint DIR --workload JSON [--device cpu]

Runs under a separate virtualenv that has chatterbox-tts==0.1.7 installed (never a
dependency of this project), so it imports nothing from this repository. Prints the same
figures as our side, as one JSON object on the last stdout line; everything the
reference prints goes to stderr.

The reference's T3 loop has no streaming or fixed-token mode, so T3 is timed by
difference: `t3.inference(max_new_tokens=1)` and `max_new_tokens=N` with the same seed;
decode rate = (n - 1) / (t_N - t_1), prefill = t_1 minus one decode step (its loop runs
one backbone step after every sampled token, the last included). `generate()` always asks
for 1000 tokens; for the end-to-end run `t3.inference` is wrapped to ask for the
workload's `e2e_tokens` instead, so both sides speak the same number of tokens.
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


def measure_reference(ckpt: Path, w: dict, device_name: str) -> dict:
    import torch
    import torch.nn.functional as F
    from chatterbox.tts import ChatterboxTTS, punc_norm

    torch.set_num_threads(w["threads"])
    torch.set_grad_enabled(False)
    device = torch.device(device_name)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    out: dict = {"side": "reference", "package": "chatterbox-tts 0.1.7", "device": str(device),
                 "torch": torch.__version__, "torch_threads": torch.get_num_threads()}

    start = time.perf_counter()
    model = ChatterboxTTS.from_local(ckpt, device_name)
    sync()
    out["load_s"] = time.perf_counter() - start

    start = time.perf_counter()
    model.prepare_conditionals(w["voice"], exaggeration=w["exaggeration"])
    sync()
    out["conditioning_s"] = time.perf_counter() - start

    # T3, text framed as generate() frames it: two identical rows for CFG, then SOT/EOT.
    text_tokens = model.tokenizer.text_to_tokens(punc_norm(w["text"])).to(device)
    text_tokens = torch.cat([text_tokens, text_tokens], dim=0)
    text_tokens = F.pad(F.pad(text_tokens, (1, 0), value=model.t3.hp.start_text_token),
                        (0, 1), value=model.t3.hp.stop_text_token)

    def t3_run(max_new_tokens: int) -> tuple[float, int]:
        torch.manual_seed(w["seed"])
        start = time.perf_counter()
        with torch.inference_mode():
            tokens = model.t3.inference(t3_cond=model.conds.t3, text_tokens=text_tokens,
                                        max_new_tokens=max_new_tokens, temperature=0.8,
                                        cfg_weight=w["cfg_weight"], repetition_penalty=1.2, min_p=0.05, top_p=1.0)
        sync()
        return time.perf_counter() - start, int(tokens.shape[-1])

    repeats = w.get("repeats", 1)  # each timed part: its fastest of this many runs, as on our side
    t_one = min(t3_run(1)[0] for _ in range(repeats))
    t_all, n = min(t3_run(w["t3_tokens"]) for _ in range(repeats))
    step = (t_all - t_one) / (n - 1) if n > 1 else math.nan
    out["t3_tokens"] = n
    out["t3_tokens_per_s"] = 1.0 / step if n > 1 else math.nan
    out["t3_prefill_s"] = t_one - step if n > 1 else t_one
    out["t3_method"] = f"difference of t3.inference(max_new_tokens=1) and (=N), same seed; best of {repeats}"

    # S3Gen on the fixed token list; the vocoder is timed inside the same call.
    speech = torch.tensor(w["s3gen_token_ids"], dtype=torch.long, device=device)
    vocoder: list[float] = []
    hift_inference = model.s3gen.mel2wav.inference

    def timed_vocoder(*args, **kwargs):
        start = time.perf_counter()
        result = hift_inference(*args, **kwargs)
        sync()
        vocoder.append(time.perf_counter() - start)
        return result

    model.s3gen.mel2wav.inference = timed_vocoder
    s3gen_runs, vocoder_runs = [], []
    for _ in range(repeats):
        vocoder.clear()
        torch.manual_seed(w["seed"])
        start = time.perf_counter()
        with torch.inference_mode():
            wav = model.s3gen.inference(speech_tokens=speech, ref_dict=model.conds.gen)
        sync()
        s3gen_runs.append(time.perf_counter() - start)
        vocoder_runs.append(sum(vocoder))
    del model.s3gen.mel2wav.inference
    audio_s = wav[0].shape[-1] / model.sr if isinstance(wav, tuple) else wav.shape[-1] / model.sr
    out.update(s3gen_s=min(s3gen_runs), s3gen_audio_s=audio_s, s3gen_rtf=min(s3gen_runs) / audio_s,
               vocoder_s=min(vocoder_runs), vocoder_rtf=min(vocoder_runs) / audio_s)

    # End to end through generate() (watermark included), voice already prepared.
    t3_inference = model.t3.inference
    model.t3.inference = lambda **kwargs: t3_inference(**{**kwargs, "max_new_tokens": w["e2e_tokens"]})
    e2e_runs = []
    for _ in range(repeats):
        torch.manual_seed(w["seed"])
        start = time.perf_counter()
        wav = model.generate(w["text"], exaggeration=w["exaggeration"], cfg_weight=w["cfg_weight"])
        sync()
        e2e_runs.append(time.perf_counter() - start)
    e2e_s = min(e2e_runs)
    del model.t3.inference
    audio_s = wav.shape[-1] / model.sr
    out.update(e2e_s=e2e_s, e2e_audio_s=audio_s, e2e_tokens=round(audio_s * 25), e2e_rtf=e2e_s / audio_s,
               watermarked=True, first_audio_s=e2e_s, first_audio_kind="full_generation")

    out["peak_rss_mb"] = peak_rss_mb()
    if device.type == "cuda":
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description="time chatterbox-tts 0.1.7 (run by bench/run.py)")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--workload", required=True, help="JSON written by bench/run.py")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with contextlib.redirect_stdout(sys.stderr):
        result = measure_reference(args.checkpoint, json.loads(args.workload), args.device)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
