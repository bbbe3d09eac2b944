"""One admission gate for every way in (browser, OpenAI API, MCP, batch): bounded work, bounded queue.

At most `max_running` generations run at once and at most `max_waiting` wait for a turn; a
request beyond both is refused at once with `Busy`, which says roughly when to try again, so no
request is ever dropped silently. The retry estimate comes from the mean duration of recent
generations.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Iterator

RECENT_DURATIONS = 20         # generations the retry estimate averages over
DEFAULT_DURATION_S = 30.0     # estimate before anything has finished


class Busy(Exception):
    """Every slot and every queue place is taken. `retry_after` is in whole seconds (>= 1)."""

    def __init__(self, retry_after: float, running: int, waiting: int):
        self.retry_after = max(1, int(math.ceil(retry_after)))
        self.running, self.waiting = running, waiting
        super().__init__(f"busy: {running} generations running and {waiting} waiting; "
                         f"try again in about {self.retry_after} s")


class Admission:
    """Counts running and waiting requests; `slot()` is the way in. Thread-safe."""

    def __init__(self, max_running: int = 1, max_waiting: int = 8):
        if max_running < 1 or max_waiting < 0:
            raise ValueError(f"need max_running >= 1 and max_waiting >= 0, got {max_running}, {max_waiting}")
        self.max_running, self.max_waiting = max_running, max_waiting
        self.running = self.waiting = 0
        self._cond = threading.Condition()
        self._durations: deque[float] = deque(maxlen=RECENT_DURATIONS)

    def retry_after(self) -> float:
        """Seconds until a queue place is likely free: the queue ahead, served max_running at a time."""
        mean = sum(self._durations) / len(self._durations) if self._durations else DEFAULT_DURATION_S
        return mean * (self.waiting + 1) / self.max_running

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Run the body when a slot is free; raise Busy at once if the queue is full too."""
        with self._cond:
            if self.running >= self.max_running and self.waiting >= self.max_waiting:
                raise Busy(self.retry_after(), self.running, self.waiting)
            self.waiting += 1
            try:
                while self.running >= self.max_running:
                    self._cond.wait()
            finally:
                self.waiting -= 1
            self.running += 1
        started = time.monotonic()
        try:
            yield
        finally:
            with self._cond:
                self.running -= 1
                self._durations.append(time.monotonic() - started)
                self._cond.notify()
