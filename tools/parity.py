"""Replay golden files of the parity kit against our implementation.

    python tools/parity.py --checkpoint DIR FILE.npz [FILE.npz ...]

Each golden file carries its own inputs; its stage is recognised by the fields it
holds (the file name is not trusted), so unseen cases replay the same way. One line
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

# stage letter -> (field that identifies it, "module:function" that replays it, title)
STAGES: dict[str, tuple[str, str, str]] = {
    "a": ("partial_embeds", "tools.replay_frontend:replay_voice_encoder", "voice encoder"),
    "b": ("token_strings", "tools.replay_frontend:replay_text", "text front-end"),
    "c": ("t3_prompt_log_mel", "tools.replay_reference:replay_s3_tokenizer", "S3 tokenizer"),
    "d": ("campplus_fbank", "tools.replay_reference:replay_reference_embedding", "S3Gen reference"),
    "e": ("perceiver_out", "tools.replay_t3:replay_conditioning", "T3 conditioning"),
    "f": ("speech_logits", "tools.replay_t3:replay_teacher_forced", "T3 teacher forced"),
    "g": ("cfg_logits", "tools.replay_t3:replay_greedy", "T3 greedy decode"),
    "h": ("estimator_out_step0", "tools.replay_flow:replay_flow", "S3Gen flow"),
    "i": ("conv_post_out", "tools.replay_hift:replay_hift", "HiFT vocoder"),
    "j": ("t3_tokens_raw", "tools.replay_e2e:replay_e2e", "end to end"),
}
# Stages whose multilingual goldens differ from the English ones, recognised by a field only
# they hold (checked first). The other stages are shared modules: the same replay serves both.
MULTILINGUAL_STAGES: dict[str, tuple[str, str, str]] = {
    "b": ("preprocessed_text", "tools.replay_multilingual:replay_text", "multilingual text front-end"),
    "f": ("aligned_attn_text", "tools.replay_multilingual:replay_teacher_forced_mtl",
          "multilingual T3 teacher forced"),
    "g": ("analyzer_alignment", "tools.replay_multilingual:replay_decoding", "multilingual T3 decode + analyzer"),
    "j": ("conds_speaker_emb", "tools.replay_multilingual:replay_e2e", "multilingual end to end"),
}


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
    """Loads each model component from the checkpoint on first use, once.

    The checkpoint's family (English or multilingual) is recognised by its files.
    """

    def __init__(self, checkpoint: Path):
        self.checkpoint = Path(checkpoint)
        self._parts: dict[str, object] = {}

    @cached_property
    def family(self) -> str:
        from models.multilingual.loading import is_multilingual_checkpoint
        return "multilingual" if is_multilingual_checkpoint(self.checkpoint) else "english"

    @cached_property
    def _loading(self):
        if self.family == "multilingual":
            return importlib.import_module("models.multilingual.loading")
        return importlib.import_module("models.loading")

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
            module_name, class_name = S3GEN_PARTS[name]
            part = getattr(importlib.import_module(module_name), class_name)()
            allowed = [k[len(name) + 1:] for k in S3GEN_TOLERATED_MISSING if k.startswith(name + ".")]
            state = read_safetensors(self.checkpoint / S3GEN_FILE, prefix=name + ".")
            load_strict(part, state, f"{S3GEN_FILE} [{name}]", allowed_missing=allowed)
            if hasattr(part, "fold_weight_norm"):
                part.fold_weight_norm()
            self._parts[name] = part.eval()
        return self._parts[name]


def detect_stage(data: np.lib.npyio.NpzFile) -> tuple[str, str] | None:
    """(stage letter, family of the golden: "multilingual", or "" for an English or shared stage)."""
    for letter, (marker, _, _) in MULTILINGUAL_STAGES.items():
        if marker in data.files:
            return letter, "multilingual"
    for letter, (marker, _, _) in STAGES.items():
        if marker in data.files:
            return letter, ""
    return None


def replay_file(path: Path, ctx: Context, report: Report) -> None:
    data = np.load(path, allow_pickle=False)
    detected = detect_stage(data)
    report.prefix = f"{path.name}: "
    if detected is None:
        report.skip("?", "no known stage fields in this file")
        return
    letter, family = detected
    _, target, title = (MULTILINGUAL_STAGES if family else STAGES)[letter]
    # Stages the families share replay on either checkpoint; the others need their own.
    golden_family = family or ("english" if letter in MULTILINGUAL_STAGES else ctx.family)
    if golden_family != ctx.family:
        report.fail(f"{letter} {title}", f"a golden of the {golden_family} model, but the checkpoint "
                                         f"{ctx.checkpoint} is {ctx.family}")
        return
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
