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
  operands are upcast to fp32 before each dot.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MIN_BLOCK_D = 16  # tl.dot needs every tile dimension to be at least 16


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def gpu_generation() -> str:
    """The tuning table to use: interpreter, hopper (sm90+), ampere (sm80/86/89) or older."""
    if interpreting() or not torch.cuda.is_available():
        return "interpreter"
    major, _ = torch.cuda.get_device_capability()
    return "hopper" if major >= 9 else "ampere" if major == 8 else "older"


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
