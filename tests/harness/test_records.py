"""Records round-trip, appends are atomic, and the loader survives damaged files."""

import json
import math

import numpy as np
import pytest

from harness import records
from workloads.errors import UserError


def sample(run_id="r1", **metrics):
    return records.make_record(
        run_id=run_id,
        point={"workload": "decode", "model": "tiny-llama", "dtype": "bf16", "batch_size": 1},
        metrics={"tokens_per_s": 12.5, **metrics},
        cost={"bytes_per_step": 1000},
        env={"device_name": "cpu"},
    )


def test_round_trip_to_dataframe(tmp_path):
    path = tmp_path / "runs" / "records.jsonl"
    records.append_record(path, sample("a"))
    records.append_record(path, sample("b", ttft_ms=np.float32(3.5)))
    back = records.read_records([tmp_path])
    assert [r["run_id"] for r in back] == ["a", "b"]
    assert back[1]["metrics"]["ttft_ms"] == 3.5 and back[0]["schema_version"] == 1
    assert "telemetry" not in back[0]  # absent, not zeros
    frame = records.load_records([path])
    assert list(frame["metrics.tokens_per_s"]) == [12.5, 12.5]
    assert set(frame["status"]) == {"ok"} and "env.device_name" in frame.columns


def test_non_finite_numbers_become_null(tmp_path):
    path = tmp_path / "records.jsonl"
    records.append_record(path, sample(tokens_per_s=math.nan, ttft_ms=math.inf))
    line = json.loads(path.read_text())
    assert line["metrics"]["tokens_per_s"] is None and line["metrics"]["ttft_ms"] is None


def test_short_write_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "records.jsonl"
    records.append_record(path, sample("kept"))
    before = path.read_bytes()
    real_write = records.os.write
    monkeypatch.setattr(records.os, "write", lambda fd, data: real_write(fd, data[: len(data) // 2]))
    with pytest.raises(OSError, match="short write"):
        records.append_record(path, sample("lost"))
    assert path.read_bytes() == before
    assert [r["run_id"] for r in records.read_records([path])] == ["kept"]


def test_loader_skips_damage_with_a_warning(tmp_path):
    path = tmp_path / "records.jsonl"
    records.append_record(path, sample("good"))
    with open(path, "a") as f:
        f.write('{"schema_version": 1, "run_id": "tru\n')
        f.write('{"schema_version": 99}\n')
    with pytest.warns(UserWarning) as caught:
        back = records.read_records([path])
    messages = [str(w.message) for w in caught]
    assert any("records.jsonl:2: skipped a line that is not valid JSON" in m for m in messages)
    assert any("records.jsonl:3: skipped a line that is not a schema v1 record" in m for m in messages)
    assert [r["run_id"] for r in back] == ["good"]


def test_bad_inputs():
    with pytest.raises(UserError, match="no records at"):
        records.read_records(["/nonexistent/place"])
    with pytest.raises(ValueError, match="status"):
        records.make_record(run_id="x", point={}, status="great")


def test_run_ids_are_unique_and_sortable():
    ids = [records.new_run_id() for _ in range(50)]
    assert len(set(ids)) == 50 and all(i[8] == "T" for i in ids)
