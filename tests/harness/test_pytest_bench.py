"""pytest-benchmark JSON -> records without the command line: statistics in ms, rates from the
benchmark's own bytes and FLOPs, the environment, and refusals."""

import pytest

from harness.pytest_bench import WORKLOAD, to_records
from workloads.errors import UserError


def document(**extra_info):
    return {
        "machine_info": {"node": "laptop", "processor": "x86_64", "python_version": "3.11"},
        "commit_info": {"id": "abc123", "dirty": True},
        "datetime": "2026-12-01T10:00:00.123456",
        "version": "5.1.0",
        "benchmarks": [{"name": "test_copy", "fullname": "bench.py::test_copy", "group": None,
                        "params": {"dtype": "bf16"}, "extra_info": extra_info,
                        "stats": {"median": 0.002, "mean": 0.0025, "min": 0.001, "rounds": 10, "iterations": 1}}],
    }


def test_statistics_become_milliseconds_and_rates_come_from_the_cost():
    (record,) = to_records(document(bytes=4e9, flops=2e12), "run")
    assert record["workload"] == WORKLOAD and record["name"] == "test_copy" and record["dtype"] == "bf16"
    assert record["metrics"]["median_ms"] == pytest.approx(2.0) and record["metrics"]["rounds"] == 10
    assert record["derived"]["achieved_gbps"] == pytest.approx(4e9 / 0.002 / 1e9)
    assert record["derived"]["achieved_tflops"] == pytest.approx(2e12 / 0.002 / 1e12)
    assert record["env"]["git_sha"] == "abc123-dirty" and record["env"]["host"] == "laptop"
    assert record["timestamp"] == "2026-12-01T10:00:00"


def test_no_cost_no_rates():
    (record,) = to_records(document(), "run")
    assert record["derived"] == {} and record["cost"] == {}


@pytest.mark.parametrize("data", [[], {"benchmarks": []}, {"benchmarks": [{"name": "x", "stats": {}}]}])
def test_not_a_benchmark_file_is_refused(data):
    with pytest.raises(UserError):
        to_records(data, "run")
