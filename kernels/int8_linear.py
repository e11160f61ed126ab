"""A linear layer on int8 weights in Triton: y = x @ (scale * W_int8)^T + bias.

Decode reads every weight once per step and does little arithmetic with it, so its
speed is the weights' bytes over the memory bandwidth. Stored as int8 with one float32
scale per output channel (symmetric, per-channel, as gpt-fast's int8 weight-only
mode), the weights are half of bf16's bytes. The kernel reads them as int8, converts
them to the activations' dtype in registers (exact: |w| <= 127), multiplies on the
tensor cores with fp32 accumulation, and applies the channel scale and the bias to
the fp32 sums before the one rounding to the output dtype.

``int8_linear(x, weight, scale, bias=None)`` takes x (..., in_features) in fp16, bf16
or fp32, ``weight`` (out_features, in_features) int8 laid out as ``nn.Linear.weight``,
``scale`` (out_features,) float32. Two autotuned launches of one kernel: a GEMV-like
one for decode (at most ``DECODE_ROWS`` rows: one row tile, wide K tiles, many
programs over N), a matmul for prefill (square-ish tiles). ``quantize_weight(w)``
makes the int8 weight and its scales; ``int8_linear_reference`` is the definition in
PyTorch, in any dtype (the tests run it in float64).

On a CPU the kernel runs in Triton's interpreter, where bf16 dots and int8 -> bf16
casts are wrong (triton 3.9): there, under ``kernels.common.upcast_dots``, both
operands go to fp32.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from kernels.common import (SUPPORTED_DTYPES, capturing, dot, gpu_generation, interpreting, launch, triton_precision,
                            upcast_dots)

DECODE_ROWS = 16  # at most this many rows take the decode (GEMV-like) launch


@triton.jit
def _int8_linear(X, W, SCALE, BIAS, Y, M, N, K,
                 stride_xm, stride_wn, stride_ym,
                 HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """One program: a (BLOCK_M, BLOCK_N) tile of y, over the whole of K."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_ok, n_ok = offs_m < M, offs_n < N
    x_rows = X + offs_m[:, None].to(tl.int64) * stride_xm
    w_rows = W + offs_n[:, None].to(tl.int64) * stride_wn
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = (k0 + offs_k) < K
        x = tl.load(x_rows + k0 + offs_k[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_rows + k0 + offs_k[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0)
        w = w.to(tl.float32) if UPCAST else w.to(x.dtype)
        acc += dot(x, tl.trans(w), UPCAST, PRECISION)
    acc = acc * tl.load(SCALE + offs_n, mask=n_ok, other=0.0)[None, :]
    if HAS_BIAS:
        acc += tl.load(BIAS + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(Y + offs_m[:, None].to(tl.int64) * stride_ym + offs_n[None, :], acc.to(Y.dtype.element_ty),
             mask=m_ok[:, None] & n_ok[None, :])


def _config(block_m: int, block_n: int, block_k: int, warps: int, stages: int) -> triton.Config:
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k}, num_warps=warps,
                         num_stages=stages)


# Candidate (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages) per launch and GPU generation. Decode reads W once:
# small N tiles give enough programs for every SM at batch 1 (4096 outputs / 32 = 128 programs), long K
# tiles keep many int8 loads in flight. Prefill is a plain tensor-core matmul. Every candidate compiles
# spill-free for its architectures (`llmbench kernel compile --family int8_linear`); 16x64x256 with 4
# stages spilled 8 bytes on sm_90 and sm_100 and was dropped.
DECODE_CONFIGS = {
    "interpreter": [(16, 16, 32, 1, 1)],
    "hopper": [(16, 32, 256, 4, 4), (16, 32, 512, 4, 3), (16, 16, 512, 4, 4), (16, 64, 128, 4, 5)],
    "ampere": [(16, 32, 256, 4, 4), (16, 64, 128, 4, 4), (16, 32, 128, 4, 5), (16, 16, 256, 4, 4)],
    "older": [(16, 32, 128, 4, 2), (16, 64, 64, 4, 2)],
}
PREFILL_CONFIGS = {
    "interpreter": [(16, 16, 32, 1, 1)],
    "hopper": [(128, 128, 64, 8, 4), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4), (128, 128, 128, 8, 3)],
    "ampere": [(128, 128, 32, 8, 3), (128, 64, 32, 4, 4), (64, 64, 64, 4, 3)],
    "older": [(64, 64, 32, 4, 2), (32, 64, 32, 4, 2)],
}


@functools.cache
def _tuned(launch_name: str, generation: str):
    table = {"decode": DECODE_CONFIGS, "prefill": PREFILL_CONFIGS}[launch_name]
    return triton.autotune(configs=[_config(*c) for c in table[generation]], key=["N", "K", "HAS_BIAS"])(_int8_linear)


def autotuners() -> dict:
    """The autotuned kernels launches use on this machine, by name (``kernels.resources.chosen`` reads what
    each picked)."""
    return {f"int8_linear.{name}": _tuned(name, gpu_generation()) for name in ("decode", "prefill")}


def _check(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> None:
    if x.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"int8_linear needs fp16, bf16 or fp32 activations, got {x.dtype}")
    if weight.dtype != torch.int8 or weight.dim() != 2 or weight.shape[1] != x.shape[-1]:
        raise ValueError(f"weight must be int8 (out_features, in_features={x.shape[-1]}), got {weight.dtype} "
                         f"{tuple(weight.shape)}")
    if scale.dtype != torch.float32 or scale.shape != (weight.shape[0],):
        raise ValueError(f"scale must be float32 ({weight.shape[0]},), one per output channel; got {scale.dtype} "
                         f"{tuple(scale.shape)}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must be ({weight.shape[0]},), got {tuple(bias.shape)}")
    devices = {t.device for t in (x, weight, scale, *([bias] if bias is not None else []))}
    if len(devices) != 1:
        raise ValueError(f"x, weight, scale and bias must be on one device, got {sorted(map(str, devices))}")
    if x.device.type != "cuda" and not interpreting() and not (capturing() and x.device.type == "meta"):
        raise ValueError(f"int8_linear needs a CUDA device; tensors are on {x.device} "
                         "(on a CPU, set TRITON_INTERPRET=1 before importing kernels, for tests)")
    if weight.stride(1) != 1:
        raise ValueError("int8_linear needs the weight's in_features dim to be contiguous (stride 1)")


def int8_linear(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor,
                bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ (scale[:, None] * weight).T + bias`` in x's dtype, reading ``weight`` as int8; see the module
    docstring."""
    _check(x, weight, scale, bias)
    rows = x.reshape(-1, x.shape[-1])
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    m, k = rows.shape
    n = weight.shape[0]
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    kernel = _tuned("decode" if m <= DECODE_ROWS else "prefill", gpu_generation())

    def grid(meta):
        return triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n, meta["BLOCK_N"])

    launch(kernel, grid, rows, weight, scale, bias if bias is not None else scale, y, m, n, k,
           rows.stride(0), weight.stride(0), y.stride(0),
           HAS_BIAS=bias is not None, UPCAST=upcast_dots(x.dtype), PRECISION=triton_precision(x.dtype))
    return y.reshape(*x.shape[:-1], n)


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: (values in [-127, 127], float32 scale per row) with
    ``weight ~= values * scale[:, None]`` (round to nearest; an all-zero row keeps a finite scale)."""
    w = weight.float()
    scale = w.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 127.0
    return (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8), scale


def int8_linear_reference(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor,
                          bias: torch.Tensor | None = None) -> torch.Tensor:
    """The definition in x's dtype: dequantize the weight, then a plain linear layer."""
    y = x @ (weight.to(x.dtype) * scale.to(x.dtype)[:, None]).T
    return y + bias.to(x.dtype) if bias is not None else y
