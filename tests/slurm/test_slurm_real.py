"""A sweep through a real SLURM: split into arrays by MaxArraySize, one point failing on purpose,
status from the task files, --resume after the fix, and the collect job's report covering every point."""

import json
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
model = "{checkpoint}"   # not there until the test saves it: this point fails, then is resumed
batch_size = 1

[slurm]
partition = "debug"
time = "00:05:00"
cpus_per_task = 1
max_concurrent = 2
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


def test_sweep_array_failure_resume_and_collect(slurm_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    out, checkpoint = tmp_path / "sweep", tmp_path / "ckpt"
    file = tmp_path / "sweep.toml"
    file.write_text(SWEEP.format(out=out, checkpoint=checkpoint))

    assert cli.main(["sweep", "submit", str(file)]) == 0
    manifest = sweep_tasks.read_manifest(out)
    arrays = [j for j in manifest["jobs"] if j["kind"] == "array"]
    assert [(j["array"], j["offset"]) for j in arrays] == [("0-3%2", 0), ("0-1%2", 4)]  # MaxArraySize = 4
    wait_until_idle(slurm_cluster, out)

    states = sweep_tasks.task_states(out, manifest)
    assert sweep_tasks.counts(states) == {"done": 5, "failed": 1, "oom": 0, "running": 0, "pending": 0}
    failed = states[5]
    assert failed["state"] == "failed" and "does not exist" in failed["error"]
    assert failed["slurm_array_job_id"] == arrays[1]["id"] and failed["slurm_array_task_id"] == "1"
    records = read_records([out / "records.jsonl"])
    ok = [r for r in records if r["status"] == "ok"]
    assert len(ok) == 5 and len(records) == 6
    assert {r["env"]["slurm_array_job_id"] for r in ok} == {j["id"] for j in arrays}
    assert sorted(r["sweep_index"] for r in ok) == [0, 1, 2, 3, 4]
    assert {r["sweep_point_id"] for r in records} == {p["id"] for p in manifest["points"]}
    logs = " ".join(p.read_text() for p in (out / "logs").glob("slurm-*.out"))
    assert "-m harness sweep task" in logs and "--index 5" in logs  # each task echoes its command line
    first_collect = json.loads((out / "collect.json").read_text())
    assert first_collect["counts"]["failed"] == 1 and first_collect["report"]

    build_model(resolve_model("tiny-llama"), torch.float32, torch.device("cpu"), "sdpa").save_pretrained(
        checkpoint, safe_serialization=True)
    capsys.readouterr()
    assert cli.main(["sweep", "submit", str(out), "--resume"]) == 0
    assert "submitted 1 point(s)" in capsys.readouterr().out
    manifest = sweep_tasks.read_manifest(out)
    assert [(j["array"], j["offset"]) for j in manifest["jobs"] if j["kind"] == "array"][-1] == ("0%2", 5)
    wait_until_idle(slurm_cluster, out)

    assert cli.main(["sweep", "status", str(out)]) == 0
    assert "done 6  failed 0  oom 0  running 0  pending 0" in capsys.readouterr().out
    assert json.loads((out / "tasks" / "5.json").read_text())["attempt"] == 2
    collected = json.loads((out / "collect.json").read_text())
    assert collected["counts"]["done"] == 6 and collected["slurm_job_id"] == manifest["jobs"][-1]["id"]
    report = (out / "report" / "report.md").read_text()
    table = report.split("### Decode, fp32")[1].split("\n#")[0]
    rows = [line.split("|")[1:4] for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert sorted((m.strip(), int(b)) for m, b, _ in rows) == [
        ("ckpt", 1), ("tiny-gpt2", 1), ("tiny-gpt2", 2), ("tiny-llama", 1), ("tiny-llama", 2), ("tiny-opt", 1)]
