"""Step clocks and spread statistics."""

import time

import pytest
import torch

from harness.runner import summarize
from harness.timing import StepClock, Timeline, spread
from workloads.decode import DecodePoint


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


def test_spread_percentiles():
    s = spread(range(1, 12), "x")
    assert s == {"x_p10": 2.0, "x_p50": 6.0, "x_p90": 10.0}


def test_summarize_by_hand():
    # two generations of 4 tokens, batch 2: first token at 10 ms, then steps of 2, 2, 4 ms (and 1, 1, 1)
    timelines = [Timeline([10.0, 12.0, 14.0, 18.0], 19.0), Timeline([20.0, 21.0, 22.0, 23.0], 23.5)]
    m = summarize(timelines, DecodePoint(batch_size=2, prompt_len=5, new_tokens=4))
    assert m["ttft_ms"] == 15.0
    assert m["decode_ms"] == pytest.approx(5.5)  # median of 8 and 3
    assert m["tokens_per_s"] == pytest.approx((2 * 3 / 0.008 + 2 * 3 / 0.003) / 2)
    assert m["tpot_ms_p50"] == pytest.approx(1.5)
    assert m["e2e_ms"] == pytest.approx(21.25)
    assert m["decode_steps_timed"] == 6 and m["repeats"] == 2


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
