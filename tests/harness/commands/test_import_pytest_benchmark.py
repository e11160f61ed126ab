"""pytest-benchmark integration: the suite under tests/bench runs under pytest-benchmark (in a
subprocess), its JSON becomes schema-v1 records that reports and compare read, and bad files are
one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cli
from harness.records import read_records
from harness.report import build

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/bench/bench_kernels.py",
                    "-k", "copy", f"--benchmark-json={out}"], cwd=ROOT, env=env, check=True, capture_output=True,
                   timeout=300)
    return out


def test_import_turns_benchmarks_into_records(bench_json, tmp_path, capsys):
    data = json.loads(bench_json.read_text())
    assert data["machine_info"]["llmbench"]["device_type"] == "cpu"  # the conftest hook ran
    assert cli.main(["import-pytest-benchmark", str(bench_json), "--out", str(tmp_path)]) == 0
    assert "test_copy" in capsys.readouterr().out
    (record,) = read_records([tmp_path])
    stats = data["benchmarks"][0]["stats"]
    assert record["workload"] == "pytest-benchmark" and record["status"] == "ok"
    assert record["name"] == "test_copy" and record["test"].endswith("bench_kernels.py::test_copy")
    m = record["metrics"]
    assert m["median_ms"] == pytest.approx(stats["median"] * 1e3) and m["rounds"] == stats["rounds"] == 10
    assert m["min_ms"] <= m["median_ms"] <= m["max_ms"]
    assert record["cost"]["bytes"] == 2 * (16 << 20)
    assert record["derived"]["achieved_gbps"] == pytest.approx(record["cost"]["bytes"] / stats["median"] / 1e9)
    assert record["env"]["host"] == data["machine_info"]["node"] and record["env"]["pytest_benchmark"]
    assert record["timestamp"].startswith(data["datetime"][:19])
    md, _ = build([tmp_path], tmp_path / "report")
    assert "pytest-benchmark" in md.read_text() and "test_copy" in md.read_text()
    assert cli.main(["compare", str(tmp_path), str(tmp_path)]) == 0  # matched on the benchmark's name


def test_foreign_machine_info_still_gives_an_env(bench_json, tmp_path):
    data = json.loads(bench_json.read_text())
    del data["machine_info"]["llmbench"]
    path = tmp_path / "plain.json"
    path.write_text(json.dumps(data))
    assert cli.main(["import-pytest-benchmark", str(path), "--out", str(tmp_path / "out")]) == 0
    (record,) = read_records([tmp_path / "out"])
    assert record["env"]["device_type"] == "cpu" and record["env"]["host"] == data["machine_info"]["node"]


@pytest.mark.parametrize("content, message", [
    (None, "cannot read"), ("not json", "is not JSON"), ('{"benchmarks": []}', "with benchmarks"),
    ('{"benchmarks": [{"name": "x"}]}', "no statistics"),
])
def test_bad_files_are_one_line_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "in.json"
    if content is not None:
        path.write_text(content)
    assert cli.main(["import-pytest-benchmark", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "out").exists()
