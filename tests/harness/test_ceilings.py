"""Ceilings: the datasheet lookup, the best measured value per device, measured through the runner,
and measured once then reused by the commands that need them."""

import pytest
import torch

from harness import ceilings, cli
from harness.ceilings import device_key, from_records, spec_for
from harness.envinfo import capture
from harness.records import make_record, read_records
from workloads.precision import PRECISIONS

CPU = torch.device("cpu")


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


def test_ceilings_from_records_take_the_best_median():
    env = {"device_name": "AMD EPYC", "device_type": "cpu", "host": "h"}

    def peak(workload, dtype, gbps=0.0, tflops=0.0):
        return make_record(run_id="p", point={"workload": workload, "dtype": dtype},
                           derived={"achieved_gbps": gbps, "achieved_tflops": tflops}, env=env)

    found = from_records([peak("copy", "fp32", gbps=20), peak("copy", "fp32", gbps=22), peak("triad", "fp32", 25),
                          peak("matmul", "bf16", tflops=0.02), peak("matmul", "fp32", tflops=0.17)])
    c = found[device_key({"env": env})]
    assert c.copy_gbps == 22 and c.triad_gbps == 25 and c.matmul_tflops == {"bf16": 0.02, "fp32": 0.17}
    assert device_key({"env": env}) == "AMD EPYC (h)" and c.spec is None


def test_measure_times_copy_triad_and_a_matmul_per_precision(tmp_path):
    records = ceilings.measure(CPU, [PRECISIONS["fp32"], PRECISIONS["bf16"]], "r", capture(CPU), 1 << 20, 32,
                               out=tmp_path)
    assert [(r["workload"], r["dtype"], r["status"]) for r in records] == [
        ("copy", "fp32", "ok"), ("triad", "fp32", "ok"), ("matmul", "fp32", "ok"), ("matmul", "bf16", "ok")]
    assert read_records([tmp_path]) == records
    copy, triad, matmul = records[0], records[1], records[2]
    assert copy["elements"] == (1 << 20) // 4 and copy["cost"] == {"bytes": 2 << 20, "flops": 0}
    assert triad["cost"] == {"bytes": 3 << 20, "flops": 2 * (1 << 20) // 4}
    assert matmul["m"] == matmul["n"] == matmul["k"] == 32 and matmul["cost"]["flops"] == 2 * 32**3
    for r in records:
        m = r["metrics"]
        assert m["time_ms_p10"] <= m["time_ms"] <= m["time_ms_p90"] and m["repeats"] >= 3
        assert r["derived"]["achieved_gbps"] == pytest.approx(r["cost"]["bytes"] / m["time_ms"] / 1e6)
        assert "mbu" not in r["derived"]  # a ceiling is not measured against itself
    found = from_records(records)[device_key(copy)]
    assert found.copy_gbps == copy["derived"]["achieved_gbps"]
    assert set(found.matmul_tflops) == {"fp32", "bf16"}


def test_decode_measures_missing_ceilings_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ceilings, "sizes", lambda device: (1 << 20, 32))
    args = ["decode", "--model", "tiny-llama", "--prompt-len", "8", "--new-tokens", "3", "--repeats", "1",
            "--no-progress", "--dtype", "fp32", "--out", str(tmp_path)]
    assert cli.main(args) == 0
    assert cli.main(args) == 0
    recs = read_records([tmp_path])
    assert [r["workload"] for r in recs] == ["copy", "triad", "matmul", "decode", "decode"]
    for r in recs[3:]:
        assert 0 < r["derived"]["mbu"] and r["derived"]["bound"] in ("memory", "compute")
    assert "% peak BW" in capsys.readouterr().out
