"""Continuous batching of T3 decoding: the steps of concurrent requests run as rows of one batch.

A T3 decoding step is bound by reading the weights, not by arithmetic: a step for 4 requests
(8 rows with guidance) costs little more than a step for one. `T3Batcher` owns one background
thread per T3 that runs the steps of every active request together.

Each request keeps what makes its tokens its own: conditioning, sampling parameters, generator,
token cap and stop rule. Its rows (2 for the guidance pair) see only their own cache slots, and
its token is drawn by `T3.next_token`, the code `T3.stream_tokens` runs, with its own
generator. So its tokens do not depend on who else is in the batch (the numbers differ only by
the order of float additions in batched products).

Life of a request: `stream_tokens` queues it; at a step boundary the thread admits it if a slot
is free (prefill alone into a cache of its own, first token, keys and values copied into the
slot's rows of the shared cache). Each step then feeds every active request's last token at its
own position (`T3.layers_cached` with a (B,) position) and draws each request's next token. A
request leaves at its stop token, at its cap, or when its consumer closes the iterator; its
slot then takes the next waiting request.

Shared cache: (layers, 2 * slots, heads, capacity, head_dim), grown when a request needs more
and released when the batcher is idle. A step computes the rows up to the highest slot in use
and attends over the slots up to the furthest position (a view), not the whole allocation.
Steps run T3's eager layers (`T3.layers_cached`), never a build's `fast_step` (a CUDA graph is
captured for one request's shapes).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from .constants import START_SPEECH_TOKEN, STOP_SPEECH_TOKEN
from .sampling import SamplingParams
from .t3 import T3, KVCache, T3Cond

log = logging.getLogger(__name__)
CAPACITY_STEP = 256  # the shared cache grows in multiples of this many positions
_END = object()      # after a request's last token in its queue


@dataclass(eq=False)
class _Request:
    """One generation inside the batcher. Only the batcher's thread touches the fields below `out`."""

    cond: T3Cond
    text_tokens: torch.Tensor
    params: SamplingParams
    generator: torch.Generator | None
    on_logits: Callable[[int, torch.Tensor], None] | None
    # (token, generator state after its draw) pairs, then _END or an exception
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    cancelled: bool = False  # set by the consumer; seen at the next step boundary
    finished: threading.Event = field(default_factory=threading.Event)  # the thread is done with it
    slot: int = -1           # rows 2 * slot (conditional) and 2 * slot + 1 (guidance)
    rows: int = 0            # 2 with guidance, else 1
    length: int = 0          # cache slots filled
    step: int = 0            # tokens drawn
    seen: torch.Tensor | None = None   # (1, max_new_tokens + 1) start token, then the drawn tokens
    last: torch.Tensor | None = None   # (1, 1) the token to feed next


class _CacheView:
    """The part of the shared cache a step needs: rows [0, rows), positions [0, span)."""

    def __init__(self, cache: KVCache, rows: int, span: int):
        self.keys = cache.keys[:, :rows, :, :span]
        self.values = cache.values[:, :rows, :, :span]
        self.cos, self.sin = cache.cos, cache.sin
        self.length = 0  # unused: every step gives its positions


class T3Batcher:
    """Runs the decoding of up to `max_batch` concurrent requests on one T3 as one batch.

    `stream_tokens` has the contract of `T3.stream_tokens` (same tokens for the same inputs
    and generator state) and may be called from any number of threads; requests beyond
    `max_batch` wait for a slot in arrival order. Holds the model weakly: the thread exists
    only while there is work and then holds it.
    """

    def __init__(self, t3: T3, max_batch: int = 4):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        self._model = weakref.ref(t3)
        self._lock = threading.Lock()
        self._waiting: list[_Request] = []
        self._thread: threading.Thread | None = None
        # The thread's own state (no lock needed):
        self._active: list[_Request] = []
        self._cache: KVCache | None = None
        # For tests and benchmarks:
        self.steps = 0            # batched decoding steps run
        self.step_tokens = 0      # tokens those steps drew
        self.step_seconds = 0.0   # time in those steps (admissions excluded)
        self.max_active = 0       # most requests ever decoded in one step
        self.active = 0           # requests decoding now (as of the last step boundary)
        self.ended = {"finished": 0, "cancelled": 0, "failed": 0}  # requests that left, by how

    def pending(self) -> int:
        """Requests queued and not yet decoding (waiting for a slot or the next step)."""
        with self._lock:
            return len(self._waiting)

    # --- the consumer's side ------------------------------------------------------------

    def stream_tokens(
        self,
        cond: T3Cond,
        text_tokens: torch.Tensor,
        params: SamplingParams | None = None,
        generator: torch.Generator | None = None,
        on_logits: Callable[[int, torch.Tensor], None] | None = None,
    ) -> Iterator[int]:
        """Yield speech tokens one by one, as `T3.stream_tokens` does; the request joins the
        batch on the first `next`. Closing the iterator ends the request and frees its rows.
        Bad text or a cap beyond T3's positions raise ValueError here, at once."""
        t3 = self._model()
        if t3 is None:
            raise RuntimeError("the model of this batcher no longer exists")
        p = params or SamplingParams()
        if p.max_new_tokens > t3.config.speech_positions:
            raise ValueError(f"max_new_tokens {p.max_new_tokens} exceeds {t3.config.speech_positions} positions")
        request = _Request(cond, t3._check_text(text_tokens), p, generator, on_logits)
        return self._tokens(request)

    def _tokens(self, request: _Request) -> Iterator[int]:
        """The consumer's side of a request. The thread may draw a few tokens ahead of it; if
        the consumer stops early, the generator is set back to its state after the last token
        the consumer took, as if decoding had been lazy (the caller may go on drawing from
        it: S3Gen's noise continues T3's generator)."""
        generator = request.generator
        state = generator.get_state() if generator is not None else None
        with self._lock:
            self._waiting.append(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="t3-batcher", daemon=True)
                self._thread.start()
        ended = False
        try:
            while True:
                item = request.out.get()
                if item is _END:
                    ended = True
                    return
                if isinstance(item, BaseException):
                    ended = True
                    raise item
                token, state = item
                yield token
        finally:
            if not ended:
                request.cancelled = True
                # Wait until the thread leaves the generator alone (at most one step); not
                # when the thread itself drops an abandoned iterator.
                ours = threading.current_thread() is self._thread
                if not ours and request.finished.wait(timeout=600) and generator is not None:
                    generator.set_state(state)

    # --- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a fault outside any request's work: no consumer may wait forever
            with self._lock:
                stranded, self._waiting, self._thread, self._cache = self._active + self._waiting, [], None, None
                self._active = []
            for r in stranded:
                r.out.put(exc if isinstance(exc, Exception) else RuntimeError(f"T3 batcher stopped: {exc!r}"))
                r.finished.set()
            raise

    def _loop(self) -> None:
        t3 = self._model()  # alive: a consumer holding the model queued the work
        with torch.inference_mode():
            while True:
                with self._lock:
                    for r in self._active + self._waiting:
                        if r.cancelled and not r.finished.is_set():
                            r.finished.set()
                            self._left("cancelled")  # its consumer closed the stream
                    self._active = [r for r in self._active if not r.cancelled]
                    self._waiting = [r for r in self._waiting if not r.cancelled]
                    free = sorted(set(range(self.max_batch)) - {r.slot for r in self._active})
                    joining = self._waiting[: len(free)]
                    del self._waiting[: len(joining)]
                    if not self._active and not joining:
                        self._thread, self._cache = None, None  # idle: give the memory back
                        return
                for request, slot in zip(joining, free):
                    self._guarded([request], lambda: self._admit(t3, request, slot))
                    self.active = len(self._active)
                    log.info("t3 batch: a request joined (%d active, %d waiting)", self.active, self.pending())
                if self._active:
                    start = time.perf_counter()
                    self._guarded(list(self._active), lambda: self._step(t3))
                    self.step_seconds += time.perf_counter() - start

    def _guarded(self, requests: list[_Request], work: Callable[[], None]) -> None:
        """Run `work`; if it fails, the requests it was for end with the error (raised to their
        consumers), and the others go on."""
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, who raises it
            for r in requests:
                r.out.put(exc)
                r.cancelled = True
                r.finished.set()
                self._left("failed")
            self._active = [r for r in self._active if not r.cancelled]

    def _admit(self, t3: T3, request: _Request, slot: int) -> None:
        """Prefill `request` alone, draw its first token, and move its cache into `slot`'s rows."""
        p = request.params
        embeds = t3.build_inputs(request.cond, request.text_tokens, with_cfg_row=p.cfg_weight > 0)
        rows, prompt_length = embeds.shape[:2]
        own = KVCache(t3, rows, capacity=prompt_length)
        hidden = t3.layers_cached(embeds, own)[:, -1:]
        request.seen = torch.full((1, p.max_new_tokens + 1), START_SPEECH_TOKEN, dtype=torch.long, device=t3.device)
        if self._draw(t3, request, hidden):
            return
        # The last token is never fed back: positions up to prompt + cap - 2 are written.
        cache = self._reserve(t3, 2 * (slot + 1), prompt_length + p.max_new_tokens - 1)
        first = 2 * slot
        cache.keys[:, first : first + rows, :, :prompt_length] = own.keys
        cache.values[:, first : first + rows, :, :prompt_length] = own.values
        request.slot, request.rows, request.length = slot, rows, prompt_length
        self._active.append(request)

    def _step(self, t3: T3) -> None:
        """One decoding step of every active request, as rows of one batch."""
        active = self._active
        rows = 2 * (max(r.slot for r in active) + 1)
        span = max(r.length for r in active) + 1
        # Free rows compute a throwaway step at position 0 of their own (unused) slot.
        embeds = torch.zeros(rows, 1, t3.config.hidden_size, device=t3.device, dtype=t3.dtype)
        position = torch.zeros(rows, dtype=torch.long, device=t3.device)
        speech_positions = t3.speech_pos_emb.emb.weight
        for r in active:
            first = 2 * r.slot
            # Generated token k sits at speech position k (r.step tokens drawn so far).
            embeds[first : first + r.rows] = t3.speech_emb(r.last) + speech_positions[r.step]
            position[first : first + r.rows] = r.length
        hidden = t3.layers_cached(embeds, _CacheView(self._cache, rows, span), position)
        self.steps += 1
        self.step_tokens += len(active)
        self.max_active = max(self.max_active, len(active))
        for r in list(active):
            r.length += 1
            first = 2 * r.slot
            if self._draw(t3, r, hidden[first : first + r.rows]):
                active.remove(r)

    def _draw(self, t3: T3, request: _Request, hidden: torch.Tensor) -> bool:
        """Draw `request`'s next token from its rows' hidden states (rows, 1, C) and hand it
        over; True when that was its last."""
        p, step = request.params, request.step
        token = t3.next_token(hidden, request.seen[:, : step + 1], p, request.generator, step, request.on_logits)
        request.seen[:, step + 1 : step + 2] = token
        request.step, request.last = step + 1, token
        token_id = int(token)
        state = request.generator.get_state() if request.generator is not None else None
        request.out.put((token_id, state))
        if token_id == STOP_SPEECH_TOKEN or request.step == p.max_new_tokens:
            request.finished.set()
            request.out.put(_END)
            self._left("finished")
            return True
        return False

    def _left(self, how: str) -> None:
        """Count and log a request leaving the batch (its rows are free from the next step)."""
        self.ended[how] += 1
        self.active = len([r for r in self._active if not r.finished.is_set()])
        log.info("t3 batch: a request %s (%d active)", how, self.active)

    def _reserve(self, t3: T3, rows: int, capacity: int) -> KVCache:
        """The shared cache, grown (contents kept) to at least `rows` rows and `capacity` positions.

        Zero-filled: masked slots must hold finite numbers (see `T3.layers_cached`)."""
        old = self._cache
        if old is not None and old.keys.shape[1] >= rows and old.keys.shape[3] >= capacity:
            return old
        old_rows, old_capacity = (0, 0) if old is None else (old.keys.shape[1], old.keys.shape[3])
        capacity = -(-max(capacity, old_capacity) // CAPACITY_STEP) * CAPACITY_STEP
        # Rows double (up to the batch's): each growth zero-fills and copies the whole cache.
        rows = min(max(rows, 2 * old_rows), max(rows, 2 * self.max_batch))
        cache = KVCache(t3, rows, capacity)
        cache.keys.zero_()
        cache.values.zero_()
        if old is not None:
            cache.keys[:, :old_rows, :, :old_capacity] = old.keys
            cache.values[:, :old_rows, :, :old_capacity] = old.values
        self._cache = cache
        return cache


_BATCHERS: "weakref.WeakKeyDictionary[T3, T3Batcher]" = weakref.WeakKeyDictionary()
_BATCHERS_LOCK = threading.Lock()


def batcher_for(t3: object, max_batch: int) -> object:
    """What decodes for `t3` with up to `max_batch` requests at once: `t3` itself when
    max_batch is 1 or it is not a `T3` (other engines decode alone), else its one `T3Batcher`."""
    if max_batch <= 1 or not isinstance(t3, T3):
        return t3
    with _BATCHERS_LOCK:
        batcher = _BATCHERS.get(t3)
        if batcher is None or batcher.max_batch != max_batch:
            batcher = _BATCHERS[t3] = T3Batcher(t3, max_batch)
        return batcher
