"""Derived metrics: what a measured time means against a cost model's bytes and FLOPs.

The only place where times and costs become rates (GB/s, TFLOP/s) and rates
become fractions of a ceiling (MBU, MFU) and a bound. Decimal units:
1 GB/s = 1e9 B/s, 1 TFLOP/s = 1e12 FLOP/s.

Bound: a point's roof at arithmetic intensity I is min(measured matmul TFLOP/s,
I x measured copy GB/s). Reaching under ``OVERHEAD_BELOW`` (30%) of it, the point
is ``overhead``-bound (launch, host and framework time); otherwise it is
``memory``-bound left of the ridge point and ``compute``-bound right of it.
A rate above its measured ceiling (MBU or MFU over 100%) is impossible: it is
kept, and a warning with the hint to re-run ``llmbench peak`` goes into the
record's ``warnings``.
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


OVERHEAD_BELOW = 0.3
"""A point that reaches less than this fraction of the attainable roof at its arithmetic intensity is
``overhead``-bound: launch, host and framework time, not memory or compute, set its speed."""

WARNING_PREFIX = "roofline: "
"""Starts every warning ``with_ceilings`` writes, so a later call replaces them and keeps the rest."""

PEAK_HINT = "re-run `llmbench peak` (ceilings may have been measured under load)"

ROUNDOFF = 1e-9
"""MBU or MFU may exceed 1 by this much (float round-off of a rate exactly at its ceiling) unflagged."""


def attainable_tflops(intensity: float, peak_tflops: float, copy_gbps: float) -> float:
    """The roof at ``intensity`` FLOP/byte: min(matmul peak, intensity x copy bandwidth), in TFLOP/s."""
    return min(peak_tflops, intensity * copy_gbps / 1e3)


def above_roof(intensity: float, tflops: float, peak_tflops: float, copy_gbps: float) -> bool:
    """Whether an achieved rate lies above the measured roof (an impossible value: MBU or MFU over 1)."""
    return tflops > attainable_tflops(intensity, peak_tflops, copy_gbps) * (1 + ROUNDOFF)


def classify(roof_fraction: float, intensity: float, ridge: float) -> str:
    """``overhead`` under ``OVERHEAD_BELOW`` of the roof; otherwise ``memory`` left of the ridge point,
    ``compute`` at or right of it."""
    if roof_fraction < OVERHEAD_BELOW:
        return "overhead"
    return "memory" if intensity < ridge else "compute"


def utilization(gbps: float, tflops: float, intensity: float, dtype: str, ceilings) -> dict:
    """MBU and MFU against the measured ceilings (and against spec when known), the fraction of the
    roof reached, and the bound.

    The roof at arithmetic intensity I is ``attainable = min(peak TFLOP/s, I x copy GB/s)`` (the
    measured ceilings); ``roof_fraction`` is achieved TFLOP/s over it (equal to the larger of MBU and
    MFU). The bound is ``overhead`` when ``roof_fraction < OVERHEAD_BELOW`` (0.3: under 30% of the
    roof, launch, host and framework time dominate), else ``memory`` when I is below the measured
    ridge point (matmul FLOP/s over copy B/s) and ``compute`` at or above it."""
    out = {}
    bandwidth = ceilings.copy_gbps if ceilings else None
    rate = ceilings.matmul_tflops.get(dtype) if ceilings else None
    if bandwidth:
        out.update(peak_gbps=bandwidth, mbu=gbps / bandwidth)
    out.update(compute_utilization(tflops, dtype, ceilings))
    if bandwidth and rate:
        ridge = rate * 1e12 / (bandwidth * 1e9)
        roof = attainable_tflops(intensity, rate, bandwidth)
        fraction = tflops / roof if roof > 0 else gbps / bandwidth  # no FLOPs: the bandwidth roof alone
        out.update(ridge_flop_per_byte=ridge, roof_fraction=fraction, bound=classify(fraction, intensity, ridge))
    if ceilings and ceilings.spec:
        out.update(spec_gbps=ceilings.spec.mem_gbps, mbu_spec=gbps / ceilings.spec.mem_gbps)
    return out


def _impossible(what: str, d: dict, prefix: str = "") -> list[str]:
    """Warnings for MBU or MFU over 100% in ``d`` (keys ``prefix + 'mbu'`` ...), in plain words."""
    out = []
    mbu, mfu = d.get(f"{prefix}mbu"), d.get(f"{prefix}mfu")
    if mbu is not None and mbu > 1 + ROUNDOFF:
        out.append(f"{WARNING_PREFIX}{what} MBU {100 * mbu:.1f}% is above the measured copy bandwidth "
                   f"({d[f'{prefix}gbps' if prefix else 'achieved_gbps']:.4g} GB/s achieved, ceiling "
                   f"{d['peak_gbps']:.4g} GB/s): impossible; {PEAK_HINT}")
    if mfu is not None and mfu > 1 + ROUNDOFF:
        out.append(f"{WARNING_PREFIX}{what} MFU {100 * mfu:.1f}% is above the measured matmul rate "
                   f"({d[f'{prefix}tflops' if prefix else 'achieved_tflops']:.4g} TFLOP/s achieved, ceiling "
                   f"{d['peak_tflops']:.4g} TFLOP/s): impossible; {PEAK_HINT}")
    return out


def with_ceilings(record: dict, ceilings) -> dict:
    """The record with MBU, MFU, roof fraction and bound filled in from ``ceilings`` (recomputed from its
    rates, so ceilings measured later still explain it). Work whose cost counts FLOPs only (fine-tune)
    gets MFU, against every GPU of a multi-process run (CPU processes share one host's); a decode
    record's prefill gets its own MBU, MFU, roof fraction and bound. Ceiling records are left as they
    are.

    An achieved rate above its measured ceiling (MBU or MFU over 100%, of the timed work or of the
    prefill) adds a warning, starting with ``WARNING_PREFIX``, to the record's ``warnings``; the
    warnings of an earlier call are replaced, every other warning is kept."""
    if record.get("status") != "ok" or record.get("workload") in CEILING_WORKLOADS:
        return record
    old = record.get("derived", {})
    if "achieved_tflops" not in old:
        return record
    kept = [w for w in record.get("warnings") or [] if not str(w).startswith(WARNING_PREFIX)]
    what = record.get("workload") or "achieved"
    if "achieved_gbps" not in old:
        tflops = old["achieved_tflops"]
        devices = record.get("world_size", 1) if record.get("env", {}).get("device_type") == "cuda" else 1
        d = {"achieved_tflops": tflops, **compute_utilization(tflops, record["dtype"], ceilings, devices)}
        return {**record, "derived": d, "warnings": kept + _impossible(what, d)}
    d = {k: v for k, v in old.items() if k in RATE_FIELDS or k in PREFILL_FIELDS}
    d.update(utilization(d["achieved_gbps"], d["achieved_tflops"], d["arithmetic_intensity"], record["dtype"],
                         ceilings))
    found = _impossible(what, d)
    if "prefill_gbps" in d:
        prefill = utilization(d["prefill_gbps"], d["prefill_tflops"], d["prefill_arithmetic_intensity"],
                              record["dtype"], ceilings)
        d.update({f"prefill_{k}": v for k, v in prefill.items() if k in ("mbu", "mfu", "mbu_spec", "mfu_spec",
                                                                          "roof_fraction", "bound")})
        found += _impossible("prefill", d, "prefill_")
    return {**record, "derived": d, "warnings": kept + found}


PREFILL_FIELDS = ("prefill_gbps", "prefill_tflops", "prefill_arithmetic_intensity")
