"""Derived metrics against a synthetic record, and the datasheet lookup."""

import pytest

from harness.ceilings import Ceilings, spec_for
from harness.records import make_record
from harness.roofline import derive, utilization, with_ceilings
from workloads.cost import Cost

def decode_cost(c: dict) -> Cost:
    """A decode run's Cost from its record's cost block (decode steps timed by decode_ms, prefill by ttft_ms)."""
    return Cost(c["decode_bytes"], c["decode_flops"], "decode_ms", c,
                {"prefill": Cost(c["prefill_bytes"], c["prefill_flops"], "ttft_ms")})



def synthetic_decode(dtype="bf16", device_name="NVIDIA H100 80GB HBM3"):
    # 2 GB per step, 4 GFLOP per step, 10 steps in 10 ms -> 2000 GB/s, 4 TFLOP/s; prefill 100 GFLOP in 1 ms
    metrics = {"decode_ms": 10.0, "ttft_ms": 1.0, "tokens_per_s": 900.0}
    cost = {"decode_bytes": 20e9 / 1000, "decode_flops": 40e9 / 1000, "prefill_bytes": 2e9 / 1000,
            "prefill_flops": 100e9 / 1000, "bytes_per_step": 2e9 / 1000 / 10 * 10}
    cost = {k: v * 1000 for k, v in cost.items()}
    point = {"workload": "decode", "model": "m", "dtype": dtype, "batch_size": 1, "prompt_len": 8, "new_tokens": 11}
    env = {"device_name": device_name, "device_type": "cuda", "host": "node1"}
    return make_record(run_id="x", point=point, metrics=metrics, cost=cost, derived=derive(decode_cost(cost), metrics),
                       env=env)


def test_derived_by_hand():
    d = synthetic_decode()["derived"]
    assert d["achieved_gbps"] == pytest.approx(2000.0)
    assert d["achieved_tflops"] == pytest.approx(4.0)
    assert d["arithmetic_intensity"] == pytest.approx(2.0)
    assert d["prefill_tflops"] == pytest.approx(100.0)
    assert d["prefill_arithmetic_intensity"] == pytest.approx(50.0)


def test_mbu_mfu_and_bound_against_ceilings():
    record = synthetic_decode()
    ceilings = Ceilings("H100", copy_gbps=2500.0, matmul_tflops={"bf16": 800.0}, spec=spec_for("H100 SXM"))
    d = with_ceilings(record, ceilings)["derived"]
    assert d["mbu"] == pytest.approx(0.8) and d["mfu"] == pytest.approx(4 / 800)
    assert d["mbu_spec"] == pytest.approx(2000 / 3350) and d["mfu_spec"] == pytest.approx(4 / 989.4)
    assert d["ridge_flop_per_byte"] == pytest.approx(320.0)
    assert d["bound"] == "memory"  # 2 FLOP/byte is far below the ridge
    assert d["prefill_bound"] == "memory" and d["prefill_mfu"] == pytest.approx(100 / 800)
    slow = Ceilings("cpu", copy_gbps=2500.0, matmul_tflops={"bf16": 4.0})
    assert with_ceilings(record, slow)["derived"]["prefill_bound"] == "compute"  # ridge 1.6 < 50


def test_without_ceilings_nothing_is_invented():
    record = synthetic_decode()
    assert with_ceilings(record, None)["derived"] == record["derived"]
    assert utilization(1.0, 1.0, 1.0, "fp32", Ceilings("x", copy_gbps=10.0)) == {"peak_gbps": 10.0, "mbu": 0.1}


def test_finetune_mfu_counts_gpus_not_cpu_processes():
    ceilings = Ceilings("d", copy_gbps=3000.0, matmul_tflops={"bf16": 800.0}, spec=spec_for("NVIDIA H100 80GB HBM3"))
    point = {"workload": "finetune", "model": "m", "dtype": "bf16", "world_size": 4}
    metrics, cost = {"step_ms_p50": 500.0}, {"flops_per_step": 800e12}
    for device_type, devices in (("cuda", 4), ("cpu", 1)):
        record = make_record(run_id="f", point=point, metrics=metrics, cost=cost,
                             derived=derive(Cost(None, cost["flops_per_step"], "step_ms_p50"), metrics), env={"device_type": device_type})
        d = with_ceilings(record, ceilings)["derived"]
        assert d["achieved_tflops"] == pytest.approx(1600.0)  # 800 TFLOP in 0.5 s
        assert d["peak_tflops"] == 800.0 * devices
        assert d["mfu"] == pytest.approx(1600.0 / (800.0 * devices))
        assert d["mfu_spec"] == pytest.approx(1600.0 / (989.4 * devices))
    failed = make_record(run_id="f", point=point, status="oom", error="out of memory")
    assert with_ceilings(failed, ceilings) == failed
