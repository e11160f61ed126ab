"""A sweep's folder and its tasks: the manifest, one state file per point, running one point.

The folder holds ``manifest.json`` (every point with its id and argv), the
rendered ``sweep.sbatch`` and ``collect.sbatch``, ``tasks/<index>.json`` (the
state of each point: running, done, failed or oom, with the error tail, times
and SLURM ids), ``records.jsonl``, ``logs/`` and, once collected, ``report/``
and ``collect.json``. A task runs its point in a fresh process with ``--out``
pointing at a private staging folder, then moves the records into
``records.jsonl`` (atomic appends) stamped with the sweep name, point id, index
and attempt. Status comes from the task files only, because many clusters have
no SLURM accounting.

Kept apart from ``harness.sweep`` (file -> points) because everything here
works from the manifest alone: an array task, ``status``, ``collect`` and
``--resume`` never read the sweep file or need a parser. Array tasks run
``python -m harness sweep task DIR --index I``; the task process itself loads no
torch or transformers (the point's own process does), which matters when
thousands of tasks start from a shared file system.

Workloads that run distributed (their subcommand has ``--nproc``) launch under
``torchrun --standalone`` with ``nproc`` processes, by default the GPUs per task.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from harness.sweep import Sweep
from slurm import backend
from slurm.backend import SlurmOptions
from workloads.choices import CEILING_WORKLOADS
from workloads.errors import UserError

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
SCRIPTS = ("sweep.sbatch", "collect.sbatch")
STATES = ("done", "failed", "oom", "running", "pending")
FINISHED = ("done", "oom")  # states a rerun would not change; the others are run again
TAIL_CHARS = 2000
OOM_MARKERS = ("OutOfMemoryError", "CUDA out of memory", "out of memory")
SLURM_IDS = {"slurm_job_id": "SLURM_JOB_ID", "slurm_array_job_id": "SLURM_ARRAY_JOB_ID",
             "slurm_array_task_id": "SLURM_ARRAY_TASK_ID"}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, data: dict) -> None:
    """Write a whole JSON file or nothing: a reader never sees half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


# ---------------------------------------------------------------- the manifest


def manifest_for(sweep: Sweep, python: str) -> dict:
    return {
        "manifest_version": MANIFEST_VERSION, "name": sweep.name, "created": now(), "dir": str(sweep.out),
        "cwd": os.getcwd(), "python": python, "env": sweep.slurm.env, "slurm": sweep.slurm_table, "jobs": [],
        "points": [{"index": p.index, "id": p.id, "workload": p.workload, "params": p.params, "argv": p.argv,
                    "nproc": p.nproc} for p in sweep.points],
    }


def read_manifest(directory: Path) -> dict:
    path = Path(directory) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"{directory} holds no sweep ({MANIFEST} not found); "
                        "start one with `llmbench sweep run FILE` or `llmbench sweep submit FILE`") from None


def prepare(sweep: Sweep, python: str) -> dict:
    """Create the sweep's folder and manifest, or reuse the folder when it holds this same sweep."""
    directory = sweep.out
    if (directory / MANIFEST).exists():
        manifest = read_manifest(directory)
        if [p["id"] for p in manifest["points"]] != [p.id for p in sweep.points]:
            raise UserError(f"{directory} holds a different sweep ({manifest['name']!r}, "
                            f"{len(manifest['points'])} points); choose another out or remove that folder")
        return manifest
    try:
        for sub in ("tasks", "logs"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the sweep folder {directory}: {exc.strerror}") from None
    manifest = manifest_for(sweep, python)
    write_json(directory / MANIFEST, manifest)
    return manifest


def remove_new(directory: Path) -> None:
    """Undo ``prepare`` and the scripts of a sweep that never reached the queue; what was there before stays."""
    for name in (MANIFEST, *SCRIPTS):
        (directory / name).unlink(missing_ok=True)
    for sub in ("tasks", "logs", ""):
        try:
            (directory / sub).rmdir()
        except OSError:  # not empty: it held something before
            pass


def scripts(manifest: dict, opts: SlurmOptions) -> tuple[str, str]:
    """The array and collect scripts; their work is the CLI's ``sweep task`` and ``sweep collect``.

    Rendered from the manifest alone, so ``--resume`` gives an old sweep the current command lines."""
    directory = Path(manifest["dir"])
    cli = [opts.python or manifest["python"], "-m", "harness", "sweep"]
    array = backend.render("array", manifest["name"], [*cli, "task", str(directory)],
                           opts, directory / MANIFEST, directory / SCRIPTS[0])
    collect_script = backend.render("collect", manifest["name"], [*cli, "collect", str(directory)],
                                    opts, directory / MANIFEST, directory / SCRIPTS[1])
    return array, collect_script


# ---------------------------------------------------------------- task states


def task_path(directory: Path, index: int) -> Path:
    return Path(directory) / "tasks" / f"{index}.json"


def task_states(directory: Path, manifest: dict) -> list[dict]:
    """Every point's task file, or ``{"state": "pending"}`` where the point has not started."""
    states = []
    for point in manifest["points"]:
        try:
            states.append(json.loads(task_path(directory, point["index"]).read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            states.append({"index": point["index"], "id": point["id"], "state": "pending"})
    return states


def counts(states: list[dict]) -> dict[str, int]:
    tally = dict.fromkeys(STATES, 0)
    for s in states:
        tally[s["state"]] += 1
    return tally


def unfinished(states: list[dict]) -> list[int]:
    """The indices of the points still to run: pending, failed, or lost while running."""
    return [s["index"] for s in states if s["state"] not in FINISHED]


# ---------------------------------------------------------------- one task


def point_command(point: dict, python: str, out: Path) -> list[str]:
    args = ["-m", "harness", *point["argv"], "--out", str(out)]
    if point["nproc"] > 1:
        return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={point['nproc']}", *args]
    return [python, *args]


def _seed_ceilings(records: Path, stage: Path) -> int:
    """Copy the ceilings already measured in this sweep into the staging file, so a point does not
    measure them again; returns the staging file's size (new records start there)."""
    from harness.records import append_record, read_records

    if records.exists():
        for r in read_records([records]):
            if r.get("workload") in CEILING_WORKLOADS and r.get("status") == "ok":
                append_record(stage, r)
    return stage.stat().st_size if stage.exists() else 0


def _new_records(stage: Path, start: int) -> list[dict]:
    if not stage.exists():
        return []
    with open(stage, "rb") as handle:
        handle.seek(start)
        lines = handle.read().decode().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def run_task(directory: Path, index: int, quiet: bool = False) -> str:
    """Run point ``index`` of the sweep in ``directory`` in a fresh process; returns its final state."""
    from harness.records import RECORDS_FILE, append_record, make_record, new_run_id

    directory = Path(directory).absolute()
    manifest = read_manifest(directory)
    if not 0 <= index < len(manifest["points"]):
        raise UserError(f"--index {index} is out of range: the sweep has {len(manifest['points'])} points")
    point = manifest["points"][index]
    path = task_path(directory, index)
    try:
        attempt = json.loads(path.read_text()).get("attempt", 0) + 1
    except (FileNotFoundError, json.JSONDecodeError):
        attempt = 1
    stage = directory / "work" / str(index)
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    (directory / "logs").mkdir(exist_ok=True)
    start = _seed_ceilings(directory / RECORDS_FILE, stage / RECORDS_FILE)
    command = point_command(point, sys.executable, stage)
    log = directory / "logs" / f"point-{index}.log"
    state = {"index": index, "id": point["id"], "state": "running", "attempt": attempt, "started": now(),
             "host": socket.gethostname(), "pid": os.getpid(),
             **{key: os.environ.get(var) for key, var in SLURM_IDS.items()}, "command": command, "log": str(log)}
    write_json(path, state)
    if not quiet:
        print("+ " + shlex.join(command), file=sys.stderr, flush=True)

    terminated = []
    with open(log, "ab") as handle:
        header = f"=== attempt {attempt} at {state['started']} on {state['host']}: {shlex.join(command)}\n"
        handle.write(header.encode())
        handle.flush()
        log_start = handle.tell()
        cwd = manifest["cwd"] if Path(manifest["cwd"]).is_dir() else None
        proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=cwd,
                                env={**os.environ, **manifest["env"]})

        def on_term(signum, frame):  # time limit, preemption or scancel: stop the point, record why
            terminated.append(signal.Signals(signum).name)
            proc.terminate()

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            returncode = proc.wait()
        finally:
            signal.signal(signal.SIGTERM, previous)
    with open(log, "rb") as handle:
        handle.seek(log_start)
        tail = handle.read().decode(errors="replace")[-TAIL_CHARS:]

    records = _new_records(stage / RECORDS_FILE, start)
    statuses = [r.get("status") for r in records]
    if terminated:
        outcome, error = "failed", f"terminated by {terminated[0]} (time limit, preemption or scancel)\n{tail}"
    elif returncode == 0 and statuses and all(s == "ok" for s in statuses):
        outcome, error = "done", None
    elif "oom" in statuses or any(marker in tail for marker in OOM_MARKERS):
        outcome, error = "oom", tail
    else:
        outcome = "failed"
        error = tail if tail.strip() else f"exit code {returncode} and no output"
        if returncode < 0:
            error = f"killed by {signal.Signals(-returncode).name} (out of host memory, or by hand?)\n{tail}"
        if returncode == 0:
            error = f"the command exited 0 but wrote no record\n{tail}"
    stamp = {"sweep": manifest["name"], "sweep_point_id": point["id"], "sweep_index": index, "sweep_attempt": attempt}
    if not records:  # the point never got as far as a record: keep its failure visible in the report
        env = {"host": state["host"], **{key: os.environ.get(var) for key, var in SLURM_IDS.items()}}
        records = [make_record(run_id=new_run_id(), point={"workload": point["workload"], **point["params"]},
                               status="oom" if outcome == "oom" else "failed",
                               error=error.strip().splitlines()[-1] if error.strip() else error, env=env)]
    for record in records:
        append_record(directory / RECORDS_FILE, {**record, **stamp})
    state.update(state=outcome, finished=now(), returncode=returncode, records=len(records), error=error)
    write_json(path, state)
    shutil.rmtree(stage, ignore_errors=True)
    return outcome


# ---------------------------------------------------------------- the report


def collect(directory: Path) -> int:
    """Write the report over the sweep's records and ``collect.json`` with the final counts."""
    from harness.records import RECORDS_FILE
    from harness.report import build

    directory = Path(directory).absolute()
    manifest = read_manifest(directory)
    tally = counts(task_states(directory, manifest))
    result = {"finished": now(), "counts": tally, "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "report": None}
    if (directory / RECORDS_FILE).exists():
        md, html = build([directory / RECORDS_FILE], directory / "report")
        result["report"] = str(html)
        print(f"report: {html}\n        {md}")
    else:
        print(f"no records in {directory} yet: no report", file=sys.stderr)
    write_json(directory / "collect.json", result)
    return 0 if result["report"] else 1
