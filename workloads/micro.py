"""Microbenchmarks that measure a device's ceilings: STREAM-style copy and triad, dense matmul.

Buffers are filled with random values (never zeros) and are far larger than any
cache for the bandwidth tests. Each benchmark is a callable plus its cost, so the
harness times it and divides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from workloads import cost
from workloads.precision import PRECISIONS, Precision


@dataclass(frozen=True)
class Micro:
    workload: str  # copy | triad | matmul
    precision: Precision
    fn: Callable[[], object]
    cost: cost.Cost
    size: dict  # what the record stores about the problem size


def copy(device: torch.device, nbytes: int) -> Micro:
    n = nbytes // 4
    a = torch.rand(n, device=device)
    b = torch.empty_like(a)
    return Micro("copy", PRECISIONS["fp32"], lambda: b.copy_(a), cost.copy(n, 4), {"elements": n})


def triad(device: torch.device, nbytes: int) -> Micro:
    n = nbytes // 4
    a = torch.empty(n, device=device)
    b, c = torch.rand(n, device=device), torch.rand(n, device=device)
    return Micro("triad", PRECISIONS["fp32"], lambda: torch.add(b, c, alpha=3.0, out=a), cost.triad(n, 4),
                 {"elements": n})


def matmul(device: torch.device, n: int, precision: Precision) -> Micro:
    """``a @ b.T`` through ``F.linear``, the call every projection of a model makes (on CPUs
    without native bf16 it takes the oneDNN path, which plain ``torch.matmul`` does not)."""
    a = torch.randn(n, n, device=device, dtype=precision.dtype)
    b = torch.randn(n, n, device=device, dtype=precision.dtype)
    return Micro("matmul", precision, lambda: torch.nn.functional.linear(a, b),
                 cost.matmul(n, n, n, precision.bytes_per_element), {"m": n, "n": n, "k": n})
