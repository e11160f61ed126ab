"""Where a workload runs and in which precision, checked before anything is built.

A precision is more than a torch dtype: ``tf32`` keeps fp32 weights and lets
matmuls use TF32 tensor cores, so it is a (weights dtype, matmul precision)
pair. ``matmul_mode`` applies the matmul setting for the duration of a run and
restores the previous one, so precisions never leak into each other.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from workloads import choices
from workloads.errors import UserError


@dataclass(frozen=True)
class Precision:
    name: str  # what the user asked for: fp32, tf32, bf16, fp16
    dtype: torch.dtype  # weights, activations and KV cache
    matmul_precision: str  # torch.set_float32_matmul_precision value

    @property
    def bytes_per_element(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


PRECISIONS = {
    "fp32": Precision("fp32", torch.float32, "highest"),
    "tf32": Precision("tf32", torch.float32, "high"),
    "bf16": Precision("bf16", torch.bfloat16, "highest"),
    "fp16": Precision("fp16", torch.float16, "highest"),
}
assert tuple(PRECISIONS) == choices.PRECISIONS
ALIASES = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}


def parse_precision(name: str) -> Precision:
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in PRECISIONS:
        raise UserError(f"unknown dtype {name!r}; choose from {', '.join(PRECISIONS)}")
    return PRECISIONS[key]


def resolve_device(name: str) -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU."""
    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA device is visible here; use --device cpu or auto")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        return device
    raise UserError(f"unknown device {name!r}; choose auto, cpu, cuda or cuda:N")


def check_supported(precision: Precision, device: torch.device) -> None:
    """Refuse precisions the device cannot run natively (tf32 or bf16 where absent)."""
    if device.type == "cpu":
        if precision.name == "tf32":
            raise UserError("tf32 is an NVIDIA tensor-core mode (Ampere or newer); on the CPU use fp32")
        return
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        gpu = torch.cuda.get_device_name(device)
        if precision.name == "tf32" and major < 8:
            raise UserError(f"tf32 needs compute capability 8.0 or newer; {gpu} is {major}.{minor}")
        if precision.name == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
            raise UserError(f"bf16 is not supported natively on {gpu} (compute capability {major}.{minor}); use fp16")


@contextlib.contextmanager
def matmul_mode(precision: Precision):
    """Set the fp32 matmul precision (TF32 on or off) for one run, then restore it."""
    previous = torch.get_float32_matmul_precision()
    previous_cudnn = torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision(precision.matmul_precision)
    torch.backends.cudnn.allow_tf32 = precision.name == "tf32"
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)
        torch.backends.cudnn.allow_tf32 = previous_cudnn
