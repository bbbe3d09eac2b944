"""Replay golden files of the parity kit against our implementation.

    python tools/parity.py --checkpoint DIR FILE.npz [FILE.npz ...]

Each golden file carries its own inputs; its stage is recognised by the fields it
holds (the file name is not trusted), so unseen cases replay the same way. The model
family (English or Turbo) is read from the checkpoint folder (Turbo: t3_turbo_v1 /
s3gen_meanflow files) and checked against the fields of each file. One line
is printed per compared quantity with its max abs error and tolerance, then
`parity: N passed, M failed, K skipped`. Exit status is 1 if anything failed.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# stage -> (fields that identify it, "module:function" that replays it, title). Voice-conversion
# files (../parity/vc/) reuse the English letters and field names, so their markers come first
# and name fields no English file holds; their flow and vocoder files are the English formats
# less one intermediate, and replay through the English stages.
STAGES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "vc c": (("source_wav_16k", "speech_tokens"), "tools.replay_vc:replay_source_tokens", "VC source tokens"),
    "vc d": (("dec_cond_len", "campplus_fbank"), "tools.replay_vc:replay_target", "VC target reference"),
    "vc j": (("target_wav_24k", "s3gen_tokens"), "tools.replay_vc:replay_vc_generate", "VC end to end"),
    "a": (("partial_embeds",), "tools.replay_frontend:replay_voice_encoder", "voice encoder"),
    "b": (("token_strings",), "tools.replay_frontend:replay_text", "text front-end"),
    "c": (("t3_prompt_log_mel",), "tools.replay_reference:replay_s3_tokenizer", "S3 tokenizer"),
    "d": (("campplus_fbank",), "tools.replay_reference:replay_reference_embedding", "S3Gen reference"),
    "e": (("perceiver_out",), "tools.replay_t3:replay_conditioning", "T3 conditioning"),
    "f": (("speech_logits",), "tools.replay_t3:replay_teacher_forced", "T3 teacher forced"),
    "g": (("cfg_logits",), "tools.replay_t3:replay_greedy", "T3 greedy decode"),
    "h": (("estimator_out_step0",), "tools.replay_flow:replay_flow", "S3Gen flow"),
    "i": (("sine_noise_randn", "wav_before_fade"), "tools.replay_hift:replay_hift", "HiFT vocoder"),
    "j": (("t3_tokens_raw",), "tools.replay_e2e:replay_e2e", "end to end"),
}

# The Chatterbox-Turbo kit (parity/turbo/): same letters, its own fields and replays.
TURBO_STAGES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "a": (("loudness_lufs",), "tools.replay_turbo:replay_conditionals", "Turbo conditionals"),
    "b": (("token_strings",), "tools.replay_turbo:replay_text", "Turbo text front-end"),
    "e": (("cond_emb",), "tools.replay_turbo:replay_conditioning", "T3-Turbo conditioning"),
    "f": (("input_embeds_tail",), "tools.replay_turbo:replay_teacher_forced", "T3-Turbo teacher forced"),
    "g": (("tokens_generated",), "tools.replay_turbo:replay_decoding", "T3-Turbo decoding"),
    "h": (("time_mixer_out",), "tools.replay_turbo:replay_flow", "S3Gen meanflow"),
    "i": (("conv_post_out",), "tools.replay_hift:replay_hift", "HiFT vocoder"),
    "j": (("norm_loudness",), "tools.replay_turbo:replay_e2e", "Turbo end to end"),
}
# The multilingual kit (parity/multilingual/): the stages whose goldens differ from the English
# ones, recognised by a field only they hold (checked first); the other stages are shared
# modules (voice encoder, S3 tokenizer, S3Gen, T3 conditioning) and replay as English ones.
MULTILINGUAL_STAGES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "b": (("preprocessed_text",), "tools.replay_multilingual:replay_text", "multilingual text front-end"),
    "f": (("aligned_attn_text",), "tools.replay_multilingual:replay_teacher_forced_mtl",
          "multilingual T3 teacher forced"),
    "g": (("analyzer_alignment",), "tools.replay_multilingual:replay_decoding", "multilingual T3 decode + analyzer"),
    "j": (("conds_speaker_emb",), "tools.replay_multilingual:replay_e2e", "multilingual end to end"),
}
SHARED_WITH_MULTILINGUAL = ("a", "c", "d", "e", "h", "i")
FAMILY_STAGES = {
    "english": STAGES,
    "turbo": TURBO_STAGES,
    "multilingual": {**MULTILINGUAL_STAGES, **{k: STAGES[k] for k in SHARED_WITH_MULTILINGUAL}},
}
TURBO_FIELDS = ("loudness_lufs", "input_embeds_tail", "cond_emb", "tokens_generated", "time_mixer_out",
                "norm_loudness")


# S3Gen submodule name (= key prefix in s3gen.safetensors) -> class built with its defaults
S3GEN_PARTS = {
    "tokenizer": ("models.s3gen.tokenizer", "S3Tokenizer"),
    "speaker_encoder": ("models.s3gen.campplus", "CAMPPlus"),
    "flow": ("models.s3gen.flow", "Flow"),
    "mel2wav": ("models.s3gen.hift", "HiFTGenerator"),
}


class StageNotImplemented(Exception):
    """Raised by a replay function for a stage (or part) we do not implement yet."""


@dataclass
class Report:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    prefix: str = ""
    lines: list[str] = field(default_factory=list)

    def _emit(self, line: str) -> None:
        line = f"{self.prefix}{line}"
        self.lines.append(line)
        print(line, flush=True)

    def close(self, name: str, actual, expected, atol: float) -> bool:
        """Compare arrays by max abs error (shapes must agree)."""
        actual = np.asarray(actual, dtype=np.float64)
        expected = np.asarray(expected, dtype=np.float64)
        if actual.shape != expected.shape:
            return self.fail(name, f"shape {actual.shape} != golden {expected.shape}")
        err = float(np.max(np.abs(actual - expected))) if actual.size else 0.0
        ok = bool(np.isfinite(err) and err <= atol)
        return self._count(ok, f"{name:<34} max|err| {err:.3e}  tol {atol:.0e}")

    def equal(self, name: str, actual, expected, allowed_mismatches: int = 0) -> bool:
        """Exact comparison of integer sequences / strings, with a mismatch budget."""
        a, e = np.asarray(actual), np.asarray(expected)
        if a.shape != e.shape:
            return self.fail(name, f"shape {a.shape} != golden {e.shape}")
        bad = int(np.sum(a != e))
        where = "" if bad == 0 else f" (first at {int(np.argmax(a != e))})"
        ok = bad <= allowed_mismatches
        return self._count(ok, f"{name:<34} mismatches {bad}{where}  tol {allowed_mismatches}")

    def fail(self, name: str, why: str) -> bool:
        return self._count(False, f"{name:<34} {why}")

    def skip(self, name: str, why: str) -> None:
        self.skipped += 1
        self._emit(f"SKIP  {name:<34} {why}")

    def _count(self, ok: bool, text: str) -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        self._emit(("PASS  " if ok else "FAIL  ") + text)
        return ok


class Context:
    """Loads each model component from the checkpoint on first use, once."""

    def __init__(self, checkpoint: Path):
        from models.loading_turbo import is_turbo_checkpoint
        from models.multilingual.loading import is_multilingual_checkpoint

        self.checkpoint = Path(checkpoint)
        self.family = ("turbo" if is_turbo_checkpoint(self.checkpoint) else
                       "multilingual" if is_multilingual_checkpoint(self.checkpoint) else "english")
        self._parts: dict[str, object] = {}

    @cached_property
    def _loading(self):
        if self.family == "multilingual":
            return importlib.import_module("models.multilingual.loading")
        return importlib.import_module("models.loading")

    @cached_property
    def turbo_tokenizer(self):
        from models.loading_turbo import load_turbo_tokenizer
        return load_turbo_tokenizer(self.checkpoint)

    @cached_property
    def turbo_t3(self):
        from models.loading_turbo import load_turbo_t3
        return load_turbo_t3(self.checkpoint)

    @cached_property
    def text_tokenizer(self):
        if self.family == "multilingual":
            return self._loading.load_tokenizer(self.checkpoint, optional_packages=False)
        return self._loading.load_text_tokenizer(self.checkpoint)

    @cached_property
    def voice_encoder(self):
        return self._loading.load_voice_encoder(self.checkpoint)

    @cached_property
    def t3(self):
        return self._loading.load_t3(self.checkpoint)

    @cached_property
    def s3gen(self):
        if self.family == "turbo":
            from models.loading_turbo import load_turbo_s3gen
            return load_turbo_s3gen(self.checkpoint)
        return self._loading.load_s3gen(self.checkpoint)

    def s3gen_part(self, name: str):
        """One S3Gen submodule (`tokenizer`, `speaker_encoder`, `flow`, `mel2wav`).

        Taken from the whole S3Gen when that is loaded already; otherwise only that
        part's tensors are read, so a single stage replays without the rest.
        """
        if "s3gen" in self.__dict__ or self.family == "multilingual":  # s3gen.pt is read whole
            return getattr(self.s3gen, name)
        if name not in self._parts:
            from models.loading import S3GEN_FILE, S3GEN_TOLERATED_MISSING, load_strict, read_safetensors
            from models.loading_turbo import TURBO_S3GEN_FILE
            from models.s3gen.flow import FlowConfig
            module_name, class_name = S3GEN_PARTS[name]
            cls = getattr(importlib.import_module(module_name), class_name)
            turbo = self.family == "turbo"
            # The meanflow file is loaded strictly, as a whole: nothing may be missing.
            part = cls(FlowConfig.turbo()) if turbo and name == "flow" else cls()
            file = TURBO_S3GEN_FILE if turbo else S3GEN_FILE
            tolerated = () if turbo else S3GEN_TOLERATED_MISSING
            allowed = [k[len(name) + 1:] for k in tolerated if k.startswith(name + ".")]
            state = read_safetensors(self.checkpoint / file, prefix=name + ".")
            load_strict(part, state, f"{file} [{name}]", allowed_missing=allowed)
            if hasattr(part, "fold_weight_norm"):
                part.fold_weight_norm()
            self._parts[name] = part.eval()
        return self._parts[name]


def golden_families(data: np.lib.npyio.NpzFile) -> tuple[str, ...]:
    """The checkpoint families that can replay this golden: a Turbo or multilingual golden only its
    own; an English stage of a module the multilingual model shares, both; HiFT, all three."""
    if any(f in data.files for f in TURBO_FIELDS):
        return ("turbo",)
    if "token_strings" in data.files and "token_ids_with_sot_eot" not in data.files \
            and detect_stage(data, "multilingual") is None:
        return ("turbo",)   # the GPT-2 front-end adds no SOT/EOT
    if detect_stage(data, "multilingual") in MULTILINGUAL_STAGES:
        return ("multilingual",)
    letter = detect_stage(data, "english")
    if letter == "i":
        return ("english", "multilingual", "turbo")
    if letter in SHARED_WITH_MULTILINGUAL:
        return ("english", "multilingual")
    return ("english",)


def detect_stage(data: np.lib.npyio.NpzFile, family: str = "english") -> str | None:
    for letter, (markers, _, _) in FAMILY_STAGES[family].items():
        if all(m in data.files for m in markers):
            return letter
    return None


def replay_file(path: Path, ctx: Context, report: Report) -> None:
    data = np.load(path, allow_pickle=False)
    report.prefix = f"{path.name}: "
    family = getattr(ctx, "family", "english")
    families = golden_families(data)
    if family not in families:
        kinds = " or ".join(families)
        report.fail("family", f"a golden of the {kinds} model: a {kinds} golden needs a {kinds} checkpoint; "
                              f"{ctx.checkpoint} holds the {family} file set")
        return
    letter = detect_stage(data, family)
    if letter is None:
        report.skip("?", "no known stage fields in this file")
        return
    _, target, title = FAMILY_STAGES[family][letter]
    module_name, func_name = target.split(":")
    try:
        try:
            func = getattr(importlib.import_module(module_name), func_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:  # a broken import inside existing code is a failure
                raise
            report.skip(f"{letter} {title}", "not implemented")
            return
        func(data, ctx, report)
    except StageNotImplemented as exc:
        report.skip(f"{letter} {title}", f"not implemented: {exc}")
    except Exception as exc:  # a crash in one stage must not hide the others
        traceback.print_exc()
        report.fail(f"{letter} {title}", f"error: {exc.__class__.__name__}: {exc}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path, help="folder of a (fake) checkpoint")
    parser.add_argument("files", nargs="+", type=Path, help="golden .npz files")
    args = parser.parse_args(argv)
    import torch
    torch.set_grad_enabled(False)
    ctx = Context(args.checkpoint)
    report = Report()
    for path in args.files:
        replay_file(path, ctx, report)
    print(f"parity: {report.passed} passed, {report.failed} failed, {report.skipped} skipped")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
