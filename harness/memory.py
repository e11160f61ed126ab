"""Peak memory of a timed region: the CUDA allocator's peak on GPU, peak RSS on CPU; what is
allocated now, and what is free (so the runner can tell whether variants fit together).

On Linux the process's RSS high-water mark can be reset (``/proc/self/clear_refs``
with ``5``), so the CPU number is the peak of the region, not of the whole
process. Where that reset is refused, the lifetime peak is reported and the
record's ``peak_mem_kind`` says so.
"""

from __future__ import annotations

import resource
from pathlib import Path

import torch


class PeakMemory:
    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "rss_hwm"

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.kind = "rss_max_lifetime"

    def read(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        if self.kind == "rss_hwm":
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def current(self) -> int:
        """What is allocated now: the CUDA allocator's bytes, or the process's resident set."""
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


def available_bytes(device: torch.device) -> int:
    """Memory free for more work: the GPU's free memory, or the host's MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0
