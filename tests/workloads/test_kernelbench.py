"""Kernel benchmark workloads: costs by hand, cases on the CPU, the workload contract."""

import pytest
import torch

from workloads.errors import UserError
from workloads.kernelbench import (AttentionPoint, DecodeAttentionPoint, KernelWorkload, attention_cost, check_point,
                                   decode_attention_case, decode_attention_cost)
from workloads.precision import PRECISIONS
from workloads.workload import Calls, Unsupported

CPU = torch.device("cpu")


def test_attention_cost_by_hand():
    # batch 2, 4 heads over 2 KV heads, 8 tokens, head dim 16, fp16, causal: 8*9/2 = 36 visible pairs per head
    point = AttentionPoint("triton", 2, 4, 2, 8, 16, True, "fwd")
    fwd = attention_cost(point, 2)
    assert fwd.flops == 4 * 16 * 36 * 2 * 4
    assert fwd.bytes == 2 * (2 * 2 * 4 * 8 * 16 + 2 * 2 * 2 * 8 * 16)  # Q and O, then K and V
    bwd = attention_cost(AttentionPoint("triton", 2, 4, 2, 8, 16, True, "bwd"), 2)
    assert bwd.flops == 5 * fwd.flops // 2
    assert bwd.bytes == 2 * fwd.bytes  # Q, O, dO, dQ and K, V, dK, dV
    both = attention_cost(AttentionPoint("triton", 2, 4, 2, 8, 16, True, "fwd+bwd"), 2)
    assert (both.flops, both.bytes) == (fwd.flops + bwd.flops, fwd.bytes + bwd.bytes)
    full = attention_cost(AttentionPoint("triton", 2, 4, 2, 8, 16, False, "fwd"), 2)
    assert full.flops == 4 * 16 * 64 * 2 * 4


def test_workload_gives_fields_calls_and_cost():
    point = DecodeAttentionPoint("sdpa", 2, 8, 2, 40, 16)
    w = KernelWorkload("decode-attention", PRECISIONS["fp32"], CPU, [point], seed=3)
    fields = w.fields(point)
    assert fields["workload"] == "decode-attention" and fields["attn"] == "sdpa" and fields["context"] == 40
    assert fields["dtype"] == "fp32" and fields["seed"] == 3
    region = w.region(point)
    assert isinstance(region, Calls) and region.fn().shape == (2, 8, 1, 16)
    assert w.cost(point).bytes == (2 * 2 * 2 * 40 * 16 + 2 * 2 * 8 * 16) * 4


def test_triton_without_gpu_is_unsupported():
    point = AttentionPoint("triton", 1, 2, 2, 8, 16, True, "fwd")
    with pytest.raises(Unsupported, match="CUDA"):
        KernelWorkload("attention", PRECISIONS["fp32"], CPU, [point]).region(point)


def test_quantized_kv_cost_counts_stored_bytes():
    """batch 2, 8 query heads over 2 KV heads, 40 cached tokens, head dim 16, bf16 compute."""
    base = DecodeAttentionPoint("triton", 2, 8, 2, 40, 16)
    q_o = 2 * 2 * 8 * 16 * 2  # Q read, O written, bf16
    assert decode_attention_cost(base, 2).bytes == q_o + 2 * 2 * 2 * 40 * 16 * 2
    for kv in ("int8", "fp8"):
        quant = decode_attention_cost(DecodeAttentionPoint("triton", 2, 8, 2, 40, 16, kv), 2)
        # K and V: 2 x 2 KV heads x 40 tokens x 2 sequences vectors, each 16 one-byte values + a 4-byte scale
        assert quant.bytes == q_o + 2 * 2 * 40 * 2 * (16 + 4)
        assert quant.flops == decode_attention_cost(base, 2).flops


def test_quantized_kv_runs_on_our_kernel_only():
    point = DecodeAttentionPoint("sdpa", 1, 4, 2, 16, 16, "int8")
    with pytest.raises(Unsupported, match="sdpa reads float caches only"):
        decode_attention_case(point, PRECISIONS["fp32"], CPU)
    with pytest.raises(UserError, match="unknown KV-cache format 'int4'"):
        check_point(DecodeAttentionPoint("triton", 1, 4, 2, 16, 16, "int4"))
