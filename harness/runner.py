"""The one loop that turns workloads into timed records.

Every measurement of llmbench goes through ``run``: decode generations, training
runs, kernel microbenchmarks and the ceilings alike (the contract is in
``workloads.workload``). For each workload: ``setup()`` once, then for each of
its points the timed region, in the workload's precision's matmul mode:

- ``Calls``: ``harness.timing.bench`` (``triton.testing.do_bench`` on a GPU:
  CUDA events, L2 flushed between calls; warm-up calls excluded); the metrics are
  the median time per call, its p10/p50/p90 and the number of calls;
- ``Runs``: ``warmup`` untimed runs, then ``repeats`` timed runs on a step clock,
  under the GPU telemetry sampler; the workload summarizes the timelines.

Peak memory covers the timed work only. The cost model's bytes and FLOPs become
rates in ``harness.roofline``, and MBU/MFU/bound when ceilings are given. A point
whose implementation cannot run it is recorded as ``skipped``, one that runs out
of memory as ``oom``, one that fails as ``failed`` (with the error's tail); the
next point goes on. A ``UserError`` is the user's mistake and stops the run.
Each record is appended to ``OUT/records.jsonl`` the moment it is complete.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from harness import roofline, telemetry
from harness.memory import PeakMemory
from harness.records import RECORDS_FILE, append_record, make_record
from harness.timing import StepClock, bench
from workloads.errors import UserError
from workloads.precision import matmul_mode
from workloads.stats import spread
from workloads.workload import Calls, Runs, Unsupported


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """(status, error) of a point that raised: ``oom`` with PyTorch's first line, else ``failed``
    with the last lines of the traceback."""
    if isinstance(exc, torch.OutOfMemoryError):
        return "oom", str(exc).splitlines()[0] if str(exc) else "out of memory"
    tail = "".join(traceback.format_exception(exc)[-3:]).strip()
    return "failed", tail


def _time_calls(region: Calls, device: torch.device) -> tuple[dict, dict]:
    times = bench(region.fn, device, grad_to_none=region.grads)
    metrics = {"time_ms": float(np.median(times)), **spread(times, "time_ms"), "repeats": len(times)}
    return metrics, {}


def _time_runs(region: Runs, device: torch.device, bar: tqdm) -> tuple[dict, dict]:
    for i in range(region.warmup):
        region.run(StepClock(device), -1 - i)
        bar.set_postfix_str(f"warm-up {i + 1}/{region.warmup}")
    peak = PeakMemory(device)
    clock = StepClock(device, on_start=peak.reset)
    timelines = []
    with telemetry.sample(device) as sampler:
        for i in range(region.repeats):
            timelines.append(region.run(clock, i))
            bar.set_postfix_str(f"run {i + 1}/{region.repeats}")
    metrics = {**region.summarize(timelines), "peak_mem_bytes": region.peak(peak.read()), "peak_mem_kind": peak.kind}
    return metrics, sampler.summary(tokens=region.repeats * region.tokens or None)


def measure(workload, point, run_id: str, env: dict, ceilings=None, bar: tqdm | None = None) -> dict:
    """One record for one point of a workload whose ``setup()`` has run."""
    bar = bar or tqdm(disable=True)
    device = workload.device
    try:
        with matmul_mode(workload.precision):
            region = workload.region(point)
            if isinstance(region, Calls):
                metrics, tel = _time_calls(region, device)
            else:
                metrics, tel = _time_runs(region, device, bar)
        del region
        cost = workload.cost(point)
    except UserError:
        raise
    except Unsupported as exc:
        return make_record(run_id=run_id, point=workload.fields(point), status="skipped", error=str(exc), env=env)
    except Exception as exc:  # recorded, reported, and the next point goes on
        status, error = describe_failure(exc)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return make_record(run_id=run_id, point=workload.fields(point), status=status, error=error, env=env)
    record = make_record(run_id=run_id, point=workload.fields(point), metrics=metrics, cost=cost.block(),
                         derived=roofline.derive(cost, metrics), env=env, telemetry=tel)
    return roofline.with_ceilings(record, ceilings)


def run(workloads: list, run_id: str, env: dict, *, out: Path | None = None, ceilings=None, progress: bool = True,
        desc: str = "", note: Callable[[dict], str | None] | None = None) -> list[dict]:
    """Measure every point of every workload; returns the records (also appended to
    ``out/records.jsonl`` when ``out`` is given). ``note(record)`` is a line printed per record."""
    records = []
    total = sum(len(w.points) for w in workloads)
    with tqdm(total=total, desc=desc, unit="point", file=sys.stderr, disable=None if progress else True,
              leave=False) as bar:
        for workload in workloads:
            try:
                workload.setup()
                setup_error = None
            except UserError:
                raise
            except Exception as exc:  # every point of this workload records why it could not run
                setup_error = describe_failure(exc)
            for point in workload.points:
                if setup_error is None:
                    record = measure(workload, point, run_id, env, ceilings, bar)
                else:
                    record = make_record(run_id=run_id, point=workload.fields(point), status=setup_error[0],
                                         error=setup_error[1], env=env)
                if out is not None:
                    append_record(out / RECORDS_FILE, record)
                records.append(record)
                line = note(record) if note else None
                if line:
                    tqdm.write(line, file=sys.stderr)
                bar.update()
            workload.teardown()
            if workload.device.type == "cuda":
                torch.cuda.empty_cache()
    return records
