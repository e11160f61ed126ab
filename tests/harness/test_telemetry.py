"""The NVML sampler against a stand-in NVML module: summaries, energy with and without the
counter, throttle reasons, matching torch's device to NVML's under CUDA_VISIBLE_DEVICES,
and no telemetry at all on a CPU."""

import threading
from types import SimpleNamespace

import pytest
import torch

from harness import cli, telemetry
from harness.records import read_records


class NVMLError(Exception):
    pass


class FakeNVML:
    """Enough of pynvml for the sampler: devices by index, UUID and bus id, and readings that
    change with every call so means, maxima and differences are checkable."""

    NVMLError = NVMLError

    def __init__(self, gpus=("GPU-aaaa-1111", "GPU-bbbb-2222", "GPU-cccc-3333"), energy=True, throttle=0x4):
        self.uuids = list(gpus)
        self.energy, self.throttle = energy, throttle
        self.calls = {"power": 0, "energy": 0}
        self.lock = threading.Lock()
        self.inits = 0

    def nvmlInit(self):
        self.inits += 1

    def nvmlShutdown(self):
        self.inits -= 1

    def nvmlDeviceGetCount(self):
        return len(self.uuids)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if uuid not in self.uuids:
            raise NVMLError("not found")
        return self.uuids.index(uuid)

    def nvmlDeviceGetUUID(self, h):
        return self.uuids[h]

    def nvmlDeviceGetPciInfo(self, h):
        return SimpleNamespace(busId=f"00000000:{0x18 + h:02X}:00.0".encode())

    def nvmlDeviceGetName(self, h):
        return "NVIDIA H100 80GB HBM3"

    def nvmlSystemGetDriverVersion(self):
        return "550.54.15"

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return 700_000

    def nvmlDeviceGetPowerUsage(self, h):
        with self.lock:
            self.calls["power"] += 1
            return 100_000 + 100_000 * (self.calls["power"] % 2)  # 100 W, 200 W, 100 W, ...

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        if not self.energy:
            raise NVMLError("not supported")
        self.calls["energy"] += 1
        return 5_000_000 + 12_345 * (self.calls["energy"] - 1)  # mJ

    def nvmlDeviceGetClockInfo(self, h, kind):
        return 1980 if kind == telemetry.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetTemperature(self, h, kind):
        return 60

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=90, memory=70)

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=3 << 30)

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h):
        return self.throttle


def run(nvml, handle=0, **kwargs):
    with telemetry.Sampler(nvml, handle, interval_s=0.005, **kwargs) as s:
        threading.Event().wait(0.05)
    return s


def test_summary_with_energy_counter():
    nvml = FakeNVML()
    s = run(nvml, ident={"gpu_name": "x"})
    t = s.summary(tokens=100)
    assert t["gpu_name"] == "x" and t["samples"] >= 2
    assert t["power_w_max"] == 200.0 and 100.0 <= t["power_w_mean"] <= 200.0
    assert t["energy_source"] == "counter" and t["energy_j"] == pytest.approx(12.345)
    assert t["joules_per_token"] == pytest.approx(0.12345) and t["tokens_per_joule"] == pytest.approx(100 / 12.345)
    assert t["sm_clock_mhz"] == 1980 and t["sm_clock_mhz_min"] == 1980 and t["mem_clock_mhz"] == 2619
    assert t["temp_c_max"] == 60 and t["gpu_util_pct_mean"] == 90 and t["mem_util_pct_mean"] == 70
    assert t["mem_used_bytes_max"] == 3 << 30
    assert t["throttle_reasons"] == ["sw_power_cap"]


def test_energy_integrated_from_power_without_counter():
    s = run(FakeNVML(energy=False))
    t = s.summary()
    assert t["energy_source"] == "integrated_power"
    assert 100.0 * t["duration_s"] * 0.5 < t["energy_j"] <= 200.0 * t["duration_s"]
    assert "joules_per_token" not in t


def test_refused_readings_are_left_out_and_not_asked_again():
    nvml = FakeNVML()

    def refuse(h, kind):
        nvml.refused += 1
        raise NVMLError("not supported")

    nvml.refused = 0
    nvml.nvmlDeviceGetClockInfo = refuse
    t = run(nvml).summary()
    assert "sm_clock_mhz" not in t and "mem_clock_mhz" not in t and t["power_w_max"] == 200.0
    assert nvml.refused == 2  # once for SM, once for memory clocks


def test_throttle_reasons_decoded():
    assert telemetry.throttle_names(0) == []
    assert telemetry.throttle_names(0x1 | 0x20 | 0x40) == ["gpu_idle", "sw_thermal_slowdown", "hw_thermal_slowdown"]
    assert telemetry.throttle_names(0x8 | 0x10000) == ["hw_slowdown", "0x10000"]


def test_throttle_reasons_are_a_union_over_samples():
    nvml = FakeNVML()
    masks = iter([0x1] + [0x4] * 1000)
    nvml.nvmlDeviceGetCurrentClocksThrottleReasons = lambda h: next(masks)
    assert run(nvml).summary()["throttle_reasons"] == ["gpu_idle", "sw_power_cap"]


def test_locate_by_uuid_and_bus_id():
    nvml = FakeNVML()
    assert telemetry.locate(nvml, 0, uuid="bbbb-2222") == (1, "uuid")
    assert telemetry.locate(nvml, 0, uuid="GPU-cccc-3333") == (2, "uuid")
    assert telemetry.locate(nvml, 0, bus_id="0000:1a:00.0") == (2, "pci_bus_id")


def test_locate_through_cuda_visible_devices():
    nvml = FakeNVML()
    # torch's cuda:1 is the second visible GPU: NVML index 0 here, not NVML index 1.
    env = {"CUDA_VISIBLE_DEVICES": "2,0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert telemetry.locate(nvml, 1, environ=env) == (0, "cuda_visible_devices_index")
    assert telemetry.locate(nvml, 0, environ=env) == (2, "cuda_visible_devices_index")
    assert telemetry.locate(nvml, 0, environ={"CUDA_VISIBLE_DEVICES": "GPU-bbbb"}) == (1, "cuda_visible_devices_uuid")
    # Without bus-id ordering an index may name another GPU than CUDA's: no guess.
    assert telemetry.locate(nvml, 0, environ={"CUDA_VISIBLE_DEVICES": "1"}) is None
    assert telemetry.locate(nvml, 2, environ={"CUDA_VISIBLE_DEVICES": "0,1"}) is None


def test_open_nvml_uses_torch_ids_and_identity(monkeypatch):
    nvml = FakeNVML()
    monkeypatch.setattr(telemetry, "_torch_ids", lambda device: (0, "cccc-3333", None))
    s = telemetry.sample(torch.device("cuda", 0), interval_s=0.005, nvml=nvml)
    with s:
        pass
    t = s.summary()
    assert t["gpu_uuid"] == "GPU-cccc-3333" and t["pci_bus_id"] == "00000000:1A:00.0"
    assert t["power_limit_w"] == 700.0 and t["driver"] == "550.54.15" and t["nvml_match"] == "uuid"
    assert nvml.inits == 0  # shut down again


def test_no_nvml_means_no_telemetry():
    class Broken(FakeNVML):
        def nvmlInit(self):
            raise NVMLError("NVML Shared Library Not Found")

    for s in (telemetry.sample(torch.device("cuda", 0), nvml=Broken()), telemetry.sample(torch.device("cpu"))):
        with s:
            pass
        assert s.summary(tokens=10) == {}
    assert telemetry.device_identity(torch.device("cpu")) == {}


def test_cpu_decode_record_has_no_telemetry(tmp_path, recwarn):
    code = cli.main(["decode", "--model", "tiny-llama", "--prompt-len", "8", "--new-tokens", "3", "--repeats", "1",
                     "--warmup", "0", "--dtype", "fp32", "--no-progress", "--no-ceilings", "--out", str(tmp_path)])
    assert code == 0
    (record,) = read_records([tmp_path])
    assert record["status"] == "ok" and "telemetry" not in record
    assert not [w for w in recwarn if "nvml" in str(w.message).lower()]


def test_decode_record_carries_telemetry_when_sampled(tmp_path, monkeypatch):
    nvml = FakeNVML()
    monkeypatch.setattr(telemetry, "sample", lambda device: telemetry.Sampler(nvml, 0, 0.005, {"gpu_name": "fake"}))
    code = cli.main(["decode", "--model", "tiny-llama", "--prompt-len", "8", "--new-tokens", "3", "--repeats", "2",
                     "--warmup", "0", "--batch-size", "2", "--dtype", "fp32", "--no-progress", "--no-ceilings",
                     "--out", str(tmp_path)])
    assert code == 0
    (record,) = read_records([tmp_path])
    t = record["telemetry"]
    assert t["gpu_name"] == "fake" and t["energy_source"] == "counter"
    assert t["joules_per_token"] == pytest.approx(t["energy_j"] / (2 * 2 * 3))
