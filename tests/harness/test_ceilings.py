"""Ceilings: the datasheet lookup; the best measured rate per device, of one fingerprint only; measured
through the runner at several sizes, each record timed by its best call with the spread beside it;
the environment fingerprint; and measured once then reused by the commands that need them, measured
again when the fingerprint changes or when asked to."""

import pytest
import torch

from harness import ceilings, cli, runner
from harness.ceilings import device_key, fingerprint, from_records, spec_for, stored_or_measured
from harness.envinfo import capture
from harness.records import make_record, read_records
from workloads.precision import PRECISIONS

CPU = torch.device("cpu")
FP32, BF16 = PRECISIONS["fp32"], PRECISIONS["bf16"]
TINY = ([1 << 20, 2 << 20], 32)  # two buffer sizes, a 32-square matmul


def test_spec_lookup_by_device_name():
    assert spec_for("NVIDIA H100 80GB HBM3").name == "H100 SXM"
    assert spec_for("NVIDIA H100 PCIe").mem_gbps == 2000
    assert spec_for("NVIDIA H100 NVL").name == "H100 NVL"
    assert spec_for("NVIDIA H200").mem_gbps == 4800
    assert spec_for("NVIDIA GH200 480GB").name == "GH200 96GB HBM3"
    assert spec_for("NVIDIA A100-SXM4-40GB").mem_gbps == 1555
    assert spec_for("NVIDIA A100 80GB PCIe").mem_gbps == 1935
    assert spec_for("NVIDIA L40S").tflops["bf16"] == 362.0
    assert spec_for("NVIDIA A10").mem_gbps == 600
    assert spec_for("NVIDIA A100 custom") is None  # not the A10's numbers
    assert spec_for("NVIDIA A10G") is None
    assert "bf16" not in spec_for("Tesla V100-SXM2-32GB").tflops
    assert spec_for("AMD EPYC 7763 64-Core Processor") is None


ENV = {"device_name": "AMD EPYC", "device_type": "cpu", "host": "h"}


def peak(workload, dtype, gbps=0.0, tflops=0.0, fp=None, stamp="2025-01-01T00:00:00+00:00", shape=(8, 8, 8)):
    point = {"workload": workload, "dtype": dtype, **dict(zip("mnk", shape))}
    if fp is not None:
        point["fingerprint"] = fp
    record = make_record(run_id="p", point=point, derived={"achieved_gbps": gbps, "achieved_tflops": tflops},
                         env=ENV)
    return {**record, "timestamp": stamp}


def test_ceilings_from_records_take_the_best_of_every_size_and_run():
    found = from_records([peak("copy", "fp32", gbps=20), peak("copy", "fp32", gbps=22), peak("triad", "fp32", 25),
                          peak("matmul", "bf16", tflops=0.02), peak("matmul", "fp32", tflops=0.17),
                          peak("matmul", "fp32", tflops=0.19, shape=(512, 64, 32))])
    c = found[device_key({"env": ENV})]
    assert c.copy_gbps == 22 and c.triad_gbps == 25 and c.matmul_tflops == {"bf16": 0.02, "fp32": 0.19}
    assert c.matmul_shapes == {"bf16": [(8, 8, 8)], "fp32": [(8, 8, 8), (512, 64, 32)]}
    assert device_key({"env": ENV}) == "AMD EPYC (h)" and c.spec is None


def test_ceilings_of_different_fingerprints_are_never_mixed():
    old, new = {"threads": 8}, {"threads": 2}
    records = [peak("copy", "fp32", gbps=50, fp=old, stamp="2025-01-01T00:00:00+00:00"),
               peak("matmul", "fp32", tflops=0.5, fp=old, stamp="2025-01-01T00:00:01+00:00"),
               peak("copy", "fp32", gbps=20, fp=new, stamp="2025-02-01T00:00:00+00:00"),
               peak("copy", "fp32", gbps=21, fp=new, stamp="2025-02-01T00:00:00+00:00")]
    key = device_key({"env": ENV})
    latest = from_records(records)[key]  # the latest fingerprint's, even though the older one was faster
    assert latest.copy_gbps == 21 and latest.matmul_tflops == {} and latest.fingerprint == new
    assert from_records(records[::-1])[key].copy_gbps == 21  # latest by time, not by position
    chosen = from_records(records, fingerprint=old)[key]
    assert chosen.copy_gbps == 50 and chosen.matmul_tflops == {"fp32": 0.5} and chosen.fingerprint == old
    assert from_records(records, fingerprint={"threads": 4})[key].copy_gbps is None
    legacy = [peak("copy", "fp32", gbps=9)]  # records older than fingerprints still make ceilings
    assert from_records(legacy)[key].copy_gbps == 9 and from_records(legacy, new)[key].copy_gbps is None


def test_measure_times_copy_and_triad_at_every_size_and_matmuls_per_precision(tmp_path):
    env = capture(CPU)
    records = ceilings.measure(CPU, [FP32, BF16], "r", env, buffer_bytes=[1 << 20, 2 << 20], matmul_n=32,
                               matmul_shapes=[(5, 24, 16), (32, 32, 32)], out=tmp_path)
    assert [(r["workload"], r["dtype"], r["status"]) for r in records] == [
        ("copy", "fp32", "ok"), ("copy", "fp32", "ok"), ("triad", "fp32", "ok"), ("triad", "fp32", "ok"),
        ("matmul", "fp32", "ok"), ("matmul", "fp32", "ok"), ("matmul", "bf16", "ok"), ("matmul", "bf16", "ok")]
    assert read_records([tmp_path]) == records
    assert [r["buffer_bytes"] for r in records[:4]] == [1 << 20, 2 << 20] * 2
    assert [(r["m"], r["n"], r["k"]) for r in records[4:6]] == [(32, 32, 32), (5, 24, 16)]  # square once
    copy, triad, matmul = records[0], records[2], records[4]
    assert copy["elements"] == (1 << 20) // 4 and copy["cost"] == {"bytes": 2 << 20, "flops": 0}
    assert triad["cost"] == {"bytes": 3 << 20, "flops": 2 * (1 << 20) // 4}
    assert matmul["cost"]["flops"] == 2 * 32**3 and records[5]["cost"]["flops"] == 2 * 5 * 24 * 16
    for r in records:
        m, d = r["metrics"], r["derived"]
        assert m["time_ms_min"] <= m["time_ms_p10"] <= m["time_ms"] <= m["time_ms_p90"] and m["repeats"] >= 3
        assert d["achieved_gbps"] == pytest.approx(r["cost"]["bytes"] / m["time_ms_min"] / 1e6)
        assert d["median_gbps"] == pytest.approx(r["cost"]["bytes"] / m["time_ms"] / 1e6)
        assert d["p10_gbps"] <= d["median_gbps"] <= d["p90_gbps"] <= d["achieved_gbps"]
        assert "mbu" not in d  # a ceiling is not measured against itself
        assert r["fingerprint"] == fingerprint(CPU, env)
    found = from_records(records)[device_key(copy)]
    assert found.copy_gbps == max(r["derived"]["achieved_gbps"] for r in records[:2])
    assert found.matmul_tflops["fp32"] == max(r["derived"]["achieved_tflops"] for r in records[4:6])
    assert set(found.matmul_tflops) == {"fp32", "bf16"}


def test_cpu_cache_is_every_instance_of_the_last_level_once(tmp_path):
    def cache(cpu, index, level, kind, size, shared):
        folder = tmp_path / f"cpu{cpu}" / "cache" / f"index{index}"
        folder.mkdir(parents=True)
        for name, value in (("level", level), ("type", kind), ("size", size), ("shared_cpu_list", shared)):
            (folder / name).write_text(f"{value}\n")

    for cpu in range(4):  # two L3 instances of 16 MiB, each shared by two CPUs; private L1/L2
        cache(cpu, 0, 1, "Data", "48K", cpu)
        cache(cpu, 1, 1, "Instruction", "32K", cpu)
        cache(cpu, 2, 2, "Unified", "1M", cpu)
        cache(cpu, 3, 3, "Unified", "16384K", "0-1" if cpu < 2 else "2-3")
    assert ceilings.cpu_cache_bytes(tmp_path) == 32 << 20
    assert ceilings.cpu_cache_bytes(tmp_path / "none") is None


def test_buffers_are_well_beyond_the_last_level_cache_and_fit_in_memory(monkeypatch):
    monkeypatch.setattr(ceilings, "available_bytes", lambda device: 64 << 30)
    monkeypatch.setattr(ceilings, "last_level_cache_bytes", lambda device: 100 << 20)
    assert ceilings.sizes(CPU) == ([400 << 20, 600 << 20, 800 << 20], 1024)  # 4x, 6x, 8x the cache
    monkeypatch.setattr(ceilings, "last_level_cache_bytes", lambda device: None)
    assert ceilings.sizes(CPU) == ([64 << 20, 96 << 20, 128 << 20], 1024)
    monkeypatch.setattr(ceilings, "last_level_cache_bytes", lambda device: 60 << 20)  # an H200's L2
    assert ceilings.sizes(torch.device("cuda")) == ([256 << 20, 1 << 30, 2 << 30], 8192)
    monkeypatch.setattr(ceilings, "available_bytes", lambda device: 600 << 20)  # three buffers in half of it
    assert ceilings.sizes(torch.device("cuda"))[0] == [100 << 20]  # none fits: the largest that does
    monkeypatch.setattr(ceilings, "last_level_cache_bytes", lambda device: None)
    assert ceilings.sizes(CPU)[0] == [64 << 20, 96 << 20]


@pytest.fixture
def fake_times(monkeypatch):
    """The runner's timer replaced: every timed region gets the per-call times in ``times`` (ms)."""
    times = [5.0, 1.0, 9.0, 4.0, 6.0]

    def bench(fn, device, **_):
        fn()
        return list(times)

    monkeypatch.setattr(runner, "bench", bench)
    return times


def test_a_ceiling_is_the_best_call_not_the_median(tmp_path, fake_times):
    records = ceilings.measure(CPU, [FP32], "r", capture(CPU), buffer_bytes=[4 << 20], matmul_n=16)
    copy, matmul = records[0], records[2]
    assert copy["derived"]["achieved_gbps"] == pytest.approx(2 * (4 << 20) / 1e-3 / 1e9)  # the 1 ms call
    assert copy["derived"]["median_gbps"] == pytest.approx(2 * (4 << 20) / 5e-3 / 1e9)  # the 5 ms median
    assert matmul["derived"]["achieved_tflops"] == pytest.approx(2 * 16**3 / 1e-3 / 1e12)
    c = from_records(records)[device_key(copy)]
    assert c.copy_gbps == copy["derived"]["achieved_gbps"] and c.matmul_tflops["fp32"] == pytest.approx(
        matmul["derived"]["achieved_tflops"])


def test_the_cpu_fingerprint_is_device_torch_and_threads(monkeypatch):
    env = capture(CPU)
    assert fingerprint(CPU, env) == {"device_name": env["device_name"], "torch": torch.__version__,
                                     "threads": torch.get_num_threads()}
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    assert fingerprint(CPU, env)["threads"] == 3


def test_the_gpu_fingerprint_has_max_clocks_and_power_limit_from_nvml(monkeypatch):
    from harness import telemetry

    class NVML:
        NVMLError = RuntimeError
        closed = False

        @staticmethod
        def nvmlDeviceGetMaxClockInfo(handle, clock):
            return {telemetry.NVML_CLOCK_SM: 1980, telemetry.NVML_CLOCK_MEM: 2619}[clock]

        @classmethod
        def nvmlShutdown(cls):
            cls.closed = True

    monkeypatch.setattr(telemetry, "open_nvml", lambda device: (NVML, "h", {"power_limit_w": 700.0}))
    env = {"device_name": "NVIDIA H200", "torch": "2.13.0"}
    assert fingerprint(torch.device("cuda"), env) == {
        "device_name": "NVIDIA H200", "torch": "2.13.0", "power_limit_w": 700.0, "max_sm_clock_mhz": 1980,
        "max_mem_clock_mhz": 2619}
    assert NVML.closed
    monkeypatch.setattr(telemetry, "open_nvml", lambda device: None)  # no NVML: name and torch only
    assert fingerprint(torch.device("cuda"), env) == {"device_name": "NVIDIA H200", "torch": "2.13.0"}


def test_stored_ceilings_are_reused_only_under_the_same_fingerprint(tmp_path, monkeypatch, fake_times, capsys):
    monkeypatch.setattr(ceilings, "sizes", lambda device: TINY)
    env = capture(CPU)

    def count():
        return len(read_records([tmp_path]))

    first = stored_or_measured(tmp_path, CPU, [FP32], "a", env)
    assert count() == 5 and "none are stored" in capsys.readouterr().err  # copy x2, triad x2, matmul
    assert first.copy_gbps and first.matmul_tflops.keys() == {"fp32"}
    assert stored_or_measured(tmp_path, CPU, [FP32], "b", env) == first and count() == 5  # same: reused

    fake_times[:] = [10.0] * 5  # slower now: the new setup's ceilings must not be mixed with the old
    monkeypatch.setattr(torch, "get_num_threads", lambda: 99)
    again = stored_or_measured(tmp_path, CPU, [FP32], "c", env)
    assert count() == 10 and "another setup (threads" in capsys.readouterr().err
    assert again.fingerprint["threads"] == 99 and again.copy_gbps == pytest.approx(first.copy_gbps / 10)
    assert stored_or_measured(tmp_path, CPU, [FP32], "d", env) == again and count() == 10

    forced = stored_or_measured(tmp_path, CPU, [FP32], "e", env, remeasure=True)
    assert count() == 15 and "--remeasure" in capsys.readouterr().err and forced.fingerprint == again.fingerprint


def test_only_what_is_missing_is_measured(tmp_path, monkeypatch, fake_times):
    monkeypatch.setattr(ceilings, "sizes", lambda device: TINY)
    env = capture(CPU)
    stored_or_measured(tmp_path, CPU, [FP32], "a", env)
    known = stored_or_measured(tmp_path, CPU, [FP32, BF16], "b", env, matmul_shapes=[(4, 8, 16)])
    new = read_records([tmp_path])[5:]
    assert [(r["workload"], r["dtype"], r["m"], r["n"], r["k"]) for r in new] == [
        ("matmul", "fp32", 4, 8, 16), ("matmul", "bf16", 32, 32, 32), ("matmul", "bf16", 4, 8, 16)]
    assert known.matmul_shapes == {"fp32": [(32, 32, 32), (4, 8, 16)], "bf16": [(32, 32, 32), (4, 8, 16)]}
    stored_or_measured(tmp_path, CPU, [FP32, BF16], "c", env, matmul_shapes=[(4, 8, 16)])
    assert len(read_records([tmp_path])) == 8


def test_decode_measures_missing_ceilings_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ceilings, "sizes", lambda device: TINY)
    args = ["decode", "--model", "tiny-llama", "--prompt-len", "8", "--new-tokens", "3", "--repeats", "1",
            "--no-progress", "--dtype", "fp32", "--out", str(tmp_path)]
    assert cli.main(args) == 0
    assert cli.main(args) == 0
    recs = read_records([tmp_path])
    kinds = [r["workload"] for r in recs]
    # the first run measures the ceilings (square matmul plus tiny-llama's shapes at 8 and 1 tokens), the second
    # finds them stored: nothing is measured between the two decode records
    assert kinds == ["copy", "copy", "triad", "triad"] + ["matmul"] * 5 + ["decode", "decode"]
    shapes = {(r["m"], r["n"], r["k"]) for r in recs if r["workload"] == "matmul"}
    assert {m for m, _, _ in shapes} >= {8, 1}
    for r in recs[-2:]:
        assert 0 < r["derived"]["mbu"] and r["derived"]["bound"] in ("memory", "compute", "overhead")
    assert "% peak BW" in capsys.readouterr().out


def test_allreduce_ceilings_are_kept_per_world_size_and_never_pick_the_fingerprint():
    """All-reduce records come from processes with their own thread counts: they must not make the device's
    copy and matmul ceilings look stale."""
    def reduce(world, gbps, stamp):
        record = make_record(run_id="p", point={"workload": "allreduce", "dtype": "fp32", "world_size": world,
                                                "fingerprint": {"threads": 1}},
                             derived={"achieved_gbps": gbps}, env=ENV)
        return {**record, "timestamp": stamp}

    mine = {"threads": 2}
    records = [peak("copy", "fp32", gbps=20, fp=mine, stamp="2025-01-01T00:00:00+00:00"),
               reduce(2, 1.5, "2025-01-02T00:00:00+00:00"), reduce(2, 1.7, "2025-01-02T00:00:01+00:00"),
               reduce(4, 1.1, "2025-01-02T00:00:02+00:00")]
    c = from_records(records)[device_key({"env": ENV})]
    assert c.fingerprint == mine and c.copy_gbps == 20 and c.matmul_tflops == {}
    assert c.allreduce_gbps == {2: 1.7, 4: 1.1}
    assert ceilings.latest_fingerprints(records) == {device_key({"env": ENV}): mine}
