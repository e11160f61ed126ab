"""A sweep's folder and its tasks: the manifest, one state file per point, running one point.

The folder holds ``manifest.json`` (every point with its id and argv), the
rendered ``sweep.sbatch`` and ``collect.sbatch``, ``tasks/<index>.json`` (the
state of each point: running, done, failed, oom or interrupted, with the error
tail, times, host, process ids, heartbeat and SLURM ids), ``records.jsonl``,
``logs/`` and, once collected, ``report/`` and ``collect.json``. A task runs its
point in a fresh process with ``--out`` pointing at a private staging folder,
then moves the records into ``records.jsonl`` (atomic appends) stamped with the
sweep name, point id, index and attempt. Status comes from the task files,
because many clusters have no SLURM accounting, checked against what is still
alive (see ``task_states``).

While its point runs, a task refreshes ``heartbeat`` in its task file every
``HEARTBEAT_S`` seconds. A task file that says ``running`` is shown as ``lost``
when its wrapper process is gone (same host: the recorded pid is not alive, or
is another process now), when its heartbeat is older than ``STALE_BEATS``
intervals, or when its SLURM job has left the queue. A point without a task
file is ``pending`` while its array task may still start, and ``never-started``
once its array job has left the queue without it (the task died before the
wrapper: a bad ``container`` or ``python``). ``--resume`` and ``sweep run`` run
again every point that is not done, out of memory, or running.

Kept apart from ``harness.sweep`` (file -> points) because everything here
works from the manifest alone: an array task, ``status``, ``collect`` and
``--resume`` never read the sweep file or need a parser. Array tasks run
``python -m harness sweep task DIR --index I``; the task process itself loads no
torch or transformers (the point's own process does), which matters when
thousands of tasks start from a shared file system.

Workloads that run distributed (their subcommand has ``--nproc``) start their
``nproc`` processes themselves on one node (``llmbench finetune --nproc N``). On
``nodes = K`` > 1 the task, on the job's first node, runs ``srun`` with one task
per node, each ``torchrun --nnodes K --nproc-per-node N --rdzv-backend c10d`` at
the endpoint the array script exported (``slurm.backend.RDZV_ENV``: the first
node); rank 0 writes the point's one record. The command is logged, so a point
can be re-run by hand inside an allocation of the same shape.
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
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from harness import envinfo
from harness.sweep import Sweep
from slurm import backend
from slurm.backend import SlurmOptions
from workloads.choices import CEILING_WORKLOADS
from workloads.errors import UserError

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
SCRIPTS = ("sweep.sbatch", "collect.sbatch")
WRITTEN = ("done", "failed", "oom", "interrupted", "running")  # the states a task file holds
STATES = ("done", "failed", "oom", "interrupted", "lost", "running", "pending", "never-started")
FINISHED = ("done", "oom")  # states a rerun would not change
NOT_RERUN = (*FINISHED, "running")  # a running point is left alone; every other state runs again
TAIL_CHARS = 2000
OOM_MARKERS = ("OutOfMemoryError", "CUDA out of memory", "out of memory", "DefaultCPUAllocator: can't allocate memory",
               "DefaultCPUAllocator: not enough memory")
SLURM_IDS = {"slurm_job_id": "SLURM_JOB_ID", "slurm_array_job_id": "SLURM_ARRAY_JOB_ID",
             "slurm_array_task_id": "SLURM_ARRAY_TASK_ID"}
HEARTBEAT_S = 30.0  # how often a running task refreshes its heartbeat
STALE_BEATS = 3  # heartbeats missed before a running task counts as lost
STOP_GRACE_S = 10.0  # after SIGTERM, before SIGKILL, when a point is stopped
SHOWN_PER_STATE = 20  # points listed per state by `status`
MANIFEST_KEYS = {"name": str, "dir": str, "cwd": str, "python": str, "env": dict, "slurm": dict, "jobs": list,
                 "points": list}
POINT_KEYS = {"index": int, "id": str, "workload": str, "params": dict, "argv": list, "nproc": int}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _stamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _age_s(stamp, at: float) -> float | None:
    """Seconds from the ISO time ``stamp`` to ``at`` (a ``time.time()``), or None if it is not a time."""
    try:
        moment = datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return at - moment.timestamp()


def write_json(path: Path, data: dict) -> None:
    """Write a whole JSON file or nothing: a reader never sees half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
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


def _damaged(path: Path, why: str) -> UserError:
    return UserError(f"{path} is damaged ({why}); it is written by `llmbench sweep run|submit`: restore it, "
                     "or start the sweep again in another folder")


def read_manifest(directory: Path) -> dict:
    """The sweep's manifest, checked: a missing, unreadable or malformed one is a ``UserError`` of one line."""
    path = Path(directory) / MANIFEST
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"{directory} holds no sweep ({MANIFEST} not found); "
                        "start one with `llmbench sweep run FILE` or `llmbench sweep submit FILE`") from None
    except UnicodeDecodeError:
        raise _damaged(path, "not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise _damaged(path, f"not JSON: {exc.msg} at line {exc.lineno}") from None
    except OSError as exc:
        raise UserError(f"cannot read {str(path)[:300]}: {exc.strerror or exc}") from None
    if not isinstance(data, dict):
        raise _damaged(path, "not a JSON object")
    for key, kind in MANIFEST_KEYS.items():
        if not isinstance(data.get(key), kind):
            raise _damaged(path, f"{key!r} missing or not a {kind.__name__}")
    for number, point in enumerate(data["points"]):
        if not isinstance(point, dict) or any(not isinstance(point.get(k), t) or isinstance(point.get(k), bool)
                                              for k, t in POINT_KEYS.items()):
            raise _damaged(path, f"point {number} is not a point with {', '.join(POINT_KEYS)}")
        if point["index"] != number or not all(isinstance(w, str) for w in point["argv"]):
            raise _damaged(path, f"point {number} has index {point['index']} or a non-text argv")
    for job in data["jobs"]:
        if not isinstance(job, dict) or not isinstance(job.get("id"), str):
            raise _damaged(path, "a job without an id")
    return data


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


def _read_task(directory: Path, point: dict) -> dict | None:
    """A point's task file, or None when there is none; an unreadable one reads as a failed task."""
    path = task_path(directory, point["index"])
    try:
        task = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # not UTF-8, not JSON, a folder, ...
        return {"index": point["index"], "id": point["id"], "state": "failed",
                "error": f"its task file {path} cannot be read ({type(exc).__name__}); the point runs again"}
    if not isinstance(task, dict) or task.get("state") not in WRITTEN:
        state = task.get("state") if isinstance(task, dict) else None
        return {"index": point["index"], "id": point["id"], "state": "failed",
                "error": f"its task file {path} holds an unknown state {state!r}; the point runs again"}
    return {**task, "index": point["index"], "id": point["id"]}


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), to tell it from a later process
    that got the same pid; None where that cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid, started: str | None = None) -> bool:
    """Whether process ``pid`` of this host is alive (and, when ``started`` is known, still the same one)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    except OSError:
        return False
    now_started = process_start(pid)
    return started is None or now_started is None or now_started == started


def _slurm_entry(task: dict) -> str | None:
    """How ``squeue --array`` lists the SLURM job a task ran in: ``ARRAYJOB_TASK`` or ``JOB``."""
    array_job, array_task = task.get("slurm_array_job_id"), task.get("slurm_array_task_id")
    if array_job and array_task is not None:
        return f"{array_job}_{array_task}"
    return task.get("slurm_job_id") or None


def lost_reason(task: dict, host: str, at: float, queue: set[str] | None, jobs_gone: bool) -> str | None:
    """Why a task file that says ``running`` is not running any more, or None when it may be.

    ``host``: this machine's name; ``at``: the time now; ``queue``: what squeue lists of the sweep's jobs
    (None: cannot tell); ``jobs_gone``: the sweep was submitted and none of its jobs is queued any more."""
    beat_s = task.get("heartbeat_s")
    beat_s = beat_s if isinstance(beat_s, (int, float)) and beat_s > 0 else HEARTBEAT_S
    age = _age_s(task.get("heartbeat"), at)
    if age is not None and age > STALE_BEATS * beat_s:
        return f"no heartbeat for {age:.0f} s (one is written every {beat_s:g} s)"
    if task.get("host") == host and "pid" in task and not pid_alive(task["pid"], task.get("pid_start")):
        return f"its process {task['pid']} on {host} is gone"
    entry = _slurm_entry(task)
    if entry and queue is not None and entry not in queue:
        return f"its SLURM job {entry} has left the queue"
    if "heartbeat" not in task and not entry and jobs_gone:  # a task file from before heartbeats
        return "the sweep's jobs have left the queue"
    return None


def _array_tasks(manifest: dict) -> dict[int, str]:
    """Point index -> the array task (``JOB_TASK``) of the latest submission that holds it."""
    where = {}
    for job in manifest["jobs"]:
        if job.get("kind") == "array" and isinstance(job.get("array"), str) and isinstance(job.get("offset"), int):
            try:
                ids = backend.spec_indices(job["array"])
            except ValueError:
                continue
            for task_id in ids:
                where[job["offset"] + task_id] = f"{job['id']}_{task_id}"
    return where


def task_states(directory: Path, manifest: dict, probe: bool = True) -> list[dict]:
    """Every point's state: its task file, with ``running`` turned into ``lost`` (and ``lost_reason``) when
    its task is gone, and ``pending`` or ``never-started`` where it has none. ``probe``: ask ``squeue``
    about the sweep's jobs where that decides a state (without it, only the host and heartbeat rules)."""
    directory = Path(directory)
    tasks = [(point, _read_task(directory, point)) for point in manifest["points"]]
    arrays = _array_tasks(manifest)
    running = [t for _, t in tasks if t and t["state"] == "running"]
    waiting = [p["index"] for p, t in tasks if t is None and p["index"] in arrays]
    queue = None
    if probe and (running or waiting):
        ids = {job["id"] for job in manifest["jobs"]}
        ids |= {str(_slurm_entry(t)).split("_")[0] for t in running if _slurm_entry(t)}
        queue = backend.queue(ids)
    sweep_jobs = [job["id"] for job in manifest["jobs"]]
    jobs_gone = bool(sweep_jobs) and queue is not None and not any(e.split("_")[0] in sweep_jobs for e in queue)
    host, at = socket.gethostname(), time.time()
    states = []
    for point, task in tasks:
        if task is None:
            array_task = arrays.get(point["index"])
            state = "pending"
            if array_task is not None and queue is not None and array_task not in queue:
                state = "never-started"
            states.append({"index": point["index"], "id": point["id"], "state": state,
                           **({"array_task": array_task} if array_task else {})})
            continue
        if task["state"] == "running":
            reason = lost_reason(task, host, at, queue, jobs_gone)
            if reason:
                task = {**task, "state": "lost", "lost_reason": reason}
        states.append(task)
    return states


def counts(states: list[dict]) -> dict[str, int]:
    tally = dict.fromkeys(STATES, 0)
    for s in states:
        tally[s["state"]] += 1
    return tally


def unfinished(states: list[dict]) -> list[int]:
    """The indices of the points to run again: pending, never started, failed, interrupted or lost."""
    return [s["index"] for s in states if s["state"] not in NOT_RERUN]


def reason(state: dict) -> str:
    """One line on why a point is where it is (empty for done, running and pending points)."""
    if state["state"] == "lost":
        where = f" (host {state.get('host')}, pid {state.get('pid')})" if state.get("host") else ""
        return f"was running{where}, but {state['lost_reason']}"
    if state["state"] == "never-started":
        return (f"array task {state.get('array_task')} left the queue without starting the point: see its "
                "logs/slurm-*.out (a bad container or python?)")
    last = (state.get("error") or "").strip().splitlines()[-1:] or [""]
    return last[0][:160]


# ---------------------------------------------------------------- one task


def point_command(point: dict, python: str, out: Path, opts: SlurmOptions | None = None) -> list[str]:
    """The point's command line: a plain ``llmbench`` call (``python -m harness ...``), or on ``opts.nodes``
    > 1 ``srun`` starting ``torchrun`` on every node of the job at its rendezvous (``backend.RDZV_ENV``)."""
    args = ["-m", "harness", *point["argv"], "--out", str(out)]
    if opts is None or opts.nodes == 1:
        return [python, *args]
    endpoint = os.environ.get(backend.RDZV_ENV)
    if not endpoint:
        raise UserError(f"point {point['index']} runs on {opts.nodes} nodes: it runs inside its SLURM job "
                        f"(`llmbench sweep submit`), whose script sets {backend.RDZV_ENV}")
    argv = list(point["argv"])
    if "--nproc" in argv:  # torchrun's parser takes --nproc for its own --nproc-per-node
        at = argv.index("--nproc")
        del argv[at:at + 2]
    srun = ["srun", f"--nodes={opts.nodes}", f"--ntasks={opts.nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    if opts.cpus_per_task:
        srun.append(f"--cpus-per-task={opts.cpus_per_task}")
    torchrun = [python, "-m", "torch.distributed.run", f"--nnodes={opts.nodes}", f"--nproc-per-node={point['nproc']}",
                "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
                f"--rdzv-id={os.environ.get('SLURM_JOB_ID') or point['id']}", "--max-restarts=0"]
    return [*srun, *torchrun, "-m", "harness", *argv, "--out", str(out)]


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
    """The records the point wrote: the staging file from ``start`` on, then its fallback files (where an
    append went when the staging file could not take it). A line that is not a whole record (the point
    killed in the middle of a write) is left out."""
    from harness.records import fallback_files

    lines = []
    for path, offset in ((stage, start), *((p, 0) for p in fallback_files(stage))):
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                lines += handle.read().split(b"\n")
        except FileNotFoundError:
            continue
    records = []
    for line in lines:
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _die_with_parent():
    """A ``preexec_fn`` that makes the point's process get SIGTERM when the task dies (Linux
    ``PR_SET_PDEATHSIG``), so a task killed with SIGKILL leaves no orphan behind; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec():
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the task died before that took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _stop(proc: subprocess.Popen) -> None:
    """Stop the point's process group: SIGTERM, then SIGKILL after ``STOP_GRACE_S``."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, STOP_GRACE_S)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _gpu_names() -> list[str] | None:
    """The names of this host's GPUs (NVML, else ``nvidia-smi``), in index order; None when neither answers."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            names = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
                names.append(name.decode() if isinstance(name, bytes) else name)
            return names
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001, S110 - no nvidia-ml-py, no driver, no permission: ask nvidia-smi
        pass
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return [line.strip() for line in result.stdout.splitlines() if line.strip()] if result.returncode == 0 else None


def failure_env(params: dict, host: str) -> dict:
    """The device part of ``env`` for the record of a point that produced none: the device its ``device``
    parameter (default auto) names on this host, found without torch, so the report files the failure
    under the same device as the point's other records (``harness.ceilings.device_key``)."""
    wanted = str(params.get("device", "auto")).strip().lower()
    env = {"host": host, "device_type": None, "device_name": None}
    if wanted == "cpu":
        return {**env, "device_type": "cpu", "device_name": envinfo.cpu_name()}
    names = _gpu_names() or []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        picks = [v.strip() for v in visible.split(",") if v.strip()]
        if picks and all(p.isdigit() for p in picks):
            names = [names[int(p)] for p in picks if int(p) < len(names)]
        elif not picks or picks[0].startswith("-"):
            names = []
    index = 0
    if wanted.startswith("cuda:") and wanted[5:].isdigit():
        index = int(wanted[5:])
    if wanted.startswith("cuda") or (wanted == "auto" and names):
        # a GPU that is not there still gets a name: one that says so, never an "unknown" device
        name = names[index] if index < len(names) else f"{wanted} (not found on {host})"
        return {**env, "device_type": "cuda", "device_name": name}
    return {**env, "device_type": "cpu", "device_name": envinfo.cpu_name()}


def _heartbeat(path: Path, state: dict, lock: threading.Lock, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        with lock:
            state["heartbeat"] = _stamp()
            try:
                write_json(path, state)
            except OSError:  # a full or hung file system: try again next beat
                pass


def run_task(directory: Path, index: int, quiet: bool = False) -> str:
    """Run point ``index`` of the sweep in ``directory`` in a fresh process; returns its final state.

    ``interrupted`` when Ctrl-C (SIGINT) stopped it: its process is stopped, nothing is recorded, and the
    caller decides whether the sweep goes on (``sweep run`` stops)."""
    from harness.records import RECORDS_FILE, append_record, make_record, new_run_id

    directory = Path(directory).absolute()
    manifest = read_manifest(directory)
    if not 0 <= index < len(manifest["points"]):
        raise UserError(f"--index {index} is out of range: the sweep has {len(manifest['points'])} points")
    point = manifest["points"][index]
    path = task_path(directory, index)
    previous = _read_task(directory, point) or {}
    attempt = previous.get("attempt", 0) + 1 if isinstance(previous.get("attempt"), int) else 1
    stage = directory / "work" / str(index)
    command = point_command(point, sys.executable, stage, SlurmOptions.from_table(manifest["slurm"]))
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    (directory / "logs").mkdir(exist_ok=True)
    (directory / "tasks").mkdir(exist_ok=True)
    start = _seed_ceilings(directory / RECORDS_FILE, stage / RECORDS_FILE)
    log = directory / "logs" / f"point-{index}.log"
    interval = HEARTBEAT_S
    state = {"index": index, "id": point["id"], "state": "running", "attempt": attempt, "started": now(),
             "host": socket.gethostname(), "pid": os.getpid(), "pid_start": process_start(os.getpid()),
             "heartbeat": _stamp(), "heartbeat_s": interval,
             **{key: os.environ.get(var) for key, var in SLURM_IDS.items()}, "command": command, "log": str(log)}
    write_json(path, state)
    if not quiet:
        print("+ " + shlex.join(command), file=sys.stderr, flush=True)

    terminated, interrupted = [], False
    lock, stop = threading.Lock(), threading.Event()
    beat = None
    with open(log, "ab") as handle:
        header = f"=== attempt {attempt} at {state['started']} on {state['host']}: {shlex.join(command)}\n"
        handle.write(header.encode())
        handle.flush()
        log_start = handle.tell()
        cwd = manifest["cwd"] if Path(manifest["cwd"]).is_dir() else None
        try:
            proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=cwd,
                                    env={**os.environ, **manifest["env"]}, start_new_session=True,
                                    preexec_fn=_die_with_parent())  # noqa: PLW1509 - no other thread yet
        except OSError as exc:  # the interpreter went away since the task started
            proc = None
            handle.write(f"cannot start the point: {exc}\n".encode())

        def on_term(signum, frame):  # time limit, preemption or scancel: stop the point, record why
            terminated.append(signal.Signals(signum).name)
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass

        returncode = 127
        if proc is not None:
            old_term = signal.signal(signal.SIGTERM, on_term)
            try:
                with lock:
                    state["point_pid"] = proc.pid
                    write_json(path, state)
                beat = threading.Thread(target=_heartbeat, args=(path, state, lock, stop, interval), daemon=True)
                beat.start()
                returncode = proc.wait()
            except KeyboardInterrupt:  # Ctrl-C: stop the point (a second Ctrl-C must not leave it running)
                interrupted = True
                old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
                try:
                    _stop(proc)
                finally:
                    signal.signal(signal.SIGINT, old_int)
                returncode = proc.returncode if proc.returncode is not None else -signal.SIGKILL
            finally:
                signal.signal(signal.SIGTERM, old_term)
                stop.set()
                if beat is not None:
                    beat.join()
    with open(log, "rb") as handle:
        handle.seek(log_start)
        tail = handle.read().decode(errors="replace")[-TAIL_CHARS:]

    if interrupted:
        state.update(state="interrupted", finished=now(), returncode=returncode, records=0,
                     error=f"interrupted (Ctrl-C): the point was stopped and its records dropped; it runs again "
                           f"with the sweep\n{tail}")
        write_json(path, state)
        shutil.rmtree(stage, ignore_errors=True)
        return "interrupted"

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
        env = {**failure_env(point["params"], state["host"]),
               **{key: os.environ.get(var) for key, var in SLURM_IDS.items()}}
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


def _status_report(out: Path, manifest: dict, states: list[dict], tally: dict) -> tuple[Path, Path]:
    """The report of a sweep without a single record: its counts and, one line each, every point not done."""
    import html as htmlmod

    summary = "  ".join(f"{state} {n}" for state, n in tally.items())
    intro = (f"Sweep {manifest['name']}: {len(states)} points, none produced a record ({summary}). "
             "Each point's output is in logs/point-I.log; a point that never started has its SLURM log in "
             "logs/slurm-*.out.")
    lines = [(f"point {s['index']} ({s['id']}, {s['state']})",
              "llmbench " + shlex.join(manifest["points"][s["index"]]["argv"]), reason(s))
             for s in states if s["state"] != "done"]
    out.mkdir(parents=True, exist_ok=True)
    md, html = out / "report.md", out / "report.html"
    md.write_text(f"# llmbench report\n\n{intro}\n\n## Points that did not complete\n\n"
                  + "".join(f"- {head}: `{command}`" + (f": {why}" if why else "") + "\n"
                            for head, command, why in lines))
    items = "".join(f"<li>{htmlmod.escape(head)}: <code>{htmlmod.escape(command)}</code>"
                    + (f": {htmlmod.escape(why)}" if why else "") + "</li>" for head, command, why in lines)
    html.write_text(f"<!doctype html><meta charset=\"utf-8\"><title>llmbench report</title><h1>llmbench report</h1>"
                    f"<p>{htmlmod.escape(intro)}</p><h2>Points that did not complete</h2><ul>{items}</ul>\n")
    return md, html


def collect(directory: Path) -> int:
    """Write the report over the sweep's records and ``collect.json`` with the final counts and the points
    that did not complete. Exit 0 whenever the report is written, failures or not: the collect job runs
    after every array (afterany) and reports what happened, even when no point produced a record."""
    from harness.records import RECORDS_FILE, fallback_files
    from harness.report import build

    directory = Path(directory).absolute()
    manifest = read_manifest(directory)
    states = task_states(directory, manifest)
    tally = counts(states)
    result = {"finished": now(), "counts": tally, "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "report": None,
              "not_done": [{"index": st["index"], "id": st["id"], "state": st["state"], "reason": reason(st)}
                           for st in states if st["state"] != "done"]}
    records = directory / RECORDS_FILE
    if records.exists() or fallback_files(records):
        try:
            md, html = build([records], directory / "report")
        except UserError:  # a records file without one readable record
            md, html = _status_report(directory / "report", manifest, states, tally)
    else:
        md, html = _status_report(directory / "report", manifest, states, tally)
    result["report"] = str(html)
    print(f"sweep {manifest['name']}: " + "  ".join(f"{state} {n}" for state, n in tally.items()))
    for row in result["not_done"][:SHOWN_PER_STATE]:
        print(f"  {row['state']:>13}  [{row['index']}] {row['id']}: {row['reason']}")
    if len(result["not_done"]) > SHOWN_PER_STATE:
        print(f"  ... and {len(result['not_done']) - SHOWN_PER_STATE} more in {directory / 'collect.json'}")
    print(f"report: {html}\n        {md}")
    write_json(directory / "collect.json", result)
    return 0
