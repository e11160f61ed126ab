"""Kernel microbenchmarks: fused attention and decode attention, ours against PyTorch's.

A case (``Calls``) is a callable that runs one attention forward, backward or both on fresh
random inputs; its cost is what the harness divides the time by (``cost.attention``:
FLOPs of the visible (query, key) pairs, bytes of Q, K, V, O once, and dO, dQ, dK,
dV for the backward). Implementations:

- ``triton``: ours (``kernels.attention``);
- ``sdpa-flash``, ``sdpa-efficient``, ``sdpa-cudnn``, ``sdpa-math``: PyTorch's
  ``scaled_dot_product_attention`` pinned to one backend (GQA via ``enable_gqa``);
  a backend that cannot run the point is reported as skipped, with PyTorch's reason;
- ``eager``: what transformers' eager attention does (repeat KV, matmul, mask,
  softmax in fp32, matmul), materialising the scores.

Modes: ``fwd``; ``bwd`` (the backward alone, from a kept forward graph, as
Triton's tutorial and FlashAttention's benchmarks time it); ``fwd+bwd``.

A ``KernelWorkload`` runs one kernel family's points in one precision for
``harness.runner`` (``workloads.workload``): each point's case is its timed ``Calls``.

Decode attention (one new token per sequence over a full KV cache of ``context``
tokens; ``cost.decode_attention``: K and V read once, Q read, O written):
``triton`` (ours, contiguous cache), ``triton-paged`` (ours, 16-token pages in
shuffled order), ``sdpa`` (PyTorch's dispatch, GQA via ``enable_gqa``) and ``eager``.
A point's ``kv_dtype`` (``int8``, ``fp8``) stores the cache quantized with a float32
scale per token and KV head (``kernels.decode_attention.quantize_kv``), which only our
kernel reads; its bytes are counted as stored (values + scales).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from workloads import cost
from workloads.choices import ATTENTION_IMPLS, ATTENTION_MODES, DECODE_ATTENTION_IMPLS, SDPA_BACKENDS
from workloads.errors import UserError
from workloads.precision import Precision
from workloads.workload import Calls, Unsupported

PAGE_SIZE = 16
# KV-cache storage formats our decode kernel reads besides the compute dtype: name -> (torch dtype name,
# bytes per value); each stored vector (token, KV head) of K and of V also carries one float32 scale
QUANTIZED_KV = {"int8": ("int8", 1), "fp8": ("float8_e4m3fn", 1)}
KV_SCALE_BYTES = 4


@dataclass(frozen=True)
class AttentionPoint:
    impl: str
    batch_size: int
    heads: int
    kv_heads: int
    seq_len: int
    head_dim: int
    causal: bool
    mode: str

    def fields(self) -> dict:
        return asdict(self)


def check_point(point: AttentionPoint | DecodeAttentionPoint) -> None:
    """Refuse a point of either kernel that nothing can run: unknown names, sizes below 1, a GQA split
    that does not divide."""
    impls = DECODE_ATTENTION_IMPLS if isinstance(point, DecodeAttentionPoint) else ATTENTION_IMPLS
    if point.impl not in impls:
        raise UserError(f"unknown implementation {point.impl!r}; choose from {', '.join(impls)}")
    if getattr(point, "mode", ATTENTION_MODES[0]) not in ATTENTION_MODES:
        raise UserError(f"unknown mode {point.mode!r}; choose from {', '.join(ATTENTION_MODES)}")
    if getattr(point, "kv_dtype", None) not in (None, *QUANTIZED_KV):
        raise UserError(f"unknown KV-cache format {point.kv_dtype!r}; choose from {', '.join(QUANTIZED_KV)}")
    small = [name for name, value in point.fields().items() if type(value) is int and value < 1]
    if small:
        raise UserError(f"{', '.join(small)} must be positive")
    if point.heads % point.kv_heads:
        raise UserError(f"query heads ({point.heads}) must be a multiple of KV heads ({point.kv_heads})")


def attention_cost(point: AttentionPoint, elem_bytes: int) -> cost.Cost:
    shape = (point.batch_size, point.heads, point.kv_heads, point.seq_len, point.seq_len, point.head_dim,
             elem_bytes, point.causal)
    forward, backward = cost.attention(*shape), cost.attention(*shape, backward=True)
    return {"fwd": forward, "bwd": backward, "fwd+bwd": forward + backward}[point.mode]


def _eager(q, k, v, causal: bool, scale: float):
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = torch.matmul(q, k.transpose(2, 3)) * scale
    if causal:
        hidden = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(hidden, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(probs, v)


def _forward(point: AttentionPoint) -> Callable:
    scale = 1.0 / math.sqrt(point.head_dim)
    if point.impl == "triton":
        from kernels.attention import attention

        return lambda q, k, v: attention(q, k, v, causal=point.causal, scale=scale)
    if point.impl == "eager":
        return lambda q, k, v: _eager(q, k, v, point.causal, scale)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, SDPA_BACKENDS[point.impl])
    gqa = point.heads != point.kv_heads

    def sdpa(q, k, v):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=point.causal, scale=scale, enable_gqa=gqa)

    return sdpa


def attention_case(point: AttentionPoint, precision: Precision, device: torch.device, seed: int = 0) -> Calls:
    """Inputs on ``device`` and the timed callable; runs it once, so a point that cannot run fails here.

    Raises ``Unsupported`` when the implementation cannot run the point (device,
    dtype, shape), and lets ``torch.OutOfMemoryError`` through for the caller.
    """
    if point.impl == "triton" and device.type != "cuda":
        raise Unsupported("our Triton kernel needs a CUDA GPU")
    gen = torch.Generator(device=device).manual_seed(seed)
    backward = point.mode != "fwd"

    def rand(heads):
        shape = (point.batch_size, heads, point.seq_len, point.head_dim)
        return torch.randn(shape, generator=gen, device=device, dtype=precision.dtype).requires_grad_(backward)

    q, k, v = rand(point.heads), rand(point.kv_heads), rand(point.kv_heads)
    forward = _forward(point)
    try:
        out = forward(q, k, v)
    except RuntimeError as exc:
        if isinstance(exc, torch.OutOfMemoryError):
            raise
        raise Unsupported(str(exc).strip().splitlines()[0][:300]) from None
    if point.mode == "fwd":
        def fn():
            with torch.no_grad():
                return forward(q, k, v)
    else:
        grad_out = torch.randn(out.shape, generator=gen, device=device, dtype=out.dtype)
        if point.mode == "bwd":
            def fn():
                out.backward(grad_out, retain_graph=True)
        else:
            def fn():
                forward(q, k, v).backward(grad_out)
        fn()
    return Calls(fn, [q, k, v] if backward else [])


@dataclass(frozen=True)
class DecodeAttentionPoint:
    impl: str
    batch_size: int
    heads: int
    kv_heads: int
    context: int
    head_dim: int
    kv_dtype: str | None = None  # None: the cache is in the compute dtype; else a key of QUANTIZED_KV

    def fields(self) -> dict:
        return asdict(self)


def decode_attention_cost(point: DecodeAttentionPoint, elem_bytes: int) -> cost.Cost:
    """Bytes as stored: Q read and O written in the compute dtype; K and V read in the cache's format, with
    their scales when quantized (``cost.decode_attention`` counts the float cache)."""
    lens = [point.context] * point.batch_size
    full = cost.decode_attention(lens, point.heads, point.kv_heads, point.head_dim, elem_bytes)
    if point.kv_dtype is None:
        return full
    vectors = 2 * point.kv_heads * point.context * point.batch_size  # K and V, per token and KV head
    q_o = 2 * point.batch_size * point.heads * point.head_dim * elem_bytes
    kv = vectors * (point.head_dim * QUANTIZED_KV[point.kv_dtype][1] + KV_SCALE_BYTES)
    return cost.Cost(bytes=q_o + kv, flops=full.flops)


def decode_attention_case(point: DecodeAttentionPoint, precision: Precision, device: torch.device,
                          seed: int = 0) -> Calls:
    """A full cache of ``context`` tokens per sequence and one new query token; runs the call once."""
    if point.impl.startswith("triton") and device.type != "cuda":
        raise Unsupported("our Triton kernel needs a CUDA GPU")
    if point.kv_dtype is not None and not point.impl.startswith("triton"):
        raise Unsupported(f"{point.impl} reads float caches only, not {point.kv_dtype}")
    gen = torch.Generator(device=device).manual_seed(seed)
    batch, ctx, dim = point.batch_size, point.context, point.head_dim
    q = torch.randn(batch, point.heads, 1, dim, generator=gen, device=device, dtype=precision.dtype)
    scale = 1.0 / math.sqrt(dim)

    def cache(shape):
        """K and V in the point's format, plus keyword arguments for their scales."""
        k, v = (torch.randn(shape, generator=gen, device=device, dtype=precision.dtype) for _ in range(2))
        if point.kv_dtype is None:
            return k, v, {}
        from kernels.decode_attention import quantize_kv

        (k, k_scale), (v, v_scale) = (quantize_kv(x, getattr(torch, QUANTIZED_KV[point.kv_dtype][0]))
                                      for x in (k, v))
        return k, v, {"k_scale": k_scale, "v_scale": v_scale}

    if point.impl == "triton-paged":
        from kernels.decode_attention import decode_attention

        pages = -(-ctx // PAGE_SIZE)
        k, v, scales = cache((batch * pages, PAGE_SIZE, point.kv_heads, dim))
        table = torch.randperm(batch * pages, generator=gen, device=device).reshape(batch, pages).int()
        lengths = torch.full((batch,), ctx, dtype=torch.int32, device=device)

        def fn():
            return decode_attention(q, k, v, lengths, scale=scale, block_table=table, **scales)
    else:
        k, v, scales = cache((batch, point.kv_heads, ctx, dim))
        if point.impl == "triton":
            from kernels.decode_attention import decode_attention

            lengths = torch.full((batch,), ctx, dtype=torch.int32, device=device)

            def fn():
                return decode_attention(q, k, v, lengths, scale=scale, **scales)
        elif point.impl == "sdpa":
            def fn():
                return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=point.heads != point.kv_heads)
        else:
            def fn():
                return _eager(q, k, v, False, scale)
    with torch.no_grad():
        try:
            fn()
        except (RuntimeError, ValueError) as exc:  # ValueError: our kernel refusing (fp8 on an older GPU)
            if isinstance(exc, torch.OutOfMemoryError):
                raise
            raise Unsupported(str(exc).strip().splitlines()[0][:300]) from None
    return Calls(fn)


class KernelWorkload:
    """Points of one kernel family (``attention`` or ``decode-attention``) in one precision."""

    def __init__(self, kind: str, precision: Precision, device: torch.device, points: list, seed: int = 0):
        self.make_case, self.cost_of = {"attention": (attention_case, attention_cost),
                                        "decode-attention": (decode_attention_case, decode_attention_cost)}[kind]
        self.kind, self.precision, self.device, self.points, self.seed = kind, precision, device, points, seed

    def setup(self) -> None:
        pass

    def teardown(self) -> None:
        pass

    def fields(self, point) -> dict:
        p = self.precision
        return {"workload": self.kind, "attn": point.impl, "dtype": p.name, "weights_dtype": p.dtype_name,
                "matmul_precision": p.matmul_precision, "device": str(self.device), **point.fields(),
                "seed": self.seed}

    def region(self, point) -> Calls:
        return self.make_case(point, self.precision, self.device, self.seed)

    def cost(self, point) -> cost.Cost:
        return self.cost_of(point, self.precision.bytes_per_element)
