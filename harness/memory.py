"""Peak memory of a timed region: the CUDA allocator's peak on GPU, peak RSS on CPU.

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
