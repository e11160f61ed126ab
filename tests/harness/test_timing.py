"""Step clocks and the repeated-call timer."""

import time

import pytest
import torch

from harness.timing import StepClock, bench


def test_cpu_clock_marks_steps():
    clock = StepClock(torch.device("cpu"))
    clock.start()
    for _ in range(3):
        time.sleep(0.002)
        clock.tick()
    timeline = clock.stop()
    assert len(timeline.ticks_ms) == 3
    assert timeline.ticks_ms[0] >= 2.0
    assert timeline.ticks_ms == sorted(timeline.ticks_ms) and timeline.end_ms >= timeline.ticks_ms[-1]


def test_on_start_runs_before_each_start():
    calls = []
    clock = StepClock(torch.device("cpu"), on_start=lambda: calls.append(len(calls)))
    for _ in range(2):
        clock.start()
        clock.tick()
        clock.stop()
    assert calls == [0, 1]


def test_bench_on_cpu_times_every_call_after_one_warm_up():
    calls = []
    times = bench(lambda: calls.append(time.sleep(0.001)), torch.device("cpu"), reps=5, budget_s=10)
    assert len(times) == 5 and len(calls) == 6
    assert all(t >= 1.0 for t in times)


@pytest.mark.gpu
def test_cuda_clock_measures_gpu_work():
    device = torch.device("cuda")
    x = torch.randn(4096, 4096, device=device)
    clock = StepClock(device)
    clock.start()
    for _ in range(3):
        x @ x
        clock.tick()
    timeline = clock.stop()
    assert 0 < timeline.ticks_ms[0] < timeline.ticks_ms[-1] <= timeline.end_ms
