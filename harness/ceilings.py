"""Ceilings: what a device can do, from its datasheet and from measurement.

The spec table holds datasheet peaks (memory bandwidth, dense tensor TFLOP/s per
precision, no sparsity) keyed by a fragment of the device name, most specific
first. Spec values are leads; the report divides by the *measured* ceilings
(copy bandwidth, matmul rate per precision), which ``llmbench peak`` stores as
ordinary records (workloads ``copy``, ``triad``, ``matmul``). A CPU has no spec
entry and uses measured values only. The measurements are ``workloads.micro``
workloads timed by ``harness.runner``.

A ceiling is the best rate seen, never one median: each record's rate is its
shortest call (``workloads.micro``), bandwidth is tried at several buffer sizes
well beyond the last-level cache and matmuls at a square size plus the shapes the
models run, and the ceiling is the best of all of them. A loaded machine can only
make a measurement slower, so the best over repeated trials is the closest to what
the device can do, and the records keep the spread (median, p10, p90) beside it.

Ceilings belong to an environment: the ``fingerprint`` (device, torch version,
and the CPU thread count, or the GPU's maximum clocks and power limit) is stored
in every ceiling record. Ceilings of different fingerprints are never mixed, and
stored ceilings whose fingerprint differs from the current run's are measured
again (as they are with ``--remeasure``).

The communication ceiling (``allreduce`` records, ``llmbench peak --nproc N``) is
a property of the processes and the links between them, not of one device's
setup: it is kept per world size (the best bus bandwidth over the device's
allreduce records of that many processes), and its records, measured in
processes with their own thread counts, never decide which fingerprint is
current.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

from harness.records import read_records
from workloads.choices import CEILING_WORKLOADS

if TYPE_CHECKING:  # torch and the measuring side load only when a ceiling is measured: a report needs neither
    import torch

    from workloads.micro import MicroWorkload
    from workloads.precision import Precision

Shape = tuple[int, int, int]  # a matmul's (m, n, k)


@dataclass(frozen=True)
class Spec:
    name: str
    mem_gbps: float
    tflops: dict  # precision name -> dense TFLOP/s


def _spec(name, gbps, fp32, tf32, bf16, fp16):
    tflops = {"fp32": fp32, "tf32": tf32, "bf16": bf16, "fp16": fp16}
    return Spec(name, gbps, {k: v for k, v in tflops.items() if v is not None})


# (name fragment, spec), most specific first; matched case-insensitively, as whole words.
SPECS = [
    ("H100 NVL", _spec("H100 NVL", 3900, 60.0, 417.5, 835.5, 835.5)),
    ("H100 PCIe", _spec("H100 PCIe", 2000, 51.2, 378.0, 756.0, 756.0)),
    ("H100 80GB HBM3", _spec("H100 SXM", 3350, 66.9, 494.7, 989.4, 989.4)),
    ("H100 SXM", _spec("H100 SXM", 3350, 66.9, 494.7, 989.4, 989.4)),
    ("H200 NVL", _spec("H200 NVL", 4800, 60.0, 417.5, 835.5, 835.5)),
    ("H200", _spec("H200 SXM", 4800, 66.9, 494.7, 989.4, 989.4)),
    ("GH200 144G", _spec("GH200 144GB HBM3e", 4900, 66.9, 494.7, 989.4, 989.4)),
    ("GH200", _spec("GH200 96GB HBM3", 4000, 66.9, 494.7, 989.4, 989.4)),
    ("A100-SXM4-80GB", _spec("A100 SXM 80GB", 2039, 19.5, 156.0, 312.0, 312.0)),
    ("A100-SXM4-40GB", _spec("A100 SXM 40GB", 1555, 19.5, 156.0, 312.0, 312.0)),
    ("A100 80GB PCIe", _spec("A100 PCIe 80GB", 1935, 19.5, 156.0, 312.0, 312.0)),
    ("A100-PCIE-40GB", _spec("A100 PCIe 40GB", 1555, 19.5, 156.0, 312.0, 312.0)),
    ("L40S", _spec("L40S", 864, 91.6, 183.0, 362.0, 362.0)),
    ("A10", _spec("A10", 600, 31.2, 62.5, 125.0, 125.0)),
    ("V100-SXM2", _spec("V100 SXM2", 900, 15.7, None, None, 125.0)),
    ("V100-PCIE", _spec("V100 PCIe", 900, 14.0, None, None, 112.0)),
]


def spec_for(device_name: str | None) -> Spec | None:
    """The first entry whose fragment appears in the name as whole words ("A10" is not "A100",
    "H200" is not "GH200")."""
    for fragment, spec in SPECS:
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(fragment)}(?![A-Za-z0-9])", device_name or "", re.IGNORECASE):
            return spec
    return None


def device_key(record: dict) -> str:
    """Which device a record belongs to: GPUs by model name, CPUs by name and host
    (CPU names are too generic to compare across machines)."""
    env = record.get("env", {})
    name = env.get("device_name") or "unknown"
    return name if env.get("device_type") == "cuda" else f"{name} ({env.get('host')})"


@dataclass
class Ceilings:
    """A device's measured ceilings (and its datasheet entry): the best rate of each kind, the
    fingerprint they were measured under, and the matmul shapes measured per precision."""

    device: str
    copy_gbps: float | None = None
    triad_gbps: float | None = None
    matmul_tflops: dict = field(default_factory=dict)
    spec: Spec | None = None
    fingerprint: dict | None = None
    matmul_shapes: dict = field(default_factory=dict)  # precision name -> [(m, n, k), ...]
    allreduce_gbps: dict = field(default_factory=dict)  # world size -> best all-reduce bus GB/s


def _ceiling(record: dict) -> bool:
    """An ok record of a device ceiling (copy, triad, matmul): one that belongs to a fingerprint."""
    return record.get("status") == "ok" and record.get("workload") in CEILING_WORKLOADS and \
        record.get("workload") != "allreduce"


def latest_fingerprints(records: list[dict]) -> dict[str, dict | None]:
    """Per device, the fingerprint of its most recent ceiling record (by timestamp, later in the
    list on a tie; None for records older than fingerprints)."""
    latest: dict[str, tuple[str, int, dict | None]] = {}
    for i, r in enumerate(records):
        if _ceiling(r):
            key, stamp = device_key(r), r.get("timestamp") or ""
            if key not in latest or (stamp, i) >= latest[key][:2]:
                latest[key] = (stamp, i, r.get("fingerprint"))
    return {key: fp for key, (_, _, fp) in latest.items()}


def from_records(records: list[dict], fingerprint: dict | None = None) -> dict[str, Ceilings]:
    """Measured ceilings per device: the best rate of each kind over all its ceiling records of one
    fingerprint, that of its latest ceiling record, or ``fingerprint`` when given (then only
    records measured under it count, on every device). Every device with a record gets an entry."""
    chosen = latest_fingerprints(records)
    out: dict[str, Ceilings] = {}
    for r in records:
        key = device_key(r)
        c = out.get(key)
        if c is None:  # the datasheet lookup once per device, not per record
            c = out[key] = Ceilings(key, spec=spec_for(r.get("env", {}).get("device_name")))
        if r.get("workload") == "allreduce" and r.get("status") == "ok":
            world, gbps = r.get("world_size"), r["derived"]["achieved_gbps"]
            c.allreduce_gbps[world] = max(c.allreduce_gbps.get(world, 0), gbps)
            continue
        want = fingerprint if fingerprint is not None else chosen.get(key)
        if not _ceiling(r) or r.get("fingerprint") != want:
            continue
        c.fingerprint = want
        d = r["derived"]
        if r["workload"] == "copy":
            c.copy_gbps = max(c.copy_gbps or 0, d["achieved_gbps"])
        elif r["workload"] == "triad":
            c.triad_gbps = max(c.triad_gbps or 0, d["achieved_gbps"])
        else:
            c.matmul_tflops[r["dtype"]] = max(c.matmul_tflops.get(r["dtype"], 0), d["achieved_tflops"])
            shapes = c.matmul_shapes.setdefault(r["dtype"], [])
            if (r.get("m"), r.get("n"), r.get("k")) not in shapes:
                shapes.append((r.get("m"), r.get("n"), r.get("k")))
    return out


def best_per_kind(records: list[dict]) -> list[tuple[dict, list[dict]]]:
    """(best record, every record) per ceiling kind (workload and dtype), in the order first seen:
    the best is the ok record with the highest rate, or the first record when none is ok."""
    kinds: dict[tuple, list[dict]] = {}
    for r in records:
        kinds.setdefault((r.get("workload"), r.get("dtype")), []).append(r)
    out = []
    for (workload, _), group in kinds.items():
        rate = "achieved_tflops" if workload == "matmul" else "achieved_gbps"
        ok = [r for r in group if r.get("status") == "ok"]
        out.append((max(ok, key=lambda r: r["derived"][rate]) if ok else group[0], group))
    return out


def fingerprint(device: torch.device, env: dict) -> dict:
    """What a measured ceiling depends on besides the hardware model: the device's name and the
    torch version (from ``env``, a record's environment), and on a CPU the threads torch uses, on a
    GPU its maximum SM and memory clocks and its power limit (where NVML gives them)."""
    import torch

    out = {"device_name": str(env.get("device_name")), "torch": str(env.get("torch") or torch.__version__)}
    if device.type == "cuda":
        out.update(_gpu_limits(device))
    else:
        out["threads"] = torch.get_num_threads()
    return out


def _gpu_limits(device: torch.device) -> dict:
    from harness import telemetry

    opened = telemetry.open_nvml(device)
    if opened is None:
        return {}
    nvml, handle, ident = opened
    out = {"power_limit_w": ident["power_limit_w"]} if "power_limit_w" in ident else {}
    try:
        for key, clock in (("max_sm_clock_mhz", telemetry.NVML_CLOCK_SM),
                           ("max_mem_clock_mhz", telemetry.NVML_CLOCK_MEM)):
            try:
                out[key] = int(nvml.nvmlDeviceGetMaxClockInfo(handle, clock))
            except nvml.NVMLError:
                pass
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # shutting down must not fail a benchmark
            pass
    return out


CACHE_FACTOR = 4  # STREAM's rule: every bandwidth buffer at least 4x the last-level cache
CPU_SYSFS = Path("/sys/devices/system/cpu")


def _bytes(text: str) -> int:
    """A sysfs cache size such as ``32768K`` or ``1M``."""
    text = text.strip()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    return int(text.rstrip("KkMmGg")) * scale


def cpu_cache_bytes(root: Path = CPU_SYSFS) -> int | None:
    """The host's last-level cache, all of it: every instance of the highest data cache level
    (one per group of CPUs sharing it) counted once; None where sysfs does not say."""
    found = {}
    for index in root.glob("cpu[0-9]*/cache/index[0-9]*"):
        try:
            if (index / "type").read_text().strip() == "Instruction":
                continue
            level = int((index / "level").read_text())
            found[(level, (index / "shared_cpu_list").read_text().strip())] = _bytes((index / "size").read_text())
        except (OSError, ValueError):
            continue
    if not found:
        return None
    top = max(level for level, _ in found)
    return sum(size for (level, _), size in found.items() if level == top)


def last_level_cache_bytes(device: torch.device) -> int | None:
    """The GPU's L2 or the host's last-level cache (None when unknown)."""
    if device.type == "cuda":
        import torch

        return getattr(torch.cuda.get_device_properties(device), "L2_cache_size", None)
    return cpu_cache_bytes()


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device`` (``harness.memory.available_bytes``, imported when needed)."""
    from harness.memory import available_bytes as free

    return free(device)


def sizes(device: torch.device) -> tuple[list[int], int]:
    """(bytes per bandwidth buffer, each size tried; square matmul side).

    Buffers start at ``CACHE_FACTOR`` times the last-level cache (at least 256 MiB on a GPU,
    64 MiB on a CPU) and go to 8x that on a GPU, 2x on a CPU (beyond the cache a CPU's rate no
    longer depends on the size, and a CPU run stays short); sizes whose three triad buffers would
    take more than half the free memory are dropped."""
    cache = CACHE_FACTOR * (last_level_cache_bytes(device) or 0)
    mib = 1 << 20
    if device.type == "cuda":
        base = max(256 * mib, -(-cache // mib) * mib)
        tried, side = [base, 4 * base, 8 * base], 8192
    else:
        base = max(64 * mib, -(-cache // mib) * mib)
        tried, side = [base, base * 3 // 2, 2 * base], 1024
    limit = available_bytes(device) // 6 // mib * mib
    return [b for b in tried if b <= limit] or [max(limit, mib)], side


def workloads(device: torch.device, precisions: list[Precision], buffer_bytes: list[int] | None = None,
              matmul_n: int | None = None, matmul_shapes: Sequence[Shape] = (),
              fingerprint: dict | None = None) -> list[MicroWorkload]:
    """Copy and triad at every buffer size, and per precision a square matmul (side ``matmul_n``)
    plus ``matmul_shapes`` ((m, n, k) tuples); defaults from ``sizes``."""
    from workloads.micro import MicroPoint, MicroWorkload

    default_bytes, default_n = sizes(device)
    buffers = [MicroPoint(b) for b in buffer_bytes or default_bytes]
    side = matmul_n or default_n
    matmuls = [MicroPoint(*s) for s in dict.fromkeys([(side, side, side), *map(tuple, matmul_shapes)])]
    return [*(MicroWorkload(kind, device, buffers, fingerprint=fingerprint) for kind in ("copy", "triad")),
            *(MicroWorkload("matmul", device, matmuls, p, fingerprint) for p in precisions)]


def _run(work: list[MicroWorkload], run_id: str, env: dict, out: Path | None) -> list[dict]:
    from harness import runner, views

    return runner.run(work, run_id, env, out=out, desc="ceilings", note=views.ceiling_note)


def measure(device: torch.device, precisions: list[Precision], run_id: str, env: dict, *,
            buffer_bytes: list[int] | None = None, matmul_n: int | None = None, matmul_shapes: Sequence[Shape] = (),
            out: Path | None = None) -> list[dict]:
    """Run copy and triad at every buffer size, and per precision a square matmul plus
    ``matmul_shapes`` ((m, n, k) tuples, e.g. ``workloads.micro.model_matmul_shapes``): one record
    per size, each carrying this environment's fingerprint (appended to ``out`` when given)."""
    work = workloads(device, precisions, buffer_bytes, matmul_n, matmul_shapes, fingerprint(device, env))
    return _run(work, run_id, env, out)


def _changed(old: dict | None, new: dict) -> str:
    if old is None:
        return "stored without a fingerprint"
    keys = sorted(set(old) | set(new), key=lambda k: (k not in new, k))
    return ", ".join(f"{k} {old.get(k)} -> {new.get(k)}" for k in keys if old.get(k) != new.get(k))


def stored_or_measured(out: Path, device: torch.device, precisions: list[Precision], run_id: str, env: dict, *,
                       remeasure: bool = False, matmul_shapes: Sequence[Shape] = ()) -> Ceilings | None:
    """This device's ceilings from the records in ``out`` measured under the current fingerprint;
    what they lack is measured now and stored: everything when none match (none stored, or
    stored under another fingerprint: another torch, thread count, clocks or power limit) or when
    ``remeasure``; else a square matmul for a precision never measured, and each of
    ``matmul_shapes`` ((m, n, k)) not yet measured in a precision."""
    key = device_key({"env": env})
    current = fingerprint(device, env)
    stored = read_records([out]) if out.exists() else []
    known = from_records(stored, current).get(key)
    shapes = list(dict.fromkeys(tuple(s) for s in matmul_shapes))
    if remeasure or not known or not known.copy_gbps:
        latest = latest_fingerprints(stored).get(key, current)
        why = ("--remeasure" if remeasure else
               f"the stored ones were measured under another setup ({_changed(latest, current)})"
               if latest != current else "none are stored for this setup")
        work = workloads(device, precisions, matmul_shapes=shapes, fingerprint=current)
    else:
        from workloads.micro import MicroPoint, MicroWorkload

        why = "some are missing"
        work = []
        for p in precisions:
            have = known.matmul_shapes.get(p.name)
            todo = [s for s in shapes if s not in (have or [])]
            if have is None or todo:
                square = [(sizes(device)[1],) * 3] if have is None else []
                points = [MicroPoint(*s) for s in dict.fromkeys([*square, *todo])]
                work.append(MicroWorkload("matmul", device, points, p, current))
        if not work:
            return known
    print(f"measuring this device's ceilings first, {why} (llmbench peak stores them for next time)",
          file=sys.stderr)
    _run(work, run_id, env, out)
    return from_records(read_records([out]), current).get(key)
