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
    for text in ("NVIDIA H100 80GB HBM3", "AMD EPYC (laptop)", "### Decode", "| fp32 |", "| bf16 |", "H100 SXM"):
        assert text in md
    for text in ("NVIDIA H100 80GB HBM3", "AMD EPYC (laptop)", "<td>fp32</td>", "<td>bf16</td>", "H100 SXM"):
        assert text in html
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
    assert "| memory |" in gpu.split("### Decode")[1]


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
    rows = [line for line in table.splitlines() if line.startswith("| llama-3.2-1b")]
    assert len(rows) == 2
    hf, lean = (line.split(" | ") for line in rows)  # sorted by model, trainer, precision
    assert hf[1:3] == ["hf", "fp32"] and "40.0" in hf  # 20 of 50 TFLOP/s
    assert lean[1:3] == ["lean", "bf16"] and "20.0" in lean  # 300 of 2 GPUs x 750 TFLOP/s
    assert "11.900 -> 7.250" in table and "30.00" in table
    cpu_section = md.split("## AMD EPYC (laptop)")[1]
    assert "### Fine-tune" in cpu_section and "| lean | fp32 |" in cpu_section


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
    table = gpu.split("### Decode")[1]
    assert "Same in every row: model llama-3.2-1b, new 64." in table  # constant fields said once
    header = next(line for line in table.splitlines() if line.startswith("| dtype |"))
    assert header.startswith("| dtype | batch | prompt | tok/s |") and "| MBU (%) |" in header and "model" not in header
    row = next(line for line in table.splitlines() if line.startswith("| fp32 | 4 | 128 |"))
    assert "| 107! |" in row and "| memory |" in row and "| 3.20T |" in row  # 3 significant figures, SI prefix
    row = next(line for line in table.splitlines() if line.startswith("| fp32 | 4 | 1024 |"))
    assert "| 256! |" in row
    assert f"! above its measured ceiling, which is impossible: {HINT}." in table
    row = next(line for line in table.splitlines() if line.startswith("| bf16 | 1 | 128 |"))
    assert "| 25.0 | 25.0 | overhead |" in row and "!" not in row
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
