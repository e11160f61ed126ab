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


def derive_finetune(metrics: dict, cost: dict) -> dict:
    """Achieved FLOP rate of the median optimizer step (forward + backward of every micro-batch and rank)."""
    return {"achieved_tflops": cost["flops_per_step"] / (metrics["step_ms_p50"] / 1e3) / 1e12}


def compute_utilization(tflops: float, dtype: str, ceilings, devices: int = 1) -> dict:
    """MFU against ``devices`` times the measured matmul rate of ``dtype`` (and against spec when known)."""
    out = {}
    rate = ceilings.matmul_tflops.get(dtype) if ceilings else None
    if rate:
        out.update(peak_tflops=rate * devices, mfu=tflops / (rate * devices))
    spec = ceilings.spec if ceilings else None
    if spec and dtype in spec.tflops:
        out.update(spec_tflops=spec.tflops[dtype] * devices, mfu_spec=tflops / (spec.tflops[dtype] * devices))
    return out


def utilization(gbps: float, tflops: float, intensity: float, dtype: str, ceilings) -> dict:
    """MBU and MFU against the measured ceilings (and against spec when known), and
    the bound: memory when the arithmetic intensity is below the measured ridge
    point (matmul FLOP/s over copy B/s), compute above it."""
    out = {}
    bandwidth = ceilings.copy_gbps if ceilings else None
    rate = ceilings.matmul_tflops.get(dtype) if ceilings else None
    if bandwidth:
        out.update(peak_gbps=bandwidth, mbu=gbps / bandwidth)
    out.update(compute_utilization(tflops, dtype, ceilings))
    if bandwidth and rate:
        ridge = rate * 1e12 / (bandwidth * 1e9)
        out.update(ridge_flop_per_byte=ridge, bound="memory" if intensity < ridge else "compute")
    if ceilings and ceilings.spec:
        out.update(spec_gbps=ceilings.spec.mem_gbps, mbu_spec=gbps / ceilings.spec.mem_gbps)
    return out


def with_ceilings(record: dict, ceilings) -> dict:
    """A decode record with MBU, MFU and bound filled in from ``ceilings`` (decode and prefill); a
    finetune record with MFU (GPUs of a multi-process run add up; CPU processes share one host's)."""
    if record.get("status") != "ok":
        return record
    if record.get("workload") == "finetune":
        tflops = record["derived"]["achieved_tflops"]
        devices = record.get("world_size", 1) if record.get("env", {}).get("device_type") == "cuda" else 1
        return {**record, "derived": {"achieved_tflops": tflops,
                                      **compute_utilization(tflops, record["dtype"], ceilings, devices)}}
    if record.get("workload") != "decode":
        return record
    d = {k: v for k, v in record["derived"].items() if k in BASE_FIELDS}
    d.update(utilization(d["achieved_gbps"], d["achieved_tflops"], d["arithmetic_intensity"], record["dtype"], ceilings))
    prefill = utilization(d["prefill_gbps"], d["prefill_tflops"], d["prefill_arithmetic_intensity"], record["dtype"],
                          ceilings)
    d.update({f"prefill_{k}": v for k, v in prefill.items() if k in ("mbu", "mfu", "mbu_spec", "mfu_spec", "bound")})
    return {**record, "derived": d}


BASE_FIELDS = ("achieved_gbps", "achieved_tflops", "arithmetic_intensity", "prefill_gbps", "prefill_tflops",
               "prefill_arithmetic_intensity")
