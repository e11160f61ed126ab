"""The one contract every workload follows, so that ``harness.runner`` times all of them in one loop.

A workload is something to measure on one device in one precision, at one or
more points (decode: batch x prompt x new tokens over one built model; a kernel
benchmark: one shape per point; a ceiling: one buffer or matmul size):

- ``device``, ``precision`` and ``points`` (a list; each point becomes one record);
- ``setup()`` builds what every point shares (a model), ``teardown()`` frees it;
- ``fields(point)``: the record's point fields (workload, model, dtype, sizes, ...);
- ``region(point)``: the timed region of a point, one of the two kinds below; it
  raises ``Unsupported`` when the implementation cannot run the point (recorded
  as skipped, with the reason);
- ``cost(point)``: the cost model's bytes and FLOPs of the timed work, a ``cost.Cost``;
- optionally ``quality(point)``: a dict of accuracy against a reference (quantized
  decode), computed after the timed runs and stored as the record's ``quality``.

The two kinds of timed region:

- ``Calls``: a callable timed over many calls (kernels, ceilings); the runner
  reports the median time per call and its spread (``time_ms``).
- ``Runs``: whole runs marked step by step on a clock (a ``generate()`` call, a
  training run): ``warmup`` untimed runs, then ``repeats`` timed ones, whose
  timelines ``summarize`` turns into the workload's metrics.

Workloads never read a clock themselves beyond marking it: timing, repeats,
telemetry, peak memory, failures and records are the runner's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


class Unsupported(Exception):
    """This implementation cannot run this point (recorded as skipped, with the reason)."""


class Clock(Protocol):
    """What a timed run marks: ``start()``, ``tick()`` after every step, ``stop()`` for the timeline
    (``harness.timing.StepClock``). ``stop()`` returns an object with ``ticks_ms`` and ``end_ms``."""

    def start(self) -> None: ...
    def tick(self) -> None: ...
    def stop(self): ...


@dataclass
class Calls:
    """A callable timed over repeated calls; ``grads``: tensors whose gradients are dropped before
    each call, so a timed backward writes fresh gradients."""

    fn: Callable[[], object]
    grads: list = field(default_factory=list)


@dataclass
class Runs:
    """Runs marked on a clock: ``run(clock, index)`` returns what ``summarize`` reads (the clock's
    timeline; ``index`` is negative for warm-up runs, so each run can draw fresh inputs);
    ``summarize`` turns the timed runs into metrics; ``peak`` combines this process's peak memory
    with its peers' (the largest process of a multi-process run); ``tokens`` is the tokens one run
    produces or trains on, for energy per token.

    ``repeats`` None means as many as the headline metric needs: at least 5 timed runs, then more
    until the 95% confidence interval of its median is within 2% of the median or ``max_time_s``
    is spent; ``headline(runs)`` gives that metric's per-run samples (decode: tokens/s)."""

    run: Callable[[Clock, int], object]
    summarize: Callable[[list], dict]
    warmup: int = 0
    repeats: int | None = 1
    tokens: int = 0
    peak: Callable[[int], int] = int
    headline: Callable[[list], list[float]] | None = None
    max_time_s: float = 60.0
