"""GPU telemetry from NVML, sampled in the background while a timed region runs.

``with sample(device) as s: <timed region>`` then ``s.summary()`` gives the
record's ``telemetry`` block: power (mean/max), the energy of the region (from the
GPU's energy counter where it has one, else power integrated over the samples),
SM and memory clocks (mean/min), temperature (max), GPU and memory utilization
(mean), memory used (max), the union of the clock throttle reasons seen, and the
device's identity (name, UUID, driver, power limit, PCI bus id).

Why a thread: power and clocks change within a region (boost, power capping,
thermal throttling), and a benchmark that throttled explains its own numbers
only if the record says so. The thread only reads NVML; it never touches CUDA,
so it does not perturb the timing beyond one core's polling.

Which GPU: torch numbers the devices it can see (after ``CUDA_VISIBLE_DEVICES``,
in ``CUDA_DEVICE_ORDER``), NVML numbers all of them by PCI bus id. The torch
device is matched to its NVML handle by UUID, else by PCI bus id, else through
``CUDA_VISIBLE_DEVICES`` (UUID entries, or indices when the order is
``PCI_BUS_ID`` or there is one GPU); ``nvml_match`` in the block says which. No
NVML (a CPU machine, no driver, no permission) or no match: the summary is
empty and records carry no ``telemetry`` key, silently.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import torch

DEFAULT_INTERVAL_S = 0.05

# nvmlClocksThrottleReason* / nvmlClocksEventReason* bits (stable NVML ABI values).
THROTTLE_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
    0x200: "board_limit",
    0x400: "reliability",
}
NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0


def throttle_names(mask: int) -> list[str]:
    """The named reasons set in an NVML throttle/event-reason bit mask (unknown bits as hex)."""
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    rest = mask & ~sum(THROTTLE_REASONS)
    return names + ([f"0x{rest:x}"] if rest else [])


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bus_key(bus_id: str) -> tuple[int, int, int] | None:
    """(domain, bus, device) of a PCI bus id such as ``00000000:3B:00.0`` or ``0000:3b:00.0``."""
    try:
        domain, bus, rest = _text(bus_id).strip().split(":")
        return int(domain, 16), int(bus, 16), int(rest.split(".")[0], 16)
    except ValueError:
        return None


def locate(nvml, index: int, uuid: str | None = None, bus_id: str | None = None,
           environ=os.environ) -> tuple[object, str] | None:
    """The NVML handle of torch's CUDA device ``index`` and how it was matched, or None.

    ``uuid`` and ``bus_id`` are what torch reports for the device (``GPU-`` prefix optional).
    """
    if uuid:
        try:
            return nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"), "uuid"
        except nvml.NVMLError:
            pass
    count = nvml.nvmlDeviceGetCount()
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    if bus_id and _bus_key(bus_id):
        for handle in handles:
            if _bus_key(nvml.nvmlDeviceGetPciInfo(handle).busId) == _bus_key(bus_id):
                return handle, "pci_bus_id"
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    entries = [e.strip() for e in visible.split(",")] if visible is not None else [str(i) for i in range(count)]
    if index >= len(entries) or not entries[index]:
        return None
    entry = entries[index]
    if entry.startswith("GPU-"):  # CUDA accepts any unique prefix of a UUID
        found = [h for h in handles if _text(nvml.nvmlDeviceGetUUID(h)).startswith(entry)]
        return (found[0], "cuda_visible_devices_uuid") if len(found) == 1 else None
    if not entry.isdigit() or int(entry) >= count:
        return None
    if count == 1 or environ.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID":
        return handles[int(entry)], "cuda_visible_devices_index"
    return None  # CUDA's default FASTEST_FIRST order need not be NVML's bus order


def identity(nvml, handle) -> dict:
    """Name, UUID, driver, power limit and PCI bus id of a device; fields NVML refuses are left out."""
    reads = {
        "gpu_name": lambda: _text(nvml.nvmlDeviceGetName(handle)),
        "gpu_uuid": lambda: _text(nvml.nvmlDeviceGetUUID(handle)),
        "driver": lambda: _text(nvml.nvmlSystemGetDriverVersion()),
        "power_limit_w": lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1e3,
        "pci_bus_id": lambda: _text(nvml.nvmlDeviceGetPciInfo(handle).busId),
    }
    out = {}
    for key, read in reads.items():
        try:
            out[key] = read()
        except nvml.NVMLError:
            pass
    return out


@dataclass
class Samples:
    """What the thread collected: one list per quantity, with the time of each power reading."""

    t_s: list[float] = field(default_factory=list)
    power_w: list[float] = field(default_factory=list)
    sm_clock_mhz: list[float] = field(default_factory=list)
    mem_clock_mhz: list[float] = field(default_factory=list)
    temp_c: list[float] = field(default_factory=list)
    gpu_util_pct: list[float] = field(default_factory=list)
    mem_util_pct: list[float] = field(default_factory=list)
    mem_used_bytes: list[float] = field(default_factory=list)
    throttle_mask: int = 0


class Sampler:
    """Polls one NVML device every ``interval_s`` between ``__enter__`` and ``__exit__``.

    ``nvml`` is the ``pynvml`` module (or a stand-in), already initialised; ``handle``
    None makes a sampler that records nothing. A quantity the device refuses once is
    not asked for again.
    """

    def __init__(self, nvml=None, handle=None, interval_s: float = DEFAULT_INTERVAL_S, ident: dict | None = None,
                 owns_init: bool = False):
        self.nvml, self.handle, self.interval_s = nvml, handle, interval_s
        self.ident = ident or {}
        self.owns_init = owns_init
        self.samples = Samples()
        self._refused: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._energy_mj: list[int] = []
        self._t0 = self._t1 = 0.0

    def _read(self, name: str, fn):
        if name in self._refused:
            return None
        try:
            return fn()
        except self.nvml.NVMLError:
            self._refused.add(name)
            return None

    def _energy(self) -> None:
        value = self._read("energy", lambda: self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        if value is not None:
            self._energy_mj.append(value)

    def _throttle(self) -> int | None:
        nvml, handle = self.nvml, self.handle
        getter = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        return getter(handle)

    def sample_once(self) -> None:
        nvml, handle, s = self.nvml, self.handle, self.samples
        power = self._read("power", lambda: nvml.nvmlDeviceGetPowerUsage(handle))
        if power is not None:
            s.t_s.append(time.perf_counter())
            s.power_w.append(power / 1e3)
        for name, values, fn in (
            ("sm_clock", s.sm_clock_mhz, lambda: nvml.nvmlDeviceGetClockInfo(handle, NVML_CLOCK_SM)),
            ("mem_clock", s.mem_clock_mhz, lambda: nvml.nvmlDeviceGetClockInfo(handle, NVML_CLOCK_MEM)),
            ("temp", s.temp_c, lambda: nvml.nvmlDeviceGetTemperature(handle, NVML_TEMPERATURE_GPU)),
            ("mem_used", s.mem_used_bytes, lambda: nvml.nvmlDeviceGetMemoryInfo(handle).used),
        ):
            value = self._read(name, fn)
            if value is not None:
                values.append(value)
        util = self._read("util", lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
        if util is not None:
            s.gpu_util_pct.append(util.gpu)
            s.mem_util_pct.append(util.memory)
        mask = self._read("throttle", self._throttle)
        if mask is not None:
            s.throttle_mask |= mask

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample_once()

    def __enter__(self) -> Sampler:
        if self.handle is None:
            return self
        self._t0 = time.perf_counter()
        self._energy()
        self.sample_once()
        self._thread = threading.Thread(target=self._loop, name="llmbench-telemetry", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self.sample_once()
        self._energy()
        self._t1 = time.perf_counter()
        if self.owns_init:
            try:
                self.nvml.nvmlShutdown()
            except self.nvml.NVMLError:
                pass

    def summary(self, tokens: int | None = None) -> dict:
        """The ``telemetry`` block: empty when nothing was sampled. ``tokens`` generated in the
        region adds joules per token and tokens per joule."""
        s = self.samples
        if self._thread is None or not (s.power_w or s.sm_clock_mhz or s.temp_c or s.gpu_util_pct):
            return {}
        out = dict(self.ident)
        out.update(samples=max(map(len, (s.power_w, s.sm_clock_mhz, s.temp_c, s.gpu_util_pct))),
                   interval_ms=self.interval_s * 1e3, duration_s=self._t1 - self._t0)
        if s.power_w:
            out.update(power_w_mean=sum(s.power_w) / len(s.power_w), power_w_max=max(s.power_w))
        if len(self._energy_mj) == 2:
            out.update(energy_j=(self._energy_mj[1] - self._energy_mj[0]) / 1e3, energy_source="counter")
        elif len(s.power_w) >= 2:
            joules = sum((t1 - t0) * (p0 + p1) / 2 for t0, t1, p0, p1 in zip(s.t_s, s.t_s[1:], s.power_w, s.power_w[1:]))
            out.update(energy_j=joules, energy_source="integrated_power")
        for key, values in (("sm_clock_mhz", s.sm_clock_mhz), ("mem_clock_mhz", s.mem_clock_mhz)):
            if values:
                out.update({key: sum(values) / len(values), f"{key}_min": min(values)})
        if s.temp_c:
            out["temp_c_max"] = max(s.temp_c)
        if s.gpu_util_pct:
            out.update(gpu_util_pct_mean=sum(s.gpu_util_pct) / len(s.gpu_util_pct),
                       mem_util_pct_mean=sum(s.mem_util_pct) / len(s.mem_util_pct))
        if s.mem_used_bytes:
            out["mem_used_bytes_max"] = max(s.mem_used_bytes)
        if "throttle" not in self._refused:
            out["throttle_reasons"] = throttle_names(s.throttle_mask)
        if tokens and out.get("energy_j"):
            out.update(joules_per_token=out["energy_j"] / tokens, tokens_per_joule=tokens / out["energy_j"])
        return out


def _torch_ids(device: torch.device) -> tuple[int, str | None, str | None]:
    """torch's index of ``device`` with the UUID and PCI bus id it reports (None where it has none)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    uuid = str(props.uuid) if getattr(props, "uuid", None) is not None else None
    bus = None
    if getattr(props, "pci_bus_id", None) is not None:
        bus = f"{getattr(props, 'pci_domain_id', 0):08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
    return index, uuid, bus


def open_nvml(device: torch.device, nvml=None):
    """(nvml module, handle, identity) for a CUDA device, NVML initialised; None without NVML or a match."""
    if device.type != "cuda":
        return None
    try:
        if nvml is None:
            import pynvml as nvml
        nvml.nvmlInit()
    except Exception:  # no module, no library, no driver, no permission: no telemetry
        return None
    try:
        found = locate(nvml, *_torch_ids(device))
        if found is not None:
            handle, how = found
            return nvml, handle, {**identity(nvml, handle), "nvml_match": how}
    except Exception:  # a driver that answers oddly must not fail a benchmark
        pass
    try:
        nvml.nvmlShutdown()
    except Exception:
        pass
    return None


def sample(device: torch.device, interval_s: float = DEFAULT_INTERVAL_S, nvml=None) -> Sampler:
    """A sampler for ``device``: a real one on a CUDA device NVML can see, else one that records nothing."""
    opened = open_nvml(device, nvml)
    if opened is None:
        return Sampler()
    nvml, handle, ident = opened
    return Sampler(nvml, handle, interval_s, ident, owns_init=True)


def device_identity(device: torch.device) -> dict:
    """The NVML identity of ``device`` (for ``llmbench env``); empty without NVML."""
    opened = open_nvml(device)
    if opened is None:
        return {}
    nvml, _, ident = opened
    try:
        nvml.nvmlShutdown()
    except Exception:
        pass
    return ident
