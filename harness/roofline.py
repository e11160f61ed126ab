"""Derived metrics: what a measured time means against a cost model's bytes and FLOPs.

The only place where times and costs become rates (GB/s, TFLOP/s) and rates
become fractions of a ceiling (MBU, MFU) and a bound. Decimal units:
1 GB/s = 1e9 B/s, 1 TFLOP/s = 1e12 FLOP/s.
"""

from __future__ import annotations

from workloads.choices import CEILING_WORKLOADS

RATE_FIELDS = ("achieved_gbps", "achieved_tflops", "arithmetic_intensity")


def rates(bytes_: float | None, flops: float | None, seconds: float) -> dict:
    """Achieved GB/s and TFLOP/s (each where the cost model counts it) and FLOPs per byte of work
    that took ``seconds``."""
    out = {}
    if bytes_ is not None:
        out["achieved_gbps"] = bytes_ / seconds / 1e9
    if flops is not None:
        out["achieved_tflops"] = flops / seconds / 1e12
    if bytes_ and flops is not None:
        out["arithmetic_intensity"] = flops / bytes_
    return out


def derive(cost, metrics: dict) -> dict:
    """The record's ``derived`` block before ceilings: the rates of the timed work (``cost.timed_by``
    names its time in ``metrics``) and of each phase, prefixed with the phase's name."""
    out = rates(cost.bytes, cost.flops, metrics[cost.timed_by] / 1e3)
    for name, phase in cost.phases.items():
        out.update({f"{name}_{k.removeprefix('achieved_')}": v
                    for k, v in rates(phase.bytes, phase.flops, metrics[phase.timed_by] / 1e3).items()})
    return out


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
    """The record with MBU, MFU and bound filled in from ``ceilings`` (recomputed from its rates, so
    ceilings measured later still explain it). Work whose cost counts FLOPs only (fine-tune) gets
    MFU, against every GPU of a multi-process run (CPU processes share one host's); a decode
    record's prefill gets its own MBU, MFU and bound. Ceiling records are left as they are."""
    if record.get("status") != "ok" or record.get("workload") in CEILING_WORKLOADS:
        return record
    old = record.get("derived", {})
    if "achieved_tflops" not in old:
        return record
    if "achieved_gbps" not in old:
        tflops = old["achieved_tflops"]
        devices = record.get("world_size", 1) if record.get("env", {}).get("device_type") == "cuda" else 1
        return {**record, "derived": {"achieved_tflops": tflops,
                                      **compute_utilization(tflops, record["dtype"], ceilings, devices)}}
    d = {k: v for k, v in old.items() if k in RATE_FIELDS or k in PREFILL_FIELDS}
    d.update(utilization(d["achieved_gbps"], d["achieved_tflops"], d["arithmetic_intensity"], record["dtype"],
                         ceilings))
    if "prefill_gbps" in d:
        prefill = utilization(d["prefill_gbps"], d["prefill_tflops"], d["prefill_arithmetic_intensity"],
                              record["dtype"], ceilings)
        d.update({f"prefill_{k}": v for k, v in prefill.items() if k in ("mbu", "mfu", "mbu_spec", "mfu_spec",
                                                                          "bound")})
    return {**record, "derived": d}


PREFILL_FIELDS = ("prefill_gbps", "prefill_tflops", "prefill_arithmetic_intensity")
