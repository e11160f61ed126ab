"""Microbenchmarks that measure a device's ceilings: STREAM-style copy and triad, dense matmul.

Buffers are filled with random values (never zeros) and are far larger than any
cache for the bandwidth tests. Each is a workload (``workloads.workload``) with
one point per size, timed by ``harness.runner`` like every other workload; its
records are the ceilings (``harness.ceilings``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workloads import cost
from workloads.precision import PRECISIONS, Precision
from workloads.workload import Calls

@dataclass(frozen=True)
class MicroPoint:
    """Bytes per bandwidth buffer (copy, triad) or the matmul side ``n`` (an n x n x n product)."""

    size: int


class MicroWorkload:
    """``kind`` (copy, triad or matmul) on ``device`` at one or more sizes; copy and triad run in fp32."""

    def __init__(self, kind: str, device: torch.device, points: list[MicroPoint],
                 precision: Precision = PRECISIONS["fp32"]):
        self.kind, self.device, self.points, self.precision = kind, device, points, precision

    def setup(self) -> None:
        pass

    def teardown(self) -> None:
        pass

    def _elements(self, point: MicroPoint) -> int:
        return point.size // 4

    def fields(self, point: MicroPoint) -> dict:
        p = self.precision
        size = ({"m": point.size, "n": point.size, "k": point.size} if self.kind == "matmul"
                else {"elements": self._elements(point)})
        return {"workload": self.kind, "dtype": p.name, "weights_dtype": p.dtype_name,
                "matmul_precision": p.matmul_precision, "device": str(self.device), **size}

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
        n, dtype = point.size, self.precision.dtype
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        return Calls(lambda: torch.nn.functional.linear(a, b))

    def cost(self, point: MicroPoint) -> cost.Cost:
        if self.kind == "copy":
            return cost.copy(self._elements(point), 4)
        if self.kind == "triad":
            return cost.triad(self._elements(point), 4)
        return cost.matmul(point.size, point.size, point.size, self.precision.bytes_per_element)
