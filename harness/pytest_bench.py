"""pytest-benchmark JSON -> schema-v1 records (``llmbench import-pytest-benchmark``).

pytest-benchmark (``pytest --benchmark-json=FILE``) is how many projects keep
microbenchmarks next to their tests; importing its file puts those numbers in
the same records, reports and ``llmbench compare`` checks as ours. One record
per benchmark: workload ``pytest-benchmark``, the benchmark's name, test id,
group and parameters as the point, its statistics in milliseconds (per
iteration, as pytest-benchmark reports them) as metrics, and, when the
benchmark put ``bytes`` / ``flops`` in ``extra_info``, GB/s and TFLOP/s at the
median. The environment comes from the ``llmbench`` entry that
``tests/bench/conftest.py`` adds to the machine info (the same ``env`` block
our own records carry), else from pytest-benchmark's own machine info.
"""

from __future__ import annotations

import math
from datetime import datetime

from workloads.errors import UserError

WORKLOAD = "pytest-benchmark"
STATS_MS = ("min", "max", "mean", "median", "stddev", "iqr", "q1", "q3")


def _env(data: dict) -> dict:
    machine = data.get("machine_info") if isinstance(data.get("machine_info"), dict) else {}
    if isinstance(machine.get("llmbench"), dict):
        env = dict(machine["llmbench"])
    else:
        cpu_info = machine.get("cpu") if isinstance(machine.get("cpu"), dict) else {}
        cpu = cpu_info.get("brand_raw") or machine.get("processor") or machine.get("machine")
        env = {"device_name": cpu, "device_type": "cpu", "host": machine.get("node"), "cpu": cpu,
               "cpu_count": cpu_info.get("count"), "python": machine.get("python_version"),
               "os": " ".join(filter(None, (machine.get("system"), machine.get("release")))) or None}
    commit = data.get("commit_info") if isinstance(data.get("commit_info"), dict) else {}
    if commit.get("id") and not env.get("git_sha"):
        env["git_sha"] = commit["id"] + ("-dirty" if commit.get("dirty") else "")
    env["pytest_benchmark"] = data.get("version")
    return env


def _timestamp(data: dict) -> str | None:
    try:
        return datetime.fromisoformat(data["datetime"]).isoformat(timespec="seconds")
    except (KeyError, TypeError, ValueError):
        return None


def to_records(data, run_id: str) -> list[dict]:
    """Records for every benchmark in a parsed pytest-benchmark JSON document."""
    from harness import roofline
    from harness.records import make_record

    benchmarks = data.get("benchmarks") if isinstance(data, dict) else None
    if not isinstance(benchmarks, list) or not benchmarks:
        raise UserError("not a pytest-benchmark JSON file with benchmarks (run pytest with --benchmark-json=FILE)")
    env, when = _env(data), _timestamp(data)
    records = []
    for b in benchmarks:
        stats = b.get("stats") if isinstance(b, dict) else None
        if not isinstance(stats, dict) or not isinstance(stats.get("median"), (int, float)) or not isinstance(b.get("name"), str):
            raise UserError("a benchmark in the file has no name or no statistics; is it pytest-benchmark output?")
        if not math.isfinite(stats["median"]) or stats["median"] < 0:
            raise UserError(f"benchmark {b['name']!r} has a median of {stats['median']}: not a time")
        params = b.get("params") if isinstance(b.get("params"), dict) else {}
        point = {"workload": WORKLOAD, "name": b["name"], "test": b.get("fullname"), "group": b.get("group"),
                 "params": params}
        if isinstance(params.get("dtype"), str):
            point["dtype"] = params["dtype"]
        metrics = {f"{k}_ms": stats[k] * 1e3 for k in STATS_MS if isinstance(stats.get(k), (int, float))}
        metrics.update(ops=stats.get("ops"), rounds=stats.get("rounds"), iterations=stats.get("iterations"))
        extra = b.get("extra_info") if isinstance(b.get("extra_info"), dict) else {}
        cost = {k: extra[k] for k in ("bytes", "flops") if isinstance(extra.get(k), (int, float))}
        seconds = stats["median"]
        derived = roofline.rates(cost.get("bytes"), cost.get("flops"), seconds) if seconds > 0 else {}
        record = make_record(run_id=run_id, point=point, metrics=metrics, cost=cost, derived=derived, env=env)
        record["timestamp"] = when or record["timestamp"]
        records.append(record)
    return records
