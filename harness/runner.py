"""The one loop that turns workloads into timed records.

Every measurement of llmbench goes through ``run``: decode generations, training
runs, kernel microbenchmarks and the ceilings alike (the contract is in
``workloads.workload``). For each workload: ``setup()`` once, then for each of
its points the timed region, in the workload's precision's matmul mode:

- ``Calls``: ``harness.timing.bench`` (``triton.testing.do_bench`` on a GPU:
  CUDA events, L2 flushed between calls; warm-up calls excluded); the metrics are
  the median time per call with its spread, 95% CI and CV, and the best (shortest) call;
- ``Runs``: ``warmup`` untimed runs, then timed runs on a step clock, under the
  GPU telemetry sampler (a fixed number, or with ``repeats=None`` until the
  headline metric's 95% CI is within 2% of its median, at least 5, at most
  ``max_time_s``); the workload summarizes them.

Comparisons (``interleave=True``, several workloads over the same points, e.g.
bf16 vs fp32 or three decode engines): when the variants fit in memory together
they are all set up at once and, point by point, their timed runs alternate
(ABAB...), so drift on a shared machine hits each alike. Otherwise they run one
after another and the first variant's first point is measured again at the end;
a move larger than its CI is a warning on every record of the comparison.

Peak memory covers the timed work only. The cost model's bytes and FLOPs become
rates in ``harness.roofline``, and MBU/MFU/bound when ceilings are given. A metric
whose samples vary by more than 5% (CV) gets a warning. A point whose
implementation cannot run it is recorded as ``skipped``, one that runs out of
memory as ``oom``, one that fails as ``failed`` (with the error's tail); the next
point goes on. A ``UserError`` is the user's mistake and stops the run. Each
record is appended to ``OUT/records.jsonl`` the moment it is complete (in a comparison run in
blocks, once the drift check has marked it).
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from harness import roofline, telemetry
from harness.memory import PeakMemory, available_bytes
from harness.records import RECORDS_FILE, append_record, make_record
from harness.timing import StepClock, bench
from workloads.errors import UserError
from workloads.precision import matmul_mode
from workloads.stats import ci_half_width, spread, summary
from workloads.workload import Calls, Runs, Unsupported

NOISY_CV = 0.05  # a headline metric whose samples vary more than this gets a warning
NOISE_CHECKED = ("tokens_per_s", "time_ms", "step_ms")
AUTO_CI = 0.02  # --repeats auto: stop once the median's 95% CI half-width is within this fraction
MIN_REPEATS, MAX_REPEATS = 5, 200  # a bootstrap interval of fewer samples is too narrow to trust
FIT_FRACTION = 0.7  # variants run together when their footprints fit in this much of the free memory


CPU_OOM = ("DefaultCPUAllocator: can't allocate memory", "DefaultCPUAllocator: not enough memory")


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """(status, error) of a point that raised: ``oom`` with the first line of the error for a GPU or host
    allocation that failed, else ``failed`` with the last lines of the traceback."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or any(m in str(exc) for m in CPU_OOM):
        return "oom", str(exc).splitlines()[0] if str(exc) else "out of memory"
    tail = "".join(traceback.format_exception(exc)[-3:]).strip()
    return "failed", tail


def _time_calls(region: Calls, device: torch.device) -> dict:
    times = bench(region.fn, device, grad_to_none=region.grads)
    return {**summary(times, "time_ms"), **spread(times, "time_ms"), "time_ms_min": min(times),
            "repeats": len(times), "samples": {"time_ms": list(times)}}


def _enough(region: Runs, runs: list, started: float) -> bool:
    """Whether a Runs region has been timed often enough (fixed count, or the auto rule)."""
    if region.repeats is not None:
        return len(runs) >= region.repeats
    if len(runs) < MIN_REPEATS:
        return False
    if len(runs) >= MAX_REPEATS or time.perf_counter() - started > region.max_time_s:
        return True
    return region.headline is None or ci_half_width(region.headline(runs)) <= AUTO_CI


class _Timed:
    """One Runs region being timed: its warm-up, its timed runs, their peak memory and telemetry."""

    def __init__(self, region: Runs, device: torch.device):
        self.region, self.device = region, device
        self.runs: list = []
        self.peak = PeakMemory(device)
        self.transient = 0  # the most a timed run added on top of what was allocated when it started
        self.base = 0
        self.telemetry: dict = {}

    def warm_up(self, bar: tqdm) -> None:
        for i in range(self.region.warmup):
            self.region.run(StepClock(self.device), -1 - i)
            bar.set_postfix_str(f"warm-up {i + 1}/{self.region.warmup}")

    def _start(self) -> None:
        self.peak.reset()
        self.base = self.peak.current()

    def once(self) -> None:
        """One timed run, sampled for telemetry on its own (used when variants alternate)."""
        with telemetry.sample(self.device) as sampler:
            self.runs.append(self.region.run(StepClock(self.device, on_start=self._start), len(self.runs)))
        self.transient = max(self.transient, self.peak.read() - self.base)
        sampled = sampler.summary(tokens=self.region.tokens or None)
        self.telemetry = {**sampled, "runs": 1} if sampled else {}  # the last run's: variants alternate

    def all(self, bar: tqdm) -> None:
        """Every timed run back to back, sampled together."""
        started = time.perf_counter()
        clock = StepClock(self.device, on_start=self.peak.reset)
        with telemetry.sample(self.device) as sampler:
            while not _enough(self.region, self.runs, started):
                self.runs.append(self.region.run(clock, len(self.runs)))
                bar.set_postfix_str(f"run {len(self.runs)}" + (f"/{self.region.repeats}" if self.region.repeats else ""))
        self.telemetry = sampler.summary(tokens=len(self.runs) * self.region.tokens or None)

    def metrics(self, own_bytes: int | None = None) -> dict:
        """The summary; peak memory is the allocator's (or RSS) peak over the runs, or, when other
        variants were resident too, this variant's own footprint plus its largest transient."""
        if own_bytes is None:
            peak, kind = self.peak.read(), self.peak.kind
        else:
            peak, kind = own_bytes + self.transient, f"{self.peak.kind}_own_plus_transient"
        return {**self.region.summarize(self.runs), "peak_mem_bytes": self.region.peak(peak), "peak_mem_kind": kind}


def _record(workload, point, run_id: str, env: dict, ceilings, metrics: dict, tel: dict,
            warnings: list[str] = ()) -> dict:
    cost = workload.cost(point)
    notes = list(warnings)
    for name in NOISE_CHECKED:
        if metrics.get(f"{name}_cv", 0) > NOISY_CV:
            notes.append(f"noisy: {name} varies by {100 * metrics[f'{name}_cv']:.1f}% (CV over "
                         f"{metrics.get(f'{name}_n')} samples); a quieter machine or more repeats narrow it")
    quality = getattr(workload, "quality", lambda point: None)(point)  # untimed, after the timed runs
    record = make_record(run_id=run_id, point=workload.fields(point), metrics=metrics, cost=cost.block(),
                         derived=roofline.derive(cost, metrics), env=env, telemetry=tel, warnings=notes,
                         quality=quality)
    return roofline.with_ceilings(record, ceilings)


def _failed(workload, point, run_id: str, env: dict, exc: BaseException) -> dict:
    if isinstance(exc, Unsupported):
        return make_record(run_id=run_id, point=workload.fields(point), status="skipped", error=str(exc), env=env)
    status, error = describe_failure(exc)
    if workload.device.type == "cuda":
        torch.cuda.empty_cache()
    return make_record(run_id=run_id, point=workload.fields(point), status=status, error=error, env=env)


def measure(workload, point, run_id: str, env: dict, ceilings=None, bar: tqdm | None = None) -> dict:
    """One record for one point of a workload whose ``setup()`` has run."""
    bar = bar or tqdm(disable=True)
    try:
        with matmul_mode(workload.precision):
            region = workload.region(point)
            if isinstance(region, Calls):
                metrics, tel = _time_calls(region, workload.device), {}
            else:
                timed = _Timed(region, workload.device)
                timed.warm_up(bar)
                timed.all(bar)
                metrics, tel = timed.metrics(), timed.telemetry
        del region
        return _record(workload, point, run_id, env, ceilings, metrics, tel)
    except UserError:
        raise
    except Exception as exc:  # recorded, reported, and the next point goes on
        return _failed(workload, point, run_id, env, exc)


class _Output:
    """Where records go as they complete: the file, the list, the note line, the progress bar."""

    def __init__(self, out: Path | None, note, bar: tqdm):
        self.out, self.note, self.bar, self.records = out, note, bar, []

    def __call__(self, record: dict) -> dict:
        if self.out is not None:
            append_record(self.out / RECORDS_FILE, record)
        self.records.append(record)
        line = self.note(record) if self.note else None
        if line:
            tqdm.write(line, file=sys.stderr)
        self.bar.update()
        return record


def _setup(workload) -> tuple[str, str] | None:
    """Set up; None, or (status, error) for every point when it could not be set up."""
    try:
        workload.setup()
    except UserError:
        raise
    except Exception as exc:
        return describe_failure(exc)
    return None


def _teardown(workload) -> None:
    workload.teardown()
    if workload.device.type == "cuda":
        torch.cuda.empty_cache()


def _sequential(workloads: list, run_id: str, env: dict, ceilings, emit: _Output) -> None:
    for workload in workloads:
        setup_error = _setup(workload)
        for point in workload.points:
            if setup_error is None:
                emit(measure(workload, point, run_id, env, ceilings, emit.bar))
            else:
                emit(make_record(run_id=run_id, point=workload.fields(point), status=setup_error[0],
                                 error=setup_error[1], env=env))
        _teardown(workload)


def _fit_together(workloads: list) -> bool:
    """Whether every variant can be resident at once: their footprints (``footprint_bytes()``, when
    the workload can tell) within FIT_FRACTION of the device's free memory."""
    sizes = [getattr(w, "footprint_bytes", lambda: None)() for w in workloads]
    if any(size is None for size in sizes):
        return False
    return sum(sizes) <= FIT_FRACTION * available_bytes(workloads[0].device)


def _interleaved(workloads: list, run_id: str, env: dict, ceilings, emit: _Output) -> None:
    """All variants resident; per point, their timed runs alternate until every one has enough."""
    own, failed_setup = {}, {}
    for w in workloads:
        before = PeakMemory(w.device).current()
        failed_setup[id(w)] = _setup(w)
        own[id(w)] = max(0, PeakMemory(w.device).current() - before)
        if w.device.type != "cuda":  # RSS grows only by pages not reused from freed memory: never below the model's
            own[id(w)] = max(own[id(w)], getattr(w, "footprint_bytes", lambda: None)() or 0)
    for point in workloads[0].points:
        live: list[tuple[object, _Timed]] = []
        done: dict[int, dict] = {}
        for w in workloads:
            if failed_setup[id(w)] is not None:
                status, error = failed_setup[id(w)]
                done[id(w)] = make_record(run_id=run_id, point=w.fields(point), status=status, error=error, env=env)
                continue
            try:
                with matmul_mode(w.precision):
                    timed = _Timed(w.region(point), w.device)
                    timed.warm_up(emit.bar)
                live.append((w, timed))
            except UserError:
                raise
            except Exception as exc:
                done[id(w)] = _failed(w, point, run_id, env, exc)
        started = time.perf_counter()
        while live and not all(_enough(t.region, t.runs, started) for _, t in live):
            for w, timed in list(live):
                try:
                    with matmul_mode(w.precision):
                        timed.once()
                except UserError:
                    raise
                except Exception as exc:
                    done[id(w)] = _failed(w, point, run_id, env, exc)
                    live.remove((w, timed))
            emit.bar.set_postfix_str(f"round {max((len(t.runs) for _, t in live), default=0)}, alternating")
        for w, timed in live:
            try:
                done[id(w)] = _record(w, point, run_id, env, ceilings, timed.metrics(own[id(w)]), timed.telemetry)
            except UserError:
                raise
            except Exception as exc:
                done[id(w)] = _failed(w, point, run_id, env, exc)
        for w in workloads:
            emit(done[id(w)])
    for w in workloads:
        _teardown(w)


def _drift_check(workloads: list, run_id: str, env: dict, records: list[dict]) -> None:
    """Variants measured one after another: measure the first variant's first point again; when its
    headline moved outside the first measurement's CI, every record of the comparison says so."""
    first, point = workloads[0], workloads[0].points[0]
    before = records[0]
    name = next((n for n in NOISE_CHECKED if f"{n}_ci_low" in before["metrics"]), None)
    if before["status"] != "ok" or name is None or _setup(first) is not None:
        return
    again = measure(first, point, run_id, env)
    _teardown(first)
    if again["status"] != "ok":
        return
    m, value = before["metrics"], again["metrics"][name]
    if not m[f"{name}_ci_low"] <= value <= m[f"{name}_ci_high"]:
        note = (f"drift: the variants ran one after another (not enough memory to alternate) and the first one's "
                f"{name} moved from {m[name]:.4g} (95% CI {m[f'{name}_ci_low']:.4g}-{m[f'{name}_ci_high']:.4g}) to "
                f"{value:.4g} when measured again at the end; the comparison is not reliable")
        for record in records:
            record["warnings"].append(note)


def run(workloads: list, run_id: str, env: dict, *, out: Path | None = None, ceilings=None, progress: bool = True,
        desc: str = "", note: Callable[[dict], str | None] | None = None, interleave: bool = False) -> list[dict]:
    """Measure every point of every workload; returns the records (also appended to
    ``out/records.jsonl`` when given). ``note(record)`` is a line printed per record.
    ``interleave``: the workloads are variants of one comparison over the same points."""
    total = sum(len(w.points) for w in workloads)
    with tqdm(total=total, desc=desc, unit="point", file=sys.stderr, disable=None if progress else True,
              leave=False) as bar:
        comparison = interleave and len(workloads) > 1
        if comparison and _fit_together(workloads):
            emit = _Output(out, note, bar)
            _interleaved(workloads, run_id, env, ceilings, emit)
            return emit.records
        emit = _Output(None if comparison else out, note, bar)
        _sequential(workloads, run_id, env, ceilings, emit)
        if comparison:
            _drift_check(workloads, run_id, env, emit.records)
            for record in emit.records:
                if out is not None:
                    append_record(out / RECORDS_FILE, record)
        return emit.records

