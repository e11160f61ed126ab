"""A sweep's folder and tasks: the manifest (old ones too), task outcomes and records, ceilings reused
across points, the time limit's SIGTERM, and the torchrun launch of distributed points."""

import json
import os
import sys
import textwrap

import pytest

from harness import sweep, sweep_tasks
from harness.records import RECORDS_FILE, read_records
from workloads.errors import UserError


@pytest.fixture()
def prepared(tmp_path, parser, base_sweep):
    """base_sweep planned into tmp_path/out with its folder and manifest created, as `sweep run` does."""
    path = tmp_path / "sweep.toml"
    path.write_text(textwrap.dedent(base_sweep).replace("{out}", str(tmp_path / "out")))
    s = sweep.load(path, parser)
    sweep_tasks.prepare(s, sys.executable)
    return s


def test_point_command_launches_distributed_points_under_torchrun(tmp_path):
    command = sweep_tasks.point_command({"argv": ["train", "--nproc", "2"], "nproc": 2}, "/py", tmp_path)
    assert command == ["/py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "harness",
                       "train", "--nproc", "2", "--out", str(tmp_path)]
    single = sweep_tasks.point_command({"argv": ["decode", "--seed", "1"], "nproc": 1}, "/py", tmp_path)
    assert single == ["/py", "-m", "harness", "decode", "--seed", "1", "--out", str(tmp_path)]


def test_prepare_reuses_the_same_sweep_and_refuses_another(prepared, parser, tmp_path):
    manifest = sweep_tasks.read_manifest(prepared.out)
    assert manifest["manifest_version"] == sweep_tasks.MANIFEST_VERSION and manifest["name"] == "t"
    assert [p["id"] for p in manifest["points"]] == [p.id for p in prepared.points]
    assert sweep_tasks.prepare(prepared, sys.executable) == manifest
    other = sweep.from_dict({"name": "o", "workload": "decode", "out": str(prepared.out),
                             "matrix": {"seed": [1]}}, parser)
    with pytest.raises(UserError, match="holds a different sweep"):
        sweep_tasks.prepare(other, sys.executable)


def test_manifest_written_by_the_first_version_still_loads(tmp_path):
    old = {"manifest_version": 1, "name": "old", "created": "2025-01-01T00:00:00+00:00", "dir": str(tmp_path),
           "cwd": str(tmp_path), "python": "/usr/bin/python3", "env": {"OMP_NUM_THREADS": "1"},
           "slurm": {"partition": "debug"}, "jobs": [{"id": "101", "kind": "array", "array": "0-1", "offset": 0,
                                                     "points": 2, "submitted": "2025-01-01T00:00:01+00:00"}],
           "points": [{"index": i, "id": f"id{i}", "workload": "decode", "params": {"seed": i},
                       "argv": ["decode", "--seed", str(i)], "nproc": 1} for i in range(2)]}
    (tmp_path / "manifest.json").write_text(json.dumps(old, indent=1))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "1.json").write_text(json.dumps({"index": 1, "id": "id1", "state": "done"}))
    manifest = sweep_tasks.read_manifest(tmp_path)
    states = sweep_tasks.task_states(tmp_path, manifest)
    assert sweep_tasks.counts(states) == {"done": 1, "failed": 0, "oom": 0, "running": 0, "pending": 1}
    assert sweep_tasks.unfinished(states) == [0]
    array, collect = sweep_tasks.scripts(manifest, sweep_tasks.SlurmOptions.from_table(manifest["slurm"]))
    assert f"/usr/bin/python3 -m harness sweep task {tmp_path} --index" in array
    assert f"/usr/bin/python3 -m harness sweep collect {tmp_path}" in collect


def fake_point(monkeypatch, code):
    """Make every point run ``python -c code`` (with the staging folder as argv[1]) instead of llmbench."""
    monkeypatch.setattr(sweep_tasks, "point_command", lambda point, python, out: [python, "-c", code, str(out)])


RECORD = ("import sys; from harness.records import append_record, make_record; "
          "append_record(sys.argv[1] + '/records.jsonl', make_record(run_id='r', point={{'workload': 'decode'}}, "
          "status='{status}', error='{error}')); sys.exit({code})")


@pytest.mark.parametrize("code, state, status", [
    (RECORD.format(status="ok", error="", code=0), "done", "ok"),
    (RECORD.format(status="oom", error="CUDA out of memory", code=1), "oom", "oom"),
    ("import sys; print('torch.OutOfMemoryError: CUDA out of memory'); sys.exit(1)", "oom", "oom"),
    ("import sys; print('boom: bad things'); sys.exit(3)", "failed", "failed"),
    ("pass", "failed", "failed"),
])
def test_task_outcomes(prepared, monkeypatch, code, state, status):
    s = prepared
    fake_point(monkeypatch, code)
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    assert sweep_tasks.run_task(s.out, 2, quiet=True) == state
    task = json.loads((s.out / "tasks" / "2.json").read_text())
    assert task["state"] == state and task["attempt"] == 1 and task["slurm_array_job_id"] == "77"
    assert task["finished"] >= task["started"]
    (record,) = read_records([s.out / RECORDS_FILE])
    assert record["status"] == status and record["sweep"] == "t" and record["sweep_index"] == 2
    assert record["sweep_point_id"] == s.points[2].id
    if state == "failed":
        assert task["error"].strip()
    if code == "pass":
        assert "wrote no record" in task["error"]
    assert not (s.out / "work" / "2").exists()


def test_index_out_of_range(prepared):
    with pytest.raises(UserError, match="--index 8 is out of range: the sweep has 8 points"):
        sweep_tasks.run_task(prepared.out, 8)


def test_ceilings_already_measured_are_reused_not_copied(prepared, monkeypatch):
    from harness.records import append_record, make_record

    s = prepared
    append_record(s.out / RECORDS_FILE, make_record(run_id="p", point={"workload": "copy"},
                                                    derived={"achieved_gbps": 9.0}))
    fake_point(monkeypatch, "import sys, shutil; shutil.copy(sys.argv[1] + '/records.jsonl', sys.argv[1] + '/../seen');"
                            + RECORD.format(status="ok", error="", code=0).split(";", 1)[1])
    assert sweep_tasks.run_task(s.out, 0, quiet=True) == "done"
    assert [r["workload"] for r in read_records([s.out / "work" / "seen"])] == ["copy"]
    assert [r["workload"] for r in read_records([s.out / RECORDS_FILE])] == ["copy", "decode"]


def test_time_limit_sigterm_marks_the_point_failed(prepared, monkeypatch):
    import signal
    import threading

    before = signal.getsignal(signal.SIGTERM)
    s = prepared
    fake_point(monkeypatch, "import sys, time; print('sleep' + 'ing', flush=True); time.sleep(60)")
    log = s.out / "logs" / "point-0.log"
    # wait for the point's own output (the log's header already holds its code), then play the time limit
    threading.Thread(target=lambda: (_wait_for_text(log, "sleeping\n"), os.kill(os.getpid(), signal.SIGTERM))).start()
    assert sweep_tasks.run_task(s.out, 0, quiet=True) == "failed"
    task = json.loads((s.out / "tasks" / "0.json").read_text())
    assert task["error"].startswith("terminated by SIGTERM") and "sleeping" in task["error"]
    assert signal.getsignal(signal.SIGTERM) is before  # the handler lives only while the point runs


def _wait_for_text(path, text, timeout=60):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (path.exists() and text in path.read_text()):
        time.sleep(0.05)
