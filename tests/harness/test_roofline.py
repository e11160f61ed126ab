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


# ------------------------------------------------ impossible values (issue 13): rates above a measured ceiling

HINT = "re-run `llmbench peak` (ceilings may have been measured under load)"


def roofline_warnings(record):
    return [w for w in record["warnings"] if w.startswith("roofline: ")]


def test_no_warning_at_99_percent_of_either_ceiling():
    # decode 2000 GB/s and prefill 2000 GB/s (2 GB in 1 ms) against 2000 / 0.99 GB/s: MBU 0.99 for both;
    # prefill 100 TFLOP/s against 100 / 0.99: MFU 0.99
    ceilings = Ceilings("d", copy_gbps=2000 / 0.99, matmul_tflops={"bf16": 100 / 0.99})
    record = with_ceilings(synthetic_decode(), ceilings)
    d = record["derived"]
    assert d["mbu"] == pytest.approx(0.99) and d["prefill_mbu"] == pytest.approx(0.99)
    assert d["prefill_mfu"] == pytest.approx(0.99)
    assert record["warnings"] == []


def test_decode_and_prefill_mbu_above_the_copy_ceiling_warn():
    record = with_ceilings(synthetic_decode(), Ceilings("d", copy_gbps=1900.0, matmul_tflops={"bf16": 800.0}))
    decode, prefill = roofline_warnings(record)  # 2000 / 1900 = 105.3% each; MFU 0.5% and 12.5%: no warning
    assert decode.startswith("roofline: decode MBU 105.3% is above the measured copy bandwidth")
    assert "2000 GB/s achieved, ceiling 1900 GB/s" in decode and decode.endswith(HINT)
    assert prefill.startswith("roofline: prefill MBU 105.3%") and "ceiling 1900 GB/s" in prefill
    assert record["derived"]["mbu"] == pytest.approx(2000 / 1900)  # the value is kept, and flagged


def test_prefill_mfu_above_the_matmul_ceiling_warns_alone():
    record = with_ceilings(synthetic_decode(), Ceilings("d", copy_gbps=2500.0, matmul_tflops={"bf16": 90.0}))
    # decode: MBU 0.8, MFU 4/90; prefill: MBU 0.8, MFU 100/90 = 111.1%
    assert roofline_warnings(record) == [
        (f"roofline: prefill MFU 111.1% is above the measured matmul rate (100 TFLOP/s achieved, ceiling 90 TFLOP/s): "
         f"impossible; {HINT}")]


def test_decode_mfu_above_the_matmul_ceiling_warns():
    record = with_ceilings(synthetic_decode(), Ceilings("d", copy_gbps=2500.0, matmul_tflops={"bf16": 3.5}))
    decode, prefill = roofline_warnings(record)  # 4 / 3.5 = 114.3%; prefill 100 / 3.5 = 2857.1%
    assert decode.startswith("roofline: decode MFU 114.3% is above the measured matmul rate")
    assert "4 TFLOP/s achieved, ceiling 3.5 TFLOP/s" in decode
    assert prefill.startswith("roofline: prefill MFU 2857.1%")


def kernel(workload="attention", bytes_=1e9, flops=1e12, ms=1.0):
    """A kernel record: ``bytes_`` and ``flops`` in ``ms`` (1 GB and 1 TFLOP in 1 ms: 1000 GB/s, 1000 TFLOP/s)."""
    point = {"workload": workload, "attn": "triton", "dtype": "bf16", "batch_size": 1}
    metrics = {"time_ms": ms}
    return make_record(run_id="k", point=point, metrics=metrics, cost={"bytes": bytes_, "flops": flops},
                       derived=derive(Cost(bytes_, flops, "time_ms"), metrics), env={"device_type": "cuda"})


def test_kernel_mfu_and_mbu_above_their_ceilings_warn():
    over = with_ceilings(kernel(), Ceilings("d", copy_gbps=3000.0, matmul_tflops={"bf16": 800.0}))
    [warning] = roofline_warnings(over)
    assert warning.startswith("roofline: attention MFU 125.0% is above the measured matmul rate")
    assert "1000 TFLOP/s achieved, ceiling 800 TFLOP/s" in warning and warning.endswith(HINT)
    fine = with_ceilings(kernel(), Ceilings("d", copy_gbps=3000.0, matmul_tflops={"bf16": 1000 / 0.99}))
    assert fine["warnings"] == [] and fine["derived"]["mfu"] == pytest.approx(0.99)
    # decode attention: 3 GB and 3 GFLOP in 1 ms, 3000 GB/s against 2900
    kv = with_ceilings(kernel("decode-attention", 3e9, 3e9), Ceilings("d", copy_gbps=2900.0,
                                                                     matmul_tflops={"bf16": 800.0}))
    [warning] = roofline_warnings(kv)
    assert warning.startswith("roofline: decode-attention MBU 103.4%") and warning.endswith(HINT)


def test_finetune_mfu_above_the_ceiling_warns():
    point = {"workload": "finetune", "model": "m", "dtype": "bf16", "world_size": 2}
    metrics = {"step_ms_p50": 500.0}
    record = make_record(run_id="f", point=point, metrics=metrics, cost={"flops_per_step": 800e12},
                         derived=derive(Cost(None, 800e12, "step_ms_p50"), metrics), env={"device_type": "cpu"})
    c = Ceilings("d", matmul_tflops={"bf16": 1000.0})
    [warning] = roofline_warnings(with_ceilings(record, c))  # 1600 TFLOP/s on one host's 1000
    assert warning.startswith("roofline: finetune MFU 160.0%") and "ceiling 1000 TFLOP/s" in warning
    on_gpus = {**record, "env": {"device_type": "cuda"}}
    assert with_ceilings(on_gpus, c)["warnings"] == []  # 1600 of 2 GPUs x 1000: 80%


def test_warnings_are_replaced_not_piled_up_and_others_are_kept():
    record = synthetic_decode()
    record["warnings"] = ["noisy: tokens_per_s varies by 7.0% (CV over 5 samples)"]
    low = Ceilings("d", copy_gbps=1900.0, matmul_tflops={"bf16": 800.0})
    once = with_ceilings(record, low)
    twice = with_ceilings(with_ceilings(once, low), low)
    assert twice["warnings"] == once["warnings"] and len(twice["warnings"]) == 3  # noise + decode + prefill MBU
    assert twice["warnings"][0].startswith("noisy:")
    quiet = with_ceilings(twice, Ceilings("d", copy_gbps=2500.0, matmul_tflops={"bf16": 800.0}))
    assert quiet["warnings"] == ["noisy: tokens_per_s varies by 7.0% (CV over 5 samples)"]
    assert record["warnings"] == ["noisy: tokens_per_s varies by 7.0% (CV over 5 samples)"]  # input untouched


# ------------------------------------------------ bound: memory | compute | overhead

ROOF = Ceilings("d", copy_gbps=1000.0, matmul_tflops={"bf16": 100.0})  # ridge: 100e12 / 1000e9 = 100 FLOP/byte


@pytest.mark.parametrize("gbps, intensity, fraction, bound", [
    # memory side, I = 2: roof = min(100, 2 x 1000 GB/s) = 2 TFLOP/s; achieved = I x GB/s
    (100.0, 2.0, 0.1, "overhead"), (500.0, 2.0, 0.5, "memory"), (290.0, 2.0, 0.29, "overhead"),
    (300.0, 2.0, 0.3, "memory"),  # exactly at the threshold: not overhead
    # compute side, I = 1000: roof = min(100, 1000 TFLOP/s) = 100 TFLOP/s
    (10.0, 1000.0, 0.1, "overhead"), (50.0, 1000.0, 0.5, "compute"),
    # at the ridge (I = 100): both roofs meet at 100 TFLOP/s
    (500.0, 100.0, 0.5, "compute"),
])
def test_bound_by_the_fraction_of_the_roof_reached(gbps, intensity, fraction, bound):
    d = utilization(gbps, gbps * intensity / 1e3, intensity, "bf16", ROOF)
    assert d["roof_fraction"] == pytest.approx(fraction) and d["bound"] == bound
    assert d["roof_fraction"] == pytest.approx(max(d["mbu"], d["mfu"]))  # the larger of MBU and MFU


def test_the_threshold_is_30_percent():
    from harness.roofline import OVERHEAD_BELOW

    assert OVERHEAD_BELOW == 0.3


def test_tiny_model_far_below_both_roofs_is_overhead_bound():
    # decode 2000 GB/s at I = 2 and prefill 100 TFLOP/s at I = 50, against 1e6 GB/s and 20000 TFLOP/s:
    # decode MBU 0.2%, MFU 0.02%; prefill roof min(20000, 50 x 1e6 / 1e3) = 20000, reached 0.5%
    record = with_ceilings(synthetic_decode(), Ceilings("d", copy_gbps=1e6, matmul_tflops={"bf16": 20000.0}))
    d = record["derived"]
    assert d["mbu"] == pytest.approx(0.002) and d["roof_fraction"] == pytest.approx(0.002)
    assert d["prefill_roof_fraction"] == pytest.approx(0.005)
    assert d["bound"] == "overhead" and d["prefill_bound"] == "overhead"
    slow_kernel = with_ceilings(kernel(ms=1000.0), Ceilings("d", copy_gbps=3000.0, matmul_tflops={"bf16": 800.0}))
    assert slow_kernel["derived"]["bound"] == "overhead"  # 1 TFLOP/s at I = 1000 of an 800 TFLOP/s roof
    fast_kernel = with_ceilings(kernel(ms=2.0), Ceilings("d", copy_gbps=3000.0, matmul_tflops={"bf16": 800.0}))
    assert fast_kernel["derived"]["bound"] == "compute"  # 500 of 800: 62.5%


def test_no_bound_without_both_ceilings():
    d = utilization(100.0, 0.2, 2.0, "bf16", Ceilings("d", copy_gbps=1000.0))
    assert "bound" not in d and "roof_fraction" not in d
