"""A sweep through a real SLURM: split into arrays by MaxArraySize, one point failing on purpose,
status from the task files, --resume after the fix, and the collect job's report covering every point;
tasks that die before the wrapper starts (never started, collect still reports), and a task killed
outright (lost, resubmitted)."""

import json
import os
import signal
import time

import pytest
import torch

from harness import cli, sweep_tasks
from harness.records import read_records
from workloads.presets import build_model, resolve_model

pytestmark = pytest.mark.slurm

SWEEP = """
name = "slurm-tiny"
workload = "decode"
out = "{out}"

[params]
prompt_len = 8
new_tokens = 3
repeats = 1
warmup = 0
dtype = "fp32"
no_ceilings = true
no_progress = true

[matrix]
model = ["tiny-llama", "tiny-gpt2"]
batch_size = [1, 2]

[[include]]
model = "tiny-opt"
batch_size = 1

[[include]]
model = "{checkpoint}"   # its config does not fit its weights until the test saves it again: fails, then resumed
batch_size = 1

[slurm]
partition = "debug"
time = "00:05:00"
cpus_per_task = 1
max_concurrent = 2
sbatch = ['--comment="llmbench test sweep"', "--nice=0   # what sbatch takes, it gets"]
env = {{ OMP_NUM_THREADS = 1 }}
"""


def wait_until_idle(cluster, out, timeout=150):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not cluster.run("squeue", "--noheader").strip():
            return
        time.sleep(1)
    tasks = "\n".join(p.read_text() for p in sorted((out / "tasks").glob("*.json")))
    pytest.fail(f"jobs still queued after {timeout} s:\n{cluster.run('squeue')}\n{tasks}\n{cluster.logs()}")


def save_checkpoint(path, broken=False):
    """tiny-llama saved as a local checkpoint; ``broken``: its config no longer fits its weights (the plan's
    checks pass, loading fails), as a checkpoint copied half-way would."""
    build_model(resolve_model("tiny-llama"), torch.float32, torch.device("cpu"), "sdpa").save_pretrained(
        path, safe_serialization=True)
    if broken:
        config = json.loads((path / "config.json").read_text())
        config["intermediate_size"] *= 2
        (path / "config.json").write_text(json.dumps(config))


def test_sweep_array_failure_resume_and_collect(slurm_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    out, checkpoint = tmp_path / "sweep", tmp_path / "ckpt"
    save_checkpoint(checkpoint, broken=True)
    file = tmp_path / "sweep.toml"
    file.write_text(SWEEP.format(out=out, checkpoint=checkpoint))

    assert cli.main(["sweep", "submit", str(file)]) == 0
    manifest = sweep_tasks.read_manifest(out)
    arrays = [j for j in manifest["jobs"] if j["kind"] == "array"]
    assert [(j["array"], j["offset"]) for j in arrays] == [("0-3%2", 0), ("0-1%2", 4)]  # MaxArraySize = 4
    wait_until_idle(slurm_cluster, out)

    states = sweep_tasks.task_states(out, manifest)
    assert sweep_tasks.counts(states) == {"done": 5, "failed": 1, "oom": 0, "interrupted": 0, "lost": 0,
                                          "running": 0, "pending": 0, "never-started": 0}
    failed = states[5]
    assert failed["state"] == "failed" and "did not complete" in failed["error"]
    assert failed["slurm_array_job_id"] == arrays[1]["id"] and failed["slurm_array_task_id"] == "1"
    records = read_records([out / "records.jsonl"])
    ok = [r for r in records if r["status"] == "ok"]
    assert len(ok) == 5 and len(records) == 6
    assert [r["sweep_index"] for r in records if r["status"] == "failed"] == [5]
    assert {r["env"]["slurm_array_job_id"] for r in ok} == {j["id"] for j in arrays}
    assert sorted(r["sweep_index"] for r in ok) == [0, 1, 2, 3, 4]
    assert {r["sweep_point_id"] for r in records} == {p["id"] for p in manifest["points"]}
    logs = " ".join(p.read_text() for p in (out / "logs").glob("slurm-*.out"))
    assert "-m harness sweep task" in logs and "--index 5" in logs  # each task echoes its command line
    first_collect = json.loads((out / "collect.json").read_text())
    assert first_collect["counts"]["failed"] == 1 and first_collect["report"]

    save_checkpoint(checkpoint)
    capsys.readouterr()
    assert cli.main(["sweep", "submit", str(out), "--resume"]) == 0
    assert "submitted 1 point(s)" in capsys.readouterr().out
    manifest = sweep_tasks.read_manifest(out)
    assert [(j["array"], j["offset"]) for j in manifest["jobs"] if j["kind"] == "array"][-1] == ("0%2", 5)
    wait_until_idle(slurm_cluster, out)

    assert cli.main(["sweep", "status", str(out)]) == 0
    assert "done 6  failed 0  oom 0  interrupted 0  lost 0  running 0  pending 0  never-started 0" in (
        capsys.readouterr().out)
    assert json.loads((out / "tasks" / "5.json").read_text())["attempt"] == 2
    collected = json.loads((out / "collect.json").read_text())
    assert collected["counts"]["done"] == 6 and collected["slurm_job_id"] == manifest["jobs"][-1]["id"]
    report = (out / "report" / "report.md").read_text()
    table = report.split("### Decode, fp32")[1].split("\n#")[0]
    rows = [line.split("|")[1:4] for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert sorted((m.strip(), int(b)) for m, b, _ in rows) == [
        ("ckpt", 1), ("tiny-gpt2", 1), ("tiny-gpt2", 2), ("tiny-llama", 1), ("tiny-llama", 2), ("tiny-opt", 1)]


SMALL = """
name = "{name}"
workload = "decode"
out = "{out}"
[params]
model = "tiny-gpt2"
prompt_len = 8
new_tokens = 3
dtype = "fp32"
no_ceilings = true
no_progress = true
{params}
[matrix]
batch_size = {batch_sizes}
[slurm]
partition = "debug"
time = "00:05:00"
cpus_per_task = 1
env = {{ OMP_NUM_THREADS = 1 }}
{slurm}
"""


def job_state(cluster, job_id) -> str:
    """JobState and ExitCode from scontrol (the controller keeps a finished job for MinJobAge; no sacct here)."""
    text = cluster.run("scontrol", "show", "job", job_id)
    return " ".join(w for w in text.split() if w.startswith(("JobState=", "ExitCode=")))


def test_tasks_that_die_before_the_wrapper_are_never_started_and_collect_still_reports(
        slurm_cluster, tmp_path, monkeypatch, capsys):
    """A preamble that fails in array tasks only (as a bad container, python or module load would): no task
    file is ever written. Once the array has left the queue the points are never-started, not pending
    forever; the collect job runs anyway and succeeds with a report of what happened; --resume resubmits."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    out = tmp_path / "never"
    file = tmp_path / "never.toml"
    file.write_text(SMALL.format(name="never", out=out, params="", batch_sizes="[1, 2]",
                                 slurm="preamble = ['[ -z \"${SLURM_ARRAY_TASK_ID:-}\" ] || exit 3']"))
    assert cli.main(["sweep", "submit", str(file)]) == 0
    wait_until_idle(slurm_cluster, out)
    capsys.readouterr()
    assert cli.main(["sweep", "status", str(out)]) == 0
    status = capsys.readouterr().out
    assert "pending 0  never-started 2" in status and "left the queue without starting the point" in status
    manifest = sweep_tasks.read_manifest(out)
    collect_id = manifest["jobs"][-1]["id"]
    assert job_state(slurm_cluster, collect_id) == "JobState=COMPLETED ExitCode=0:0"
    collected = json.loads((out / "collect.json").read_text())
    assert collected["counts"]["never-started"] == 2 and collected["slurm_job_id"] == collect_id
    assert "none produced a record" in (out / "report" / "report.md").read_text()
    assert cli.main(["sweep", "submit", str(out), "--resume"]) == 0
    assert "submitted 2 point(s)" in capsys.readouterr().out
    wait_until_idle(slurm_cluster, out)


def test_a_task_killed_outright_is_lost_and_resubmitted(slurm_cluster, tmp_path, monkeypatch, capsys):
    """SIGKILL to the task wrapper (the OOM killer, kill -9): the task file still says running, but status says
    lost (its process is gone and its job left the queue), the point's process went with it, and --resume
    runs the point again."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    out = tmp_path / "lost"
    file = tmp_path / "lost.toml"
    file.write_text(SMALL.format(name="lost", out=out, params="repeats = 1000000\nwarmup = 0", batch_sizes="[1]",
                                 slurm=""))
    assert cli.main(["sweep", "submit", str(file)]) == 0
    array_id = sweep_tasks.read_manifest(out)["jobs"][0]["id"]
    path, deadline, task = out / "tasks" / "0.json", time.monotonic() + 90, {}
    while time.monotonic() < deadline and "point_pid" not in task:
        time.sleep(0.2)
        task = json.loads(path.read_text()) if path.exists() else {}
    assert task.get("state") == "running" and task["slurm_array_job_id"] == array_id, task
    capsys.readouterr()
    assert cli.main(["sweep", "status", str(out)]) == 0
    assert "lost 0  running 1" in capsys.readouterr().out
    os.kill(task["pid"], signal.SIGKILL)  # the batch script's process: the wrapper replaced the shell (exec)
    wait_until_idle(slurm_cluster, out)
    assert json.loads(path.read_text())["state"] == "running"  # what the task file says; status knows better
    assert cli.main(["sweep", "status", str(out)]) == 0
    status = capsys.readouterr().out
    assert "lost 1  running 0" in status and "lost  [0]" in status, status
    assert not sweep_tasks.pid_alive(task["point_pid"])
    assert cli.main(["sweep", "submit", str(out), "--resume"]) == 0
    assert "submitted 1 point(s)" in capsys.readouterr().out
    resumed = sweep_tasks.read_manifest(out)["jobs"][-2]["id"]
    slurm_cluster.run("scancel", resumed)
    wait_until_idle(slurm_cluster, out)


TWO_PROCESSES = """
name = "ddp-2proc"
workload = "finetune"
out = "{out}"
[params]
model = "tiny-llama"
device = "cpu"
dtype = "fp32"
seq_len = 32
batch_size = 2
steps = 2
warmup_steps = 1
no_ceilings = true
[matrix]
nproc = [2]
[slurm]
partition = "debug"
time = "00:05:00"
cpus_per_task = 2
env = {{ OMP_NUM_THREADS = 1 }}
"""


def test_a_two_process_finetune_point_runs_as_one_array_task(slurm_cluster, tmp_path, monkeypatch):
    """The point starts its own 2 processes (llmbench finetune --nproc 2, gloo) inside its array task;
    rank 0 writes the point's one record."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    out = tmp_path / "sweep"
    file = tmp_path / "sweep.toml"
    file.write_text(TWO_PROCESSES.format(out=out))
    assert cli.main(["sweep", "submit", str(file)]) == 0
    wait_until_idle(slurm_cluster, out, timeout=240)
    manifest = sweep_tasks.read_manifest(out)
    [state] = sweep_tasks.task_states(out, manifest)
    assert state["state"] == "done", (state, (out / "logs" / "point-0.log").read_text()[-3000:])
    [record] = read_records([out / "records.jsonl"])
    assert (record["status"], record["world_size"], record["nodes"], record["parallel"]) == ("ok", 2, 1, "ddp")
    assert record["env"]["slurm_array_job_id"] == manifest["jobs"][0]["id"]
    log = (out / "logs" / "point-0.log").read_text()
    assert "+ torchrun --standalone --nproc-per-node=2" in log and "--nproc 2" in " ".join(state["command"])
