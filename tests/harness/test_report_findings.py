"""Headline findings (harness/report_findings.py): plain sentences with numbers, computed from records that
carry their derived block; each says nothing when the records cannot answer it."""

import numpy as np
import pytest


from harness import report_findings as findings
from harness.ceilings import Ceilings
from harness.records import make_record
from harness.roofline import WARNING_PREFIX


def decode(dtype="bf16", engine="hf", batch=1, rate=100.0, ci=0.01, samples=None, bytes_=None, mbu=None,
           bound=None, telemetry=None, model="m"):
    elem = 4 if dtype == "fp32" else 2
    metrics = {"tokens_per_s": rate, "tokens_per_s_ci_low": rate * (1 - ci), "tokens_per_s_ci_high": rate * (1 + ci)}
    if samples is not None:
        metrics["samples"] = {"tokens_per_s": list(samples)}
    derived = {"achieved_gbps": 100.0}
    if mbu is not None:
        derived["mbu"] = mbu
    if bound:
        derived["bound"] = bound
    point = {"workload": "decode", "model": model, "engine": engine, "dtype": dtype, "batch_size": batch,
             "prompt_len": 16, "new_tokens": 8}
    return make_record(run_id="r", point=point, metrics=metrics, cost={"bytes_per_step": bytes_ or 1e9 * elem},
                       derived=derived, telemetry=telemetry)


def test_one_point_bf16_vs_fp32_with_its_bootstrap_interval():
    rng = np.random.default_rng(1)
    bf16 = decode("bf16", rate=200.0, samples=200 * (1 + 0.01 * rng.standard_normal(10)))
    fp32 = decode("fp32", rate=100.0, samples=100 * (1 + 0.01 * rng.standard_normal(10)))
    (line,) = findings.precision([bf16, fp32])
    assert line.startswith("**bf16 vs fp32**: bf16 decodes **2.00x** as fast as fp32 (95% CI ")
    low, high = map(float, line.split("95% CI ")[1].split("x")[0].split("-"))
    assert 1.95 < low <= 2.0 <= high < 2.05
    assert "each step moves 2.00x fewer bytes (2.00GB vs 4.00GB)" in line
    assert "no significant difference" not in line


def test_many_points_geometric_mean_over_matched_points_only():
    records = [decode(d, batch=b, rate=r * b) for b, (rb, rf) in ((1, (150.0, 100.0)), (2, (240.0, 100.0)))
               for d, r in (("bf16", rb), ("fp32", rf))]
    records.append(decode("bf16", batch=8, rate=5000.0))  # no fp32 at batch 8: not matched
    (line,) = findings.precision(records)
    assert "over 2 matched points bf16 decodes **1.90x**" in line  # sqrt(1.5 x 2.4)
    assert "1.50x at b1 to 2.40x at b2" in line


def test_best_engine_per_point_and_ties_within_the_ci():
    records = [decode(engine=e, batch=b, rate=r) for b in (1, 2, 4)
               for e, r in (("hf", 100.0), ("hf-static", 101.0 if b == 1 else 130.0), ("lean", 99.5 if b == 1
                                                                                         else 200.0))]
    (line,) = findings.best_of(records, "engine", "Engine")
    assert line == ("**Engine**: **lean** is fastest at 2 of 3 points (1.54x the next); no significant winner at "
                    "1 point(s) (the top two within each other's 95% CI).")
    assert findings.best_of([decode(engine="hf")], "engine", "Engine") == []


def test_engine_comparison_is_not_split_by_the_cache_the_engine_implies():
    hf, lean = decode(engine="hf", rate=100.0), decode(engine="lean", rate=150.0)
    hf["cache"], lean["cache"] = "dynamic", "static"
    (line,) = findings.best_of([hf, lean], "engine", "Engine")
    assert "**lean** is fastest, **1.50x** hf" in line


def test_best_mbu_leaves_impossible_values_out_and_asks_for_ceilings():
    c = Ceilings("H100", copy_gbps=3000.0)
    records = [decode(batch=1, mbu=0.62), decode(batch=2, mbu=0.81), decode(batch=4, mbu=1.2)]
    (line,) = findings.best_mbu(records, c)
    assert "**81.0%** of the measured copy bandwidth (100GB/s of 3.00TB/s) at b2" in line
    assert "1 point(s) above the ceiling are left out" in line
    assert "llmbench peak" in findings.best_mbu([decode()], None)[0]


def test_overhead_bound_points_named_by_the_field_that_tells_them_apart():
    records = [decode(engine=e, batch=b, bound="overhead" if e == "hf" or b == 1 else "memory")
               for e in ("hf", "lean") for b in (1, 2, 4, 8)]
    (line,) = findings.overhead(records)
    assert line.startswith("**Overhead**: 5 of 8 decode points are overhead-bound")
    assert "by engine: engine hf: 4 of 4, engine lean: 1 of 4" in line
    assert "no decode point is overhead-bound" in findings.overhead([decode(bound="memory")])[0]


def test_energy_and_throttling():
    records = [decode(batch=b, telemetry={"joules_per_token": 1.0 / b, "power_w_mean": 300.0,
                                          "throttle_reasons": ["sw_power_cap"] if b > 2 else ["gpu_idle"]})
               for b in (1, 2, 4)]
    (line,) = findings.energy(records)
    assert line.startswith("**Energy**: lowest 250mJ per token at b4, drawing 300 W")
    assert "throttled at 1 of 3 points" in line and findings.energy([decode()]) == []


def test_warnings_counted_by_kind():
    over, noisy = decode(), decode(batch=2)
    over["warnings"] = [WARNING_PREFIX + "decode MBU 120% is above ..."]
    noisy["warnings"] = ["noisy: tokens_per_s varies by 9%"]
    failed = make_record(run_id="x", point={"workload": "decode"}, status="oom", error="CUDA out of memory")
    (line,) = findings.warnings([over, noisy], [failed])
    assert line == ("**Warnings**: 1 point(s) above a measured ceiling (impossible: re-run `llmbench peak`); 1 noisy "
                    "point(s) (CV over 5%); 1 point(s) did not complete (1 oom) (listed under Warnings below).")
    assert findings.warnings([decode()], [])[0].startswith("**Warnings**: none")


@pytest.mark.parametrize("spill, expected", [(0, "1 of 1 kernel x arch"), (64, "0 of 1 kernel x arch")])
def test_compile_findings(spill, expected):
    point = {"workload": "kernel-compile", "kernel": "attention.fwd", "arch": "sm_90", "dtype": "bf16",
             "head_dim": 128, "case": "causal", "candidate": "w8"}
    r = make_record(run_id="c", point=point, metrics={"spill_stores_bytes": spill, "spill_loads_bytes": 0,
                                                      "fits": True, "clean": not spill})
    (line,) = findings.compile_findings([r])
    assert expected in line and (("none for attention.fwd sm_90 head dim 128" in line) == bool(spill))
    assert findings.compile_findings([]) == []


def test_kernel_implementations_compared_by_median_time():
    def kernel(impl, seq, ms):
        point = {"workload": "attention", "attn": impl, "dtype": "bf16", "mode": "fwd", "causal": True,
                 "head_dim": 128, "heads": 16, "kv_heads": 16, "seq_len": seq, "batch_size": 4}
        return make_record(run_id="k", point=point, metrics={"time_ms": ms})

    records = [kernel("triton", s, 1.0) for s in (1024, 4096)] + [kernel("sdpa-flash", s, 1.25) for s in (1024, 4096)]
    lines = findings.device([], [], records, [], None)
    assert ("**Fused attention kernel**: **triton** is fastest at 2 of 2 points (1.25x the next).") in lines
    (one,) = findings.best_of(records[::2], "attn", "Fused attention kernel")
    assert one.endswith("**triton** is fastest, **1.25x** sdpa-flash (1.00k vs 800 calls/s).")


def quantized(dtype="bf16", weights=None, kv=None, rate=100.0, batch=1, samples=None, bytes_=None, quality=None,
              impl=None):
    r = decode(dtype, engine="lean", batch=batch, rate=rate, samples=samples, bytes_=bytes_)
    own = "fp32" if dtype == "tf32" else dtype
    r.update(weight_format=weights or own, kv_format=kv or own, weight_impl=impl or ("triton" if weights else None))
    if quality is not None:
        r["quality"] = quality
    return r


QUALITY = {"reference": "bf16 weights and KV cache", "token_agreement": 0.93, "logit_max_abs_err": 0.12,
           "logit_mean_abs_err": 0.01}


def test_quantized_formats_against_their_plain_precision_with_quality():
    rng = np.random.default_rng(2)
    noisy = lambda rate: rate * (1 + 0.01 * rng.standard_normal(10))  # noqa: E731
    records = [quantized("fp32", rate=50.0, samples=noisy(50.0), bytes_=4e9),
               quantized("bf16", rate=100.0, samples=noisy(100.0), bytes_=2e9),
               quantized("bf16", "int8", "int8", rate=170.0, samples=noisy(170.0), bytes_=1.04e9,
                         quality={**QUALITY, "ppl_delta": 0.031}),
               quantized("bf16", kv="fp8", rate=100.5, samples=noisy(100.0), bytes_=1.9e9,
                         quality={**QUALITY, "token_agreement": 0.99})]
    fp8, int8 = findings.formats(records)  # variants by name within a precision
    assert int8.startswith("**bf16 + int8 weights + int8 KV**: **1.70x** bf16's tokens/s (95% CI ")
    assert int8.endswith(", 0.52x the bytes per step; greedy tokens agree 93% (max logit error 0.120, "
                         "perplexity +0.031).")
    assert fp8.startswith("**bf16 + fp8 KV**: no significant difference in tokens/s from bf16 (1.0")
    assert "greedy tokens agree 99%" in fp8
    (plain_line,) = findings.precision(records)  # bf16 vs fp32 on the plain runs only, as before
    assert plain_line.startswith("**bf16 vs fp32**: bf16 decodes **2.00x** as fast as fp32")


def test_formats_over_many_points_use_the_geometric_mean_and_fall_back_to_fp32():
    records = [quantized("fp32", rate=50.0 * b, batch=b, bytes_=4e9) for b in (1, 2, 4)]
    records += [quantized("bf16", "int8", rate=r * b, batch=b, bytes_=1e9) for b, r in ((1, 150.0), (2, 160.0),
                                                                                      (4, 170.0))]
    (line,) = findings.formats(records)  # no plain bf16 ran: against fp32
    assert line.startswith("**bf16 + int8 weights**: **3.20x** fp32's tokens/s (geometric mean over 3 matched "
                           "points, 95% CI ")
    assert "0.25x the bytes per step" in line and "agree" not in line  # no quality block
    assert findings.formats([quantized("bf16", rate=100.0), quantized("fp32", rate=50.0)]) == []  # nothing quantized


def test_older_records_without_formats_give_the_same_findings_as_before():
    records = [decode("bf16", rate=200.0), decode("fp32", rate=100.0)]
    lines = findings.device(records, [], [], [], None)
    assert lines[0].startswith("**bf16 vs fp32**: bf16 decodes **2.00x** as fast as fp32")
    assert findings.formats(records) == [] and not any("KV" in line for line in lines)


def test_tensor_parallel_speedup_over_one_gpu_only_when_significant():
    rng = np.random.default_rng(3)
    noisy = lambda rate: rate * (1 + 0.01 * rng.standard_normal(10))  # noqa: E731

    def tp(width, rate, batch=1):
        r = decode(engine="lean", batch=batch, rate=rate, samples=noisy(rate))
        r.update(tp=width, world_size=width, nodes=1, parallel="tp" if width > 1 else None)
        return r

    (line,) = findings.tensor_parallel([tp(1, 100.0), tp(2, 172.0)])
    assert line.startswith("**Tensor parallel**: TP=2 decodes **1.72x** as fast as one GPU (95% CI ")
    assert line.endswith(", 86% per GPU.")
    (flat,) = findings.tensor_parallel([tp(1, 100.0), tp(2, 100.2)])
    assert "TP=2 shows no significant difference in tokens/s from one GPU (1.00x" in flat
    many = [tp(w, r * b, batch=b) for b in (1, 2, 4) for w, r in ((1, 100.0), (4, 250.0))]
    (line,) = findings.tensor_parallel(many)
    assert "TP=4 decodes **2.50x** as fast as one GPU (geometric mean over 3 matched points" in line
    assert findings.tensor_parallel([decode(), decode(batch=2)]) == []  # no tp at all: nothing to say
