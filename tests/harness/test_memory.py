"""Peak memory (harness/memory.py): the CPU RSS high-water mark of a region, its fallback, and the CUDA path."""

import numpy as np
import pytest
import torch

from harness import memory
from harness.memory import PeakMemory

MB = 1 << 20
SIZE = 128 * MB


def touched_buffer(nbytes: int) -> np.ndarray:
    buf = np.empty(nbytes, dtype=np.uint8)
    buf.fill(1)  # every page written, so it counts in RSS
    return buf


def test_kind_by_device():
    assert PeakMemory(torch.device("cpu")).kind == "rss_hwm"
    assert PeakMemory(torch.device("cuda")).kind == "cuda_max_allocated"  # nothing touches CUDA until used


def test_reads_are_positive_ints():
    peak = PeakMemory(torch.device("cpu"))
    peak.reset()
    value = peak.read()
    assert isinstance(value, int) and value > 0


def test_cpu_peak_grows_with_an_allocation_in_the_region():
    peak = PeakMemory(torch.device("cpu"))
    peak.reset()
    before = peak.read()
    buf = touched_buffer(SIZE)
    after = peak.read()
    del buf
    assert after - before >= SIZE * 3 // 4
    # the freed buffer still counts until a reset (the kernel's RSS counters are exact only to a few pages)
    assert peak.read() >= after - MB


def test_cpu_reset_forgets_an_earlier_peak():
    peak = PeakMemory(torch.device("cpu"))
    peak.reset()
    if peak.kind != "rss_hwm":
        pytest.skip("this kernel refuses to reset the RSS high-water mark")
    buf = touched_buffer(SIZE)
    high = peak.read()
    del buf
    peak.reset()
    assert peak.kind == "rss_hwm"
    assert peak.read() <= high - SIZE // 2  # the freed buffer no longer counts


def test_refused_reset_falls_back_to_the_lifetime_peak(monkeypatch):
    class NoClearRefs(type(memory.Path())):
        def write_text(self, *args, **kwargs):
            raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(memory, "Path", NoClearRefs)
    peak = PeakMemory(torch.device("cpu"))
    peak.reset()
    assert peak.kind == "rss_max_lifetime"
    buf = touched_buffer(SIZE)
    value = peak.read()
    del buf
    assert isinstance(value, int) and value >= SIZE


def test_cuda_path_uses_the_allocator_peak(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: calls.append(("reset", device)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: calls.append(("read", device)) or 12345)
    device = torch.device("cuda", 0)
    peak = PeakMemory(device)
    peak.reset()
    assert peak.read() == 12345
    assert calls == [("reset", device), ("read", device)]
    assert peak.kind == "cuda_max_allocated"
