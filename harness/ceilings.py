"""Ceilings: what a device can do, from its datasheet and from measurement.

The spec table holds datasheet peaks (memory bandwidth, dense tensor TFLOP/s per
precision, no sparsity) keyed by a fragment of the device name, most specific
first. Spec values are leads; the report divides by the *measured* ceilings
(copy bandwidth, matmul rate per precision), which ``llmbench peak`` stores as
ordinary records (workloads ``copy``, ``triad``, ``matmul``). A CPU has no spec
entry and uses measured values only. The measurements are ``workloads.micro``
workloads timed by ``harness.runner``.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

from pathlib import Path

import torch

from harness import runner
from harness.records import read_records
from workloads.choices import CEILING_WORKLOADS
from workloads.micro import MicroPoint, MicroWorkload
from workloads.precision import Precision


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
    device: str
    copy_gbps: float | None = None
    triad_gbps: float | None = None
    matmul_tflops: dict = field(default_factory=dict)
    spec: Spec | None = None


def from_records(records: list[dict]) -> dict[str, Ceilings]:
    """Measured ceilings per device: the best median of all ceiling records found."""
    out: dict[str, Ceilings] = {}
    for r in records:
        key = device_key(r)
        c = out.setdefault(key, Ceilings(key, spec=spec_for(r.get("env", {}).get("device_name"))))
        if r.get("status") != "ok" or r.get("workload") not in CEILING_WORKLOADS:
            continue
        d = r["derived"]
        if r["workload"] == "copy":
            c.copy_gbps = max(c.copy_gbps or 0, d["achieved_gbps"])
        elif r["workload"] == "triad":
            c.triad_gbps = max(c.triad_gbps or 0, d["achieved_gbps"])
        else:
            c.matmul_tflops[r["dtype"]] = max(c.matmul_tflops.get(r["dtype"], 0), d["achieved_tflops"])
    return out


def sizes(device: torch.device) -> tuple[int, int]:
    """(bytes per bandwidth buffer, matmul side): far beyond cache; large enough to saturate."""
    return (1 << 30, 8192) if device.type == "cuda" else (256 << 20, 1024)


def workloads(device: torch.device, precisions: list[Precision], buffer_bytes: int | None = None,
              matmul_n: int | None = None) -> list[MicroWorkload]:
    """Copy, triad, and a matmul per precision."""
    default_bytes, default_n = sizes(device)
    bandwidth = [MicroPoint(buffer_bytes or default_bytes)]
    return [MicroWorkload("copy", device, bandwidth), MicroWorkload("triad", device, bandwidth),
            *(MicroWorkload("matmul", device, [MicroPoint(matmul_n or default_n)], p) for p in precisions)]


def measure(device: torch.device, precisions: list[Precision], run_id: str, env: dict,
            buffer_bytes: int | None = None, matmul_n: int | None = None, out: Path | None = None) -> list[dict]:
    """Run copy, triad and a matmul per precision; one record each (appended to ``out`` when given)."""
    from harness import views

    return runner.run(workloads(device, precisions, buffer_bytes, matmul_n), run_id, env, out=out,
                      desc="ceilings", note=views.ceiling_note)


def stored_or_measured(out: Path, device: torch.device, precisions: list[Precision], run_id: str,
                       env: dict) -> Ceilings | None:
    """This device's ceilings from the records in ``out``; what is missing is measured now and stored."""
    key = device_key({"env": env})
    known = from_records(read_records([out]) if out.exists() else []).get(key)
    missing = [p for p in precisions if not known or p.name not in known.matmul_tflops]
    if known and known.copy_gbps and not missing:
        return known
    print("measuring this device's ceilings first (llmbench peak stores them for next time)", file=sys.stderr)
    measure(device, missing, run_id, env, out=out)
    return from_records(read_records([out])).get(key)
