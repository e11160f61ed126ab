"""Fused attention in Triton (FlashAttention-2 style), forward and backward.

``attention(q, k, v, causal=..., scale=..., mask=...)`` computes
``softmax(scale * q @ k^T + mask) @ v`` without materialising the score matrix:
each program owns a block of query rows and streams key/value blocks through an
online softmax kept in base 2 (``exp2``, the scale folded into ``log2(e)``). The
backward pass recomputes the probabilities from the saved log-sum-exp, as
FlashAttention-2 does, in two kernels: one owns a key/value block and accumulates
dK and dV over the query blocks (and over every query head of a GQA group, so no
atomics and no copied KV), the other owns a query block and accumulates dQ.

Shapes follow PyTorch's ``scaled_dot_product_attention``: q is (batch, heads,
q_len, head_dim), k and v are (batch, kv_heads, kv_len, head_dim) with
``heads % kv_heads == 0`` (grouped-query attention: query head h reads KV head
``h // (heads // kv_heads)``). Any strides, any lengths (not only multiples of the
block size), any head dim up to 256 (padded to a power of two inside the kernel),
fp16, bf16 and fp32. ``causal=True`` is SDPA's top-left alignment (query i sees
keys j <= i); key blocks entirely above the diagonal are never visited. ``mask``
is an optional boolean tensor broadcastable to (batch, heads, q_len, kv_len), True
where attention is allowed (what Hugging Face's ``sdpa_mask`` builds for padding
and static caches); a row with nothing allowed gives zeros, not NaN.

Block sizes are autotuned per GPU generation (Ampere, Hopper and newer) on the
lengths, head dim and causality. fp32 inputs use IEEE fp32 dot products unless
``torch.set_float32_matmul_precision`` allows TF32, which is what the ``tf32``
precision sets.

On a CPU the kernels run under Triton's interpreter (``TRITON_INTERPRET=1`` set
before this module is imported), which is how the tests check them. The
interpreter's ``tl.dot`` returns garbage for bf16 operands (triton 3.9), so there,
and only there, bf16 operands are upcast to fp32 before each dot.

What this kernel shares with ``kernels.decode_attention`` lives in
``kernels.common``: the supported dtypes, ``LOG2E``, the GPU generation that picks
the tuning table, the padded head dim, the dot precision and the ``dot`` helper
that upcasts bf16 under the interpreter.

``attention_reference`` beside the kernels is the plain PyTorch definition, in
any dtype (the tests run it in float64).
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from kernels.common import (LOG2E, SUPPORTED_DTYPES, block_d, capturing, dot, gpu_generation, interpreting, launch,
                            triton_precision, upcast_dots)

MAX_HEAD_DIM = 256


# ----------------------------------------------------------------------------- forward


@triton.jit
def _load_tile(base, offs_r, offs_d, stride_r, n_rows, CHECK_ROWS: tl.constexpr,
               HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    """A (rows, BLOCK_D) tile, zero outside the tensor; bounds are only checked where they can be crossed,
    so in-range tiles of a power-of-two head dim load without masks (and vectorise)."""
    ptrs = base + offs_r[:, None] * stride_r + offs_d[None, :]
    if CHECK_ROWS:
        if HEAD_DIM == BLOCK_D:
            return tl.load(ptrs, mask=offs_r[:, None] < n_rows, other=0.0)
        return tl.load(ptrs, mask=(offs_r[:, None] < n_rows) & (offs_d[None, :] < HEAD_DIM), other=0.0)
    if HEAD_DIM == BLOCK_D:
        return tl.load(ptrs)
    return tl.load(ptrs, mask=offs_d[None, :] < HEAD_DIM, other=0.0)


@triton.jit
def _allowed(offs_m, offs_n, mask_base, stride_mm, stride_mn, Q_LEN, KV_LEN,
             CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, KEYS_FIRST: tl.constexpr = False):
    """Boolean (BLOCK_M, BLOCK_N) tile: in range, causal if asked, and allowed by the user's mask.

    KEYS_FIRST builds the (BLOCK_N, BLOCK_M) tile instead, in the layout the dK/dV loop
    uses, rather than transposing it there (a transposed boolean tile is a layout
    conversion through shared memory, and the registers that spilled dK/dV with a mask).
    """
    if KEYS_FIRST:
        q_pos, k_pos = offs_m[None, :], offs_n[:, None]
    else:
        q_pos, k_pos = offs_m[:, None], offs_n[None, :]
    allowed = (q_pos < Q_LEN) & (k_pos < KV_LEN)
    if CAUSAL:
        allowed = allowed & (q_pos >= k_pos)
    if HAS_MASK:
        user = tl.load(mask_base + q_pos * stride_mm + k_pos * stride_mn, mask=allowed, other=0)
        allowed = allowed & (user != 0)
    return allowed


@triton.jit
def _key_phases(start_m, KV_LEN, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr):
    """Key range of one query block, split in two: [0, full_end) is in range (and, if causal, fully below
    the diagonal) and needs no masking; [full_end, masked_end) is checked element by element."""
    kv_full = (KV_LEN // BLOCK_N) * BLOCK_N
    if CAUSAL:
        return tl.minimum(start_m, kv_full), tl.minimum(KV_LEN, start_m + BLOCK_M)
    return kv_full, KV_LEN


@triton.jit
def _fwd_blocks(acc, l_i, m_i, q, k_base, v_base, mask_base, offs_m, offs_d, lo, hi,
                stride_kn, stride_vn, stride_mm, stride_mn, Q_LEN, KV_LEN, qk_scale,
                HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr,
                UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """Stream key/value blocks [lo, hi) through the online softmax of one query block.

    MASKED blocks check bounds and causality element by element; the others are
    known to be in range and below the diagonal, so they skip that work.
    """
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _load_tile(k_base, offs_n, offs_d, stride_kn, KV_LEN, MASKED, HEAD_DIM, BLOCK_D)
        v = _load_tile(v_base, offs_n, offs_d, stride_vn, KV_LEN, MASKED, HEAD_DIM, BLOCK_D)
        s = dot(q, tl.trans(k), UPCAST, PRECISION) * qk_scale
        if MASKED or HAS_MASK:
            allowed = _allowed(offs_m, offs_n, mask_base, stride_mm, stride_mn, Q_LEN, KV_LEN, CAUSAL, HAS_MASK)
            s = tl.where(allowed, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        else:
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_use = m_new
        p = tl.math.exp2(s - m_use[:, None])
        alpha = tl.math.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + dot(p.to(v.dtype), v, UPCAST, PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd(Q, K, V, O, LSE, MASK,
              stride_qb, stride_qh, stride_qm,
              stride_kb, stride_kh, stride_kn,
              stride_vb, stride_vh, stride_vn,
              stride_ob, stride_oh, stride_om,
              stride_mb, stride_mh, stride_mm, stride_mn,
              H, GROUP, Q_LEN, KV_LEN, qk_scale,
              HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr,
              UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    kvh = h // GROUP
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q_ok = (offs_m[:, None] < Q_LEN) & (offs_d[None, :] < HEAD_DIM)
    q = _load_tile(Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh, offs_m, offs_d, stride_qm, Q_LEN,
                   True, HEAD_DIM, BLOCK_D)
    k_base = K + b.to(tl.int64) * stride_kb + kvh.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + kvh.to(tl.int64) * stride_vh
    mask_base = MASK + b.to(tl.int64) * stride_mb + h.to(tl.int64) * stride_mh

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    full_end, masked_end = _key_phases(start_m, KV_LEN, BLOCK_M, BLOCK_N, CAUSAL)
    acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, k_base, v_base, mask_base, offs_m, offs_d, 0, full_end,
                                stride_kn, stride_vn, stride_mm, stride_mn, Q_LEN, KV_LEN, qk_scale,
                                HEAD_DIM, BLOCK_D, BLOCK_N, False, CAUSAL, HAS_MASK, UPCAST, PRECISION)
    acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, k_base, v_base, mask_base, offs_m, offs_d,
                                full_end, masked_end,
                                stride_kn, stride_vn, stride_mm, stride_mn, Q_LEN, KV_LEN, qk_scale,
                                HEAD_DIM, BLOCK_D, BLOCK_N, True, CAUSAL, HAS_MASK, UPCAST, PRECISION)

    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    o_base = O + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    tl.store(o_base + offs_m[:, None] * stride_om + offs_d[None, :], out.to(O.dtype.element_ty), mask=q_ok)
    lse = tl.where(empty, float("inf"), m_i + tl.math.log2(tl.where(empty, 1.0, l_i)))
    tl.store(LSE + bh.to(tl.int64) * Q_LEN + offs_m, lse, mask=offs_m < Q_LEN)


# ----------------------------------------------------------------------------- backward


@triton.jit
def _bwd_delta(O, DO, DELTA, stride_ob, stride_oh, stride_om, stride_dob, stride_doh, stride_dom,
               H, Q_LEN, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr):
    """delta_i = sum_d O[i, d] * dO[i, d], the softmax-gradient correction per query row."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_d = tl.arange(0, BLOCK_D)
    ok = (offs_m[:, None] < Q_LEN) & (offs_d[None, :] < HEAD_DIM)
    o = tl.load(O + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
                + offs_m[:, None] * stride_om + offs_d[None, :], mask=ok, other=0.0)
    do = tl.load(DO + b.to(tl.int64) * stride_dob + h.to(tl.int64) * stride_doh
                 + offs_m[:, None] * stride_dom + offs_d[None, :], mask=ok, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + bh.to(tl.int64) * Q_LEN + offs_m, delta, mask=offs_m < Q_LEN)


@triton.jit
def _dkdv_blocks(dk, dv, k, v, q_head, do_head, lse_head, delta_head, mask_head, offs_n, offs_d, lo, hi, GROUP,
                 stride_qh, stride_doh, stride_mh, stride_qm, stride_dom, stride_mm, stride_mn, Q_LEN, KV_LEN, qk_scale,
                 HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
                 MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr,
                 UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """Accumulate dK, dV of one key block over the query blocks [lo, hi) of every query head of the group.

    One flat loop over (head, query block) pairs, the head's pointers recomputed each
    iteration, rather than a loop over heads around a loop over blocks: with GQA the
    nested loops kept every head's pointers live and spilled at head dim 128 on every
    Hopper and Blackwell candidate.
    """
    blocks = tl.maximum(tl.cdiv(hi - lo, BLOCK_M), 0)
    for i in range(0, GROUP * blocks):
        g = (i // blocks).to(tl.int64)
        offs_m = lo + (i % blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
        q = _load_tile(q_head + g * stride_qh, offs_m, offs_d, stride_qm, Q_LEN, MASKED, HEAD_DIM, BLOCK_D)
        do = _load_tile(do_head + g * stride_doh, offs_m, offs_d, stride_dom, Q_LEN, MASKED, HEAD_DIM, BLOCK_D)
        if MASKED:
            lse = tl.load(lse_head + g * Q_LEN + offs_m, mask=offs_m < Q_LEN, other=float("inf"))
            delta = tl.load(delta_head + g * Q_LEN + offs_m, mask=offs_m < Q_LEN, other=0.0)
        else:
            lse = tl.load(lse_head + g * Q_LEN + offs_m)
            delta = tl.load(delta_head + g * Q_LEN + offs_m)
        s_t = dot(k, tl.trans(q), UPCAST, PRECISION) * qk_scale  # (BLOCK_N, BLOCK_M)
        p_t = tl.math.exp2(s_t - lse[None, :])
        if MASKED or HAS_MASK:
            allowed_t = _allowed(offs_m, offs_n, mask_head + g * stride_mh, stride_mm, stride_mn, Q_LEN, KV_LEN,
                                 CAUSAL, HAS_MASK, KEYS_FIRST=True)
            p_t = tl.where(allowed_t, p_t, 0.0)
        dv += dot(p_t.to(do.dtype), do, UPCAST, PRECISION)
        dp_t = dot(v, tl.trans(do), UPCAST, PRECISION)
        ds_t = p_t * (dp_t - delta[None, :])
        dk += dot(ds_t.to(q.dtype), q, UPCAST, PRECISION)
    return dk, dv


@triton.jit
def _attn_bwd_dkdv(Q, K, V, DO, DK, DV, LSE, DELTA, MASK,
                   stride_qb, stride_qh, stride_qm,
                   stride_kb, stride_kh, stride_kn,
                   stride_vb, stride_vh, stride_vn,
                   stride_dob, stride_doh, stride_dom,
                   stride_mb, stride_mh, stride_mm, stride_mn,
                   H, H_KV, GROUP, Q_LEN, KV_LEN, qk_scale, sm_scale,
                   HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr,
                   UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """One program: one key/value block of one KV head, summed over the query heads that share it."""
    start_n = tl.program_id(0) * BLOCK_N
    bkv = tl.program_id(1)
    b = bkv // H_KV
    kvh = bkv % H_KV
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    kv_ok = (offs_n[:, None] < KV_LEN) & (offs_d[None, :] < HEAD_DIM)
    k = _load_tile(K + b.to(tl.int64) * stride_kb + kvh.to(tl.int64) * stride_kh, offs_n, offs_d, stride_kn, KV_LEN,
                   True, HEAD_DIM, BLOCK_D)
    v = _load_tile(V + b.to(tl.int64) * stride_vb + kvh.to(tl.int64) * stride_vh, offs_n, offs_d, stride_vn, KV_LEN,
                   True, HEAD_DIM, BLOCK_D)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)

    # Query blocks fully in range (and, if causal, fully below this key block's diagonal) need no masking.
    q_full = (Q_LEN // BLOCK_M) * BLOCK_M
    if CAUSAL:
        diag_end = tl.minimum(start_n + BLOCK_N, Q_LEN)
        full_lo = start_n + BLOCK_N
    else:
        diag_end = 0
        full_lo = 0
    full_hi = tl.maximum(full_lo, q_full)
    h0 = kvh * GROUP  # the group's first query head
    bh0 = b * H + h0
    q_head = Q + b.to(tl.int64) * stride_qb + h0.to(tl.int64) * stride_qh
    do_head = DO + b.to(tl.int64) * stride_dob + h0.to(tl.int64) * stride_doh
    lse_head = LSE + bh0.to(tl.int64) * Q_LEN
    delta_head = DELTA + bh0.to(tl.int64) * Q_LEN
    mask_head = MASK + b.to(tl.int64) * stride_mb + h0.to(tl.int64) * stride_mh
    heads = (q_head, do_head, lse_head, delta_head, mask_head)
    strides = (stride_qh, stride_doh, stride_mh, stride_qm, stride_dom, stride_mm, stride_mn)
    if CAUSAL:
        dk, dv = _dkdv_blocks(dk, dv, k, v, *heads, offs_n, offs_d, start_n, diag_end, GROUP, *strides,
                              Q_LEN, KV_LEN, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_M,
                              True, CAUSAL, HAS_MASK, UPCAST, PRECISION)
    dk, dv = _dkdv_blocks(dk, dv, k, v, *heads, offs_n, offs_d, full_lo, full_hi, GROUP, *strides,
                          Q_LEN, KV_LEN, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_M,
                          False, CAUSAL, HAS_MASK, UPCAST, PRECISION)
    dk, dv = _dkdv_blocks(dk, dv, k, v, *heads, offs_n, offs_d, full_hi, Q_LEN, GROUP, *strides,
                          Q_LEN, KV_LEN, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_M,
                          True, CAUSAL, HAS_MASK, UPCAST, PRECISION)
    # DK and DV are contiguous (batch, kv_heads, kv_len, head_dim) buffers made by the wrapper.
    out = (bkv.to(tl.int64) * KV_LEN + offs_n[:, None]) * HEAD_DIM + offs_d[None, :]
    tl.store(DK + out, (dk * sm_scale).to(DK.dtype.element_ty), mask=kv_ok)
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=kv_ok)


@triton.jit
def _dq_blocks(dq, q, do, lse, delta, k_base, v_base, mask_base, offs_m, offs_d, lo, hi,
               stride_kn, stride_vn, stride_mm, stride_mn, Q_LEN, KV_LEN, qk_scale,
               HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
               MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr,
               UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """Accumulate dQ of one query block over the key blocks [lo, hi)."""
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _load_tile(k_base, offs_n, offs_d, stride_kn, KV_LEN, MASKED, HEAD_DIM, BLOCK_D)
        v = _load_tile(v_base, offs_n, offs_d, stride_vn, KV_LEN, MASKED, HEAD_DIM, BLOCK_D)
        s = dot(q, tl.trans(k), UPCAST, PRECISION) * qk_scale
        p = tl.math.exp2(s - lse[:, None])
        if MASKED or HAS_MASK:
            allowed = _allowed(offs_m, offs_n, mask_base, stride_mm, stride_mn, Q_LEN, KV_LEN, CAUSAL, HAS_MASK)
            p = tl.where(allowed, p, 0.0)
        dp = dot(do, tl.trans(v), UPCAST, PRECISION)
        ds = p * (dp - delta[:, None])
        dq += dot(ds.to(k.dtype), k, UPCAST, PRECISION)
    return dq


@triton.jit
def _attn_bwd_dq(Q, K, V, DO, DQ, LSE, DELTA, MASK,
                 stride_qb, stride_qh, stride_qm,
                 stride_kb, stride_kh, stride_kn,
                 stride_vb, stride_vh, stride_vn,
                 stride_dob, stride_doh, stride_dom,
                 stride_mb, stride_mh, stride_mm, stride_mn,
                 H, GROUP, Q_LEN, KV_LEN, qk_scale, sm_scale,
                 HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr,
                 UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """One program: one query block of one query head."""
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    kvh = h // GROUP
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q_ok = (offs_m[:, None] < Q_LEN) & (offs_d[None, :] < HEAD_DIM)
    q = _load_tile(Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh, offs_m, offs_d, stride_qm, Q_LEN,
                   True, HEAD_DIM, BLOCK_D)
    do = _load_tile(DO + b.to(tl.int64) * stride_dob + h.to(tl.int64) * stride_doh, offs_m, offs_d, stride_dom,
                    Q_LEN, True, HEAD_DIM, BLOCK_D)
    lse = tl.load(LSE + bh.to(tl.int64) * Q_LEN + offs_m, mask=offs_m < Q_LEN, other=float("inf"))
    delta = tl.load(DELTA + bh.to(tl.int64) * Q_LEN + offs_m, mask=offs_m < Q_LEN, other=0.0)
    k_base = K + b.to(tl.int64) * stride_kb + kvh.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + kvh.to(tl.int64) * stride_vh
    mask_base = MASK + b.to(tl.int64) * stride_mb + h.to(tl.int64) * stride_mh
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    full_end, masked_end = _key_phases(start_m, KV_LEN, BLOCK_M, BLOCK_N, CAUSAL)
    dq = _dq_blocks(dq, q, do, lse, delta, k_base, v_base, mask_base, offs_m, offs_d, 0, full_end,
                    stride_kn, stride_vn, stride_mm, stride_mn, Q_LEN, KV_LEN, qk_scale,
                    HEAD_DIM, BLOCK_D, BLOCK_N, False, CAUSAL, HAS_MASK, UPCAST, PRECISION)
    dq = _dq_blocks(dq, q, do, lse, delta, k_base, v_base, mask_base, offs_m, offs_d, full_end, masked_end,
                    stride_kn, stride_vn, stride_mm, stride_mn, Q_LEN, KV_LEN, qk_scale,
                    HEAD_DIM, BLOCK_D, BLOCK_N, True, CAUSAL, HAS_MASK, UPCAST, PRECISION)
    out = (bh.to(tl.int64) * Q_LEN + offs_m[:, None]) * HEAD_DIM + offs_d[None, :]
    tl.store(DQ + out, (dq * sm_scale).to(DQ.dtype.element_ty), mask=q_ok)


# ----------------------------------------------------------------------------- tuning


def _config(block_m: int, block_n: int, warps: int, stages: int) -> triton.Config:
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=warps, num_stages=stages)


# Candidate (BLOCK_M, BLOCK_N, warps, stages, for masks) per generation. Forward and dQ
# need BLOCK_M % BLOCK_N == 0 and dK/dV needs BLOCK_N % BLOCK_M == 0, so the causal
# diagonal falls on block boundaries. A launch with a user mask (HF's padding and
# static-cache masks) chooses only among the candidates marked True: loading the mask
# tile costs registers, and some tiles that are clean without it spill with it.
#
# Every candidate compiles without spilling a register and fits in shared memory, in
# bf16 at head dims 64 and 128, causal, non-causal, GQA and (where marked) masked:
# hopper on sm_90 and sm_100 (228 KB of shared memory per SM), ampere on sm_80 (164 KB).
# `llmbench kernel compile` shows it; a `compile`-marked test holds it for sm_80 and
# sm_90. Dropped because they spilled (Triton 3.9, head dim 128): forward 128x64 and
# 128x32 with 4 warps (60-968 bytes of spill stores), 128x128 masked on sm_90 (56 B; on
# sm_100 it needs 229 KB, more than a block may have), 128-row tiles masked on sm_80 (up
# to 604 B); dK/dV with BLOCK_N 128 and 32 rows, 64x64 and 32x64 with 4 warps (up to 3 KB):
# dK and dV accumulate in fp32 beside the K and V tiles, 2 x BLOCK_N x 128 values per
# program at head dim 128, which fit only spread over 8 warps or with small tiles; dQ
# 128x32 with 4 warps on sm_90, 64x64 with 4 warps and 2 stages on sm_80.
FWD_CONFIGS = {
    "interpreter": [(16, 16, 1, 1, True)],
    "hopper": [(128, 64, 8, 3, True), (128, 128, 8, 3, False), (64, 64, 4, 3, True), (128, 64, 8, 4, True)],
    "ampere": [(128, 64, 8, 2, False), (128, 32, 8, 3, False), (64, 64, 4, 3, True), (64, 32, 4, 4, True),
               (128, 32, 8, 4, False)],
    "older": [(64, 64, 4, 2, True), (64, 32, 4, 2, True), (32, 32, 4, 2, True)],
}
BWD_DKDV_CONFIGS = {
    "interpreter": [(16, 16, 1, 1, True)],
    "hopper": [(32, 64, 8, 3, True), (16, 128, 8, 3, True), (16, 64, 4, 3, True)],
    "ampere": [(32, 64, 8, 3, True), (32, 64, 8, 2, True), (16, 64, 4, 3, True), (16, 64, 4, 2, True)],
    "older": [(32, 64, 4, 2, True), (32, 32, 4, 2, True), (16, 32, 4, 2, True)],
}
BWD_DQ_CONFIGS = {
    "interpreter": [(16, 16, 1, 1, True)],
    "hopper": [(128, 32, 8, 3, True), (128, 64, 8, 3, True), (64, 32, 4, 3, True), (64, 64, 4, 3, True)],
    "ampere": [(64, 32, 4, 3, True), (128, 32, 8, 2, False), (64, 16, 4, 3, True)],
    "older": [(32, 32, 4, 2, True), (64, 32, 4, 2, True), (32, 16, 4, 2, True)],
}
TUNE_KEY = ["Q_LEN", "KV_LEN", "HEAD_DIM", "CAUSAL", "HAS_MASK"]


@functools.cache
def _tuned(kernel_name: str, generation: str):
    """The autotuned kernel: launches with a user mask choose among the candidates marked for it."""
    kernel, table = {
        "fwd": (_attn_fwd, FWD_CONFIGS),
        "dkdv": (_attn_bwd_dkdv, BWD_DKDV_CONFIGS),
        "dq": (_attn_bwd_dq, BWD_DQ_CONFIGS),
    }[kernel_name]
    configs = [_config(*c[:4]) for c in table[generation]]
    for_masks = {id(config) for config, c in zip(configs, table[generation]) if c[4]}

    def prune(candidates, named_args, **kwargs):
        return [c for c in candidates if id(c) in for_masks] if kwargs.get("HAS_MASK") else candidates

    return triton.autotune(configs=configs, key=TUNE_KEY, prune_configs_by={"early_config_prune": prune})(kernel)


def autotuners() -> dict:
    """The autotuned kernels launches use on this machine, by name (``kernels.resources.chosen`` reads what
    each picked)."""
    return {f"attention.{name}": _tuned(name, gpu_generation()) for name in ("fwd", "dkdv", "dq")}


# ----------------------------------------------------------------------------- launch


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"attention expects 4-D (batch, heads, seq, head_dim) tensors, got "
                         f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"attention needs q, k, v of one dtype among fp16, bf16, fp32; got {q.dtype}, "
                         f"{k.dtype}, {v.dtype}")
    batch, heads, _, head_dim = q.shape
    if k.shape != v.shape or k.shape[0] != batch or k.shape[3] != head_dim:
        raise ValueError(f"k and v must be (batch={batch}, kv_heads, kv_len, head_dim={head_dim}); got "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    if k.shape[1] == 0 or heads % k.shape[1]:
        raise ValueError(f"query heads ({heads}) must be a multiple of KV heads ({k.shape[1]})")
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"head dim {head_dim} is not supported (1..{MAX_HEAD_DIM})")
    if q.device.type != "cuda" and not interpreting() and not (capturing() and q.device.type == "meta"):
        raise ValueError(f"the Triton attention kernel needs a CUDA device; tensors are on {q.device} "
                         "(on a CPU, set TRITON_INTERPRET=1 before importing kernels.attention, for tests)")
    if not (q.device == k.device == v.device):
        raise ValueError("q, k and v must be on one device")
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        raise ValueError("attention needs the head dim to be contiguous (stride 1)")
    if mask is not None:
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be boolean (True = attend), got {mask.dtype}")
        try:
            torch.broadcast_shapes(mask.shape, (batch, heads, q.shape[2], k.shape[2]))
        except RuntimeError:
            raise ValueError(f"mask {tuple(mask.shape)} does not broadcast to "
                             f"{(batch, heads, q.shape[2], k.shape[2])}") from None


def _mask_args(mask: torch.Tensor | None, shape: tuple[int, int, int, int], device) -> tuple:
    if mask is None:
        return torch.empty(1, dtype=torch.bool, device=device), 0, 0, 0, 0
    full = mask.expand(shape)
    return (full, *full.stride())


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, scale, mask):
        batch, heads, q_len, head_dim = q.shape
        kv_heads, kv_len = k.shape[1], k.shape[2]
        o = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        lse = torch.empty((batch, heads, q_len), dtype=torch.float32, device=q.device)
        mask_t, *mask_strides = _mask_args(mask, (batch, heads, q_len, kv_len), q.device)

        def grid(meta):
            return triton.cdiv(q_len, meta["BLOCK_M"]), batch * heads

        launch(_tuned("fwd", gpu_generation()), grid, q, k, v, o, lse, mask_t,
               q.stride(0), q.stride(1), q.stride(2),
               k.stride(0), k.stride(1), k.stride(2),
               v.stride(0), v.stride(1), v.stride(2),
               o.stride(0), o.stride(1), o.stride(2),
               *mask_strides,
               heads, heads // kv_heads, q_len, kv_len, scale * LOG2E,
               HEAD_DIM=head_dim, BLOCK_D=block_d(head_dim), CAUSAL=causal, HAS_MASK=mask is not None,
               UPCAST=upcast_dots(q.dtype), PRECISION=triton_precision(q.dtype))
        ctx.save_for_backward(q, k, v, o, lse, mask_t)
        ctx.causal, ctx.scale, ctx.has_mask = causal, scale, mask is not None
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, mask_t = ctx.saved_tensors
        batch, heads, q_len, head_dim = q.shape
        kv_heads, kv_len = k.shape[1], k.shape[2]
        do = do if do.stride(-1) == 1 else do.contiguous()
        mask_strides = mask_t.stride() if ctx.has_mask else (0, 0, 0, 0)
        padded_d = block_d(head_dim)
        common = dict(HEAD_DIM=head_dim, BLOCK_D=padded_d, CAUSAL=ctx.causal, HAS_MASK=ctx.has_mask,
                      UPCAST=upcast_dots(q.dtype), PRECISION=triton_precision(q.dtype))

        delta = torch.empty_like(lse)
        delta_block = 16 if interpreting() else 128
        launch(
            _bwd_delta, (triton.cdiv(q_len, delta_block), batch * heads), o, do, delta, o.stride(0), o.stride(1), o.stride(2), do.stride(0), do.stride(1), do.stride(2),
            heads, q_len, HEAD_DIM=head_dim, BLOCK_D=padded_d, BLOCK_M=delta_block)

        dq = torch.empty((batch, heads, q_len, head_dim), dtype=q.dtype, device=q.device)
        dk = torch.empty((batch, kv_heads, kv_len, head_dim), dtype=k.dtype, device=k.device)
        dv = torch.empty_like(dk)
        qkv_strides = (q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
                       v.stride(0), v.stride(1), v.stride(2), do.stride(0), do.stride(1), do.stride(2))

        def dkdv_grid(meta):
            return triton.cdiv(kv_len, meta["BLOCK_N"]), batch * kv_heads

        launch(
            _tuned("dkdv", gpu_generation()), dkdv_grid, q, k, v, do, dk, dv, lse, delta, mask_t, *qkv_strides, *mask_strides,
            heads, kv_heads, heads // kv_heads, q_len, kv_len, ctx.scale * LOG2E, ctx.scale, **common)

        def dq_grid(meta):
            return triton.cdiv(q_len, meta["BLOCK_M"]), batch * heads

        launch(
            _tuned("dq", gpu_generation()), dq_grid, q, k, v, do, dq, lse, delta, mask_t, *qkv_strides, *mask_strides,
            heads, heads // kv_heads, q_len, kv_len, ctx.scale * LOG2E, ctx.scale, **common)
        return dq, dk, dv, None, None, None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
              scale: float | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Fused attention; see the module docstring for shapes and semantics. Differentiable in q, k, v."""
    _check(q, k, v, mask)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return _Attention.apply(q, k, v, bool(causal), scale, mask)


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                        scale: float | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The definition, in PyTorch, in the inputs' dtype: softmax(scale * q k^T, masked) v, GQA by repeating KV.

    Rows with nothing to attend to give zeros, as the kernel does.
    """
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-1, -2)) * scale
    allowed = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device)
    if causal:
        allowed = allowed.tril()
    allowed = allowed.expand(scores.shape)
    if mask is not None:
        allowed = allowed & mask
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return probs @ v
