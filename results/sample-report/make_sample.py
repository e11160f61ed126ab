"""Fabricated sample records and the report made from them: for the README screenshot and the
10,000-record scale benchmark of ``llmbench report``. NOT a measurement.

Every number written here is invented (plausible for an H100 and two Llama sizes, three decode engines,
bf16 and fp32, batch 1-64, with telemetry, ceilings and static kernel-compile records), and the report
made from them is titled as a sample. Nothing here may be quoted as a result.

    python results/sample-report/make_sample.py OUT            # sample records + report + screenshot
    python results/sample-report/make_sample.py OUT --records 10000 --no-screenshot   # scale benchmark
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from harness.records import RECORDS_FILE, make_record  # noqa: E402
from harness.roofline import derive  # noqa: E402
from workloads.cost import Cost  # noqa: E402

TITLE = "llmbench report: SAMPLE with fabricated values (not a measurement)"
ENV = {"device_name": "NVIDIA H100 80GB HBM3", "device_type": "cuda", "device_count": 1, "driver": "550.54.15",
       "cuda": "12.4", "torch": "2.13.0+cu124", "transformers": "5.23.0", "triton": "3.9.0", "python": "3.11.7",
       "llmbench": "0.1.0", "host": "as01r1b05", "git_sha": "0123456789abcdef0123456789abcdef01234567",
       "slurm_job_id": "4012345", "slurm_array_job_id": "4012340", "slurm_job_partition": "acc"}
MODELS = {"llama-3.2-1b": (1.24e9, 16, 8, 64), "llama-3.1-8b": (8.03e9, 32, 8, 128)}  # params, layers, kv heads, hd
ENGINES = {"hf": (0.42, 9e-3), "hf-static": (0.62, 4e-3), "lean": (0.83, 1.2e-3)}  # bandwidth share, overhead s
COPY_GBPS, MATMUL = 3000.0, {"bf16": 720.0, "fp32": 51.0}


def _samples(rng, value: float, cv: float, n: int = 10) -> list[float]:
    return list(value * (1 + cv * rng.standard_normal(n)))


def decode_record(rng, model: str, engine: str, dtype: str, batch: int, prompt: int, new: int, run: str,
                  task: int, spec=None) -> dict:
    params, layers, kv_heads, head_dim = spec or MODELS[model]
    elem = 2 if dtype == "bf16" else 4
    kv_token = 2 * layers * kv_heads * head_dim * elem
    weights = params * elem
    kv_read = batch * (prompt + new / 2) * kv_token
    step_bytes = weights + kv_read + batch * kv_token
    share, overhead = ENGINES[engine]
    step_s = step_bytes / (share * COPY_GBPS * 1e9) + overhead * (1.6 if dtype == "fp32" else 1)
    step_s *= 1 + 0.02 * rng.standard_normal()
    rate = batch / step_s
    samples = _samples(rng, rate, 0.012 if engine != "hf" else 0.06)
    prefill_flops = 2 * params * batch * prompt
    ttft_s = prefill_flops / (0.55 * MATMUL[dtype] * 1e12) + overhead * 3
    steps = new - 1
    cost_block = {"bytes_per_step": step_bytes, "flops_per_step": 2 * params * batch,
                  "weight_bytes_per_step": weights, "kv_read_bytes_per_step": kv_read,
                  "kv_write_bytes_per_step": batch * kv_token, "decode_steps": steps,
                  "decode_bytes": step_bytes * steps, "decode_flops": 2 * params * batch * steps,
                  "prefill_bytes": weights + batch * prompt * kv_token, "prefill_flops": prefill_flops,
                  "params": params, "kv_bytes_per_token": kv_token}
    metrics = {"tokens_per_s": float(np.median(samples)), "tokens_per_s_ci_low": min(samples[2:8]),
               "tokens_per_s_ci_high": max(samples[2:8]), "tokens_per_s_cv": float(np.std(samples) / rate),
               "ttft_ms": ttft_s * 1e3, "tpot_ms_p50": step_s * 1e3, "tpot_ms_p90": step_s * 1.08e3,
               "decode_ms": step_s * steps * 1e3, "repeats": len(samples), "samples": {"tokens_per_s": samples},
               "peak_mem_bytes": weights + batch * (prompt + new) * kv_token + 0.6e9}
    cost = Cost(cost_block["decode_bytes"], cost_block["decode_flops"], "decode_ms", cost_block,
                {"prefill": Cost(cost_block["prefill_bytes"], prefill_flops, "ttft_ms")})
    power = 180 + 480 * min(1.0, share * 1.05) * (0.6 if batch == 1 else 1)
    tokens = batch * new * len(samples)
    telemetry = {"power_w_mean": power, "power_w_max": power * 1.12, "energy_j": power * tokens / rate,
                 "joules_per_token": power / rate, "tokens_per_joule": rate / power,
                 "sm_clock_mhz": 1980 - (120 if power > 600 else 0), "sm_clock_mhz_min": 1755,
                 "mem_clock_mhz": 2619, "temp_c_max": 52 + power / 20,
                 "throttle_reasons": ["sw_power_cap"] if power > 600 else []}
    point = {"workload": "decode", "model": model, "engine": engine, "attn": "sdpa", "dtype": dtype,
             "cache": "static" if engine != "hf" else "dynamic", "device": "cuda:0", "batch_size": batch,
             "prompt_len": prompt, "new_tokens": new, "seq_len": prompt + new}
    warnings = []
    if metrics["tokens_per_s_cv"] > 0.05:
        warnings.append(f"noisy: tokens_per_s varies by {100 * metrics['tokens_per_s_cv']:.1f}% (CV over "
                        f"{len(samples)} samples); a quieter machine or more repeats narrow it")
    env = {**ENV, "slurm_array_task_id": str(task)}
    return make_record(run_id=run, point=point, metrics=metrics, cost=cost_block, derived=derive(cost, metrics),
                       env=env, telemetry=telemetry, warnings=warnings)


def ceiling_records() -> list[dict]:
    out = [make_record(run_id="sample-peak", point={"workload": w, "dtype": "fp32", "device": "cuda:0"},
                       metrics={"time_ms": 1.0}, derived={"achieved_gbps": g}, env=ENV)
           for w, g in (("copy", COPY_GBPS), ("triad", COPY_GBPS * 0.985))]
    out += [make_record(run_id="sample-peak", point={"workload": "matmul", "dtype": d, "device": "cuda:0",
                                                     "m": 8192, "n": 8192, "k": 8192},
                        metrics={"time_ms": 1.0}, derived={"achieved_tflops": t}, env=ENV)
            for d, t in MATMUL.items()]
    return out


COMPILES = {  # kernel: (cases, candidates)
    "attention.fwd": (("causal", "noncausal"), ("BLOCK_M=128 BLOCK_N=64 w8 s3", "BLOCK_M=128 BLOCK_N=128 w8 s3",
                                                 "BLOCK_M=64 BLOCK_N=64 w4 s4")),
    "attention.bwd_dkdv": (("causal",), ("BLOCK_M=32 BLOCK_N=128 w8 s2", "BLOCK_M=64 BLOCK_N=64 w8 s2",
                                         "BLOCK_M=64 BLOCK_N=128 w8 s2")),
    "attention.bwd_dq": (("causal",), ("BLOCK_M=64 BLOCK_N=64 w4 s3", "BLOCK_M=128 BLOCK_N=32 w8 s2")),
    "decode_attention.split": (("contiguous", "paged"), ("BLOCK_N=32 w4 s2", "BLOCK_N=64 w4 s3",
                                                         "BLOCK_N=64 w8 s3")),
}
MAX_WARPS = {"sm_80": 64, "sm_90": 64, "sm_100": 64}


def compile_records(rng) -> list[dict]:
    out = []
    env = {"device_name": "AMD EPYC", "device_type": "cpu", "host": "ci-runner", "triton": "3.9.0",
           "python": "3.11.7", "git_sha": ENV["git_sha"]}
    for kernel, (cases, candidates) in COMPILES.items():
        for arch in MAX_WARPS:
            for head_dim in (64, 128):
                for case in cases:
                    for cand in candidates:
                        warps = int(cand.split(" w")[1].split()[0])
                        big = ("128" in cand.split(" w")[0]) + (head_dim == 128) + (kernel == "attention.bwd_dkdv")
                        regs = min(255, 96 + 48 * big + int(rng.integers(0, 24)))
                        if kernel == "attention.bwd_dkdv" and head_dim == 128:
                            regs = 255
                        spill = 0 if regs < 255 or (kernel == "attention.fwd" and arch != "sm_100" and warps == 8) \
                            else int(rng.integers(2, 60)) * 16 * (1 + (arch == "sm_100"))
                        if kernel == "decode_attention.split" and case == "paged" and "64" in cand and \
                                head_dim == 128:
                            spill = int(rng.integers(4, 20)) * 16
                        shared = (32 + 32 * big) * 1024
                        programs = max(1, min(65536 // (regs * 32 * warps), 228 * 1024 // shared))
                        occ = programs * warps / MAX_WARPS[arch]
                        point = {"workload": "kernel-compile", "kernel": kernel, "arch": arch, "dtype": "bf16",
                                 "head_dim": head_dim, "case": case, "candidate": cand, "device": None}
                        metrics = {"registers": regs, "spill_stores_bytes": spill, "spill_loads_bytes": spill,
                                   "stack_bytes": spill, "shared_bytes": shared, "programs_per_sm": programs,
                                   "warps_per_sm": programs * warps, "occupancy": min(1.0, occ), "fits": True,
                                   "clean": spill == 0, "compile_s": float(rng.uniform(0.4, 3.0))}
                        out.append(make_record(run_id="sample-compile", point=point, metrics=metrics, env=env))
    return out


def write(out: Path, records: int | None = None) -> Path:
    """The sample records in ``out/records.jsonl``: the README sample, or about ``records`` of them
    (more models and prompt lengths) for the scale benchmark."""
    import json

    rng = np.random.default_rng(0)
    out.mkdir(parents=True, exist_ok=True)
    models, prompts = dict(MODELS), (128, 1024)
    if records:  # invented model sizes and prompt lengths until the count is reached
        per = len(ENGINES) * 2 * 7
        combos = math.ceil(records / per)
        prompts = tuple(128 * 2 ** (i % 6) + 64 * (i // 6) for i in range(12))
        n_models = math.ceil(combos / len(prompts))
        models = {f"sample-model-{i:02d}": (0.5e9 * (i + 1), 16 + i, 8, 64 + 64 * (i % 2)) for i in range(n_models)}
    lines = [*ceiling_records(), *compile_records(rng)]
    task = 0
    for model, spec in models.items():
        for prompt in prompts:
            for engine in ENGINES:
                for dtype in ("bf16", "fp32"):
                    for batch in (1, 2, 4, 8, 16, 32, 64):
                        task += 1
                        if model == "llama-3.1-8b" and dtype == "fp32" and batch == 64 and prompt == 1024:
                            point = {"workload": "decode", "model": model, "engine": engine, "attn": "sdpa",
                                     "dtype": dtype, "batch_size": batch, "prompt_len": prompt, "new_tokens": 128}
                            lines.append(make_record(run_id="sample-decode", point=point, status="oom",
                                                     error="CUDA out of memory. Tried to allocate 8.00 GiB",
                                                     env={**ENV, "slurm_array_task_id": str(task)}))
                            continue
                        lines.append(decode_record(rng, model, engine, dtype, batch, prompt, 128,
                                                   f"sample-decode-{engine}", task, spec))
    path = out / RECORDS_FILE
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--records", type=int, default=None, help="about this many decode records (benchmark)")
    parser.add_argument("--no-screenshot", action="store_true")
    args = parser.parse_args()
    from harness import report

    path = write(args.out, args.records)
    n = sum(1 for _ in path.open())
    start = time.perf_counter()
    _, html = report.build([path], args.out / "report", title=TITLE)
    print(f"{n} records: report built in {time.perf_counter() - start:.2f} s -> {html}")
    if not args.no_screenshot:
        from harness import report_browser

        shot = Path(__file__).parent / "sample-report.png"
        result = report_browser.check(html, screenshot=shot, screenshot_height=3000)
        from PIL import Image  # comes with matplotlib; 256 colours keep the committed PNG small

        Image.open(shot).convert("RGB").quantize(256).save(shot, optimize=True)
        print(f"screenshot: {shot}; problems: {report_browser.problems(result) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
