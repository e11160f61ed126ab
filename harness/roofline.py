"""Derived metrics: what a measured time means against a cost model's bytes and FLOPs.

Decimal units: 1 GB/s = 1e9 B/s, 1 TFLOP/s = 1e12 FLOP/s.
"""

from __future__ import annotations


def derive_decode(metrics: dict, cost: dict) -> dict:
    """Achieved bandwidth and FLOP rate of the decode steps and of the prefill.

    Decode uses the median total decode time of a generation (first to last
    token), which covers ``cost['decode_steps']`` steps whose bytes and FLOPs are
    ``cost['decode_bytes']`` and ``cost['decode_flops']``.
    """
    decode_s = metrics["decode_ms"] / 1e3
    prefill_s = metrics["ttft_ms"] / 1e3
    return {
        "achieved_gbps": cost["decode_bytes"] / decode_s / 1e9,
        "achieved_tflops": cost["decode_flops"] / decode_s / 1e12,
        "arithmetic_intensity": cost["decode_flops"] / cost["decode_bytes"],
        "prefill_gbps": cost["prefill_bytes"] / prefill_s / 1e9,
        "prefill_tflops": cost["prefill_flops"] / prefill_s / 1e12,
        "prefill_arithmetic_intensity": cost["prefill_flops"] / cost["prefill_bytes"],
    }
