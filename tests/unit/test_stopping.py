"""The stop agreement of multi-process training (train/stopping.StopSchedule), on two real gloo
processes: the ranks agree only every few steps, yet always at the same steps, and a SIGTERM on
one rank stops both at the same step; one process decides alone, at every step."""

import os
import socket
import time

import torch.distributed as dist
import torch.multiprocessing as mp

from tuneforge.job import stopping

STEPS = 40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, request_at: int | None, due_steps: set, step_s: float, seconds: float, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    stopping.STOP_CHECK_SECONDS = seconds
    stopping.reset()
    schedule, agreed_at, stopped_at = stopping.StopSchedule(), [], None
    try:
        for step in range(1, STEPS + 1):
            time.sleep(step_s)
            if rank == 1 and step == request_at:
                stopping.STATE.signal_name = "SIGTERM"  # what the SIGTERM handler sets, on one rank only
            before = schedule.next_step
            if schedule.stop(step, due_anyway=step in due_steps):
                stopped_at = step
                break
            if schedule.next_step != before or before is None:
                agreed_at.append(step)
        results[rank] = (agreed_at, stopped_at)
    finally:
        stopping.reset()
        dist.destroy_process_group()


def _run(request_at=None, due_steps=(), step_s=0.0, seconds=stopping.STOP_CHECK_SECONDS):
    results = mp.Manager().dict()
    mp.spawn(_rank, args=(_free_port(), request_at, set(due_steps), step_s, seconds, results), nprocs=2)
    return results[0], results[1]


def test_ranks_agree_every_few_steps_and_at_steps_that_save():
    first, second = _run(due_steps={15})
    assert first == second  # the same collectives at the same steps on both ranks
    agreed_at, stopped_at = first
    assert stopped_at is None
    # not at every step; at the saving step 15 too, which starts the next interval
    assert agreed_at == [1, 11, 15, 25, 35], agreed_at


def test_a_sigterm_on_one_rank_stops_both_at_the_same_step():
    first, second = _run(request_at=13)
    assert first[1] == second[1] == 21  # the next agreement after the signal


def test_slow_steps_shorten_the_interval_on_every_rank():
    # 0.05 s steps and a 0.12 s budget: 2 steps between agreements
    first, second = _run(step_s=0.05, seconds=0.12)
    assert first == second
    agreed_at = first[0]
    assert agreed_at[:2] == [1, 11] and all(b - a <= 3 for a, b in zip(agreed_at[1:], agreed_at[2:])), agreed_at


def test_one_process_stops_at_the_step_of_the_signal():
    stopping.reset()
    schedule = stopping.StopSchedule()
    try:
        assert not schedule.stop(1) and not schedule.stop(2)
        stopping.STATE.signal_name = "SIGTERM"
        assert schedule.stop(3)
    finally:
        stopping.reset()

