"""Turn-taking of concurrent requests' flow steps (models/s3gen/turns.py): one step at a time,
a request still waiting for its first audio goes first, the others alternate, and the sampler
computes the same mel in turns as alone. Tiny configs and timed fake steps; no weights."""
from __future__ import annotations

import threading
import time

import torch

from models.s3gen.cfm import CFMConfig, ConditionalCFM
from models.s3gen.turns import FlowTurns, flow_run, flow_step, sharing
from test_flow import TINY_ESTIMATOR

STEP_S = 0.01


def run_steps(turns: FlowTurns | None, urgent: bool, name: str, steps: int, log: list, lock: threading.Lock):
    """A sampler loop of `steps` fake estimator steps of `STEP_S` each, logged as (name, start, end),
    with the Euler update's moment between them, outside the turn, as in the sampler."""
    with sharing(turns, urgent), flow_run():
        for _ in range(steps):
            with flow_step():
                start = time.perf_counter()
                time.sleep(STEP_S)
                with lock:
                    log.append((name, start, time.perf_counter()))
            time.sleep(STEP_S / 5)


def start(*args) -> threading.Thread:
    thread = threading.Thread(target=run_steps, args=args)
    thread.start()
    return thread


def test_first_audio_goes_before_another_requests_remaining_steps():
    turns, log, lock = FlowTurns(), [], threading.Lock()
    long = start(turns, False, "long", 40, log, lock)
    while len(log) < 3:  # the long decode is under way
        time.sleep(STEP_S / 4)
    first = start(turns, True, "first", 5, log, lock)
    first.join()
    long.join()
    names = [name for name, _, _ in log]
    joined = names.index("first")
    # The newcomer waited for at most the step in progress, then ran its steps back to back.
    assert joined <= 5 and names[joined : joined + 5] == ["first"] * 5, names
    assert names.count("long") == 40
    # Never two steps at once.
    spans = sorted((begin, end) for _, begin, end in log)
    assert all(prev_end <= begin for (_, prev_end), (begin, _) in zip(spans, spans[1:]))
    assert turns.steps == 45 and turns.urgent_steps == 5


def test_urgent_waiting_counts_queued_first_audio_steps_only():
    turns, entered, release = FlowTurns(), threading.Event(), threading.Event()

    def hold() -> None:
        with sharing(turns, False), flow_step():
            entered.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    assert entered.wait(5)
    log, lock = [], threading.Lock()
    queued = [start(turns, False, "later", 1, log, lock), start(turns, True, "first", 1, log, lock)]
    deadline = time.monotonic() + 5
    while turns.urgent_waiting < 1 and time.monotonic() < deadline:
        time.sleep(STEP_S / 4)
    assert turns.urgent_waiting == 1  # the step in progress and the other queued step are not counted
    release.set()
    for thread in [holder, *queued]:
        thread.join(5)
    assert turns.urgent_waiting == 0 and [name for name, _, _ in log] == ["first", "later"]


def test_requests_that_have_played_alternate_step_by_step():
    turns, log, lock = FlowTurns(), [], threading.Lock()
    a = start(turns, False, "a", 10, log, lock)
    while not log:
        time.sleep(STEP_S / 4)
    b = start(turns, False, "b", 10, log, lock)
    a.join()
    b.join()
    names = [name for name, _, _ in log]
    while_both = names[names.index("b") - 1 : names.index("b") + 10]
    switches = sum(x != y for x, y in zip(while_both, while_both[1:]))
    assert switches >= 8, names  # round robin, not one decode after the other


def test_threads_that_do_not_share_run_freely():
    turns, log, lock = FlowTurns(), [], threading.Lock()
    sharing_thread = start(turns, False, "shared", 10, log, lock)
    free = start(None, False, "free", 10, log, lock)
    sharing_thread.join()
    free.join()
    assert turns.steps == 10
    free_spans = [(b, e) for n, b, e in log if n == "free"]
    shared_spans = [(b, e) for n, b, e in log if n == "shared"]
    overlaps = sum(b1 < e2 and b2 < e1 for b1, e1 in free_spans for b2, e2 in shared_spans)
    assert overlaps > 0  # the free thread never waited for a turn


def test_sampler_in_turns_computes_the_same_mel():
    torch.manual_seed(0)
    cfm = ConditionalCFM(CFMConfig(estimator=TINY_ESTIMATOR)).eval()
    noise, mu, cond = (torch.randn(1, 8, 12) for _ in range(3))
    spks, mask = torch.randn(1, 8), torch.ones(1, 1, 12)
    with torch.inference_mode():
        alone = cfm(noise, mu, spks, cond, mask, n_timesteps=6)
        turns = FlowTurns()
        with sharing(turns, urgent=True):
            shared = cfm(noise, mu, spks, cond, mask, n_timesteps=6)
    assert turns.steps == 6 and turns.urgent_steps == 6
    torch.testing.assert_close(shared, alone, rtol=0, atol=0)


def test_a_failing_step_passes_the_turn_on():
    turns = FlowTurns()
    with sharing(turns, False):
        try:
            with flow_step():
                raise RuntimeError("estimator failed")
        except RuntimeError:
            pass
        done = threading.Event()

        def other():
            with sharing(turns, False), flow_step():
                done.set()

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(5)
    assert done.is_set()
