"""The alignment analyzer of the multilingual T3 (chatterbox-tts 0.1.3-0.1.7) and what feeds it.

Three attention heads of the Llama backbone follow the text while speech is generated:
speech step i attends mostly to the text token being spoken. The analyzer averages their
attention over the text columns into an alignment matrix A (speech steps x text tokens) and
steers the stop token with it: suppressed while the alignment has not reached the end of
the text, forced on a long tail, an alignment jump back into the text, or a repeated token.
Facts: docs/chatterbox-spec.md 6.9 and 11.1 (0.1.7 behaviour).

`AttentionProbe` reads those heads' attention probabilities of the conditional row (batch
row 0) during decoding, without asking the backbone for attention weights: a forward hook
on each probed layer's `input_layernorm` receives the layer's normed input, from which the
head's query and key are recomputed (RoPE included) and its softmax row is formed.
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

ALIGNED_HEADS = ((12, 15), (13, 11), (9, 2))  # (layer, head), in the reference's order
STOP_LOGIT = float(2**15)  # the reference's +-2^15: safe in every float dtype of 16 bits or more
# Thresholds of the reference, in attention-probability units (each row sums to <= 1 over text).
MAX_BACKWARD_JUMP = -4       # a tracked position moves only for jumps in (-4, 7)
MAX_FORWARD_JUMP = 7
TAIL_TOKENS = 3              # "complete" once the position reaches the last 3 text tokens
LONG_TAIL_MASS = 5.0         # attention summed over frames on one of the last 3 tokens (~200 ms)
REPEAT_HEAD_TOKENS = 5       # columns before the last 5 ...
REPEAT_MASS = 5.0            # ... whose row maxima sum above this after completion: a repetition
MIN_TEXT_FOR_SUPPRESSION = 5  # the stop token is suppressed only for texts longer than this

# Hooks belong to the shared model: passes of concurrent generations on one T3 take turns, so
# that a probe only ever sees its own generation's passes.
_PASS_LOCKS: "weakref.WeakKeyDictionary[torch.nn.Module, threading.Lock]" = weakref.WeakKeyDictionary()
_PASS_LOCKS_GUARD = threading.Lock()
R = TypeVar("R")


class AttentionProbe:
    """Attention rows of chosen (layer, head) pairs, batch row 0, while T3 runs.

    Run each pass of one generation through `run` (or, single-threaded, inside `with probe:`):
    the prefill (T > 1 positions from 0, rows from `first_row` on are kept), then one
    position per step.
    `take()` returns the rows gathered since the last call, (heads, rows, positions so far).
    The probe keeps its own keys of the probed heads (post-RoPE), so it does not depend on
    how the backbone caches. Works wherever `input_layernorm` runs as a module call (not
    inside a replayed CUDA graph); `take` raises if a pass went unseen.
    """

    def __init__(self, t3, first_row: int, heads=ALIGNED_HEADS):
        self.t3 = t3
        self.first_row = first_row
        self.heads = tuple(heads)
        self._weights = []
        for layer, head in self.heads:
            attn = t3.tfmr.layers[layer].self_attn
            rows = slice(head * attn.head_dim, (head + 1) * attn.head_dim)
            try:
                wq, wk = attn.q_proj.weight[rows], attn.k_proj.weight[rows]
            except AttributeError as exc:
                raise ValueError("the alignment analyzer recomputes attention from the query/key weights, "
                                 "which this T3 (e.g. a quantized speed mode) does not expose") from exc
            self._weights.append((wq.detach().float().clone(), wk.detach().float().clone(), attn.scaling))
        self._keys: list[torch.Tensor | None] = [None] * len(self.heads)
        self._rows: list[list[torch.Tensor]] = [[] for _ in self.heads]
        self._handles = []

    def run(self, forward: Callable[..., R], *args) -> R:
        """`forward(*args)` with the hooks in place, alone on this model (see _PASS_LOCKS)."""
        with _PASS_LOCKS_GUARD:
            lock = _PASS_LOCKS.setdefault(self.t3, threading.Lock())
        with lock, self:
            return forward(*args)

    def __enter__(self) -> "AttentionProbe":
        for i, (layer, _) in enumerate(self.heads):
            norm = self.t3.tfmr.layers[layer].input_layernorm
            self._handles.append(norm.register_forward_hook(lambda _m, _in, out, i=i: self._see(i, out)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _see(self, i: int, normed: torch.Tensor) -> None:
        h = normed[0].float()  # (T, C), conditional row
        wq, wk, scale = self._weights[i]
        length = h.shape[0]
        prefill = self._keys[i] is None
        if length > 1:  # the prefill, or a full recompute from position 0
            start = 0
        else:
            start = self._keys[i].shape[0]
        positions = torch.arange(start, start + length, device=h.device)[None]
        cos, sin = self.t3.tfmr.rotary_emb(h, positions)
        q, k = apply_rotary_pos_emb((h @ wq.T)[None, None], (h @ wk.T)[None, None], cos, sin)
        q, k = q[0, 0], k[0, 0]  # (T, head_dim)
        keys = k if length > 1 else torch.cat([self._keys[i], k])
        self._keys[i] = keys
        scores = (q @ keys.T) * scale  # (T, start + T)
        if length > 1:
            scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf"))
        probs = scores.softmax(dim=-1)
        self._rows[i].append(probs[self.first_row:] if prefill else probs[-1:])

    def take(self) -> torch.Tensor:
        """(heads, new rows, positions) attention probabilities seen since the last call."""
        if any(not rows for rows in self._rows):
            raise RuntimeError("the attention probe saw no pass of the backbone: the alignment analyzer "
                               "needs T3's layers to run as module calls (no CUDA graph replay)")
        out = torch.stack([torch.cat(rows) for rows in self._rows])
        self._rows = [[] for _ in self.heads]
        return out


@dataclass(frozen=True)
class AlignmentStep:
    """What the analyzer saw and did at one decoding step."""

    cur_text_position: int     # argmax of the newest alignment row
    text_position: int         # tracked position (ignores implausible jumps)
    started: bool
    complete: bool
    long_tail: bool
    alignment_repetition: bool
    token_repetition: bool
    stop_suppressed: bool      # the stop logit was set to -2^15 (and not then forced)
    stop_forced: bool          # every logit -2^15, the stop logit +2^15


class AlignmentAnalyzer:
    """The 0.1.7 analyzer for one generation over a text of `len_text` tokens (SOT/EOT included).

    `step(head_rows, logits, last_token)` takes the probed heads' new attention rows over the
    text columns (heads, rows, len_text), the CFG-combined logits (1, V) and the token the
    loop generated last (the start token at step 0), and returns the logits with the stop
    token suppressed or forced. `alignment` is the matrix so far (frames, len_text).
    """

    def __init__(self, len_text: int, stop_token: int):
        self.len_text = len_text
        self.stop_token = stop_token
        self.alignment = torch.zeros(0, len_text)
        self.frame = 0
        self.text_position = 0
        self.started = False
        self.complete = False
        self.completed_at: int | None = None
        self.tokens: list[int] = []
        self.history: list[AlignmentStep] = []
        self.head_rows: list[torch.Tensor] = []  # per step: (heads, rows, len_text) before averaging

    def step(self, head_rows: torch.Tensor, logits: torch.Tensor, last_token: int) -> torch.Tensor:
        head_rows = head_rows.float().cpu()
        self.head_rows.append(head_rows)
        chunk = head_rows.mean(dim=0)  # (rows, S)
        chunk[:, self.frame + 1:] = 0  # a frame may not look ahead of its own index
        self.alignment = torch.cat([self.alignment, chunk])
        a = self.alignment
        frames, s = a.shape

        cur = int(chunk[-1].argmax())
        if MAX_BACKWARD_JUMP < cur - self.text_position < MAX_FORWARD_JUMP:
            self.text_position = cur
        # Kept for fidelity; in 0.1.7 the start detection changes nothing downstream.
        false_start = not self.started and (float(a[-2:, -2:].max()) > 0.1 or float(a[:, :4].max()) < 0.5)
        self.started = not false_start
        self.complete = self.complete or self.text_position >= s - TAIL_TOKENS
        if self.complete and self.completed_at is None:
            self.completed_at = frames

        after = a[self.completed_at:] if self.complete else a[:0]
        long_tail = self.complete and float(after[:, -TAIL_TOKENS:].sum(dim=0).max()) >= LONG_TAIL_MASS
        head = after[:, :-REPEAT_HEAD_TOKENS]
        alignment_repetition = (self.complete and head.shape[1] > 0
                                and float(head.max(dim=1).values.sum()) > REPEAT_MASS)
        self.tokens = (self.tokens + [int(last_token)])[-8:]
        token_repetition = len(self.tokens) >= 3 and self.tokens[-1] == self.tokens[-2]

        suppress = cur < s - TAIL_TOKENS and s > MIN_TEXT_FOR_SUPPRESSION
        force = long_tail or alignment_repetition or token_repetition
        if suppress or force:
            logits = logits.clone()
        if suppress:
            logits[..., self.stop_token] = -STOP_LOGIT
        if force:
            logits.fill_(-STOP_LOGIT)
            logits[..., self.stop_token] = STOP_LOGIT
        self.history.append(AlignmentStep(cur, self.text_position, self.started, self.complete, long_tail,
                                          alignment_repetition, token_repetition, suppress and not force, force))
        self.frame += 1
        return logits
