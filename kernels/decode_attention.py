"""Decode attention in Triton: a few new query tokens per sequence against its KV cache.

Decode is bound by memory bandwidth: the whole point is to read every cached key
and value once, at full speed, and nothing past a sequence's length. Design:

- **Split-K**: each sequence's cache is cut into ``num_splits`` chunks, and one
  program per (sequence, KV head, chunk) runs an online softmax over its chunk
  and writes a partial output with its log-sum-exp; a second kernel combines the
  chunks (weights ``2^(lse_i - max lse)``). Enough chunks keep every SM busy at
  batch 1 with a long context. The chunk count depends only on the cache's
  capacity, never on the lengths, so the launch is the same every step (CUDA
  graphs) and no length is read on the host.
- **GQA**: a program owns one KV head and stacks every query head that shares it
  (times the query tokens) as the rows of one tile, so each K/V tile is loaded
  once for all of them.
- **Per-sequence lengths** (``lengths``, a device tensor): keys at or past a
  sequence's length are never loaded. The ``q_len`` new tokens (1 for plain
  decode, up to 8 or so for speculative decoding) are the last ``q_len`` cached
  positions and attend causally: new token ``i`` sees keys ``< length - q_len + i + 1``.
- **Layouts**: a contiguous cache ``(batch, kv_heads, capacity, head_dim)`` (Hugging
  Face's static cache), or a paged one ``(num_pages, page_size, kv_heads,
  head_dim)`` with a ``block_table`` (batch, pages per sequence) of page ids, as
  vLLM lays it out. Any strides, fp32/fp16/bf16.
- An optional boolean ``mask`` (batch, q_len, capacity), True = attend, on top of
  the lengths (left padding in a batch).
- **Quantized caches**: K and V stored as ``int8`` or ``float8_e4m3fn`` (fp8 needs
  sm_89 or newer) with ``k_scale``/``v_scale`` float32 tensors, one scale per token
  and KV head ((batch, kv_heads, capacity) for the contiguous layout, (num_pages,
  page_size, kv_heads) for the paged one) or one per tensor. Decode reads half (int8,
  fp8 vs bf16) or a quarter (vs fp32) of the bytes; the values are exact in the
  compute dtype, and the scales are applied in registers: to the scores for K, to the
  probabilities for V (``p @ (s_v * v) = (p * s_v) @ v``). ``quantize_kv`` makes such
  a cache (symmetric, round to nearest), ``dequantize_kv`` undoes it.

The key-tile size, warps and pipeline depth are autotuned from a table per GPU
generation (``kernels.common.gpu_generation``, as in ``kernels.attention``); chunks
start on a tile boundary of every candidate. ``decode_attention_reference`` beside it
is the definition in PyTorch. On CPU the kernels run in Triton's interpreter (bf16
dots upcast there by ``kernels.common.dot``). ``kernels.common`` holds everything
this kernel shares with ``kernels.attention``.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from kernels.common import (LOG2E, SUPPORTED_DTYPES, block_d, capturing, dot, gpu_generation, interpreting, launch,
                            triton_precision, upcast_dots)

MIN_KEYS_PER_SPLIT = 256
QUANTIZED_KV_DTYPES = (torch.int8, torch.float8_e4m3fn)  # caches read through a scale per token and KV head


@triton.jit
def _decode_split(Q, K, V, LENS, TABLE, MASK, PART_O, PART_LSE, KS, VS,
                  stride_qb, stride_qh, stride_qm,
                  stride_kb, stride_kh, stride_kn,
                  stride_vb, stride_vh, stride_vn,
                  stride_tb, stride_mb, stride_mm,
                  stride_ksb, stride_ksh, stride_ksn,
                  stride_vsb, stride_vsh, stride_vsn,
                  H_KV, Q_LEN, SPLIT_LEN, NUM_SPLITS, qk_scale,
                  GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                  BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, PAGE_SIZE: tl.constexpr,
                  HAS_MASK: tl.constexpr, QUANTIZED: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """One program: one chunk of one sequence's cache, one KV head, all its query rows. With QUANTIZED,
    K and V are int8 or fp8 with a scale per (token, KV head) in KS and VS (strides 0: one per tensor)."""
    bkv = tl.program_id(0)
    split = tl.program_id(1)
    b = bkv // H_KV
    kvh = bkv % H_KV
    length = tl.load(LENS + b)

    rows = tl.arange(0, BLOCK_H)
    qi = rows % Q_LEN
    h = kvh * GROUP + rows // Q_LEN
    row_ok = rows < GROUP * Q_LEN
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d[None, :] < HEAD_DIM
    q = tl.load(Q + b.to(tl.int64) * stride_qb + h[:, None].to(tl.int64) * stride_qh + qi[:, None] * stride_qm
                + offs_d[None, :], mask=row_ok[:, None] & d_ok, other=0.0)
    limit = length - Q_LEN + qi + 1  # keys each row may see

    m_i = tl.full([BLOCK_H], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_H], dtype=tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_D], dtype=tl.float32)
    start = split * SPLIT_LEN
    end = tl.minimum(start + SPLIT_LEN, length)
    for start_n in range(start, end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < end
        if PAGE_SIZE > 0:
            page = tl.load(TABLE + b.to(tl.int64) * stride_tb + offs_n // PAGE_SIZE, mask=n_ok, other=0)
            block, slot = page.to(tl.int64), offs_n % PAGE_SIZE  # (page, slot in page) of each key
        else:
            block, slot = b.to(tl.int64), offs_n
        k_rows = K + block * stride_kb + slot * stride_kn + kvh.to(tl.int64) * stride_kh
        v_rows = V + block * stride_vb + slot * stride_vn + kvh.to(tl.int64) * stride_vh
        k = tl.load(k_rows[:, None] + offs_d[None, :], mask=n_ok[:, None] & d_ok, other=0.0)
        v = tl.load(v_rows[:, None] + offs_d[None, :], mask=n_ok[:, None] & d_ok, other=0.0)
        if QUANTIZED:  # int8 and fp8 values are exact in the compute dtype; the scales are applied in fp32
            k_scale = tl.load(KS + block * stride_ksb + slot * stride_ksn + kvh * stride_ksh, mask=n_ok, other=0.0)
            v_scale = tl.load(VS + block * stride_vsb + slot * stride_vsn + kvh * stride_vsh, mask=n_ok, other=0.0)
            if UPCAST:  # the interpreter casts int8 to bf16 wrongly (triton 3.9); its bf16 dots run in fp32 anyway
                k, v = k.to(tl.float32), v.to(tl.float32)
            else:
                k, v = k.to(q.dtype), v.to(q.dtype)
            s = dot(q, tl.trans(k), UPCAST, PRECISION) * (k_scale[None, :] * qk_scale)
        else:
            s = dot(q, tl.trans(k), UPCAST, PRECISION) * qk_scale
        allowed = (offs_n[None, :] < limit[:, None]) & n_ok[None, :] & row_ok[:, None]
        if HAS_MASK:
            user = tl.load(MASK + b.to(tl.int64) * stride_mb + qi[:, None] * stride_mm + offs_n[None, :],
                           mask=allowed, other=0)
            allowed = allowed & (user != 0)
        s = tl.where(allowed, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_use[:, None])
        alpha = tl.math.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        if QUANTIZED:  # p @ (v_scale * v) as (p * v_scale) @ v: BLOCK_H x BLOCK_N products, not BLOCK_N x BLOCK_D
            p = p * v_scale[None, :]
        acc = acc * alpha[:, None] + dot(p.to(v.dtype), v, UPCAST, PRECISION)
        m_i = m_new

    empty = l_i == 0.0
    # partials are (batch, heads, q_len, splits, BLOCK_D) and (batch, heads, q_len, splits), contiguous
    part = ((b * H_KV * GROUP + h) * Q_LEN + qi).to(tl.int64) * NUM_SPLITS + split
    tl.store(PART_O + part[:, None] * BLOCK_D + offs_d[None, :], acc / tl.where(empty, 1.0, l_i)[:, None],
             mask=row_ok[:, None])
    lse = tl.where(empty, float("-inf"), m_i + tl.math.log2(tl.where(empty, 1.0, l_i)))
    tl.store(PART_LSE + part, lse, mask=row_ok)


@triton.jit
def _decode_combine(PART_O, PART_LSE, O, stride_ob, stride_oh, stride_om, H, Q_LEN, NUM_SPLITS,
                    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr):
    """One program per (sequence, head, query token): weight each chunk by its share of the softmax mass."""
    row = tl.program_id(0)
    qi = row % Q_LEN
    h = (row // Q_LEN) % H
    b = row // (Q_LEN * H)
    splits = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    s_ok = splits < NUM_SPLITS
    lse = tl.load(PART_LSE + row.to(tl.int64) * NUM_SPLITS + splits, mask=s_ok, other=float("-inf"))
    top = tl.max(lse, 0)
    weight = tl.math.exp2(lse - tl.where(top == float("-inf"), 0.0, top))
    parts = tl.load(PART_O + (row.to(tl.int64) * NUM_SPLITS + splits[:, None]) * BLOCK_D + offs_d[None, :],
                    mask=s_ok[:, None], other=0.0)
    total = tl.sum(weight, 0)
    out = tl.sum(parts * weight[:, None], 0) / tl.where(total == 0.0, 1.0, total)
    tl.store(O + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh + qi * stride_om + offs_d,
             out.to(O.dtype.element_ty), mask=offs_d < HEAD_DIM)


# Candidate (BLOCK_N, warps, stages) per GPU generation, autotuned per head dim, rows and layout. The
# kernel streams K/V tiles, so deeper pipelines help on Hopper; sm86/89 parts have 100 KB of shared memory.
# Every candidate compiles spill-free for its architectures in every case of `llmbench kernel compile`
# (contiguous, paged, masked, speculative, int8 and fp8 caches; head dims 64 and 128): on hopper, 64 keys
# with 4 warps and 3 stages spilled 16 B with an int8 cache on sm_100 and 128 keys with 8 warps spilled 4 B
# with 4 speculative tokens at head dim 128, and were replaced (by 64 keys with 8 warps; 64 keys with 4 warps
# and 2 stages spilled 8-16 B paged at head dim 64).
SPLIT_CONFIGS = {
    "interpreter": [(16, 1, 1)],
    "hopper": [(64, 4, 4), (64, 8, 3), (128, 4, 3), (32, 4, 4)],
    "ampere": [(64, 4, 3), (64, 4, 2), (128, 8, 2), (32, 4, 3)],
    "older": [(64, 4, 2), (32, 4, 2)],
}


@functools.cache
def _tuned_split(generation: str):
    configs = [triton.Config({"BLOCK_N": n}, num_warps=w, num_stages=st) for n, w, st in SPLIT_CONFIGS[generation]]
    return triton.autotune(configs=configs, key=["HEAD_DIM", "BLOCK_H", "PAGE_SIZE", "HAS_MASK"])(_decode_split)


def autotuners() -> dict:
    """The autotuned kernels launches use on this machine, by name (``kernels.resources.chosen`` reads what
    each picked)."""
    return {"decode_attention.split": _tuned_split(gpu_generation())}


def default_splits(batch: int, kv_heads: int, capacity: int, device: torch.device) -> int:
    """Chunks per sequence: enough programs for about two waves over the SMs, never under
    ``MIN_KEYS_PER_SPLIT`` keys a chunk. Depends on the capacity, not the lengths."""
    if device.type != "cuda":
        return max(1, min(4, triton.cdiv(capacity, 64)))
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    wanted = triton.cdiv(2 * sms, batch * kv_heads)
    return max(1, min(wanted, triton.cdiv(capacity, MIN_KEYS_PER_SPLIT), 128))


def _check(q, k_cache, v_cache, lengths, block_table, mask, k_scale, v_scale) -> None:
    if q.dim() != 4:
        raise ValueError(f"q must be (batch, heads, q_len, head_dim), got {tuple(q.shape)}")
    quantized = k_cache.dtype in QUANTIZED_KV_DTYPES
    if q.dtype not in SUPPORTED_DTYPES or k_cache.dtype != v_cache.dtype or not (quantized or k_cache.dtype == q.dtype):
        raise ValueError(f"q must be fp16, bf16 or fp32 and the caches either of q's dtype or both int8 or "
                         f"float8_e4m3fn; got {q.dtype}, {k_cache.dtype}, {v_cache.dtype}")
    if quantized != (k_scale is not None) or quantized != (v_scale is not None):
        raise ValueError("k_scale and v_scale go with int8 or float8_e4m3fn caches, and only with them"
                         if not quantized else f"a {k_cache.dtype} cache needs k_scale and v_scale")
    if k_cache.shape != v_cache.shape or k_cache.dim() != 4 or k_cache.shape[-1] != q.shape[-1]:
        raise ValueError(f"k_cache and v_cache must have one 4-D shape ending in head_dim {q.shape[-1]}; got "
                         f"{tuple(k_cache.shape)} and {tuple(v_cache.shape)}")
    kv_heads = k_cache.shape[2] if block_table is not None else k_cache.shape[1]
    if q.shape[1] % kv_heads:
        raise ValueError(f"query heads ({q.shape[1]}) must be a multiple of KV heads ({kv_heads})")
    if lengths.shape != (q.shape[0],) or lengths.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"lengths must be an integer tensor of shape ({q.shape[0]},), got "
                         f"{lengths.dtype} {tuple(lengths.shape)}")
    if block_table is not None and (block_table.dim() != 2 or block_table.shape[0] != q.shape[0]
                                    or block_table.dtype not in (torch.int32, torch.int64)):
        raise ValueError(f"block_table must be integer (batch={q.shape[0]}, pages per sequence), got "
                         f"{block_table.dtype} {tuple(block_table.shape)}")
    if mask is not None and (mask.dtype != torch.bool or mask.dim() != 3 or mask.shape[:2] != (q.shape[0], q.shape[2])):
        raise ValueError(f"mask must be boolean (batch, q_len, capacity), got {mask.dtype} {tuple(mask.shape)}")
    if q.device.type != "cuda" and not interpreting() and not (capturing() and q.device.type == "meta"):
        raise ValueError(f"decode attention needs a CUDA device; tensors are on {q.device} "
                         "(on a CPU, set TRITON_INTERPRET=1 before importing kernels, for tests)")
    if q.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("decode attention needs the head dim to be contiguous (stride 1)")
    scale_shape = k_cache.shape[:3]  # (batch, kv_heads, capacity) or (pages, page_size, kv_heads)
    for name, sc in (("k_scale", k_scale), ("v_scale", v_scale)) if quantized else ():
        if sc.dtype != torch.float32 or sc.device != q.device or (sc.numel() != 1 and sc.shape != scale_shape):
            raise ValueError(f"{name} must be float32 on {q.device}, one value per tensor or of shape "
                             f"{tuple(scale_shape)} (one per token and KV head); got {sc.dtype} {tuple(sc.shape)} "
                             f"on {sc.device}")
    if k_cache.dtype == torch.float8_e4m3fn and q.device.type == "cuda" and torch.cuda.get_device_capability(q.device) < (8, 9):
        raise ValueError("float8_e4m3fn caches need a GPU of compute capability 8.9 or newer (Ada, Hopper)")


def _scale_args(sc: torch.Tensor, paged: bool) -> tuple:
    """The scale tensor and its (block, head, token) strides; all 0 for one scale per tensor."""
    if sc.numel() == 1:
        return sc, 0, 0, 0
    return (sc, sc.stride(0), sc.stride(2), sc.stride(1)) if paged else (sc, *sc.stride())


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, lengths: torch.Tensor,
                     scale: float | None = None, block_table: torch.Tensor | None = None,
                     mask: torch.Tensor | None = None, num_splits: int | None = None,
                     k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of ``q`` (batch, heads, q_len, head_dim) over each sequence's first ``lengths[b]`` cached
    positions; see the module docstring for layouts and quantized caches. Returns (batch, heads, q_len,
    head_dim) in q's dtype."""
    _check(q, k_cache, v_cache, lengths, block_table, mask, k_scale, v_scale)
    batch, heads, q_len, head_dim = q.shape
    paged = block_table is not None
    kv_heads = k_cache.shape[2] if paged else k_cache.shape[1]
    page_size = k_cache.shape[1] if paged else 0
    capacity = block_table.shape[1] * page_size if paged else k_cache.shape[2]
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    group = heads // kv_heads
    padded_d = block_d(head_dim)
    generation = gpu_generation()
    align = max(n for n, _, _ in SPLIT_CONFIGS[generation])  # chunks start on a tile boundary of every config
    splits = num_splits or default_splits(batch, kv_heads, capacity, q.device)
    split_len = triton.cdiv(triton.cdiv(capacity, splits), align) * align
    splits = triton.cdiv(capacity, split_len)

    part_o = torch.empty((batch, heads, q_len, splits, padded_d), dtype=torch.float32, device=q.device)
    part_lse = torch.empty((batch, heads, q_len, splits), dtype=torch.float32, device=q.device)
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if paged:  # (pages, page_size, kv_heads, dim): page, head and token strides
        kv_strides = (k_cache.stride(0), k_cache.stride(2), k_cache.stride(1),
                      v_cache.stride(0), v_cache.stride(2), v_cache.stride(1))
    else:
        kv_strides = (k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
                      v_cache.stride(0), v_cache.stride(1), v_cache.stride(2))
    table = block_table if paged else lengths
    mask_t = mask if mask is not None else lengths
    quantized = k_scale is not None
    ks, *ks_strides = _scale_args(k_scale, paged) if quantized else (part_lse, 0, 0, 0)
    vs, *vs_strides = _scale_args(v_scale, paged) if quantized else (part_lse, 0, 0, 0)
    launch(
        _tuned_split(generation), (batch * kv_heads, splits),
        q, k_cache, v_cache, lengths, table, mask_t, part_o, part_lse, ks, vs,
        q.stride(0), q.stride(1), q.stride(2), *kv_strides,
        table.stride(0) if paged else 0, mask.stride(0) if mask is not None else 0,
        mask.stride(1) if mask is not None else 0, *ks_strides, *vs_strides,
        kv_heads, q_len, split_len, splits, scale * LOG2E,
        GROUP=group, HEAD_DIM=head_dim, BLOCK_D=padded_d, BLOCK_H=max(16, triton.next_power_of_2(group * q_len)),
        PAGE_SIZE=page_size, HAS_MASK=mask is not None, QUANTIZED=quantized,
        UPCAST=upcast_dots(q.dtype), PRECISION=triton_precision(q.dtype))
    launch(
        _decode_combine, (batch * heads * q_len,),
        part_o, part_lse, out, out.stride(0), out.stride(1), out.stride(2), heads, q_len, splits,
        HEAD_DIM=head_dim, BLOCK_D=padded_d, BLOCK_S=max(2, triton.next_power_of_2(splits)))
    return out


def decode_attention_reference(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                               lengths: torch.Tensor, scale: float | None = None,
                               block_table: torch.Tensor | None = None,
                               mask: torch.Tensor | None = None, k_scale: torch.Tensor | None = None,
                               v_scale: torch.Tensor | None = None) -> torch.Tensor:
    """The definition, one sequence at a time: gather its keys (through the page table when paged),
    causal among the new tokens, softmax, weighted values. Rows that see nothing give zeros. A quantized
    cache is first dequantized (value x its scale) in q's dtype."""
    if k_scale is not None:
        k_cache = dequantize_kv(k_cache, k_scale, q.dtype)
        v_cache = dequantize_kv(v_cache, v_scale, q.dtype)
    batch, heads, q_len, head_dim = q.shape
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    outs = []
    for b in range(batch):
        n = int(lengths[b])
        if block_table is not None:
            page_size = k_cache.shape[1]
            pos = torch.arange(n, device=q.device)
            pages = block_table[b, pos // page_size].long()
            k = k_cache[pages, pos % page_size].transpose(0, 1)  # (kv_heads, n, dim)
            v = v_cache[pages, pos % page_size].transpose(0, 1)
        else:
            k, v = k_cache[b, :, :n], v_cache[b, :, :n]
        group = heads // k.shape[0]
        k, v = k.repeat_interleave(group, 0), v.repeat_interleave(group, 0)
        scores = (q[b] @ k.transpose(-1, -2)) * scale  # (heads, q_len, n)
        allowed = torch.arange(n, device=q.device)[None, :] < (n - q_len + torch.arange(q_len, device=q.device) + 1)[:, None]
        if mask is not None:
            allowed = allowed & mask[b, :, :n]
        scores = scores.masked_fill(~allowed, float("-inf"))
        outs.append(torch.softmax(scores, -1).nan_to_num(0.0) @ v)
    return torch.stack(outs)


def quantize_kv(x: torch.Tensor, dtype: torch.dtype, per_tensor: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric quantization of cache entries ``x`` (..., head_dim) to int8 or float8_e4m3fn: one float32
    scale per vector (per token and KV head), or one for the tensor; returns (values, scale) with
    ``x ~= values * scale[..., None]``. int8 rounds to nearest in [-127, 127]; fp8 scales the largest
    magnitude to 448, e4m3's largest finite value."""
    if dtype not in QUANTIZED_KV_DTYPES:
        raise ValueError(f"KV caches quantize to int8 or float8_e4m3fn, not {dtype}")
    top = 127.0 if dtype == torch.int8 else torch.finfo(torch.float8_e4m3fn).max
    x = x.float()
    amax = x.abs().amax() if per_tensor else x.abs().amax(dim=-1)
    scale = amax.clamp(min=torch.finfo(torch.float32).tiny) / top
    scaled = x / (scale if per_tensor else scale[..., None])
    values = scaled.round().clamp(-top, top).to(dtype) if dtype == torch.int8 else scaled.to(dtype)
    return values, scale.reshape(1) if per_tensor else scale


def dequantize_kv(values: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``values * scale`` in ``dtype``: the cache a quantized one stands for."""
    scale = scale.to(dtype)
    return values.to(dtype) * (scale.reshape(()) if scale.numel() == 1 else scale[..., None])
