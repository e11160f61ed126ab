"""Runs decode benchmarks: every precision x point, warm-up excluded, one record each.

For each precision the model is built once (same seed, so the same random draw
in every precision), then each point gets ``warmup`` untimed generations and
``repeats`` timed ones with fresh prompts. A point that runs out of memory is
recorded as ``oom`` and one that fails as ``failed``; the others go on. Every
record is appended the moment it is complete. On a GPU that NVML can see, the
timed generations are sampled for power, energy, clocks and throttling (the
record's ``telemetry`` block, see ``harness.telemetry``).
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from harness import roofline, telemetry
from harness.ceilings import Ceilings
from harness.memory import PeakMemory
from harness.records import RECORDS_FILE, append_record, make_record
from harness.timing import StepClock, Timeline, spread
from workloads.decode import DecodePoint, DecodeWorkload, GenerationOptions
from workloads.precision import Precision
from workloads.presets import ModelSpec


@dataclass(frozen=True)
class DecodeJob:
    spec: ModelSpec
    precisions: list[Precision]
    device: torch.device
    points: list[DecodePoint]
    attn: str = "sdpa"
    options: GenerationOptions = GenerationOptions()
    engines: tuple[str, ...] = ("hf",)  # hf, hf-static (generate() with a static cache), lean
    repeats: int = 3
    warmup: int = 1
    seed: int = 0
    out: Path = Path("results/runs")
    ceilings: Ceilings | None = None


def summarize(timelines: list[Timeline], point: DecodePoint) -> dict:
    """Latency and throughput of the timed generations of one point."""
    steps = point.new_tokens - 1
    ttft = [t.ticks_ms[0] for t in timelines]
    decode = [t.ticks_ms[-1] - t.ticks_ms[0] for t in timelines]
    tpot = [b - a for t in timelines for a, b in zip(t.ticks_ms, t.ticks_ms[1:])]
    e2e = [t.end_ms for t in timelines]
    rates = [point.batch_size * steps / (ms / 1e3) for ms in decode]
    return {
        "tokens_per_s": float(np.median(rates)),
        **spread(rates, "tokens_per_s"),
        "ttft_ms": float(np.median(ttft)),
        **spread(ttft, "ttft_ms"),
        **spread(tpot, "tpot_ms"),
        "decode_ms": float(np.median(decode)),
        "e2e_ms": float(np.median(e2e)),
        "e2e_tokens_per_s": point.batch_size * point.new_tokens / (float(np.median(e2e)) / 1e3),
        "repeats": len(timelines),
        "decode_steps_timed": len(tpot),
    }


def engine_options(job: DecodeJob, engine: str) -> GenerationOptions:
    """The generation options an engine runs with: hf-static is generate() with a static cache, and the
    lean engine always decodes over its own static cache."""
    return replace(job.options, cache="static") if engine in ("hf-static", "lean") else job.options


def point_fields(job: DecodeJob, precision: Precision, point: DecodePoint, engine: str = "hf") -> dict:
    return {
        "workload": "decode",
        "model": job.spec.name,
        "model_path": str(job.spec.path) if job.spec.path else None,
        "random_weights": job.spec.random_weights,
        "engine": engine,
        "attn": job.attn,
        "dtype": precision.name,
        "weights_dtype": precision.dtype_name,
        "matmul_precision": precision.matmul_precision,
        "device": str(job.device),
        "batch_size": point.batch_size,
        "prompt_len": point.prompt_len,
        "new_tokens": point.new_tokens,
        "seq_len": point.prompt_len + point.new_tokens,
        **engine_options(job, engine).record_fields(job.device, engine),
        "seed": job.seed,
    }


def measure(workload: DecodeWorkload, point: DecodePoint, job: DecodeJob, bar: tqdm) -> tuple[dict, dict]:
    """Metrics of the timed generations, and the GPU telemetry sampled over them (empty without NVML)."""
    clock = StepClock(job.device)
    peak = PeakMemory(job.device)
    for i in range(job.warmup):
        workload.run(point, workload.prompt(point, -1 - i), clock)
        bar.update()
    peak.reset()
    timelines = []
    with telemetry.sample(job.device) as sampler:
        for i in range(job.repeats):
            timelines.append(workload.run(point, workload.prompt(point, i), clock))
            bar.update()
    metrics = {**summarize(timelines, point), "peak_mem_bytes": peak.read(), "peak_mem_kind": peak.kind}
    return metrics, sampler.summary(tokens=job.repeats * point.batch_size * point.new_tokens)


def describe_failure(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, torch.OutOfMemoryError):
        return "oom", str(exc).splitlines()[0] if str(exc) else "out of memory"
    tail = "".join(traceback.format_exception(exc)[-3:]).strip()
    return "failed", tail


def run_decode(job: DecodeJob, run_id: str, env: dict, progress: bool = True) -> list[dict]:
    """Run the whole job; returns its records (also appended to ``job.out/records.jsonl``)."""
    path = job.out / RECORDS_FILE
    records = []
    total = len(job.precisions) * len(job.engines) * len(job.points) * (job.warmup + job.repeats)
    runs = [(precision, engine) for precision in job.precisions for engine in job.engines]
    with tqdm(total=total, desc="decode", unit="gen", file=sys.stderr, disable=None if progress else True, leave=False) as bar:
        for precision, engine in runs:
            workload = DecodeWorkload(job.spec, precision, job.device, job.attn, engine_options(job, engine),
                                      job.seed, engine="lean" if engine == "lean" else "hf")
            bar.set_description(f"{precision.name} {engine}: building {job.spec.name}")
            try:
                workload.setup()
                build_error = None
            except torch.OutOfMemoryError as exc:
                build_error = exc
            for point in job.points:
                bar.set_description(f"{precision.name} b={point.batch_size} p={point.prompt_len} n={point.new_tokens}")
                fields = point_fields(job, precision, point, engine)
                try:
                    if build_error is not None:
                        raise build_error
                    metrics, tel = measure(workload, point, job, bar)
                    cost = workload.cost(point)
                    record = roofline.with_ceilings(make_record(
                        run_id=run_id, point=fields, metrics=metrics, cost=cost,
                        derived=roofline.derive_decode(metrics, cost), env=env, telemetry=tel,
                    ), job.ceilings)
                    tqdm.write(
                        f"{precision.name} {engine} b={point.batch_size} p={point.prompt_len} n={point.new_tokens}: "
                        f"{metrics['tokens_per_s']:.1f} tok/s, TTFT {metrics['ttft_ms']:.1f} ms, "
                        f"{record['derived']['achieved_gbps']:.1f} GB/s",
                        file=sys.stderr,
                    )
                except Exception as exc:  # recorded, reported, and the next point goes on
                    status, error = describe_failure(exc)
                    record = make_record(run_id=run_id, point=fields, status=status, error=error, env=env)
                    tqdm.write(f"{precision.name} {point}: {status}: {error}", file=sys.stderr)
                    if job.device.type == "cuda":
                        torch.cuda.empty_cache()
                append_record(path, record)
                records.append(record)
            workload.teardown()
    return records
