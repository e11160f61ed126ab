"""Records -> rows: speedups against the right baseline, percentages, skipped backends summarised once,
notes per record, and the ceilings against spec."""

import numpy as np
import pytest

from harness import views
from harness.ceilings import Ceilings, spec_for
from harness.records import make_record
from harness.tables import render


def decode(dtype, engine, rate, batch=1, status="ok"):
    point = {"workload": "decode", "model": "m", "dtype": dtype, "engine": engine, "batch_size": batch,
             "prompt_len": 8, "new_tokens": 4}
    if status != "ok":
        return make_record(run_id="r", point=point, status=status, error="CUDA out of memory")
    return make_record(run_id="r", point=point,
                       metrics={"tokens_per_s": rate, "ttft_ms": 2.0, "tpot_ms_p50": 1.0, "tpot_ms_p90": 1.5,
                                "peak_mem_bytes": 2e9},
                       cost={"bytes_per_step": 5e6}, derived={"achieved_gbps": 3.0, "mbu": 0.25, "bound": "memory"})


def test_decode_table_speedup_is_against_the_first_at_each_point():
    records = [decode("bf16", "hf", 100.0), decode("fp32", "hf", 50.0), decode("bf16", "hf", 30.0, batch=2),
               decode("fp32", "hf", 60.0, batch=2), decode("fp32", "hf", None, batch=4, status="oom")]
    lines = views.decode_table(records).splitlines()
    assert "speedup" in lines[0] and "engine" not in lines[0]  # one engine: no engine column
    speedups = [line.split()[6] for line in lines[2:6]]
    assert speedups == ["1.00", "0.50", "1.00", "2.00"]
    assert "25.0" in lines[2] and "5.0" in lines[2] and "2.00" in lines[2]  # % peak BW, MB/step, GB
    assert lines[6].split()[-1] == "oom" and "-" in lines[6].split()


def test_decode_table_shows_the_engine_only_when_it_varies():
    table = views.decode_table([decode("bf16", "hf", 10.0), decode("bf16", "lean", 20.0)])
    assert "engine" in table.splitlines()[0] and "lean" in table


def test_decode_table_and_note_name_stored_formats_and_agreement_only_when_they_vary():
    plain = {**decode("bf16", "lean", 100.0), "weight_format": "bf16", "kv_format": "bf16", "weight_impl": None}
    quant = {**decode("bf16", "lean", 170.0), "weight_format": "int8", "kv_format": "int8", "weight_impl": "triton",
             "quality": {"token_agreement": 0.93}}
    lines = views.decode_table([plain, quant]).splitlines()
    head = lines[0]
    assert "weights" in head and "KV cache" in head and "weight kernel" in head and "tokens agree %" in head
    assert "engine" not in head
    assert lines[3].split()[2:5] == ["int8", "triton", "int8"] and " 93 " in lines[3]
    assert views.decode_note(quant).startswith("bf16 weights int8 KV int8 lean b=1") and \
        views.decode_note(quant).endswith("tokens agree 93%")
    assert views.decode_note(plain).startswith("bf16 lean b=1")
    fp32 = {**plain, "dtype": "fp32", "weight_format": "fp32", "kv_format": "fp32"}
    assert "weights" not in views.decode_table([plain, fp32]).splitlines()[0]  # each in its own precision's float
    lines = views.decode_table([plain, {**plain, "kv_format": "fp8", "quality": {"token_agreement": 1.0}}]).splitlines()
    assert "KV cache" in lines[0] and "weights" not in lines[0]


def test_decode_note():
    assert views.decode_note(decode("bf16", "lean", 12.34)) == "bf16 lean b=1 p=8 n=4: 12.3 tok/s, TTFT 2.0 ms, " \
                                                                  "3.0 GB/s"
    assert views.decode_note(decode("bf16", "hf", 0, status="oom")).endswith("oom: CUDA out of memory")


def attention(impl, ms, status="ok"):
    point = {"workload": "attention", "attn": impl, "dtype": "bf16", "mode": "fwd", "causal": True, "head_dim": 64,
             "heads": 8, "kv_heads": 8, "seq_len": 128, "batch_size": 2}
    if status == "skipped":
        return make_record(run_id="a", point=point, status="skipped", error="needs a GPU")
    return make_record(run_id="a", point=point, metrics={"time_ms": ms}, derived={"achieved_tflops": 1.0})


def test_attention_table_speed_against_flash_and_skipped_once():
    records = [attention("sdpa-flash", 2.0), attention("triton", 1.0), attention("eager", 8.0),
               attention("sdpa-cudnn", 0, "skipped"), attention("sdpa-cudnn", 0, "skipped")]
    lines = views.attention_table(records).splitlines()
    rows = {line.split()[0]: line.split() for line in lines[2:5]}
    assert rows["triton"][10] == "2.00" and rows["eager"][10] == "0.25" and rows["sdpa-flash"][10] == "1.00"
    assert lines[-1] == "skipped sdpa-cudnn at 2 point(s): needs a GPU"


def test_ceiling_rows_and_notes():
    c = Ceilings("H100", copy_gbps=3000.0, triad_gbps=3100.0, matmul_tflops={"bf16": 700.0, "fp32": 50.0},
                 spec=spec_for("NVIDIA H100 80GB HBM3"))
    rows = views.ceiling_rows(c)
    assert [r["what"] for r in rows] == ["copy bandwidth (GB/s)", "triad bandwidth (GB/s)", "fp32 matmul (TFLOP/s)",
                                         "bf16 matmul (TFLOP/s)"]
    assert rows[0]["pct"] == pytest.approx(100 * 3000 / 3350) and rows[3]["pct"] == pytest.approx(100 * 700 / 989.4)
    copy = make_record(run_id="p", point={"workload": "copy", "dtype": "fp32"}, derived={"achieved_gbps": 12.345})
    matmul = make_record(run_id="p", point={"workload": "matmul", "dtype": "bf16"}, derived={"achieved_tflops": 0.5})
    assert views.ceiling_note(copy) == "peak: copy 12.3 GB/s" and views.ceiling_note(matmul) == \
        "peak: matmul bf16 0.50 TFLOP/s"


def test_not_completed_rows_count_each_reason_once():
    failed = [attention("sdpa-cudnn", 0, "skipped") for _ in range(3)] + [decode("bf16", "hf", 0, status="oom")]
    rows = views.not_completed_rows(failed)
    assert [(r["workload"], r["status"], r["points"]) for r in rows] == [("attention", "skipped", 3),
                                                                          ("decode", "oom", 1)]


# ------------------------------------------------ impossible values marked, bound labels explained (issue 13)

HINT = "re-run `llmbench peak` (ceilings may have been measured under load)"


def test_a_percentage_above_its_ceiling_formats_with_a_mark():
    assert format(views.Impossible(106.66), ".1f") == "106.7!" and str(views.Impossible(2.5)) == "2.5!"
    assert views._util(1.067) == pytest.approx(106.7) and isinstance(views._util(1.067), views.Impossible)
    assert not isinstance(views._util(0.99), views.Impossible) and views._util(None) is None


def test_decode_table_marks_mbu_above_the_ceiling_and_says_why():
    over, fine = decode("bf16", "hf", 100.0), decode("fp32", "hf", 50.0)
    over["derived"]["mbu"] = 1.067
    fine["derived"]["mbu"] = 0.99
    lines = views.decode_table([over, fine]).splitlines()
    assert "106.7!" in lines[2] and "99.0" in lines[3] and "!" not in lines[3]
    assert lines[4] == f"! above its measured ceiling, which is impossible: {HINT}."
    assert len(lines) == 5  # no bound note: nothing is overhead-bound
    assert "!" not in views.decode_table([fine])  # nothing impossible, no mark and no note


def test_decode_table_lists_the_roofline_warnings_of_rates_it_has_no_column_for():
    r = decode("bf16", "hf", 100.0)
    r["warnings"] = [(f"roofline: prefill MFU 203.0% is above the measured matmul rate (2.03 TFLOP/s achieved, "
                      f"ceiling 1 TFLOP/s): impossible; {HINT}"), "noisy: tokens_per_s varies by 6.0%"]
    lines = views.decode_table([r]).splitlines()
    assert lines[3].startswith("! above its measured ceiling")
    assert lines[4] == ("  decode m bf16 hf b1 p8 n4: prefill MFU 203.0% is above the measured matmul rate "
                        "(2.03 TFLOP/s achieved, ceiling 1 TFLOP/s): impossible")
    assert len(lines) == 5  # the noise warning is not the roofline's


def test_decode_table_explains_the_overhead_label():
    r = decode("bf16", "hf", 100.0)
    r["derived"]["bound"] = "overhead"
    table = views.decode_table([r])
    assert "overhead" in table.splitlines()[2]
    assert table.splitlines()[-1].startswith("bound: memory or compute by the measured ridge point") and \
        "under 30% of the roof" in table


def test_decode_row_marks_every_utilization_above_its_ceiling():
    r = decode("bf16", "hf", 100.0)
    r["metrics"].update(ttft_ms=2.0)
    r["derived"].update(achieved_tflops=1.0, mbu=1.02, mfu=0.5, roof_fraction=1.02, prefill_mfu=2.03,
                        prefill_bound="compute", mbu_spec=0.9)
    row = views.decode_row(r)
    marked = {k for k, v in row.items() if isinstance(v, views.Impossible)}
    assert marked == {"pct_bw", "roof", "prefill_mfu"}
    assert row["prefill_mfu"] == pytest.approx(203.0) and row["mfu"] == pytest.approx(50.0)
    assert views.roof_notes([row], explain_bound=False) == [f"! above its measured ceiling, which is impossible: {HINT}."]


def test_finetune_and_kernel_tables_mark_and_show_the_bound():
    ft = make_record(run_id="f", point={"workload": "finetune", "model": "m", "dtype": "bf16"},
                     metrics={"tokens_per_s": 1.0}, derived={"achieved_tflops": 1.0, "mfu": 1.25})
    assert "125.0!" in views.finetune_table([ft]) and "! above its measured ceiling" in views.finetune_table([ft])
    att = attention("triton", 1.0)
    att["derived"].update(mfu=1.5, bound="compute")
    lines = views.attention_table([att]).splitlines()
    assert lines[0].split()[-2:] == ["bound", "status"] and "150.0!" in lines[2] and "compute" in lines[2]
    assert lines[3].startswith("! above")
    point = {"workload": "decode-attention", "attn": "triton", "dtype": "bf16", "batch_size": 1, "context": 64,
             "heads": 8, "kv_heads": 2, "head_dim": 64}
    kv = make_record(run_id="k", point=point, metrics={"time_ms": 0.01},
                     derived={"achieved_gbps": 10.0, "mbu": 0.05, "bound": "overhead"})
    table = views.decode_attention_table([kv])
    assert "overhead" in table.splitlines()[2] and "!" not in table and "under 30% of the roof" in table


def test_warnings_per_record_named_and_the_hint_left_out():
    r = decode("fp32", "lean", 1.0, batch=4)
    r["warnings"] = [(f"roofline: decode MBU 106.7% is above the measured copy bandwidth (3200 GB/s achieved, "
                      f"ceiling 3000 GB/s): impossible; {HINT}"), "noisy: ttft_ms varies by 9.0%"]
    assert views.roofline_warnings([r, r]) == [  # once, however often it occurs
        ("decode m fp32 lean b4 p8 n4: decode MBU 106.7% is above the measured copy bandwidth (3200 GB/s achieved, "
         "ceiling 3000 GB/s): impossible")]
    assert views.other_warnings([r]) == ["decode m fp32 lean b4 p8 n4: noisy: ttft_ms varies by 9.0%"]


def test_speedup_carries_its_interval_or_says_there_is_no_difference():
    def with_samples(dtype, samples):
        r = decode(dtype, "hf", float(np.median(samples)))
        r["metrics"]["samples"] = {"tokens_per_s": list(samples)}
        return r

    rng = np.random.default_rng(0)
    base = with_samples("bf16", 100 * (1 + 0.02 * rng.standard_normal(12)))
    faster = with_samples("fp32", 150 * (1 + 0.02 * rng.standard_normal(12)))
    same = with_samples("fp16", 100 * (1 + 0.02 * rng.standard_normal(12)))
    table = views.decode_table([base, faster, same])
    rows = {line.split()[1]: line for line in table.splitlines()[2:5]}
    low, high = rows["fp32"].split()[7].split("-")
    assert 1.4 < float(low) < 1.5 < float(high) < 1.6
    assert "no significant difference" in rows["fp16"]
    assert rows["bf16"].split()[6] == "1.00" and rows["bf16"].split()[7] == "-"  # the baseline has no interval


# ------------------------------------------------ the report's tables (issue 16)


def engine_point(engine, dtype="bf16", batch=1, cache=None, **extra):
    r = decode(dtype, engine, 100.0 * batch, batch=batch)
    r["cache"] = cache or ("static" if engine == "lean" else "dynamic")
    r.update(extra)
    return r


def test_varying_fields_in_reading_order_and_the_constant_ones_once():
    records = [engine_point(e, d, b) for e in ("lean", "hf") for d in ("fp32", "bf16") for b in (1, 4)]
    varying, constant = views.varying_fields(records)
    assert varying == ["engine", "cache", "dtype", "batch_size"]
    assert constant == {"model": "m", "prompt_len": 8, "new_tokens": 4}  # seq_len, device... are not compared
    assert views.constant_line(constant) == "Same in every row: model m, prompt 8, new 4."
    assert views.follows(records, "cache", "engine") and not views.follows(records, "engine", "dtype")
    assert views.independent(varying, records) == ["engine", "dtype", "batch_size"]  # cache follows the engine
    assert views.point_label(records[0], ["engine", "batch_size"]) == "lean b1"


def test_decode_report_table_separates_every_varying_field_in_3_significant_figures():
    records = [engine_point(e, d) for e in ("lean", "hf") for d in ("fp32", "bf16")]
    records[0]["metrics"].update(tokens_per_s=1234.5, tokens_per_s_ci_low=1200.0, tokens_per_s_ci_high=1260.0)
    records[0]["derived"]["mbu"] = 1.0667
    rows, columns, same = views.decode_report_table(records)
    keys = [c[0] for c in columns]
    assert keys[:3] == ["engine", "cache", "dtype"] and "model" not in keys and "batch_size" not in keys
    assert [(r["engine"], r["dtype"]) for r in rows] == [("hf", "fp32"), ("hf", "bf16"), ("lean", "fp32"),
                                                        ("lean", "bf16")]  # names, then precisions in order
    lean_fp32 = rows[2]
    assert lean_fp32["ci"] == "1.20k-1.26k" and isinstance(lean_fp32["mbu"], views.Impossible)
    text = render(rows, columns)
    assert "tok/s (" not in text and "1.23k" in text and "107!" in text and "TTFT (s)" in text
    assert "2.00m" in text  # a TTFT of 2 ms, in seconds with its prefix
    assert same == "Same in every row: model m, batch 1, prompt 8, new 4."


def test_energy_rows_only_for_records_with_telemetry():
    hot = engine_point("hf")
    hot["telemetry"] = {"joules_per_token": 0.25, "tokens_per_joule": 4.0, "power_w_mean": 350.0,
                        "sm_clock_mhz": 1755.0, "mem_clock_mhz": 2619.0, "temp_c_max": 71.0,
                        "throttle_reasons": ["sw_power_cap", "hw_slowdown"]}
    cold = engine_point("lean")
    assert views.has_energy(hot) and not views.has_energy(cold)
    rows, columns, _ = views.energy_report_table([hot, cold])
    assert len(rows) == 1 and "engine" not in [c[0] for c in columns]  # one record: nothing varies
    text = render(rows, columns)
    assert "250m" in text and "1.76G" in text and "sw_power_cap, hw_slowdown" in text and "SM clock (Hz)" in text


def test_environment_rows_name_versions_git_and_slurm():
    a, b = engine_point("hf"), engine_point("lean")
    a["env"] = {"torch": "2.13.0", "git_sha": "0123456789abcdef-dirty", "slurm_job_id": "11", "host": "n1",
                "slurm_array_task_id": "10"}
    b["env"] = {"torch": "2.13.0", "git_sha": "fedcba9876543210", "slurm_job_id": "11", "host": "n2",
                "slurm_array_task_id": "9"}
    b["run_id"] = "other"
    rows = {r["what"]: r["value"] for r in views.environment_rows([a, b])}
    assert rows["torch"] == "2.13.0" and rows["host"] == "n1, n2" and rows["SLURM array tasks"] == "9, 10"
    assert rows["git sha"] == "0123456789ab (dirty: uncommitted changes), fedcba987654"
    assert rows["runs merged"] == "2 (2 records)" and "driver" not in rows


def compiled(kernel, arch, head_dim, candidate, spill=0, case="causal", status="ok", fits=True):
    point = {"workload": "kernel-compile", "kernel": kernel, "arch": arch, "dtype": "bf16", "head_dim": head_dim,
             "case": case, "candidate": candidate, "device": None}
    if status != "ok":
        return make_record(run_id="c", point=point, status="failed", error="ptxas: out of memory")
    return make_record(run_id="c", point=point, metrics={
        "registers": 255 if spill else 128, "spill_stores_bytes": spill, "spill_loads_bytes": spill,
        "stack_bytes": spill, "shared_bytes": 98304, "programs_per_sm": 1, "warps_per_sm": 8, "occupancy": 0.125,
        "fits": fits, "clean": fits and not spill, "compile_s": 2.0})


def test_compile_table_rows_and_summary():
    records = [compiled("attention.fwd", "sm_90", 128, "BLOCK_M=128 w8", spill=0),
               compiled("attention.fwd", "sm_90", 128, "BLOCK_M=64 w4", spill=96),
               compiled("attention.fwd", "sm_80", 128, "BLOCK_M=128 w8", spill=0, case="noncausal"),
               compiled("attention.bwd_dkdv", "sm_100", 128, "BLOCK_M=64 w8", spill=996),
               compiled("attention.bwd_dkdv", "sm_100", 128, "BLOCK_M=32 w8", fits=False),
               compiled("attention.bwd_dkdv", "sm_100", 128, "BLOCK_M=16 w8", status="failed")]
    rows = views.compile_rows(records)
    assert [(r["kernel"], r["arch"]) for r in rows][:3] == [("attention.bwd_dkdv", "sm_100")] * 3
    assert [r["arch"] for r in rows][3:] == ["sm_80", "sm_90", "sm_90"]  # sm_80 before sm_90 before sm_100
    spilled = next(r for r in rows if r["candidate"] == "BLOCK_M=64 w4")
    assert (spilled["registers"], spilled["spill_stores"], spilled["shared_kb"], spilled["occupancy"],
            spilled["status"]) == (255, 96, 96.0, 12.5, "spills")
    assert {r["status"] for r in rows} >= {"ok", "spills", "does not fit", "failed: ptxas: out of memory"}
    table = views.compile_table(records)
    assert table.splitlines()[0].split()[:4] == ["kernel", "arch", "dtype", "head"]
    assert views.compile_summary(records) == [
        "attention.bwd_dkdv sm_100 head dim 128: NO spill-free candidate for causal (least: BLOCK_M=32 w8, does "
        "not fit) (causal 0/3 clean)",
        "attention.fwd sm_80 head dim 128: spill-free candidate in every case (noncausal 1/1 clean)",
        "attention.fwd sm_90 head dim 128: spill-free candidate in every case (causal 1/2 clean)",
    ]
    assert table.endswith(views.compile_summary(records)[-1])


def test_other_views_ignore_compile_records():
    records = [compiled("attention.fwd", "sm_90", 64, "w4"), engine_point("hf")]
    assert views.record_label(records[0]).startswith("kernel-compile")
    assert views.other_warnings(records) == [] and views.roofline_warnings(records) == []
    assert views.not_completed_rows([compiled("a", "sm_80", 64, "w4", status="failed")])[0]["points"] == 1


def test_compile_summary_says_skipped_cases_are_skipped_not_missing():
    point = {"workload": "kernel-compile", "kernel": "decode_attention.*", "arch": "sm_80", "dtype": "bf16",
             "head_dim": 128, "case": "fp8", "candidate": None, "device": None}
    skipped = make_record(run_id="c", point=point, status="skipped", error="float8_e4m3fn needs sm_89 or newer")
    lines = views.compile_summary([skipped, compiled("decode_attention.split", "sm_80", 128, "BLOCK_N=64 w4")])
    assert lines[0] == "decode_attention.* sm_80 head dim 128: fp8 skipped: float8_e4m3fn needs sm_89 or newer"
    assert not any("NO spill-free" in line for line in lines)


def test_decode_attention_table_names_the_kv_format_and_compares_with_sdpa_at_the_compute_dtype():
    point = {"workload": "decode-attention", "dtype": "bf16", "batch_size": 1, "context": 64, "heads": 8,
             "kv_heads": 2, "head_dim": 64}
    sdpa = make_record(run_id="k", point={**point, "attn": "sdpa"}, metrics={"time_ms": 0.02},
                       derived={"achieved_gbps": 5.0})
    int8 = make_record(run_id="k", point={**point, "attn": "triton", "kv_dtype": "int8"}, metrics={"time_ms": 0.01},
                       derived={"achieved_gbps": 6.0})
    lines = views.decode_attention_table([sdpa, int8]).splitlines()
    assert lines[0].split()[:4] == ["impl", "dtype", "KV", "cache"]
    sdpa_row, int8_row = lines[2].split(), lines[3].split()
    assert sdpa_row[:3] == ["sdpa", "bf16", "bf16"] and int8_row[:3] == ["triton", "bf16", "int8"]
    assert "2.00" in int8_row  # x sdpa: the bf16 SDPA point at the same shape


def test_scaling_efficiency_against_the_one_process_run_of_the_same_point():
    def ft(world, tok_s, per=None, batch=4, status="ok"):
        point = {"workload": "finetune", "model": "m", "trainer": "lean", "dtype": "bf16", "batch_size": batch,
                 "seq_len": 128, "grad_accum": 1, "device": "cuda:0", "world_size": world}
        metrics = {"tokens_per_s": tok_s, **({"tokens_per_s_per_process": per} if per else {})}
        return make_record(run_id="f", point=point, status=status, metrics=metrics)

    records = [ft(1, 1000.0), ft(2, 1900.0, per=950.0), ft(8, 7200.0, per=900.0), ft(2, 3000.0, per=1500.0, batch=8)]
    assert views.scaling_efficiency(records) == [None, 0.95, 0.9, None]  # batch 8 has no one-process run
    rows, columns, _ = views.finetune_report_table(records)
    assert ("scaling", "scaling efficiency (%)", "3g") in columns
    assert sorted(r["scaling"] for r in rows if r["scaling"] is not None) == [90.0, 95.0]
    single, = [r for r in rows if r.get("world_size") == "1" or r.get("world_size") == 1]
    assert single["per_process"] is None and single["scaling"] is None
    only_one = views.finetune_report_table([ft(1, 1000.0)])[1]
    assert not any(c[0] in ("scaling", "per_process") for c in only_one)  # no empty columns


def test_allreduce_ceilings_are_listed_without_a_memory_datasheet_comparison():
    c = Ceilings("H100", copy_gbps=3000.0, triad_gbps=3100.0, matmul_tflops={}, spec=spec_for("NVIDIA H100 80GB HBM3"),
                 allreduce_gbps={8: 360.0, 2: 150.0})
    rows = views.ceiling_rows(c)
    assert [(r["what"], r["measured"], r["pct"]) for r in rows[2:]] == [
        ("all-reduce bus bandwidth, 2 processes (GB/s)", 150.0, None),
        ("all-reduce bus bandwidth, 8 processes (GB/s)", 360.0, None)]
    ar = make_record(run_id="p", point={"workload": "allreduce", "dtype": "fp32"}, metrics={"time_ms": 1.0},
                     derived={"achieved_gbps": 150.0})
    line = views.peak_table([ar], c.spec).splitlines()[2].split()
    assert line[:3] == ["allreduce", "fp32", "150"] and "4.5" not in line  # no % of the HBM spec


def tp_point(tp, rate, batch=1, engine="lean", samples=None):
    r = decode("bf16", engine, rate, batch=batch)
    r.update(tp=tp, world_size=tp, nodes=1, parallel="tp" if tp > 1 else None)
    if samples is not None:
        r["metrics"]["samples"] = {"tokens_per_s": list(samples)}
    return r


def test_tp_speedup_over_the_one_gpu_run_of_the_same_point_with_its_ci():
    rng = np.random.default_rng(0)
    noisy = lambda rate: rate * (1 + 0.01 * rng.standard_normal(10))  # noqa: E731
    records = [tp_point(1, 100.0, samples=noisy(100.0)), tp_point(2, 172.0, samples=noisy(172.0)),
               tp_point(1, 300.0, batch=4), tp_point(2, 450.0, batch=4), tp_point(4, 500.0, batch=8),
               tp_point(2, 90.0, engine="hf")]  # no TP=1 run of hf, nor of batch 8: no speedup
    rows, columns, _ = views.decode_report_table(records)
    keys = [c[0] for c in columns]
    assert keys[keys.index("tok_s") + 1:keys.index("tok_s") + 3] == ["tp_speedup", "tp_ci"]  # no tok/s CI here
    assert ("tp", "TP", "d") in columns and ("tp_speedup", "speedup over TP=1 (x)", "3g") in columns
    by = {(row["engine"], row["batch_size"], row["tp"]): row for row in rows}
    assert by[("lean", 1, 2)]["tp_speedup"] == pytest.approx(1.72)
    low, high = map(float, by[("lean", 1, 2)]["tp_ci"].split("-"))
    assert 1.6 < low < 1.72 < high < 1.85
    assert by[("lean", 4, 2)]["tp_speedup"] == pytest.approx(1.5) and by[("lean", 4, 2)]["tp_ci"] is None  # no samples
    assert all(by[k]["tp_speedup"] is None for k in (("lean", 1, 1), ("lean", 8, 4), ("hf", 1, 2)))


def test_no_tp_speedup_column_without_a_tensor_parallel_pair_or_in_older_records():
    older = [decode("bf16", "lean", 100.0), decode("bf16", "lean", 180.0, batch=2)]  # no tp field at all
    assert "tp_speedup" not in [c[0] for c in views.decode_report_table(older)[1]]
    only_tp2 = [tp_point(2, 100.0), tp_point(2, 150.0, batch=2)]
    assert "tp_speedup" not in [c[0] for c in views.decode_report_table(only_tp2)[1]]
    assert views.tp_speedups(older) == {} and views.tp_speedups(only_tp2) == {}


def variant(dtype, rate, weights=None, kv=None, batch=1, quality=None, engine="lean", impl=None):
    r = decode(dtype, engine, rate, batch=batch)
    own = "fp32" if dtype == "tf32" else dtype
    r.update(weight_format=weights or own, kv_format=kv or own, weight_impl=impl or ("triton" if weights else None))
    r["cost"]["bytes_per_step"] = {"bf16": 2e9}.get(dtype, 4e9) * (0.52 if weights else 1)
    if quality:
        r["quality"] = quality
    return r


def test_precision_variants_are_named_by_their_stored_formats():
    assert views.precision_variant(variant("bf16", 1.0)) == "bf16" and views.plain(variant("bf16", 1.0))
    assert views.precision_variant(variant("bf16", 1.0, "int8", "int8")) == "bf16 + int8 weights + int8 KV"
    assert views.precision_variant(variant("bf16", 1.0, "int8", impl="torchao")) == "bf16 + int8 weights (torchao)"
    assert views.precision_variant(variant("fp32", 1.0, kv="bf16")) == "fp32 + bf16 KV"
    assert views.plain(variant("tf32", 1.0)) and views.plain(decode("bf16", "hf", 1.0))  # older: no format fields


def test_precision_comparison_side_by_side_against_the_fp32_plain_run():
    q = {"token_agreement": 0.93, "logit_max_abs_err": 0.12, "ppl_delta": 0.03}
    records = [variant("bf16", 100.0), variant("bf16", 170.0, "int8", "int8", quality=q), variant("fp32", 50.0),
               variant("bf16", 400.0, batch=4), variant("bf16", 600.0, "int8", batch=4),  # batch 4: no fp32
               variant("fp32", 30.0, batch=8)]  # alone at its point: not compared
    rows, columns, text = views.precision_comparison_table(records)
    assert [(r["batch_size"], r["variant"], r["baseline"]) for r in rows] == [
        (1, "fp32", "baseline"), (1, "bf16", None), (1, "bf16 + int8 weights + int8 KV", None),
        (4, "bf16", "baseline"), (4, "bf16 + int8 weights", None)]
    assert [r["speedup"] for r in rows] == [None, 2.0, 3.4, None, 1.5]
    assert rows[2]["bytes_ratio"] == pytest.approx(0.26) and rows[2]["agree"] == pytest.approx(93.0)
    keys = [c[0] for c in columns]
    assert keys.index("speedup") < keys.index("agree") < keys.index("logit_err") < keys.index("ppl_delta")
    assert "fp32 unquantized run" in text and "first" not in text.split("quantized.")[-1]
    assert views.precision_comparison_table([variant("bf16", 1.0), variant("bf16", 2.0, batch=2)])[0] == []


def test_decode_table_shows_quality_only_for_records_that_carry_it():
    rows, columns, _ = views.decode_report_table([variant("bf16", 100.0),
                                                  variant("bf16", 170.0, "int8", quality={"token_agreement": 0.9})])
    assert ("agree", "tokens agree (%)", "3g") in columns and ("weight_format", "weights", "") in columns
    assert {r["weight_format"]: r["agree"] for r in rows} == {"bf16": None, "int8": pytest.approx(90.0)}
    assert "agree" not in [c[0] for c in views.decode_report_table([variant("bf16", 1.0), variant("fp32", 1.0)])[1]]
