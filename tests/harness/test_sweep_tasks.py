"""A sweep's folder and tasks: the manifest (old and damaged ones too), task outcomes and records, ceilings
reused across points, the time limit's SIGTERM, Ctrl-C, heartbeats and the lost-task rule, pending vs never
started, the failure record's device, collect without records, and the command of a multi-process and of a multi-node point."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from harness import sweep, sweep_tasks
from harness.records import RECORDS_FILE, read_records
from slurm import backend
from slurm.backend import SlurmOptions
from workloads.errors import UserError


@pytest.fixture()
def prepared(tmp_path, parser, base_sweep):
    """base_sweep planned into tmp_path/out with its folder and manifest created, as `sweep run` does."""
    path = tmp_path / "sweep.toml"
    path.write_text(textwrap.dedent(base_sweep).replace("{out}", str(tmp_path / "out")))
    s = sweep.load(path, parser)
    sweep_tasks.prepare(s, sys.executable)
    return s


def test_point_command_is_a_plain_llmbench_call_on_one_node(tmp_path):
    """A multi-process point starts its own processes (finetune --nproc): the command stays one llmbench call."""
    command = sweep_tasks.point_command({"argv": ["train", "--nproc", "2"], "nproc": 2}, "/py", tmp_path)
    assert command == ["/py", "-m", "harness", "train", "--nproc", "2", "--out", str(tmp_path)]
    single = sweep_tasks.point_command({"argv": ["decode", "--seed", "1"], "nproc": 1}, "/py", tmp_path)
    assert single == ["/py", "-m", "harness", "decode", "--seed", "1", "--out", str(tmp_path)]


def test_point_command_on_two_nodes_is_srun_and_torchrun_at_the_first_node(tmp_path, monkeypatch):
    opts = SlurmOptions.from_table({"nodes": 2, "gpus_per_node": 4, "cpus_per_task": 32})
    point = {"index": 3, "id": "abc", "argv": ["finetune", "--model", "llama-3.1-8b", "--nproc", "4"], "nproc": 4}
    monkeypatch.delenv(backend.RDZV_ENV, raising=False)
    with pytest.raises(UserError, match="runs on 2 nodes: it runs inside its SLURM job"):
        sweep_tasks.point_command(point, "/py", tmp_path, opts)
    monkeypatch.setenv(backend.RDZV_ENV, "gpu-node-017:29742")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    command = sweep_tasks.point_command(point, "/py", tmp_path, opts)
    assert command == [
        "srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "--cpus-per-task=32",
        "/py", "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=4", "--rdzv-backend=c10d",
        "--rdzv-endpoint=gpu-node-017:29742", "--rdzv-id=4242", "--max-restarts=0",
        "-m", "harness", "finetune", "--model", "llama-3.1-8b", "--out", str(tmp_path)]  # --nproc is torchrun's


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
    assert sweep_tasks.counts(states) == {"done": 1, "failed": 0, "oom": 0, "interrupted": 0, "lost": 0,
                                          "running": 0, "pending": 1, "never-started": 0}
    assert sweep_tasks.unfinished(states) == [0]
    array, collect = sweep_tasks.scripts(manifest, sweep_tasks.SlurmOptions.from_table(manifest["slurm"]))
    assert f"/usr/bin/python3 -m harness sweep task {tmp_path} --index" in array
    assert f"/usr/bin/python3 -m harness sweep collect {tmp_path}" in collect


def fake_point(monkeypatch, code):
    """Make every point run ``python -c code`` (with the staging folder as argv[1]) instead of llmbench."""
    monkeypatch.setattr(sweep_tasks, "point_command", lambda point, python, out, opts=None: [python, "-c", code, str(out)])


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


@pytest.fixture(autouse=True)
def no_squeue(monkeypatch):
    """No SLURM here unless a test says what squeue lists (``None``: it cannot tell)."""
    monkeypatch.setattr(sweep_tasks.backend, "queue", lambda ids: None)


def _iso(seconds_ago: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)).isoformat(timespec="milliseconds")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


HOST = socket.gethostname()
ME = {"host": HOST, "pid": os.getpid(), "pid_start": sweep_tasks.process_start(os.getpid())}


@pytest.mark.parametrize("task, queue, jobs_gone, lost", [
    # this host: the wrapper's pid decides
    ({**ME, "heartbeat": -1, "heartbeat_s": 30}, None, False, None),
    ({**ME, "pid": "dead", "heartbeat": -1, "heartbeat_s": 30}, None, False, "is gone"),
    ({**ME, "pid_start": "1", "heartbeat": -1, "heartbeat_s": 30}, None, False, "is gone"),  # pid reused
    ({**ME, "pid_start": None, "heartbeat": -1, "heartbeat_s": 30}, None, False, None),  # start unknown
    # another host: its heartbeat decides (stale after 3 intervals)
    ({"host": "node7", "pid": 1, "heartbeat": -80, "heartbeat_s": 30}, None, False, None),
    ({"host": "node7", "pid": 1, "heartbeat": -100, "heartbeat_s": 30}, None, False, "no heartbeat for 100 s"),
    ({"host": "node7", "pid": 1, "heartbeat": -4, "heartbeat_s": 1}, None, False, "no heartbeat"),
    ({"host": "node7", "pid": 1, "heartbeat": -2, "heartbeat_s": 1}, None, False, None),
    ({**ME, "heartbeat": -200, "heartbeat_s": 30}, None, False, "no heartbeat"),  # alive but silent: hung
    # its SLURM job left the queue (when squeue can tell)
    ({"host": "node7", "pid": 1, "heartbeat": -1, "slurm_array_job_id": "12", "slurm_array_task_id": "3"},
     {"12_4", "13"}, False, "SLURM job 12_3 has left the queue"),
    ({"host": "node7", "pid": 1, "heartbeat": -1, "slurm_array_job_id": "12", "slurm_array_task_id": "3"},
     {"12_3"}, False, None),
    ({"host": "node7", "pid": 1, "heartbeat": -1, "slurm_array_job_id": "12", "slurm_array_task_id": "3"},
     None, False, None),
    ({"host": "node7", "pid": 1, "heartbeat": -1, "slurm_job_id": "40"}, set(), True, "SLURM job 40 has left"),
    # a task file from before heartbeats: only the sweep's jobs leaving the queue tells
    ({"host": "node7", "pid": 1}, set(), True, "the sweep's jobs have left the queue"),
    ({"host": "node7", "pid": 1}, {"12_1"}, False, None),
    ({}, None, False, None),
])
def test_lost_rule(task, queue, jobs_gone, lost):
    if task.get("pid") == "dead":
        task = {**task, "pid": _dead_pid()}
    if isinstance(task.get("heartbeat"), int):  # seconds ago, made a time only now
        task = {**task, "heartbeat": _iso(-task["heartbeat"])}
    reason = sweep_tasks.lost_reason({"state": "running", **task}, HOST, time.time(), queue, jobs_gone)
    assert (reason is None) == (lost is None), reason
    if lost:
        assert lost in reason


def write_manifest(directory, points=3, jobs=()):
    manifest = {"manifest_version": 1, "name": "m", "created": "2025-01-01T00:00:00+00:00", "dir": str(directory),
                "cwd": str(directory), "python": sys.executable, "env": {}, "slurm": {}, "jobs": list(jobs),
                "points": [{"index": i, "id": f"{i:012x}", "workload": "decode", "params": {"seed": i},
                            "argv": ["decode", "--seed", str(i)], "nproc": 1} for i in range(points)]}
    (directory / "tasks").mkdir(parents=True, exist_ok=True)
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def write_task(directory, index, **fields):
    (directory / "tasks" / f"{index}.json").write_text(json.dumps({"index": index, **fields}))


def test_pending_or_never_started_after_the_array_job_is_gone(tmp_path, monkeypatch):
    jobs = [{"id": "50", "kind": "array", "array": "0-2%2", "offset": 0},
            {"id": "51", "kind": "collect", "after": ["50"]},
            {"id": "60", "kind": "array", "array": "0,2", "offset": 1}]  # --resume of points 1 and 3
    manifest = write_manifest(tmp_path, points=5, jobs=jobs)
    write_task(tmp_path, 2, state="done")
    asked = []

    def queue(listed):
        monkeypatch.setattr(sweep_tasks.backend, "queue", lambda ids: asked.append(set(ids)) or listed)
        return [s["state"] for s in sweep_tasks.task_states(tmp_path, manifest)]

    # point 4 was never submitted; points 1 and 3 were resubmitted as 60_0 and 60_2
    assert queue(None) == ["pending", "pending", "done", "pending", "pending"]
    assert asked == [{"50", "51", "60"}]
    assert queue({"50_0", "60_0", "60_2"}) == ["pending", "pending", "done", "pending", "pending"]
    assert queue({"60_2"}) == ["never-started", "never-started", "done", "pending", "pending"]
    assert queue(set()) == ["never-started", "never-started", "done", "never-started", "pending"]
    states = sweep_tasks.task_states(tmp_path, manifest)
    assert states[1]["array_task"] == "60_0" and "60_0 left the queue" in sweep_tasks.reason(states[1])
    assert sweep_tasks.unfinished(states) == [0, 1, 3, 4]
    assert sweep_tasks.task_states(tmp_path, manifest, probe=False)[0]["state"] == "pending"


def test_unfinished_reruns_all_but_done_oom_and_running(tmp_path):
    manifest = write_manifest(tmp_path, points=8)
    for index, state in enumerate(("done", "oom", "failed", "interrupted")):
        write_task(tmp_path, index, state=state)
    write_task(tmp_path, 4, state="running", **ME, heartbeat=_iso(1), heartbeat_s=30)
    write_task(tmp_path, 5, state="running", host=HOST, pid=_dead_pid(), heartbeat=_iso(1), heartbeat_s=30)
    write_task(tmp_path, 6, state="exploded")
    states = sweep_tasks.task_states(tmp_path, manifest)
    assert [s["state"] for s in states] == ["done", "oom", "failed", "interrupted", "running", "lost", "failed",
                                            "pending"]
    assert "unknown state 'exploded'" in states[6]["error"]
    assert sweep_tasks.unfinished(states) == [2, 3, 5, 6, 7]
    assert sweep_tasks.counts(states) == {"done": 1, "failed": 2, "oom": 1, "interrupted": 1, "lost": 1,
                                          "running": 1, "pending": 1, "never-started": 0}


@pytest.mark.parametrize("content, message", [
    (b"{not json", "is damaged (not JSON"),
    (b"\xff\xfe", "is damaged (not UTF-8 text)"),
    (b"[]", "not a JSON object"),
    (b'{"name": "x"}', "'dir' missing"),
])
def test_damaged_manifest_is_one_line(tmp_path, content, message):
    manifest = write_manifest(tmp_path)
    (tmp_path / "manifest.json").write_bytes(content)
    with pytest.raises(UserError, match=re.escape(message)):
        sweep_tasks.read_manifest(tmp_path)
    bad_point = {**manifest, "points": [{**manifest["points"][0], "index": "0"}]}
    (tmp_path / "manifest.json").write_text(json.dumps(bad_point))
    with pytest.raises(UserError, match="point 0 is not a point"):
        sweep_tasks.read_manifest(tmp_path)


def test_heartbeat_host_and_pids_while_the_point_runs(prepared, monkeypatch):
    monkeypatch.setattr(sweep_tasks, "HEARTBEAT_S", 0.2)
    fake_point(monkeypatch, "import time; time.sleep(1.5); " + RECORD.format(status="ok", error="", code=0)
               .replace("import sys;", "import sys, time;"))
    path, seen, done = prepared.out / "tasks" / "1.json", [], threading.Event()

    def watch():
        while not done.is_set():
            try:
                task = json.loads(path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            if task["state"] == "running":
                seen.append(task)
                assert sweep_tasks.lost_reason(task, HOST, time.time(), None, False) is None
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert sweep_tasks.run_task(prepared.out, 1, quiet=True) == "done"
    finally:
        done.set()
        watcher.join()
    beats = {t["heartbeat"] for t in seen}
    assert len(beats) >= 3, beats  # refreshed while it ran
    last = seen[-1]
    assert last["host"] == HOST and last["pid"] == os.getpid() and last["heartbeat_s"] == 0.2
    assert isinstance(last["point_pid"], int) and last["point_pid"] != os.getpid()
    final = json.loads(path.read_text())
    assert final["state"] == "done" and not sweep_tasks.pid_alive(last["point_pid"])


def test_ctrl_c_stops_the_point_and_marks_it_interrupted(prepared, monkeypatch):
    before = signal.getsignal(signal.SIGINT)
    fake_point(monkeypatch, "import time; print('sleep' + 'ing', flush=True); time.sleep(60)")
    log = prepared.out / "logs" / "point-0.log"
    threading.Thread(target=lambda: (_wait_for_text(log, "sleeping\n"), os.kill(os.getpid(), signal.SIGINT))).start()
    started = time.monotonic()
    assert sweep_tasks.run_task(prepared.out, 0, quiet=True) == "interrupted"
    assert time.monotonic() - started < 30
    task = json.loads((prepared.out / "tasks" / "0.json").read_text())
    assert task["state"] == "interrupted" and task["error"].startswith("interrupted (Ctrl-C)")
    assert not sweep_tasks.pid_alive(task["point_pid"])
    assert not (prepared.out / RECORDS_FILE).exists()  # nothing recorded: the point runs again
    assert signal.getsignal(signal.SIGINT) is before
    assert sweep_tasks.unfinished(sweep_tasks.task_states(prepared.out, sweep_tasks.read_manifest(prepared.out)))[0] == 0


WRAPPER = """
import sys
from harness import sweep_tasks
sweep_tasks.point_command = lambda point, python, out, opts=None: [python, "-c", "import time; time.sleep(120)"]
sweep_tasks.run_task(sys.argv[1], 0, quiet=True)
"""


def test_a_killed_task_is_lost_and_takes_its_point_with_it(prepared):
    """kill -9 of the task wrapper: the task file still says running; status says lost (its pid is gone),
    the point's process does not live on as an orphan, and the point runs again."""
    wrapper = subprocess.Popen([sys.executable, "-c", WRAPPER, str(prepared.out)])
    path = prepared.out / "tasks" / "0.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        task = json.loads(path.read_text()) if path.exists() else {}
        if "point_pid" in task:
            break
        time.sleep(0.05)
    assert task.get("point_pid"), task
    manifest = sweep_tasks.read_manifest(prepared.out)
    assert sweep_tasks.task_states(prepared.out, manifest)[0]["state"] == "running"
    wrapper.kill()
    wrapper.wait()
    states = sweep_tasks.task_states(prepared.out, manifest)
    assert states[0]["state"] == "lost" and f"process {wrapper.pid} on {HOST} is gone" in states[0]["lost_reason"]
    assert 0 in sweep_tasks.unfinished(states)
    deadline = time.monotonic() + 10
    while sweep_tasks.pid_alive(task["point_pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not sweep_tasks.pid_alive(task["point_pid"])  # PR_SET_PDEATHSIG: no orphan


def test_failure_record_carries_the_device(prepared, monkeypatch):
    from harness import ceilings, envinfo

    fake_point(monkeypatch, "import sys; sys.exit(3)")
    monkeypatch.setattr(sweep_tasks, "_gpu_names", lambda: None)
    assert sweep_tasks.run_task(prepared.out, 0, quiet=True) == "failed"
    (record,) = read_records([prepared.out / RECORDS_FILE])
    assert record["env"]["device_type"] == "cpu" and record["env"]["host"] == HOST
    real = {"env": {"device_name": envinfo.cpu_name(), "device_type": "cpu", "host": HOST}}
    assert ceilings.device_key(record) == ceilings.device_key(real)  # filed with the point's other records


@pytest.mark.parametrize("device, gpus, visible, expected", [
    ("cpu", ["NVIDIA H100"], None, ("cpu", "CPU")),
    ("auto", ["NVIDIA H100 80GB HBM3"], None, ("cuda", "NVIDIA H100 80GB HBM3")),
    ("auto", None, None, ("cpu", "CPU")),
    ("auto", ["NVIDIA H100"], "", ("cpu", "CPU")),
    ("cuda", ["NVIDIA A100-SXM4-40GB", "NVIDIA H100"], "1", ("cuda", "NVIDIA H100")),
    ("cuda:1", ["NVIDIA A100-SXM4-40GB", "NVIDIA H100", "NVIDIA H200"], "0,2", ("cuda", "NVIDIA H200")),
    ("CUDA:0", ["NVIDIA H200"], "GPU-1234-abcd", ("cuda", "NVIDIA H200")),
    ("cuda:9", ["NVIDIA H200"], None, ("cuda", "cuda:9 (not found on h1)")),
    ("cuda", None, None, ("cuda", "cuda (not found on h1)")),
])
def test_failure_env_names_the_device_without_torch(monkeypatch, device, gpus, visible, expected):
    monkeypatch.setattr(sweep_tasks, "_gpu_names", lambda: gpus)
    monkeypatch.setattr(sweep_tasks.envinfo, "cpu_name", lambda: "CPU")
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    env = sweep_tasks.failure_env({"device": device}, "h1")
    assert (env["device_type"], env["device_name"]) == expected and env["host"] == "h1"


def test_new_records_skip_a_torn_line_and_read_fallback_files(tmp_path):
    stage = tmp_path / "records.jsonl"
    stage.write_bytes(b'{"seed": 1}\n{"a": 1}\n{"b": 2}\n{"torn": ' + b"\xff\n")
    (tmp_path / f"records.{HOST}.77.jsonl").write_text('{"c": 3}\n')
    start = len(b'{"seed": 1}\n')
    assert sweep_tasks._new_records(stage, start) == [{"a": 1}, {"b": 2}, {"c": 3}]


def test_collect_writes_a_report_when_no_point_produced_a_record(tmp_path, capsys):
    jobs = [{"id": "50", "kind": "array", "array": "0-1", "offset": 0}]
    write_manifest(tmp_path, points=3, jobs=jobs)
    write_task(tmp_path, 2, state="failed", error="Traceback\nboom: it broke")
    assert sweep_tasks.collect(tmp_path) == 0
    out = capsys.readouterr().out
    assert "failed 1" in out and "pending 2" in out and "boom: it broke" in out
    md = (tmp_path / "report" / "report.md").read_text()
    assert "none produced a record" in md and "- point 2 (000000000002, failed): `llmbench decode --seed 2`: boom" in md
    result = json.loads((tmp_path / "collect.json").read_text())
    assert result["report"].endswith("report.html") and [r["index"] for r in result["not_done"]] == [0, 1, 2]


def test_collect_reports_a_sweep_whose_every_point_failed(prepared, monkeypatch, capsys):
    fake_point(monkeypatch, "import sys; print('boom'); sys.exit(1)")
    for index in range(2):
        assert sweep_tasks.run_task(prepared.out, index, quiet=True) == "failed"
    assert sweep_tasks.collect(prepared.out) == 0
    report = (prepared.out / "report" / "report.md").read_text()
    assert "did not complete" in report and "unknown" not in report
