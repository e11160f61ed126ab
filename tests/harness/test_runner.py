"""The one measuring loop, on fake workloads: both kinds of timed region, the record it builds (rates
from the cost, ceilings applied), and every way a point can fail without stopping the others."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from harness import runner
from harness.ceilings import Ceilings
from harness.records import read_records
from workloads.cost import Cost
from workloads import stats
from workloads.errors import UserError
from workloads.precision import PRECISIONS
from workloads.workload import Calls, Runs, Unsupported

CPU = torch.device("cpu")


@dataclass(frozen=True)
class Point:
    n: int


class Fake:
    """A workload whose point ``n`` does ``n`` units of work; ``fail`` maps a point to what it raises."""

    def __init__(self, points, kind="calls", fail=None, setup_error=None):
        self.device, self.precision, self.points = CPU, PRECISIONS["fp32"], [Point(n) for n in points]
        self.kind, self.fail, self.setup_error = kind, fail or {}, setup_error
        self.calls, self.runs, self.events = 0, [], []

    def setup(self):
        self.events.append("setup")
        if self.setup_error:
            raise self.setup_error

    def teardown(self):
        self.events.append("teardown")

    def fields(self, point):
        return {"workload": "fake", "dtype": self.precision.name, "n": point.n}

    def region(self, point):
        if point.n in self.fail:
            raise self.fail[point.n]
        if self.kind == "calls":
            def fn():
                self.calls += 1
                torch.ones(1000).sum()
            return Calls(fn)

        def run(clock, index):
            self.runs.append(index)
            clock.start()
            for _ in range(point.n):
                clock.tick()
            return clock.stop()

        return Runs(run=run, summarize=lambda timelines: {"step_ms": timelines[-1].ticks_ms[-1],
                                                          "repeats": len(timelines)},
                    warmup=2, repeats=3, tokens=point.n)

    def cost(self, point):
        timed_by = "time_ms" if self.kind == "calls" else "step_ms"
        return Cost(bytes=1_000_000 * point.n, flops=4_000_000 * point.n, timed_by=timed_by)


def test_calls_are_timed_and_rates_come_from_the_cost(tmp_path):
    fake = Fake([1, 2])
    records = runner.run([fake], "run", {"host": "h"}, out=tmp_path, progress=False)
    assert read_records([tmp_path]) == records and fake.events == ["setup", "teardown"]
    for r, n in zip(records, (1, 2)):
        m, d = r["metrics"], r["derived"]
        assert r["status"] == "ok" and r["n"] == n and r["cost"] == {"bytes": 1_000_000 * n, "flops": 4_000_000 * n}
        assert m["time_ms_p10"] <= m["time_ms"] <= m["time_ms_p90"] and m["repeats"] >= 3
        assert d["achieved_gbps"] == pytest.approx(1_000_000 * n / (m["time_ms"] / 1e3) / 1e9)
        assert d["achieved_tflops"] == pytest.approx(4_000_000 * n / (m["time_ms"] / 1e3) / 1e12)
        assert d["arithmetic_intensity"] == pytest.approx(4.0)
    assert fake.calls >= 2 * 4  # at least one warm-up and three timed calls per point


def test_runs_warm_up_then_time_repeats_with_peak_memory():
    fake = Fake([3], kind="runs")
    [record] = runner.run([fake], "run", {}, progress=False)
    assert fake.runs == [-1, -2, 0, 1, 2]  # warm-ups first (negative indices), then the timed runs
    m = record["metrics"]
    assert m["repeats"] == 3 and m["step_ms"] > 0
    assert m["peak_mem_bytes"] > 0 and m["peak_mem_kind"] in ("rss_hwm", "rss_max_lifetime")
    assert record["derived"]["achieved_gbps"] == pytest.approx(3_000_000 / (m["step_ms"] / 1e3) / 1e9)


def test_ceilings_give_mbu_mfu_and_bound():
    ceilings = Ceilings("cpu", copy_gbps=1e-6, matmul_tflops={"fp32": 1e-9})
    [record] = runner.run([Fake([1])], "run", {}, ceilings=ceilings, progress=False)
    d = record["derived"]
    assert d["mbu"] == pytest.approx(d["achieved_gbps"] / 1e-6) and d["mfu"] == pytest.approx(d["achieved_tflops"] / 1e-9)
    assert d["bound"] == "compute"  # 4 FLOP/byte above a ridge of 1e-9 TFLOP/s over 1e-6 GB/s = 1 FLOP/byte


def test_failures_are_recorded_and_the_next_point_goes_on(tmp_path):
    fail = {2: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB"),
            3: Unsupported("this backend needs head dim 64"), 4: RuntimeError("kernel exploded")}
    records = runner.run([Fake([1, 2, 3, 4, 5], fail=fail)], "run", {}, out=tmp_path, progress=False)
    assert [r["status"] for r in records] == ["ok", "oom", "skipped", "failed", "ok"]
    assert "80.00 GiB" in records[1]["error"] and records[1]["metrics"] == {}
    assert records[2]["error"] == "this backend needs head dim 64"
    assert "kernel exploded" in records[3]["error"] and records[3]["n"] == 4
    assert len(read_records([tmp_path])) == 5


def test_a_setup_failure_is_recorded_for_every_point_of_that_workload_only():
    broken = Fake([1, 2], setup_error=torch.OutOfMemoryError("out of memory building the model"))
    records = runner.run([broken, Fake([3])], "run", {}, progress=False)
    assert [(r["n"], r["status"]) for r in records] == [(1, "oom"), (2, "oom"), (3, "ok")]
    assert broken.events == ["setup", "teardown"]


def test_a_user_error_stops_the_run():
    with pytest.raises(UserError, match="bad option"):
        runner.run([Fake([1], fail={1: UserError("bad option")})], "run", {}, progress=False)


def test_notes_are_printed_per_record(capsys):
    runner.run([Fake([1, 2])], "run", {}, progress=False, note=lambda r: f"point {r['n']}: {r['status']}")
    err = capsys.readouterr().err
    assert "point 1: ok" in err and "point 2: ok" in err


class Variant(Fake):
    """A Runs workload that logs every timed run into a shared list, with a footprint."""

    def __init__(self, name, log, points=(1,), footprint=1000, repeats=3, rate=None):
        super().__init__(points, kind="runs")
        self.name, self.log, self.footprint, self.repeats, self.rate = name, log, footprint, repeats, rate

    def fields(self, point):
        return {**super().fields(point), "variant": self.name}

    def footprint_bytes(self):
        return self.footprint

    def region(self, point):
        def run(clock, index):
            if index >= 0:
                self.log.append(self.name)
            clock.start()
            clock.tick()
            return clock.stop()

        rate = self.rate or (lambda runs: [100.0] * len(runs))
        return Runs(run=run, summarize=lambda runs: {"step_ms": 1.0, **stats.summary(rate(runs), "tokens_per_s")},
                    warmup=1, repeats=self.repeats, headline=rate, max_time_s=30)


def test_variants_that_fit_alternate_their_timed_runs(tmp_path):
    log = []
    a, b = Variant("a", log, points=(1, 2)), Variant("b", log, points=(1, 2))
    records = runner.run([a, b], "run", {}, out=tmp_path, progress=False, interleave=True)
    assert log == ["a", "b"] * 3 + ["a", "b"] * 3  # ABAB... within each point
    assert [(r["variant"], r["n"]) for r in records] == [("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    assert all(r["metrics"]["peak_mem_kind"].endswith("_own_plus_transient") for r in records)
    assert len(read_records([tmp_path])) == 4


def test_variants_that_do_not_fit_run_in_blocks_and_are_checked_for_drift(monkeypatch):
    log = []
    monkeypatch.setattr(runner, "available_bytes", lambda device: 10)

    class Drifting(Variant):
        """About 100 tok/s the first time, 80 when measured again at the end."""

        def region(self, point):
            speed = 100.0 if not hasattr(self, "measured") else 80.0
            self.measured = True
            self.rate = lambda runs: [speed + i % 2 for i in range(len(runs))]
            return super().region(point)

    first = Drifting("a", log, footprint=100)
    records = runner.run([first, Variant("b", log, footprint=100)], "run", {}, progress=False, interleave=True)
    assert log[:6] == ["a", "a", "a", "b", "b", "b"] and log[6:] == ["a", "a", "a"]  # blocks, then a again
    assert all(any(w.startswith("drift:") for w in r["warnings"]) for r in records)


def test_auto_repeats_stop_once_the_interval_is_narrow():
    log = []
    steady = Variant("a", log, repeats=None)
    runner.run([steady], "run", {}, progress=False)
    assert len(log) == runner.MIN_REPEATS  # identical samples: the CI is zero after the minimum
    noisy_values = np.random.default_rng(0).normal(100, 20, runner.MAX_REPEATS)
    log.clear()
    noisy = Variant("b", log, repeats=None, rate=lambda runs: list(noisy_values[:len(runs)]))
    [record] = runner.run([noisy], "run", {}, progress=False)
    assert len(log) > runner.MIN_REPEATS
    assert any(w.startswith("noisy: tokens_per_s") for w in record["warnings"])


@pytest.mark.parametrize("exc", [MemoryError(), RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. "
                                                             "DefaultCPUAllocator: can't allocate memory: you tried "
                                                             "to allocate 8000000000 bytes")])
def test_a_host_allocation_failure_is_oom(exc):
    assert runner.describe_failure(exc)[0] == "oom"
    assert runner.describe_failure(RuntimeError("shape mismatch"))[0] == "failed"
