"""The report: headline findings first, every device and precision named, tables with a column for what varies,
every plot written, environment and energy, kernel-compile records, HTML self-contained and checked in a real
browser (headless Chromium; mandatory where LLMBENCH_REQUIRE_BROWSER=1, as in CI)."""

import re

import pytest

from harness import cli
from harness.records import RECORDS_FILE, append_record, make_record
from harness.roofline import derive
from workloads.cost import Cost

GPU = {"device_name": "NVIDIA H100 80GB HBM3", "device_type": "cuda", "host": "gpu-node"}
CPU = {"device_name": "AMD EPYC", "device_type": "cpu", "host": "laptop"}

def decode_cost(c: dict) -> Cost:
    """A decode run's Cost from its record's cost block (decode steps timed by decode_ms, prefill by ttft_ms)."""
    return Cost(c["decode_bytes"], c["decode_flops"], "decode_ms", c,
                {"prefill": Cost(c["prefill_bytes"], c["prefill_flops"], "ttft_ms")})



def decode(env, dtype, batch, prompt, rate):
    elem = 4 if dtype == "fp32" else 2
    metrics = {"tokens_per_s": rate, "ttft_ms": 20.0, "tpot_ms_p50": 1000 / rate, "decode_ms": 63 * 1000 / rate}
    cost = {"decode_bytes": 63 * 2.5e9 * elem / 2, "decode_flops": 63 * 2.5e9, "bytes_per_step": 2.5e9 * elem / 2,
            "prefill_bytes": 2.5e9 * elem / 2, "prefill_flops": 2.5e9 * prompt}
    point = {"workload": "decode", "model": "llama-3.2-1b", "dtype": dtype, "batch_size": batch,
             "prompt_len": prompt, "new_tokens": 64}
    return make_record(run_id="d", point=point, metrics=metrics, cost=cost, derived=derive(decode_cost(cost), metrics),
                       env=env)


def peak(env, workload, dtype, gbps=0.0, tflops=0.0):
    return make_record(run_id="p", point={"workload": workload, "dtype": dtype},
                       derived={"achieved_gbps": gbps, "achieved_tflops": tflops}, env=env)


@pytest.fixture()
def results(tmp_path):
    gpu, cpu = tmp_path / "mn5", tmp_path / "laptop"
    for rec in [peak(GPU, "copy", "fp32", gbps=3000), peak(GPU, "triad", "fp32", gbps=3050),
                peak(GPU, "matmul", "bf16", tflops=750), peak(GPU, "matmul", "fp32", tflops=50)]:
        append_record(gpu / RECORDS_FILE, rec)
    for dtype, base in (("bf16", 300.0), ("fp32", 160.0)):
        for batch in (1, 4):
            for prompt in (128, 1024):
                append_record(gpu / RECORDS_FILE, decode(GPU, dtype, batch, prompt, base * batch / (prompt / 128) ** 0.1))
    append_record(cpu / RECORDS_FILE, decode(CPU, "fp32", 1, 128, 5.0))
    append_record(cpu / RECORDS_FILE, decode(CPU, "bf16", 1, 128, 10.0))
    append_record(cpu / RECORDS_FILE, make_record(run_id="f", point={"workload": "decode", "model": "llama-3.1-8b",
                                                                      "dtype": "fp32"}, status="oom",
                                                  error="CUDA out of memory", env=CPU))
    return gpu, cpu


def test_report_names_every_device_and_precision_and_writes_every_plot(results, tmp_path, capsys):
    out = tmp_path / "report"
    assert cli.main(["report", *map(str, results), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for text in ("NVIDIA H100 80GB HBM3", "AMD EPYC (laptop)", "Decode, bf16", "Decode, fp32", "H100 SXM"):
        assert text in md and text in html
    assert "bf16 decodes" in md and "fewer bytes" in md
    assert "Points that did not complete" in md and "CUDA out of memory" in md
    images = re.findall(r"plots/([\w-]+)\.png", md)
    assert {"roofline-1", "precisions-0", "precisions-1", "batch-1", "context-1", "pareto-1", "devices"} <= set(images)
    for stem in images:
        assert (out / "plots" / f"{stem}.png").stat().st_size > 1000
        assert not (out / "plots" / f"{stem}.svg").exists()  # SVG only with --svg
    assert html.count("data:image/png;base64,") == len(images)
    assert not re.search(r'src="(?!data:)', html) and "http" not in html.replace("http-equiv", "")  # self-contained
    # MBU against the measured 3000 GB/s copy, shown in the GPU's decode table
    gpu = md.split("## NVIDIA H100 80GB HBM3")[1]
    assert "| memory |" in gpu.split("### Decode, bf16")[1]


def test_svg_figures_on_request(results, tmp_path):
    out = tmp_path / "report"
    assert cli.main(["report", str(results[1]), "--out", str(out), "--svg", "--title", "Laptop run"]) == 0
    assert "<svg" in (out / "plots" / "precisions-0.svg").read_text()
    assert (out / "report.md").read_text().startswith("# Laptop run\n")
    assert "<title>Laptop run</title>" in (out / "report.html").read_text()


def attention_record(impl, seq, ms, status="ok", error=None):
    point = {"workload": "attention", "attn": impl, "dtype": "bf16", "batch_size": 16384 // seq, "heads": 16,
             "kv_heads": 16, "seq_len": seq, "head_dim": 128, "causal": True, "mode": "fwd"}
    if status != "ok":
        return make_record(run_id="a", point=point, status=status, error=error, env=GPU)
    flops = 4 * 128 * 16 * (16384 // seq) * seq * (seq + 1) // 2
    return make_record(run_id="a", point=point, metrics={"time_ms": ms}, cost={"flops": flops, "bytes": 1},
                       derived={"achieved_tflops": flops / (ms / 1e3) / 1e12}, env=GPU)


def test_report_compares_attention_implementations(tmp_path):
    out = tmp_path / "runs"
    append_record(out / RECORDS_FILE, peak(GPU, "matmul", "bf16", tflops=750))
    for seq in (1024, 4096):
        append_record(out / RECORDS_FILE, attention_record("triton", seq, 2.0))
        append_record(out / RECORDS_FILE, attention_record("sdpa-flash", seq, 2.5))
        append_record(out / RECORDS_FILE, attention_record("sdpa-cudnn", seq, 0, "skipped", "No available kernel"))
    assert cli.main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "### Attention, bf16, fwd" in md
    header = next(line for line in md.splitlines() if "triton TFLOP/s" in line)
    assert "sdpa-flash TFLOP/s" in header and "triton speed / sdpa-flash" in header
    row = next(line for line in md.splitlines() if line.startswith("| yes | 128 | 16/16 | 4096 |"))
    assert row.rstrip(" |").endswith("1.25")  # 2.5 ms over 2.0 ms
    assert (tmp_path / "rep" / "plots" / "attention-0-bf16.png").exists()
    skipped = [line for line in md.splitlines() if "sdpa-cudnn" in line and "skipped" in line]
    assert len(skipped) == 1 and skipped[0].rstrip(" |").endswith("| 2")  # one line per reason, with a count

def finetune(env, trainer, dtype, world, tflops):
    metrics = {"tokens_per_s": 5e4, "samples_per_s": 12.0, "step_ms_p50": 1000.0, "peak_mem_bytes": 30e9,
               "loss_start": 11.9, "loss_end": 7.25}
    point = {"workload": "finetune", "model": "llama-3.2-1b", "trainer": trainer, "dtype": dtype, "batch_size": 4,
             "seq_len": 512, "grad_accum": 2, "world_size": world}
    return make_record(run_id="t", point=point, metrics=metrics, cost={"flops_per_step": tflops * 1e12},
                       derived={"achieved_tflops": tflops}, env=env)


def test_report_has_a_finetune_table_with_mfu_per_gpu(tmp_path):
    gpu, finetune_only = tmp_path / "gpu", tmp_path / "ft"
    for rec in [peak(GPU, "copy", "fp32", gbps=3000), peak(GPU, "matmul", "bf16", tflops=750),
                peak(GPU, "matmul", "fp32", tflops=50), decode(GPU, "bf16", 1, 128, 300.0),
                finetune(GPU, "lean", "bf16", 2, 300.0), finetune(GPU, "hf", "fp32", 1, 20.0)]:
        append_record(gpu / RECORDS_FILE, rec)
    append_record(finetune_only / RECORDS_FILE, finetune(CPU, "lean", "fp32", 1, 0.05))
    out = tmp_path / "report"
    assert cli.main(["report", str(gpu), str(finetune_only), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    gpu_section = md.split("## NVIDIA H100 80GB HBM3")[1].split("\n## ")[0]
    assert "### Decode" in gpu_section and "### Fine-tune" in gpu_section
    table = gpu_section.split("### Fine-tune")[1]
    assert "Same in every row: model llama-3.2-1b, batch 4, seq len 512, accum 2." in table
    rows = [line for line in table.splitlines() if line.startswith("| hf |") or line.startswith("| lean |")]
    assert len(rows) == 2
    hf, lean = (line.split(" | ") for line in rows)  # sorted by trainer, then precision
    assert hf[1:3] == ["fp32", "1"] and "40.0" in hf and "20.0T" in hf  # 20 of 50 TFLOP/s
    assert lean[1:3] == ["bf16", "2"] and "20.0" in lean  # 300 of 2 GPUs x 750 TFLOP/s
    assert "11.900 -> 7.250" in table and "30.0G" in table
    cpu_section = md.split("## AMD EPYC (laptop)")[1]
    assert "### Fine-tune" in cpu_section and "trainer lean, dtype fp32" in cpu_section


HINT = "re-run `llmbench peak` (ceilings may have been measured under load)"


def test_report_marks_impossible_values_lists_warnings_and_explains_the_bound(results, tmp_path):
    """The fixture's GPU ceilings are 3000 GB/s and 50 TFLOP/s fp32; by hand: fp32 b4 p128 decodes at
    640 tok/s x 5 GB = 3200 GB/s (MBU 106.7%); fp32 prefill at p1024 does 2.5e9 x 1024 FLOPs in 20 ms =
    128 TFLOP/s (MFU 256%); bf16 b1 p128 decodes at 300 x 2.5 GB = 750 GB/s: 25% of the roof, overhead."""
    out = tmp_path / "report"
    assert cli.main(["report", *map(str, results), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "under 30% of the roof at its arithmetic intensity" in md.split("\n## ")[0]  # said once, up front
    gpu = md.split("\n## NVIDIA H100 80GB HBM3")[1].split("\n## ")[0]
    warnings = gpu.split("### Warnings")[1].split("\n### ")[0]
    assert f"Rates above a measured ceiling, impossible: {HINT}." in warnings
    assert ("- decode llama-3.2-1b fp32 b4 p128 n64: decode MBU 106.7% is above the measured copy bandwidth "
            "(3200 GB/s achieved, ceiling 3000 GB/s): impossible") in warnings.splitlines()
    assert "- decode llama-3.2-1b fp32 b1 p1024 n64: prefill MFU 256.0% is above the measured matmul rate" in warnings
    assert "bf16" not in warnings  # every bf16 rate is within its ceilings
    fp32 = gpu.split("### Decode, fp32")[1].split("\n### ")[0]
    assert "Same in every row: model llama-3.2-1b, dtype fp32, new 64." in fp32  # constant fields said once
    header = next(line for line in fp32.splitlines() if line.startswith("| batch |"))
    assert header.startswith("| batch | prompt | tok/s |") and "| MBU (%) |" in header and "model" not in header
    row = next(line for line in fp32.splitlines() if line.startswith("| 4 | 128 |"))
    assert "| 107! |" in row and "| memory |" in row and "| 3.20T |" in row  # 3 significant figures, SI prefix
    row = next(line for line in fp32.splitlines() if line.startswith("| 4 | 1024 |"))
    assert "| 256! |" in row
    assert f"! above its measured ceiling, which is impossible: {HINT}." in fp32
    bf16 = gpu.split("### Decode, bf16")[1].split("\n### ")[0]
    row = next(line for line in bf16.splitlines() if line.startswith("| 1 | 128 |"))
    assert "| 25.0 | 25.0 | overhead |" in row and "!" not in bf16.split("![")[0]  # figures follow the table
    assert "### Warnings" not in md.split("\n## AMD EPYC (laptop)")[1].split("\n## ")[0]  # no ceilings: no claims
    html = (out / "report.html").read_text()
    assert "107!" in html and "Rates above a measured ceiling" in html


def test_report_recomputes_warnings_from_the_ceilings_it_uses(tmp_path):
    """A record written against low ceilings carries a roofline warning; the report's ceilings are higher,
    so the stale warning goes and the runner's noise warning stays."""
    stale = decode(GPU, "bf16", 1, 128, 300.0)  # 750 GB/s
    stale["warnings"] = [(f"roofline: decode MBU 500.0% is above the measured copy bandwidth (750 GB/s achieved, "
                          f"ceiling 150 GB/s): impossible; {HINT}"), "noisy: tokens_per_s varies by 8.0%"]
    runs = tmp_path / "runs"
    for rec in [peak(GPU, "copy", "fp32", gbps=1000), peak(GPU, "matmul", "bf16", tflops=750), stale]:
        append_record(runs / RECORDS_FILE, rec)
    assert cli.main(["report", str(runs), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "500.0%" not in md and "Rates above a measured ceiling" not in md
    assert "- decode llama-3.2-1b bf16 b1 p128 n64: noisy: tokens_per_s varies by 8.0%" in md
    assert "| 75.0 |" in md  # MBU: 750 of 1000 GB/s


def test_report_lists_kernel_warnings(tmp_path):
    runs = tmp_path / "runs"
    append_record(runs / RECORDS_FILE, peak(GPU, "copy", "fp32", gbps=3000))
    append_record(runs / RECORDS_FILE, peak(GPU, "matmul", "bf16", tflops=750))
    fast = attention_record("triton", 4096, 0.1)  # 4 x 128 x 16 x 4 x 4096 x 4097 / 2 FLOPs in 0.1 ms: 1100 TFLOP/s
    append_record(runs / RECORDS_FILE, fast)
    assert cli.main(["report", str(runs), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    tflops = fast["derived"]["achieved_tflops"]
    assert f"attention MFU {100 * tflops / 750:.1f}% is above the measured matmul rate" in md
    assert (tmp_path / "rep" / "plots" / "attention-0-bf16.png").exists()  # with its over-peak point ringed


def test_a_resumed_sweep_point_counts_by_its_final_outcome(tmp_path):
    from harness.report import final_failures

    def attempt(point_id, status, n):
        r = make_record(run_id="s", point={"workload": "decode", "model": "m", "dtype": "bf16"}, status=status,
                        error=None if status == "ok" else "killed", env=CPU)
        return {**r, "sweep": "t", "sweep_point_id": point_id, "sweep_attempt": n}

    records = [attempt("a", "failed", 1), attempt("a", "ok", 2), attempt("b", "oom", 1), attempt("b", "oom", 2)]
    failed, retried = final_failures(records)
    assert [(r["sweep_point_id"], r["sweep_attempt"]) for r in failed] == [("b", 1), ("b", 2)]
    assert retried == 1


# ------------------------------------------------ issue 16: findings, columns that vary, energy, environment,
# kernel-compile records, HTML without raw Markdown, a real browser


def engine_decode(engine, dtype, batch, rate, model="tiny-llama", ci=0.01, telemetry=None, env=GPU):
    """A decode record of ``engine`` whose tokens/s CI is rate x (1 +- ci)."""
    elem = 4 if dtype == "fp32" else 2
    metrics = {"tokens_per_s": rate, "tokens_per_s_ci_low": rate * (1 - ci), "tokens_per_s_ci_high": rate * (1 + ci),
               "ttft_ms": 5.0, "tpot_ms_p50": 1000 * batch / rate, "decode_ms": 15 * 1000 * batch / rate}
    cost = {"decode_bytes": 15 * 1e9 * elem, "decode_flops": 15 * 1e9 * batch, "bytes_per_step": 1e9 * elem,
            "prefill_bytes": 1e9 * elem, "prefill_flops": 1e9 * 128}
    point = {"workload": "decode", "model": model, "engine": engine, "attn": "sdpa", "dtype": dtype,
             "cache": "dynamic" if engine == "hf" else "static", "batch_size": batch, "prompt_len": 128,
             "new_tokens": 16}
    return make_record(run_id=f"run-{engine}", point=point, metrics=metrics, cost=cost,
                       derived=derive(decode_cost(cost), metrics), env=env, telemetry=telemetry)


def compile_record(kernel, arch, head_dim, candidate, spill=0, case="causal", status="ok", occupancy=0.25):
    point = {"workload": "kernel-compile", "kernel": kernel, "arch": arch, "dtype": "bf16", "head_dim": head_dim,
             "case": case, "candidate": candidate, "device": None}
    if status != "ok":
        return make_record(run_id="c", point=point, status=status, error="ptxas fatal: out of resources", env=CPU)
    metrics = {"registers": 255 if spill else 168, "spill_stores_bytes": spill, "spill_loads_bytes": spill // 2,
               "stack_bytes": spill, "shared_bytes": 49152, "programs_per_sm": 2, "warps_per_sm": 16,
               "occupancy": occupancy, "fits": True, "clean": not spill, "compile_s": 1.2}
    return make_record(run_id="c", point=point, metrics=metrics, env=CPU)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two models x three engines x bf16/fp32 x two batch sizes on the GPU, with ceilings, telemetry, SLURM
    ids and a dirty git sha; lean fastest, hf-static and hf within each other's CI at batch 1. Built once for
    the module: (records folder, report folder)."""
    runs = tmp_path_factory.mktemp("sweep")
    env = {**GPU, "torch": "2.13.0", "driver": "550.54", "git_sha": "abcdef1234567890-dirty", "slurm_job_id": "77",
           "slurm_array_task_id": "3"}
    for rec in [peak(env, "copy", "fp32", gbps=3000), peak(env, "matmul", "bf16", tflops=750),
                peak(env, "matmul", "fp32", tflops=50)]:
        append_record(runs / RECORDS_FILE, rec)
    for model, size in (("tiny-llama", 1.0), ("tiny-qwen", 0.5)):
        for dtype, factor in (("bf16", 2.0), ("fp32", 1.0)):
            for batch in (1, 8):
                for engine, speed in (("hf", 100.0), ("hf-static", 101.0 if batch == 1 else 150.0), ("lean", 300.0)):
                    rate = speed * factor * batch * size
                    tel = {"power_w_mean": 300.0, "joules_per_token": 300.0 / rate, "energy_j": 10.0,
                           "sm_clock_mhz": 1980.0, "mem_clock_mhz": 2619.0, "temp_c_max": 61.0,
                           "throttle_reasons": ["sw_power_cap"] if engine == "lean" else []}
                    append_record(runs / RECORDS_FILE, engine_decode(engine, dtype, batch, rate, model, telemetry=tel,
                                                                     env=env))
    out = runs / "report"
    assert cli.main(["report", str(runs), "--out", str(out)]) == 0
    return runs, out


def test_findings_come_first_with_numbers(sweep):
    md = (sweep[1] / "report.md").read_text()
    assert md.index("## Headline findings") < md.index("## NVIDIA H100 80GB HBM3")
    findings = md.split("## Headline findings")[1].split("\n## ")[0]
    assert "bf16 decodes **2.00x** as fast as fp32" in findings and "over 12 matched points" in findings
    assert "2.00x at every point" in findings
    assert "each step moves 2.00x fewer bytes" in findings
    # lean wins everywhere, hf-static beats hf only at batch 8 (at batch 1 their CIs overlap)
    assert "**lean** is fastest at 8 of 8 points (2.00-2.97x the next)" in findings
    assert "**Bandwidth**: the best decode point reaches" in findings
    assert "**Energy**: lowest" in findings and "throttled at 8 of 24 points" in findings
    assert "**Warnings**:" in findings


def test_tables_have_a_column_for_every_varying_field(sweep):
    md = (sweep[1] / "report.md").read_text()
    table = md.split("### Decode, fp32")[1].split("\n### ")[0]
    assert "Same in every row: attention sdpa, dtype fp32, prompt 128, new 16." in table
    header = next(line for line in table.splitlines() if line.startswith("| model |"))
    assert header.startswith("| model | engine | cache | batch | tok/s |")
    rows = [line for line in table.splitlines() if line.startswith("| tiny-")]
    assert len(rows) == 12 and len(set(rows)) == 12  # no two rows alike
    assert rows[0].startswith("| tiny-llama | hf | dynamic | 1 | 100 |")
    assert md.index("### Decode, fp32") < md.index("### Decode, bf16")  # precisions in report order
    energy = md.split("### Energy")[1].split("\n### ")[0]
    assert "| energy (J/token) |" in energy and "| sw_power_cap |" in energy and "| 1.98G |" in energy
    environment = md.split("### Environment")[1].split("\n### ")[0]
    assert "| git sha | abcdef123456 (dirty: uncommitted changes) |" in environment
    assert "| SLURM job | 77 |" in environment and "| SLURM array tasks | 3 |" in environment
    assert "| runs merged | 4 (27 records) |" in environment
    assert "| driver | 550.54 |" in environment
    assert "energy-0.png" in md and "pareto-0.png" in md


def test_kernel_compile_records_get_their_section_and_nothing_else_trips_on_them(tmp_path):
    runs = tmp_path / "runs"
    records = [compile_record("attention.fwd", arch, hd, cand, spill=spill)
               for arch in ("sm_80", "sm_90") for hd in (64, 128)
               for cand, spill in (("BLOCK_M=128 BLOCK_N=64 w8 s3", 0), ("BLOCK_M=128 BLOCK_N=128 w8 s3", 512))]
    records += [compile_record("attention.bwd_dkdv", "sm_90", 128, "BLOCK_M=64 BLOCK_N=64 w8 s2", spill=996),
                compile_record("attention.bwd_dkdv", "sm_90", 128, "BLOCK_M=32 BLOCK_N=64 w4 s2", status="failed")]
    for r in records:
        append_record(runs / RECORDS_FILE, r)
    append_record(runs / RECORDS_FILE, engine_decode("hf", "bf16", 1, 100.0, env=CPU))
    out = tmp_path / "rep"
    assert cli.main(["report", str(runs), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    section = md.split("## Kernel resources (static compile)")[1].split("\n## ")[0]
    assert "- attention.fwd sm_90 head dim 128: spill-free candidate in every case (causal 1/2 clean)" in section
    assert ("- attention.bwd_dkdv sm_90 head dim 128: NO spill-free candidate for causal (least: BLOCK_M=64 "
            "BLOCK_N=64 w8 s2, 1494 B spilled) (causal 0/2 clean)") in section
    assert "![kernel-resources-bf16](plots/kernel-resources-bf16.png)" in section
    row = next(line for line in section.splitlines() if "BLOCK_M=128 BLOCK_N=128 w8 s3" in line and "sm_80" in line)
    assert "| 255 | 512 | 256 | 48.0 | 2 | 25 | spills |" in row
    assert "failed: ptxas fatal" in section
    findings = md.split("## Headline findings")[1].split("\n## ")[0]
    assert "**Kernel resources**: 4 of 5 kernel x arch x head dim combinations" in findings
    assert "none for attention.bwd_dkdv sm_90 head dim 128" in findings
    assert "Points that did not complete" not in md  # the failed compile is in its own section
    assert "## AMD EPYC (laptop)" in md and "### Decode" in md  # the decode record still has its device


def test_a_report_of_compile_records_only_has_no_device_section(tmp_path):
    runs = tmp_path / "runs"
    append_record(runs / RECORDS_FILE, compile_record("decode_attention.split", "sm_100", 64, "BLOCK_N=32 w4 s2"))
    out = tmp_path / "rep"
    assert cli.main(["report", str(runs), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "## Kernel resources (static compile)" in md and "## AMD EPYC" not in md


def test_html_renders_markdown_instead_of_printing_it(sweep):
    page = (sweep[1] / "report.html").read_text()
    assert "<code>llmbench peak</code>" in page and "<strong>lean</strong>" in page and "<li>" in page
    text = re.sub(r"<script>.*?</script>|<style>.*?</style>|<[^>]+>", " ", page, flags=re.S)
    text = re.sub(r"data:image/png;base64,\S+", "", text)
    assert "`" not in text and "**" not in text and not re.search(r"^\s*- \S", text, re.M)
    assert page.count("<details") == page.count("</details>") > 5 and 'data-v="' in page


def test_figures_drawn_in_worker_processes_match_the_serial_ones(tmp_path, monkeypatch):
    from harness import plots, report

    monkeypatch.setattr(report.threading, "active_count", lambda: 1)  # as in `llmbench report`'s own process
    records = [engine_decode(e, "bf16", b, r * b) for e, r in (("hf", 10.0), ("lean", 20.0)) for b in (1, 2, 4)]
    jobs = [(plots.scaling, ("H100", records, "batch_size", "batch", tmp_path / "a", "b")),
            (plots.pareto, ("H100", records, tmp_path / "a", "p")),
            (plots.energy, ("H100", records, tmp_path / "a", "e"))]  # nothing to draw: no telemetry
    assert report.draw(jobs, workers=2) == ["b", "p", None]
    assert report.draw(jobs[:1], workers=1) == ["b"]
    import os

    assert os.getpid() not in report.draw([(os.getpid, ()), (os.getpid, ())], workers=2)  # in worker processes
    assert report.draw([(os.getpid, ())], workers=2) == [os.getpid()]  # one job: no pool
    monkeypatch.setattr(report.threading, "active_count", lambda: 2)  # another thread: never fork
    assert report.draw([(os.getpid, ()), (os.getpid, ())], workers=2) == [os.getpid()] * 2
    assert (tmp_path / "a" / "p.png").stat().st_size > 1000


def browser_or_skip() -> str:
    """Chromium's path; a skip without it, or a failure where LLMBENCH_REQUIRE_BROWSER=1 (CI)."""
    import os

    from harness.report_browser import find_browser

    found = find_browser()
    if not found:
        if os.environ.get("LLMBENCH_REQUIRE_BROWSER") == "1":
            pytest.fail("LLMBENCH_REQUIRE_BROWSER=1 but no Chromium: apt-get install chromium")
        pytest.skip("no Chromium on this machine (Debian package `chromium`)")
    return found


SORT_BY_TOKENS = """(() => {
  const table = Array.from(document.querySelectorAll("main table"))
    .find(t => Array.from(t.tHead.rows[0].cells).some(th => th.textContent === "tok/s"));
  const col = Array.from(table.tHead.rows[0].cells).findIndex(th => th.textContent === "tok/s");
  const values = () => Array.from(table.tBodies[0].rows).map(r => parseFloat(r.cells[col].dataset.v));
  table.tHead.rows[0].cells[col].click();
  const up = values();
  table.tHead.rows[0].cells[col].click();
  return {up, down: values()};
})()"""


def test_the_report_opens_cleanly_in_a_real_browser(sweep, tmp_path):
    """Headless Chromium: no console errors, every image decodes, no raw Markdown in the visible text, and a
    click on a header sorts the table by the numbers (not their text)."""
    from harness.report_browser import check

    browser = browser_or_skip()
    runs = tmp_path / "runs"
    for line in (sweep[0] / RECORDS_FILE).read_text().splitlines():
        (runs / RECORDS_FILE).parent.mkdir(exist_ok=True)
        with open(runs / RECORDS_FILE, "a") as f:
            f.write(line + "\n")
    append_record(runs / RECORDS_FILE, compile_record("attention.fwd", "sm_90", 64, "BLOCK_M=64 w4 s2", spill=64))
    append_record(runs / RECORDS_FILE, make_record(run_id="x", point={"workload": "decode", "model": "big",
                                                                      "dtype": "fp32"}, status="failed",
                                                   error="run `llmbench peak` first **now**", env=GPU))
    out = tmp_path / "rep"
    assert cli.main(["report", str(runs), "--out", str(out)]) == 0
    result = check(out / "report.html", screenshot=tmp_path / "shot.png", script=SORT_BY_TOKENS, browser=browser)
    assert result["errors"] == [] and result["broken"] == [] and result["raw"] == []
    assert result["images"] >= 6 and result["tables"] >= 5
    up, down = result["value"]["up"], result["value"]["down"]
    assert up == sorted(up) and down == sorted(up, reverse=True) and up[0] < up[-1] / 10
    assert (tmp_path / "shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sparse_and_unknown_records_never_crash_the_report(tmp_path):
    """Records with most fields missing (an older schema, another tool's workload, a compile that recorded no
    metrics) are reported as far as they go."""
    runs = tmp_path / "runs"
    for rec in [peak(GPU, "copy", "fp32", gbps=3000), peak(GPU, "matmul", "bf16", tflops=750),
                make_record(run_id="a", point={"workload": "decode", "model": "m", "dtype": "bf16"},
                            metrics={"tokens_per_s": 5.0}, env=GPU),
                make_record(run_id="b", point={"workload": "decode", "model": "m", "dtype": "fp32", "batch_size": 2},
                            metrics={"tokens_per_s": 3.0}, env=GPU),
                make_record(run_id="c", point={"workload": "kernel-compile", "kernel": "k"}, env=CPU),
                make_record(run_id="d", point={"workload": "something-new", "dtype": "bf16"}, metrics={"x": 1},
                            env=GPU)]:
        append_record(runs / RECORDS_FILE, rec)
    assert cli.main(["report", str(runs), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "### Decode" in md and "## Kernel resources (static compile)" in md


def allreduce_peak(world, mib, gbps):
    point = {"workload": "allreduce", "dtype": "fp32", "message_bytes": mib * 2**20, "world_size": world,
             "nodes": 1, "backend": "nccl"}
    return make_record(run_id="ar", point=point, metrics={"time_ms": 1.0}, derived={"achieved_gbps": gbps}, env=GPU)


def test_allreduce_plot_in_the_ceilings_section_only_with_allreduce_records(results, tmp_path):
    gpu = results[0]
    assert cli.main(["report", str(gpu), "--out", str(tmp_path / "without")]) == 0
    assert "allreduce-" not in (tmp_path / "without" / "report.md").read_text()
    for world in (2, 4):
        for mib, gbps in ((1, 30.0), (64, 300.0)):
            append_record(gpu / RECORDS_FILE, allreduce_peak(world, mib, gbps * world / 4))
    assert cli.main(["report", str(gpu), "--out", str(tmp_path / "with")]) == 0
    md = (tmp_path / "with" / "report.md").read_text()
    ceilings = md.split("### Ceilings")[1].split("\n### ")[0]
    assert "![allreduce-0](plots/allreduce-0.png)" in ceilings and "all-reduce bus bandwidth, 4 processes" in ceilings
    assert (tmp_path / "with" / "plots" / "allreduce-0.png").stat().st_size > 1000


def test_a_device_with_only_allreduce_ceilings_gets_its_section(tmp_path):
    runs = tmp_path / "runs"
    for mib, gbps in ((1, 20.0), (16, 90.0)):
        append_record(runs / RECORDS_FILE, allreduce_peak(2, mib, gbps))
    assert cli.main(["report", str(runs), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## NVIDIA H100 80GB HBM3" in md and "plots/allreduce-0.png" in md
    assert "No copy bandwidth measured" in md and "copy bandwidth (GB/s)" not in md


def test_decode_table_shows_the_tensor_parallel_speedup_over_one_gpu(tmp_path):
    runs = tmp_path / "runs"
    append_record(runs / RECORDS_FILE, peak(GPU, "copy", "fp32", gbps=3000))
    for tp, rate in ((1, 100.0), (2, 170.0)):
        r = decode(GPU, "bf16", 1, 128, rate)
        r.update(tp=tp, world_size=tp, nodes=1, parallel="tp" if tp > 1 else None)
        append_record(runs / RECORDS_FILE, r)
    assert cli.main(["report", str(runs), "--out", str(tmp_path / "rep")]) == 0
    table = (tmp_path / "rep" / "report.md").read_text().split("### Decode, bf16")[1]
    header = next(line for line in table.splitlines() if line.startswith("| parallel | TP | GPUs |"))
    assert "| tok/s | speedup over TP=1 (x) |" in header
    row = next(line for line in table.splitlines() if line.startswith("| tp | 2 |"))
    assert "| 170 | 1.70 |" in row


def test_precision_comparison_section_and_finding_for_quantized_formats(results, tmp_path):
    gpu = results[0]
    base = decode(GPU, "bf16", 1, 128, 300.0)
    base.update(weight_format="bf16", kv_format="bf16")
    append_record(gpu / RECORDS_FILE, base)  # a plain bf16 run beside the older records without formats
    q = decode(GPU, "bf16", 1, 128, 510.0)
    q.update(weight_format="int8", kv_format="int8", weight_impl="triton",
             quality={"reference": "bf16 weights and KV cache", "token_agreement": 0.93, "logit_max_abs_err": 0.12,
                      "logit_mean_abs_err": 0.01, "ppl_delta": 0.03})
    q["cost"]["bytes_per_step"] = 1.3e9
    append_record(gpu / RECORDS_FILE, q)
    assert cli.main(["report", str(gpu), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    findings = md.split("## Headline findings")[1].split("\n## ")[0]
    assert "**bf16 vs fp32**" in findings
    assert "**bf16 + int8 weights + int8 KV**: **1.70x** bf16's tokens/s" in findings
    assert "0.52x the bytes per step; greedy tokens agree 93%" in findings
    section = md.split("### Precision comparison")[1].split("\n### ")[0]
    row = next(line for line in section.splitlines() if "bf16 + int8 weights + int8 KV" in line)
    assert "| 93.0 | 0.120 | 0.0300 |" in row
    assert "fp32 unquantized run" in section


def test_a_long_table_shows_its_first_rows_and_writes_every_row_as_csv(results, tmp_path, monkeypatch):
    import csv

    from harness import report

    monkeypatch.setattr(report, "TABLE_ROWS", 3)
    out = tmp_path / "report"
    (out / "tables").mkdir(parents=True)
    (out / "tables" / "table-99.csv").write_text("stale\n")  # an earlier report's, removed
    assert cli.main(["report", str(results[0]), "--out", str(out)]) == 0
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    section = md.split("### Decode, bf16")[1].split("###")[0]
    body = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(body) == 1 + 3  # header and the first three of four rows
    match = re.search(r"The first 3 of 4 rows; every row: \[(tables/table-\d+\.csv)\]", section)
    assert match and f'href="{match[1]}"' in html
    with open(out / match[1], newline="") as handle:
        rows = list(csv.reader(handle))
    assert len(rows) == 1 + 4 and "tok/s" in rows[0]
    assert float(rows[1][rows[0].index("tok/s")]) > 0  # raw values, not the rounded text
    assert not (out / "tables" / "table-99.csv").exists()
