"""``harness.suite``: the steps of ``llmbench suite``, running them with failures noted, and the targets
computed from records."""

import json
import sys
from pathlib import Path

import pytest

from harness import suite
from harness.records import make_record, read_records

GPU_ENV = {"device_type": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "host": "n1"}
CPU_ENV = {"device_type": "cpu", "device_name": "AMD EPYC", "host": "vm"}


# ------------------------------------------------------------------------------------------- steps


def names(steps, skipped=None):
    return [s.name for s in steps if skipped is None or bool(s.skip) == skipped]


def test_quick_cpu_skips_what_needs_a_gpu(tmp_path):
    (tmp_path / "tests").mkdir()
    steps = suite.steps(True, "cpu", "cpu", tests=tmp_path / "tests")
    assert names(steps) == ["peak", "decode-dtypes", "decode-engines-sdpa", "decode-engines-triton", "decode-int8",
                            "kernel-attention", "kernel-decode-attention", "kernel-compile", "finetune-bf16",
                            "finetune-fp32", "gpu-tests"]
    assert names(steps, skipped=True) == ["decode-engines-triton", "decode-int8", "gpu-tests"]
    assert {s.skip for s in steps if s.skip} == {suite.NEEDS_GPU}
    for s in steps:
        if not s.pytest and s.name != "kernel-compile":  # compiling for GPUs uses no device
            assert s.argv[s.argv.index("--device") + 1] == "cpu"
    decode = next(s for s in steps if s.name == "decode-dtypes").argv
    assert "--repeats" in decode and decode[decode.index("--model") + 1] == "qwen2.5-0.5b"


def test_full_gpu_runs_the_targets_sizes(tmp_path):
    (tmp_path / "tests").mkdir()
    steps = suite.steps(False, "cuda", "auto", tests=tmp_path / "tests")
    assert not names(steps, skipped=True)
    assert names(steps) == [
        "peak", "decode-dtypes-1b", "decode-engines-sdpa-1b", "decode-engines-triton-1b", "decode-int8-1b",
        "decode-torchao-1b", "decode-dtypes-8b", "decode-engines-sdpa-8b", "decode-engines-triton-8b",
        "decode-int8-8b", "decode-torchao-8b", "kernel-attention", "kernel-decode-attention",
        "kernel-decode-attention-int8", "kernel-compile", "finetune-bf16", "finetune-fp32", "gpu-tests"]
    by = {s.name: s.argv for s in steps}
    assert by["decode-engines-triton-8b"][by["decode-engines-triton-8b"].index("--model") + 1] == "llama-3.1-8b"
    assert "hf,hf-static,lean" in by["decode-engines-sdpa-1b"] and "--batch-size" in by["decode-dtypes-1b"]
    attn = by["kernel-attention"]
    assert attn[attn.index("--head-dim") + 1] == "128" and attn[attn.index("--seq-len") + 1] == "4096,8192,16384"
    assert attn[attn.index("--mode") + 1] == "fwd,bwd"
    assert by["gpu-tests"][:4] == ["-m", "pytest", "-m", "gpu"]


def test_gpu_tests_need_the_tests_folder(tmp_path):
    steps = suite.steps(True, "cuda", tests=tmp_path / "absent")
    assert "no " in steps[-1].skip and steps[-1].name == "gpu-tests"
    assert not [s for s in steps[:-1] if s.skip]


def test_every_step_parses_with_the_real_parser(tmp_path):
    from harness.cli import build_parser

    parser = build_parser()
    for quick in (True, False):
        for s in suite.steps(quick, "cuda", "cuda", tests=tmp_path):
            if not s.pytest:
                parser.parse_args([*s.argv, "--out", str(tmp_path)])


def test_command_lines(tmp_path):
    step = suite.Step("peak", ["peak", "--device", "cpu"], 1)
    assert suite.command(step, tmp_path, "py") == ["py", "-m", "harness", "peak", "--device", "cpu", "--out",
                                                   str(tmp_path)]
    tests = suite.Step("gpu-tests", ["-m", "pytest", "-m", "gpu", "tests"], 1, pytest=True)
    assert suite.command(tests, tmp_path, "py") == ["py", "-m", "pytest", "-m", "gpu", "tests"]


def test_device_slug():
    assert suite.device_slug("NVIDIA H200") == "h200"
    assert suite.device_slug("NVIDIA H100 80GB HBM3") == "h100-80gb-hbm3"
    assert suite.device_slug("AMD EPYC 7B13 64-Core Processor") == "amd-epyc-7b13-64-core-processor"
    assert suite.device_slug("  ") == "device"


def test_progress_line_estimates_what_is_left():
    todo = [suite.Step("a", [], 100), suite.Step("b", [], 50), suite.Step("c", [], 30, skip="needs a GPU"),
            suite.Step("d", [], 20)]
    assert suite.progress_line(0, todo, 0, 0, 0) == "[suite 1/4] a: 0s so far, about 2m50s left"
    # the first step took twice its estimate: what is left is scaled
    assert suite.progress_line(1, todo, 200, 100, 200) == "[suite 2/4] b: 3m20s so far, about 2m20s left"


# --------------------------------------------------------------------------------------------- run


def fake_runner(codes: dict, out: Path, writes: dict | None = None):
    calls = []

    def runner(cmd, log):
        name = log.stem
        calls.append(cmd)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("output\n")
        for _ in range((writes or {}).get(name, 0)):
            with open(out / "records.jsonl", "a") as f:
                f.write(json.dumps(make_record(run_id="r", point={"workload": "decode"}, status="oom")) + "\n")
        return codes.get(name, 0)

    return runner, calls


def test_a_failing_step_is_recorded_and_the_suite_goes_on(tmp_path):
    todo = [suite.Step("peak", ["peak"], 1, workload="peak"), suite.Step("decode", ["decode"], 1, workload="decode"),
            suite.Step("oom", ["decode"], 1, workload="decode"), suite.Step("gpu", ["x"], 1, skip="needs a GPU"),
            suite.Step("last", ["finetune"], 1, workload="finetune")]
    runner, calls = fake_runner({"decode": 3, "oom": 1}, tmp_path, writes={"oom": 2})
    said = []
    outcomes = suite.run(todo, tmp_path, python="py", env=CPU_ENV, runner=runner, say=said.append)
    assert [o.status for o in outcomes] == ["ok", "failed", "failed", "skipped", "ok"]
    assert [c[3] for c in calls] == ["peak", "decode", "decode", "finetune"]  # the rest went on
    assert all(c[-2:] == ["--out", str(tmp_path)] for c in calls)
    assert outcomes[1].returncode == 3 and "exit code 3" in outcomes[1].notes[0]
    records = read_records([tmp_path / "records.jsonl"])
    failed = [r for r in records if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["suite_step"] == "decode" and "exited 3" in failed[0]["error"]
    assert failed[0]["env"]["device_type"] == "cpu"
    assert outcomes[2].records == 2 and sum(r["status"] == "oom" for r in records) == 2  # its own records say so
    assert any("skipped (needs a GPU)" in line for line in said)
    assert any(line.startswith("[suite 5/5] last:") and "left" in line for line in said)


def test_a_step_that_cannot_start_is_failed(tmp_path):
    def runner(cmd, log):
        raise FileNotFoundError("no such interpreter")

    outcomes = suite.run([suite.Step("peak", ["peak"], 1, workload="peak")], tmp_path, runner=runner, say=lambda s: 0)
    assert outcomes[0].status == "failed" and outcomes[0].returncode == 127


def test_run_process_tees_to_the_log(tmp_path, capfd):
    code = suite.run_process([sys.executable, "-c", "print('hello'); raise SystemExit(4)"], tmp_path / "l" / "x.log")
    assert code == 4
    assert "hello" in (tmp_path / "l" / "x.log").read_text() and "hello" in capfd.readouterr().out


# ----------------------------------------------------------------------------------------- targets


def rec(workload, env=GPU_ENV, **fields):
    metrics, derived, cost = fields.pop("metrics", {}), fields.pop("derived", {}), fields.pop("cost", {})
    return make_record(run_id="r", point={"workload": workload, **fields}, metrics=metrics, derived=derived,
                       cost=cost, env=env)


def copy(gbps, env=GPU_ENV):
    return rec("copy", env, dtype="fp32", derived={"achieved_gbps": gbps})


def decode(engine, tps, mbu, model="llama-3.1-8b", params=8.03e9, env=GPU_ENV, attn="sdpa"):
    return rec("decode", env, model=model, engine=engine, attn=attn, dtype="bf16", batch_size=1, prompt_len=512,
               new_tokens=128, metrics={"tokens_per_s": tps}, derived={"mbu": mbu}, cost={"params": params})


def attention(impl, mode, ms, tflops, seq=4096):
    return rec("attention", impl=impl, attn=impl, dtype="bf16", batch_size=4, heads=16, kv_heads=16, seq_len=seq,
               head_dim=128, causal=True, mode=mode, metrics={"time_ms": ms}, derived={"achieved_tflops": tflops})


def dattn(impl, ms, gbps, batch=64, context=32768, mbu=None):
    return rec("decode-attention", impl=impl, attn=impl, dtype="bf16", batch_size=batch, heads=32, kv_heads=8,
               context=context, head_dim=128, metrics={"time_ms": ms},
               derived={"achieved_gbps": gbps, **({"mbu": mbu} if mbu is not None else {})})


def by_what(rows):
    return {t.what: t for t in rows}


def test_targets_met():
    records = [copy(3000), decode("hf", 20, 0.2), decode("lean", 100, 0.9),
               decode("lean", 300, 0.88, model="llama-3.2-1b", params=1.24e9),
               attention("triton", "fwd", 1.0, 500), attention("sdpa-flash", "fwd", 1.1, 455),
               attention("triton", "bwd", 2.0, 400), attention("sdpa-flash", "bwd", 1.8, 440),
               dattn("triton", 1.0, 2700), dattn("triton-paged", 1.05, 2570), dattn("sdpa", 5.0, 540),
               dattn("triton", 0.1, 2000, batch=1), dattn("sdpa", 0.3, 700, batch=1)]
    t = by_what(suite.targets(records))
    assert t["decode bandwidth (MBU)"].verdict == suite.MET
    assert "llama-3.1-8b: 90.0%" in t["decode bandwidth (MBU)"].measured
    assert t["lean engine vs generate()"].verdict == suite.MET and t["lean engine vs generate()"].measured.startswith("5.00x")
    assert t["fused attention fwd vs SDPA flash"].verdict == suite.MET
    assert t["fused attention fwd TFLOP/s"].verdict == suite.MET
    assert t["fused attention bwd vs SDPA flash"].verdict == suite.MET  # 0.9x >= 0.8x
    assert t["decode attention % of copy bandwidth"].verdict == suite.MET  # 2700 of 3000 GB/s
    assert t["decode attention % of copy bandwidth"].measured.startswith("90.0%")
    assert t["paged vs contiguous decode attention"].verdict == suite.MET
    assert t["decode attention vs SDPA"].verdict == suite.MET and t["decode attention vs SDPA"].measured.startswith("3.00x")
    peak = t["peak memory bandwidth"]
    assert peak.verdict == suite.MET and "89.6% of spec 3350 GB/s" in peak.measured
    for what in ("int8 weights decode", "multi-GPU TP decode", "kernel resources"):
        assert t[what].verdict == suite.NOT_MEASURED


def test_multi_gpu_targets_from_ddp_and_tp_records():
    def ft(world, tps, env=GPU_ENV):
        return rec("finetune", env, model="llama-3.2-1b", trainer="lean", dtype="bf16", batch_size=4, seq_len=512,
                   grad_accum=1, world_size=world, parallel="ddp" if world > 1 else None,
                   metrics={"tokens_per_s": tps * world, "tokens_per_s_per_process": tps})

    def tp(n, tps):
        r = decode("lean", tps, 0.8)
        return {**r, "tp": n, "world_size": n, "parallel": "tp" if n > 1 else None,
                "cost": {"params": 8.03e9 / n}}

    t = by_what(suite.targets([ft(1, 1000), ft(8, 930), ft(2, 990), tp(1, 100), tp(2, 180)]))
    assert t["multi-GPU DDP fine-tune"].verdict == suite.MET
    assert t["multi-GPU DDP fine-tune"].measured.startswith("93.0% at 8 GPUs")
    assert t["multi-GPU TP decode"].verdict == suite.MET and t["multi-GPU TP decode"].measured.startswith("1.80x")
    t = by_what(suite.targets([ft(1, 1000), ft(8, 800), tp(1, 100), tp(2, 150)]))
    assert t["multi-GPU DDP fine-tune"].verdict == suite.NOT_MET and t["multi-GPU TP decode"].verdict == suite.NOT_MET
    two_only = by_what(suite.targets([ft(1, 1000), ft(2, 990)]))["multi-GPU DDP fine-tune"]
    assert two_only.verdict == suite.NOT_MEASURED and "at 2 GPUs" in two_only.measured  # the target is 8
    cpu = by_what(suite.targets([ft(1, 1000, CPU_ENV), ft(8, 990, CPU_ENV)]))["multi-GPU DDP fine-tune"]
    assert cpu.verdict == suite.NOT_MEASURED


def test_int8_weights_target_pairs_int8_with_bf16_lean_at_the_same_point():
    def lean(tps, weights, impl=None, model="llama-3.1-8b", params=8.03e9, env=GPU_ENV):
        r = decode("lean", tps, 0.8, model=model, params=params, env=env, attn="triton")
        return {**r, "weight_format": weights, "weight_impl": impl, "kv_format": "bf16"}

    def target(records):
        return by_what(suite.targets(records))["int8 weights decode"]

    q = {**lean(170, "int8", "triton"), "quality": {"token_agreement": 0.9}}
    met = target([lean(100, "bf16"), q, lean(400, "int8", "torchao")])  # torchao's own speed is not ours
    assert met.verdict == suite.MET and met.measured.startswith("1.70x (llama-3.1-8b, KV bf16; greedy tokens agree 90.0%")
    small = [lean(300, "bf16", model="llama-3.2-1b", params=1.24e9),
             lean(600, "int8", "triton", model="llama-3.2-1b", params=1.24e9)]
    assert target([lean(100, "bf16"), lean(150, "int8", "triton"), *small]).verdict == suite.NOT_MET  # 8B decides
    assert target([lean(100, "bf16", env=CPU_ENV), lean(170, "int8", "triton", env=CPU_ENV)]).verdict == \
        suite.NOT_MEASURED
    assert "no int8-weight" in target([lean(100, "bf16")]).measured


def test_int8_kv_target_from_quantized_decode_attention_records():
    int8 = {**dattn("triton", 1.0, 2700), "kv_dtype": "int8"}
    t = by_what(suite.targets([copy(3000), int8]))["int8 KV decode attention"]
    assert t.verdict == suite.MET and t.measured.startswith("90.0% (2700 GB/s stored")
    slow = {**dattn("triton", 1.0, 2000), "kv_dtype": "int8"}
    assert by_what(suite.targets([copy(3000), slow]))["int8 KV decode attention"].verdict == suite.NOT_MET
    plain = by_what(suite.targets([copy(3000), dattn("triton", 1.0, 2700)]))["int8 KV decode attention"]
    assert plain.verdict == suite.NOT_MEASURED and "no int8-cache" in plain.measured


def _compiled(arch, case, clean=True, status="ok"):
    return {"workload": "kernel-compile", "kernel": "attention.fwd", "arch": arch, "dtype": "bf16", "head_dim": 128,
            "case": case, "status": status, "metrics": {"clean": clean} if status == "ok" else {}}


def test_kernel_resources_target_from_compile_records():
    def target(records):
        return by_what(suite.targets(records))["kernel resources"]

    clean = [_compiled("sm_80", "causal"), _compiled("sm_90", "causal")]
    assert target(clean).verdict == suite.MET and target(clean).measured == "2 of 2 candidates clean (sm_80, sm_90)"
    one_spills = [*clean, _compiled("sm_90", "causal", clean=False)]
    assert target(one_spills).verdict == suite.NOT_MET and target(one_spills).measured.startswith("2 of 3")
    none_clean = [*clean, _compiled("sm_90", "mask", clean=False), _compiled("sm_90", "mask", status="failed")]
    assert target(none_clean).verdict == suite.NOT_MET
    assert "1 kernel x arch x head dim x case without any, e.g. attention.fwd sm_90 bf16 d128 mask" in \
        target(none_clean).measured


def test_targets_not_met():
    records = [copy(3000), decode("hf", 20, 0.5), decode("lean", 60, 0.7),
               attention("triton", "fwd", 1.2, 380), attention("sdpa-flash", "fwd", 1.0, 456),
               dattn("triton", 1.0, 2000), dattn("triton-paged", 1.5, 1333), dattn("sdpa", 1.5, 1333),
               dattn("triton", 0.2, 1000, batch=1), dattn("sdpa", 0.3, 700, batch=1)]
    t = by_what(suite.targets(records))
    for what in ("decode bandwidth (MBU)", "lean engine vs generate()", "fused attention fwd vs SDPA flash",
                 "fused attention fwd TFLOP/s", "decode attention % of copy bandwidth",
                 "paged vs contiguous decode attention", "decode attention vs SDPA"):
        assert t[what].verdict == suite.NOT_MET, what
    assert t["fused attention bwd vs SDPA flash"].verdict == suite.NOT_MEASURED  # no bwd records


def test_targets_not_measured_on_a_cpu_or_without_records():
    cpu = [copy(50, CPU_ENV), decode("hf", 20, 0.9, env=CPU_ENV), decode("lean", 100, 0.9, env=CPU_ENV),
           dattn("triton", 1.0, 40)]
    cpu[-1]["env"] = CPU_ENV
    t = by_what(suite.targets(cpu))
    assert t["peak memory bandwidth"].verdict == suite.MET and "no datasheet entry" in t["peak memory bandwidth"].measured
    others = [r for what, r in t.items() if what != "peak memory bandwidth"]
    assert {r.verdict for r in others} == {suite.NOT_MEASURED}
    assert "CPU" in t["lean engine vs generate()"].measured
    empty = suite.targets([])
    assert {r.verdict for r in empty} == {suite.NOT_MEASURED} and len(empty) == 14


def test_small_models_and_shapes_do_not_count():
    records = [copy(3000), decode("lean", 100, 0.95, model="tiny-llama", params=1e5),
               attention("triton", "fwd", 1.0, 500, seq=512), attention("sdpa-flash", "fwd", 1.1, 455, seq=512)]
    t = by_what(suite.targets(records))
    assert t["decode bandwidth (MBU)"].verdict == suite.NOT_MEASURED
    assert t["fused attention fwd TFLOP/s"].verdict == suite.NOT_MEASURED


def test_failed_records_are_ignored():
    bad = decode("lean", 100, 0.95)
    bad["status"] = "failed"
    assert by_what(suite.targets([bad]))["decode bandwidth (MBU)"].verdict == suite.NOT_MEASURED


@pytest.mark.parametrize("with_steps", [False, True])
def test_targets_markdown(with_steps):
    rows = suite.targets([])
    outcomes = [suite.Outcome(suite.Step("peak", ["peak"], 1), "failed", 2, 3.0, 0, notes=["exit code 2"]),
                suite.Outcome(suite.Step("gpu", ["x"], 1, skip="needs a GPU"), "skipped", notes=["needs a GPU"])]
    md = suite.targets_markdown(rows, outcomes if with_steps else None)
    lines = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(lines) == 15 + (3 if with_steps else 0)
    assert "| int8 weights decode | no lean bf16 batch-1 decode records of a 1-8B model" in md
    assert ("| peak | failed | 2 | 3s | 0 | exit code 2 |" in md) == with_steps


def test_the_sweep_file_is_the_full_gpu_suite(tmp_path):
    """slurm/examples/suite.toml holds the same llmbench command lines as the full suite on a GPU."""
    from harness.cli import build_parser
    from harness.sweep import from_dict, tomllib

    root = Path(__file__).resolve().parents[2]
    data = tomllib.loads((root / "slurm" / "examples" / "suite.toml").read_text())
    sweep = from_dict(data, build_parser(), out=tmp_path)
    points = [sorted(p.argv) for p in sweep.points]
    steps = [sorted(w for w in s.argv if w not in ("--device", "auto"))
             for s in suite.steps(False, "cuda", "auto", tests=tmp_path) if not s.pytest]
    assert points == steps
