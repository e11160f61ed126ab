"""The one measuring loop, on fake workloads: both kinds of timed region, the record it builds (rates
from the cost, ceilings applied), and every way a point can fail without stopping the others."""

from dataclasses import dataclass

import pytest
import torch

from harness import runner
from harness.ceilings import Ceilings
from harness.records import read_records
from workloads.cost import Cost
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
