"""The admission gate: bounded running and waiting, refusal with a retry time, nothing lost."""
from __future__ import annotations

import threading
import time

import pytest

from serving.admission import Admission, Busy


def test_requests_beyond_slots_and_queue_are_refused_and_the_rest_all_run():
    gate = Admission(max_running=2, max_waiting=3)
    release = threading.Event()
    ran, refused, peak = [], [], [0]
    lock = threading.Lock()

    def request(i):
        try:
            with gate.slot():
                with lock:
                    peak[0] = max(peak[0], gate.running)
                release.wait(10)
                ran.append(i)
        except Busy as exc:
            refused.append(exc)

    threads = [threading.Thread(target=request, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while len(refused) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gate.running == 2 and gate.waiting == 3 and len(refused) == 3
    release.set()
    for t in threads:
        t.join(10)
    assert sorted(ran + [None] * len(refused), key=str)  # every request answered once
    assert len(ran) == 5 and peak[0] == 2
    assert all(exc.retry_after >= 1 and "try again in about" in str(exc) for exc in refused)
    assert gate.running == 0 and gate.waiting == 0


def test_a_failing_request_frees_its_slot():
    gate = Admission(max_running=1, max_waiting=0)
    with pytest.raises(RuntimeError):
        with gate.slot():
            raise RuntimeError("generation failed")
    with gate.slot():
        assert gate.running == 1


def test_retry_estimate_follows_recent_durations():
    gate = Admission(max_running=1, max_waiting=0)
    for _ in range(3):
        with gate.slot():
            time.sleep(0.05)
    assert 0.04 < gate.retry_after() < 1.0


def test_bad_limits_are_refused():
    with pytest.raises(ValueError):
        Admission(max_running=0)
