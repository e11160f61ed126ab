"""Microbenchmarks that measure a device's ceilings: STREAM-style copy and triad, dense matmul.

Buffers are filled with random values (never zeros) and are far larger than any
cache for the bandwidth tests. Each is a workload (``workloads.workload``) with
one point per size, timed by ``harness.runner`` like every other workload; its
records are the ceilings (``harness.ceilings``).

A ceiling is what the device *can* do, so a record's rate (``achieved_gbps``,
``achieved_tflops``) comes from its shortest call (the runner's ``time_ms_min``),
not from the median: on a shared machine the median also measures the
neighbours. The spread stays beside it, as the rates at other times of the same
calls (the cost's phases): ``median_gbps`` / ``median_tflops`` at the median time,
``p10_*`` at the p90 time (the slow tenth) and ``p90_*`` at the p10 time.

Matmuls run at a square size and at the shapes models run: ``model_matmul_shapes``
gives a model's projection shapes at prefill and decode token counts, because a
skinny decode product or a wide prefill one is not the square one's rate.

The communication ceiling, ``AllReduceWorkload``, runs in every process of a
torchrun job (``llmbench peak --nproc N``): fp32 sum all-reduces of one message
size per point, back to back, each marked on the step clock. Every process runs
the same fixed number of calls (a time budget could end them at different calls
and leave one waiting in a collective forever), and a call takes as long as its
slowest process, so each call's time is the maximum over processes. Its rate is
the bus bandwidth as nccl-tests defines it (``cost.allreduce``), from the
shortest call, with the spread beside it as for the other ceilings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.distributed as torch_dist

from workloads import cost
from workloads.distributed import Dist
from workloads.precision import PRECISIONS, Precision
from workloads.stats import spread, summary
from workloads.workload import Calls, Runs

BEST_TIME = "time_ms_min"  # the runner's shortest call: what a ceiling's rate is timed by
SPREAD_TIMES = {"median": "time_ms", "p10": "time_ms_p90", "p90": "time_ms_p10"}  # rate percentile -> its time


@dataclass(frozen=True)
class MicroPoint:
    """Bytes per bandwidth buffer (copy, triad), or a matmul ``C[m,n] = A[m,k] @ B[k,n]`` with
    ``m = size``; ``n`` and ``k`` default to ``size`` (the square product)."""

    size: int
    n: int | None = None
    k: int | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """The matmul's (m, n, k)."""
        return self.size, self.n or self.size, self.k or self.size


def projection_sizes(config) -> tuple[int, int]:
    """(hidden, intermediate) of a Hugging Face model config: ``hidden_size`` and the MLP width
    (``intermediate_size``; ``ffn_dim`` in OPT; ``n_inner`` or 4x hidden in GPT-2)."""
    hidden = config.hidden_size
    for name in ("intermediate_size", "ffn_dim", "n_inner"):
        value = getattr(config, name, None)
        if value:
            return hidden, value
    return hidden, 4 * hidden


def model_matmul_shapes(hidden: int, intermediate: int, tokens) -> list[tuple[int, int, int]]:
    """The (m, n, k) products a decoder's projections run for each token count in ``tokens``
    (prefill: batch x prompt; decode: batch): a hidden -> hidden projection (attention's q/o)
    and the MLP's hidden -> intermediate one. The MLP's way back has the same FLOPs and bytes, so
    it is left out. Duplicates are dropped, order kept."""
    shapes = [(t, n, k) for t in tokens for n, k in ((hidden, hidden), (intermediate, hidden))]
    return list(dict.fromkeys(shapes))


class MicroWorkload:
    """``kind`` (copy, triad or matmul) on ``device`` at one or more sizes; copy and triad run in fp32.
    ``fingerprint``: the environment the ceilings belong to (``harness.ceilings.fingerprint``),
    stored in every record so that ceilings of another setup are never mixed in."""

    def __init__(self, kind: str, device: torch.device, points: list[MicroPoint],
                 precision: Precision = PRECISIONS["fp32"], fingerprint: dict | None = None):
        self.kind, self.device, self.points, self.precision = kind, device, points, precision
        self.fingerprint = fingerprint

    def setup(self) -> None:
        pass

    def teardown(self) -> None:
        pass

    def _elements(self, point: MicroPoint) -> int:
        return point.size // 4

    def fields(self, point: MicroPoint) -> dict:
        p = self.precision
        if self.kind == "matmul":
            size = dict(zip("mnk", point.shape))
        else:
            size = {"elements": self._elements(point), "buffer_bytes": self._elements(point) * 4}
        fingerprint = {"fingerprint": self.fingerprint} if self.fingerprint is not None else {}
        return {"workload": self.kind, "dtype": p.name, "weights_dtype": p.dtype_name,
                "matmul_precision": p.matmul_precision, "device": str(self.device), **size, **fingerprint}

    def region(self, point: MicroPoint) -> Calls:
        device = self.device
        if self.kind == "copy":
            a = torch.rand(self._elements(point), device=device)
            b = torch.empty_like(a)
            return Calls(lambda: b.copy_(a))
        if self.kind == "triad":
            n = self._elements(point)
            a = torch.empty(n, device=device)
            b, c = torch.rand(n, device=device), torch.rand(n, device=device)
            return Calls(lambda: torch.add(b, c, alpha=3.0, out=a))
        # ``a @ b.T`` through ``F.linear``, the call every projection of a model makes (on CPUs without
        # native bf16 it takes the oneDNN path, which plain ``torch.matmul`` does not)
        (m, n, k), dtype = point.shape, self.precision.dtype
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(n, k, device=device, dtype=dtype)
        return Calls(lambda: torch.nn.functional.linear(a, b))

    def cost(self, point: MicroPoint) -> cost.Cost:
        """The work of one call, timed by the shortest call, with the spread's times as phases."""
        if self.kind == "copy":
            work = cost.copy(self._elements(point), 4)
        elif self.kind == "triad":
            work = cost.triad(self._elements(point), 4)
        else:
            work = cost.matmul(*point.shape, self.precision.bytes_per_element)
        phases = {name: replace(work, timed_by=time) for name, time in SPREAD_TIMES.items()}
        return replace(work, timed_by=BEST_TIME, phases=phases)


ALLREDUCE_CALLS = 20  # timed all-reduces per message size, the same in every process


class AllReduceWorkload:
    """Sum all-reduces of fp32 messages of ``point.size`` bytes over every process of the job ``dist``
    (whose process group is joined): one point per size, ``calls`` timed calls after as many untimed."""

    def __init__(self, device: torch.device, points: list[MicroPoint], dist: Dist, fingerprint: dict | None = None,
                 calls: int = ALLREDUCE_CALLS):
        self.device, self.points, self.dist, self.calls = device, points, dist, calls
        self.precision = PRECISIONS["fp32"]
        self.fingerprint = fingerprint

    def setup(self) -> None:
        pass

    def teardown(self) -> None:
        pass

    def fields(self, point: MicroPoint) -> dict:
        fingerprint = {"fingerprint": self.fingerprint} if self.fingerprint is not None else {}
        return {"workload": "allreduce", "dtype": "fp32", "weights_dtype": "float32", "device": str(self.device),
                "message_bytes": point.size // 4 * 4, "elements": point.size // 4, "world_size": self.dist.world_size,
                "nodes": self.dist.nodes, "nproc_per_node": self.dist.local_world_size,
                "backend": self.dist.backend, "calls": self.calls, **fingerprint}

    def region(self, point: MicroPoint) -> Runs:
        message = torch.rand(point.size // 4, device=self.device)

        def run(clock, index):
            clock.start()
            for _ in range(self.calls):
                torch_dist.all_reduce(message)
                clock.tick()
            return clock.stop()

        def summarize(timelines) -> dict:
            ticks = timelines[-1].ticks_ms
            mine = torch.tensor([b - a for a, b in zip([0.0, *ticks], ticks)], dtype=torch.float64, device=self.device)
            torch_dist.all_reduce(mine, op=torch_dist.ReduceOp.MAX)  # a call lasts until its slowest process
            times = mine.tolist()
            return {**summary(times, "time_ms"), **spread(times, "time_ms"), "time_ms_min": float(np.min(times)),
                    "repeats": len(times), "samples": {"time_ms": times}}

        return Runs(run=run, summarize=summarize, warmup=1, repeats=1)

    def cost(self, point: MicroPoint) -> cost.Cost:
        """Bus bytes of one call (nccl-tests' bus bandwidth), timed by the shortest call, spread as phases."""
        work = cost.allreduce(point.size // 4 * 4, self.dist.world_size)
        phases = {name: replace(work, timed_by=time) for name, time in SPREAD_TIMES.items()}
        return replace(work, timed_by=BEST_TIME, phases=phases)
