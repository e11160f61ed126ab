"""What the Triton kernels share: constants, launch-time choices and jit helpers.

``kernels.attention`` (fused attention) and ``kernels.decode_attention`` (attention
over a KV cache) make the same choices before a launch and use the same device-side
dot product. Those live here, under public names, so that each kernel imports them
from one place instead of from the other kernel's private names (kernels/ imports
no private name across files). Like the rest of kernels/, this module imports only
torch, triton and the standard library.

- ``LOG2E`` and ``SUPPORTED_DTYPES``: both kernels run their softmax in base 2
  (``exp2``, the scale folded into ``log2(e)``) on fp16, bf16 or fp32 inputs.
- ``interpreting()``: whether Triton runs kernels in its CPU interpreter
  (``TRITON_INTERPRET=1``, set before the kernels are imported; the tests do).
- ``gpu_generation()``: which per-generation autotuning table a launch uses.
- ``block_d(head_dim)``: the head dim padded to the power-of-two tile width.
- ``triton_precision(dtype)``: ``tl.dot``'s ``input_precision``, following
  ``torch.set_float32_matmul_precision`` for fp32 (IEEE unless TF32 is allowed).
- ``upcast_dots(dtype)`` and the jit helper ``dot``: the interpreter's ``tl.dot``
  returns garbage for bf16 operands (triton 3.9), so there, and only there, bf16
  operands are upcast to fp32 before each dot. (Its int8 -> bf16 casts are wrong
  too; the quantized decode path casts int8 to fp32 under the same flag.)
- ``launch(kernel, grid, *args, **kwargs)``: every kernel launch goes through it, so
  that ``capture_launches(capability)`` can record what each launch would compile for
  a GPU that is not there (``kernels.resources`` compiles those records with Triton's
  bundled ptxas to read registers, spills and shared memory). While capturing, the
  wrappers run on ``meta`` tensors (shapes and strides, no data), nothing is launched,
  and ``gpu_generation()`` answers for the captured capability.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.runtime.autotuner import Autotuner

LOG2E = 1.4426950408889634
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MIN_BLOCK_D = 16  # tl.dot needs every tile dimension to be at least 16


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter; False while launches are captured for a GPU
    (``capture_launches``), whose launches are what is being described."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1" and _CAPTURE is None


def generation_of(capability: int) -> str:
    """The tuning table of a compute capability written as an int (80, 86, 90, 100, 120): hopper for
    the data-centre parts with 228 KB of shared memory per SM (sm_90, sm_100, sm_103), ampere for
    sm_80-89 and for sm_120 (consumer Blackwell: 100 KB, no wgmma), older below."""
    major = capability // 10
    if major in (9, 10):
        return "hopper"
    return "ampere" if major == 8 or major >= 11 else "older"


def gpu_generation() -> str:
    """The tuning table to use: the captured capability's (see ``capture_launches``), else interpreter,
    else the local GPU's (``generation_of``)."""
    if _CAPTURE is not None:
        return generation_of(_CAPTURE.capability)
    if interpreting() or not torch.cuda.is_available():
        return "interpreter"
    major, minor = torch.cuda.get_device_capability()
    return generation_of(10 * major + minor)


def block_d(head_dim: int) -> int:
    """Tile width for a head dim: the next power of two, at least ``MIN_BLOCK_D``."""
    return max(MIN_BLOCK_D, triton.next_power_of_2(head_dim))


def triton_precision(dtype: torch.dtype) -> str:
    """``input_precision`` for ``tl.dot`` on operands of ``dtype``.

    fp32 gets IEEE products while torch's float32 matmul precision is "highest" and
    TF32 once it allows less ("high" or "medium", what the ``tf32`` precision sets);
    fp16 and bf16 dots do not use the setting and get "tf32", Triton's default.
    """
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"no Triton dot precision for {dtype}; supported: fp16, bf16, fp32")
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "ieee"
    return "tf32"


def upcast_dots(dtype: torch.dtype) -> bool:
    """The ``UPCAST`` flag for ``dot``: True for bf16 operands under the interpreter only."""
    return interpreting() and dtype == torch.bfloat16


@triton.jit
def dot(a, b, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """``tl.dot(a, b)`` with ``input_precision=PRECISION``; with ``UPCAST``, on fp32 copies of a and b."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision=PRECISION)
    return tl.dot(a, b, input_precision=PRECISION)


# ----------------------------------------------------------------------------- launches


@dataclass
class Launch:
    """What one launch compiles: the jit function, the autotune candidates it chooses among (one
    ``triton.Config`` for a kernel that is not autotuned), and the arguments as passed."""

    kernel: triton.JITFunction
    configs: list
    args: tuple
    kwargs: dict

    @property
    def name(self) -> str:
        return self.kernel.__name__


@dataclass
class _Capture:
    capability: int
    launches: list


_CAPTURE: _Capture | None = None


@contextlib.contextmanager
def capture_launches(capability: int):
    """Record launches instead of running them, choosing tables as a GPU of ``capability`` (e.g. 90)
    would; yields the list of ``Launch`` records. Call the wrappers on ``meta`` tensors inside."""
    global _CAPTURE
    if _CAPTURE is not None:
        raise RuntimeError("capture_launches does not nest")
    _CAPTURE = _Capture(capability, [])
    try:
        yield _CAPTURE.launches
    finally:
        _CAPTURE = None


def capturing() -> bool:
    """True inside ``capture_launches``: tensors may be on the ``meta`` device and nothing runs."""
    return _CAPTURE is not None


def launch(kernel, grid, *args, **kwargs) -> None:
    """``kernel[grid](*args, **kwargs)``, or, inside ``capture_launches``, a ``Launch`` record of it."""
    if _CAPTURE is None:
        kernel[grid](*args, **kwargs)
        return
    if isinstance(kernel, Autotuner):  # the candidates this launch chooses among, after the kernel's own pruning
        configs = list(kernel.configs)
        if kernel.early_config_prune:
            configs = kernel.early_config_prune(configs, dict(zip(kernel.arg_names, args)), **kwargs)
        _CAPTURE.launches.append(Launch(kernel.fn, configs, args, kwargs))
        return
    options = {name: kwargs.pop(name) for name in ("num_warps", "num_stages") if name in kwargs}
    config = triton.Config({}, num_warps=options.get("num_warps", 4), num_stages=options.get("num_stages", 3))
    _CAPTURE.launches.append(Launch(kernel, [config], args, kwargs))
