"""Timing of regions with per-step marks, and the spread statistics we report.

On a GPU the marks are CUDA events, read only after the region ends, so marking
a step never synchronises inside the timed region; the host clock is used only
around a synchronisation. On the CPU, work is synchronous and the marks are
``time.perf_counter_ns`` readings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timeline:
    """Milliseconds from the start mark to each step mark and to the end mark."""

    ticks_ms: list[float]
    end_ms: float


class StepClock:
    """``start()``, then ``tick()`` once per step, then ``stop()`` for the timeline.
    ``on_start`` runs at every ``start()``, before anything is marked (the runner resets the
    peak-memory counter there, so warm-up work inside a run does not count)."""

    def __init__(self, device: torch.device, on_start=None):
        self.cuda = device.type == "cuda"
        self.device = device
        self.on_start = on_start
        self._marks: list = []

    def _mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter_ns()

    def start(self) -> None:
        if self.on_start is not None:
            self.on_start()
        if self.cuda:
            torch.cuda.synchronize(self.device)  # earlier queued work must not count
        self._marks = [self._mark()]

    def tick(self) -> None:
        self._marks.append(self._mark())

    def stop(self) -> Timeline:
        end = self._mark()
        first, ticks = self._marks[0], self._marks[1:]
        if self.cuda:
            end.synchronize()
            return Timeline([first.elapsed_time(e) for e in ticks], first.elapsed_time(end))
        return Timeline([(t - first) / 1e6 for t in ticks], (end - first) / 1e6)


def bench(fn, device: torch.device, reps: int = 20, budget_s: float = 2.0, grad_to_none=None) -> list[float]:
    """Milliseconds per call of ``fn`` over repeated calls, warm-up excluded.

    GPU: ``triton.testing.do_bench`` (CUDA events, L2 flushed between calls).
    CPU: one warm-up call, then up to ``reps`` calls each read on
    ``perf_counter_ns``, stopping once ``budget_s`` is spent (3 calls at least).
    ``grad_to_none``: tensors whose gradients are dropped before every call, so a
    timed backward writes fresh gradients instead of adding to old ones.
    """
    if device.type == "cuda":
        import triton.testing

        return list(triton.testing.do_bench(fn, warmup=25, rep=200, grad_to_none=grad_to_none, return_mode="all"))
    fn()
    times: list[float] = []
    while len(times) < reps and (len(times) < 3 or sum(times) < budget_s * 1e3):
        for t in grad_to_none or ():
            t.grad = None
        start = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - start) / 1e6)
    return times
