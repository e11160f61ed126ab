"""A host clock for workload tests: workloads only mark a clock (``workloads.workload.Clock``);
timing them for real is ``harness.runner``'s job, tested there."""

import time
from typing import NamedTuple

import pytest


class Timeline(NamedTuple):
    ticks_ms: list
    end_ms: float


class HostClock:
    """``start()``, ``tick()`` per step, ``stop()`` -> Timeline in ms on ``perf_counter``."""

    def start(self):
        self.t0, self.ticks = time.perf_counter(), []

    def tick(self):
        self.ticks.append((time.perf_counter() - self.t0) * 1e3)

    def stop(self):
        return Timeline(self.ticks, (time.perf_counter() - self.t0) * 1e3)


@pytest.fixture()
def clock_class():
    return HostClock
