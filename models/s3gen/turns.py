"""Turns on the cores for the flow steps of concurrent requests, so that streaming is never starved.

S3Gen's cost is its flow sampler: ~10 estimator steps over the voice prompt and the tokens, each
a compute-bound pass (one request's step costs as much per row as a batch's, bench/README.md), so
batching requests' flows buys nothing on a CPU and would change their numbers. Run side by side
in threads, the flows of several requests split the cores evenly, and a request that has not
played anything yet waits about as long as the others' whole decodes take.

`FlowTurns` interleaves them instead: one estimator step at a time. While a request whose first
audio is still to come (`urgent`) is inside its sampler loop, the others' steps wait, also in the
moment between two of its steps (a step handed on to whoever queued first would go to the waiting
request every time: the urgent thread is still doing its Euler update then). Otherwise the step
that has waited longest goes next (round robin). A request's first audio thus waits for at most
one step of each other request, not for their decodes. Each step computes exactly what it
computes alone.

T3's decoding steps (the batcher's thread) are not part of the turns: they run beside the flow step
in progress, so tokens keep coming for everyone (a newcomer's own T3 is slowed by that step, though).
A thread opts in with `sharing(turns, urgent)` around its S3Gen calls; the sampler wraps its loop in
`flow_run()` and every estimator call in `flow_step()`, both free for threads that did not opt in
(golden replays, voice conversion, tools).
"""
from __future__ import annotations

import heapq
import itertools
import threading
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Iterator

_local = threading.local()


class FlowTurns:
    """Hands out one flow step at a time: urgent requests first, then in order of waiting. Thread-safe."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: list[tuple[int, int]] = []   # heap of (0 urgent / 1 not, arrival number)
        self._arrivals = itertools.count()
        self._busy = False
        self._urgent_runs = 0        # urgent sampler loops under way: the others' steps wait meanwhile
        self.steps = 0               # steps run through these turns (for tests and logs)
        self.urgent_steps = 0

    @property
    def urgent_waiting(self) -> int:
        """Steps of requests with no audio yet that are waiting for their turn now."""
        with self._cond:
            return sum(1 for rank, _ in self._waiting if rank == 0)

    @contextmanager
    def run(self, urgent: bool) -> Iterator[None]:
        """One sampler loop of a request: while an urgent one lasts, no other request's step starts."""
        if not urgent:
            yield
            return
        with self._cond:
            self._urgent_runs += 1
        try:
            yield
        finally:
            with self._cond:
                self._urgent_runs -= 1
                self._cond.notify_all()

    @contextmanager
    def step(self, urgent: bool) -> Iterator[None]:
        """Wait for this step's turn, hold the cores for its body, then pass the turn on."""
        ticket = (0 if urgent else 1, next(self._arrivals))
        with self._cond:
            heapq.heappush(self._waiting, ticket)
            while self._busy or self._waiting[0] != ticket or (not urgent and self._urgent_runs):
                self._cond.wait()
            heapq.heappop(self._waiting)
            self._busy = True
            self.steps += 1
            self.urgent_steps += urgent
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()


@contextmanager
def sharing(turns: FlowTurns | None, urgent: bool) -> Iterator[None]:
    """The S3Gen calls of this thread inside the body take turns in `turns` (None: run freely)."""
    previous = getattr(_local, "share", None)
    _local.share = None if turns is None else (turns, urgent)
    try:
        yield
    finally:
        _local.share = previous


def flow_run() -> AbstractContextManager[None]:
    """The flow sampler's whole loop, in which this thread's steps (`flow_step`) come."""
    return _in_turns("run")


def flow_step() -> AbstractContextManager[None]:
    """One estimator step of the flow sampler, in its turn when this thread shares the cores."""
    return _in_turns("step")


def _in_turns(part: str) -> AbstractContextManager[None]:
    """`FlowTurns.run` or `.step` of the turns this thread shares, with its urgency; else nothing."""
    share = getattr(_local, "share", None)
    if share is None:
        return nullcontext()
    turns, urgent = share
    return getattr(turns, part)(urgent)
