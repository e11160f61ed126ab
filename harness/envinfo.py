"""The environment a record was measured in: device, software versions, host, job.

Everything here is read, never guessed: a field that cannot be read is ``None``
(for example the NVIDIA driver on a machine without NVML).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: the sweep's task wrapper reads cpu_name without it
    import torch

SLURM_VARS = {
    "slurm_job_id": "SLURM_JOB_ID",
    "slurm_array_job_id": "SLURM_ARRAY_JOB_ID",
    "slurm_array_task_id": "SLURM_ARRAY_TASK_ID",
    "slurm_procid": "SLURM_PROCID",
    "slurm_job_partition": "SLURM_JOB_PARTITION",
    "slurm_nodelist": "SLURM_JOB_NODELIST",
}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


@cache
def nvidia_driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no NVML library, or no permission: the field stays empty
        return None


def nccl_version() -> str | None:
    """The NCCL torch was built with (what multi-GPU collectives run on), e.g. ``2.21.5``; None without it."""
    import torch

    try:
        version = torch.cuda.nccl.version()
    except Exception:  # a CPU build, or no NCCL library: the field stays empty
        return None
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


@cache
def git_sha() -> str | None:
    """The commit of this checkout, with ``-dirty`` when it has local changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def capture(device: torch.device) -> dict:
    """The ``env`` block of a record for work on ``device``."""
    import torch

    cuda = device.type == "cuda"
    env = {
        "device_name": device_name(device),
        "device_type": device.type,
        "device_count": torch.cuda.device_count() if cuda else 1,
        "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(device))) if cuda else None,
        "driver": nvidia_driver() if cuda else None,
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "triton": _version("triton"),
        "llmbench": _version("llmbench"),
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "os": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "nccl": nccl_version() if cuda else None,
        "torchrun_nodes": os.environ.get("GROUP_WORLD_SIZE"),  # set in the processes torchrun starts
        "git_sha": git_sha(),
    }
    env.update({key: os.environ.get(var) for key, var in SLURM_VARS.items()})
    return env
