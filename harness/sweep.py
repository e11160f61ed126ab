"""Sweeps: a TOML matrix expanded into points, each one plain ``llmbench`` command line.

A sweep file names a workload (any ``llmbench`` subcommand with an ``--out``
option, e.g. ``decode`` or ``kernel attention``), fixed ``[params]``, a
``[matrix]`` of axes whose every combination is a point, ``[[exclude]]`` rules
that drop combinations and ``[[include]]`` points added as written, and a
``[slurm]`` section (see ``slurm.backend``). Keys are the
subcommand's long options with ``-`` written ``_``; they are checked against the
subcommand's own argument parser when the sweep is planned, so a typo fails
before anything runs. A point's id is a hash of its workload and parameters:
the same point has the same id in every sweep.

The sweep's folder holds ``manifest.json`` (every point with its id and argv),
the rendered ``sweep.sbatch`` and ``collect.sbatch``, ``tasks/<index>.json``
(the state of each point: running, done, failed or oom, with the error tail,
times and SLURM ids), ``records.jsonl`` and ``logs/``. A task runs its point in
a fresh process with ``--out`` pointing at a private staging folder, then moves
the records into ``records.jsonl`` (atomic appends) stamped with the sweep name,
point id, index and attempt. Status comes from the task files only, because many
clusters have no SLURM accounting.

Array tasks call ``python -m harness.sweep task DIR --index I``: the same
command as ``llmbench sweep task``, without loading torch and transformers into
the wrapper (the point's own process loads them), which matters when thousands
of tasks start from a shared file system.

Workloads that run distributed (their subcommand has ``--nproc``) launch under
``torchrun --standalone`` with ``nproc`` processes, by default the GPUs per task.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import itertools
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from slurm import backend
from slurm.backend import SlurmOptions
from workloads.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

SWEEP_KEYS = ("name", "workload", "out", "params", "matrix", "include", "exclude", "slurm")
SET_BY_SWEEP = ("out", "help")
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
CEILING_WORKLOADS = ("copy", "triad", "matmul")  # harness.ceilings', named here to keep torch out of the wrapper
STATES = ("done", "failed", "oom", "running", "pending")
TAIL_CHARS = 2000
OOM_MARKERS = ("OutOfMemoryError", "CUDA out of memory", "out of memory")
SLURM_IDS = {"slurm_job_id": "SLURM_JOB_ID", "slurm_array_job_id": "SLURM_ARRAY_JOB_ID",
             "slurm_array_task_id": "SLURM_ARRAY_TASK_ID"}


@dataclass(frozen=True)
class Point:
    index: int
    id: str
    workload: str
    params: dict
    argv: list[str]  # the subcommand and its options, without --out
    nproc: int = 1  # processes; more than one launches under torchrun


@dataclass
class Sweep:
    name: str
    out: Path
    points: list[Point]
    slurm: SlurmOptions
    slurm_table: dict  # as written, kept in the manifest for --resume


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _suggest(word: str, known) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def point_id(workload: str, params: dict) -> str:
    text = json.dumps({"workload": workload, **params}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _subcommands(parser: argparse.ArgumentParser) -> dict:
    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})


class Options:
    """The long options of one ``llmbench`` subcommand, read from its real argument parser."""

    def __init__(self, workload: str):
        from harness.cli import build_parser

        parser, prefix = build_parser(), "llmbench"
        for word in workload.split() or [""]:
            commands = _subcommands(parser)
            if word not in commands:
                known = ", ".join(c for c in commands if c != "sweep") or "no subcommands"
                raise UserError(f"unknown workload {workload!r}{_suggest(word, commands)}: `{prefix}` has {known}")
            parser, prefix = commands[word], f"{prefix} {word}"
        self.workload = workload
        self.words = workload.split()
        self.actions = {}
        for action in parser._actions:
            for option in action.option_strings:
                if option.startswith("--"):
                    self.actions[option[2:].replace("-", "_")] = (option, action)
        if "out" not in self.actions:
            more = f" (workload = \"{workload} {next(iter(_subcommands(parser)))}\"?)" if _subcommands(parser) else ""
            raise UserError(f"`{prefix}` has no --out option, so it cannot run as a sweep point{more}")
        self.distributed = "nproc" in self.actions
        self._cache: dict = {}

    def args(self, key: str, value) -> list[str]:
        """The command-line words for one parameter, checked the way the subcommand's parser checks them."""
        cache_key = (key, type(value).__name__, value)
        if cache_key not in self._cache:
            self._cache[cache_key] = self._convert(key, value)
        return self._cache[cache_key]

    def _convert(self, key: str, value) -> list[str]:
        if key in SET_BY_SWEEP:
            raise UserError(f"{key!r} is set by the sweep itself; the results folder is the top-level out = \"...\"")
        if key not in self.actions:
            raise UserError(f"`llmbench {self.workload}` has no option --{key.replace('_', '-')}"
                            f"{_suggest(key, self.actions)}")
        option, action = self.actions[key]
        if action.nargs == 0:
            if not isinstance(value, bool):
                raise UserError(f"{key} is a flag ({option}): write true or false, got {value!r}")
            return [option] if value else []
        if isinstance(value, list):
            raise UserError(f"{key} = {value!r} is a list: sweep axes go in [matrix]; to pass one "
                            "comma-separated value write it as a string, e.g. \"1,8\"")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise UserError(f"{key} = {value!r}: expected a string or a number")
        text = str(value)
        converted = text
        if action.type is not None:
            try:
                converted = action.type(text)
            except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
                raise UserError(f"{key} = {value!r}: {exc or 'invalid value'}") from None
        if action.choices is not None and converted not in action.choices:
            raise UserError(f"{key} = {value!r}: choose from {', '.join(map(str, action.choices))}")
        return [option, text]


def _table(data: dict, key: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise UserError(f"[{key}] must be a table")
    return value


def _rules(data: dict, key: str) -> list[dict]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) and v for v in value):
        raise UserError(f"{key} must be written as [[{key}]] tables of key = value")
    return value


def _scalar(where: str, key: str, value) -> None:
    if isinstance(value, (dict, list)):
        raise UserError(f"{where}.{key} = {value!r}: expected one value")


def from_dict(data: dict, out_override: Path | None = None) -> Sweep:
    """Check a parsed sweep file and expand it into points (``out_override``: the command line's --out)."""
    unknown = [k for k in data if k not in SWEEP_KEYS]
    if unknown:
        raise UserError(f"unknown key {unknown[0]!r} in the sweep file{_suggest(unknown[0], SWEEP_KEYS)}; "
                        f"known: {', '.join(SWEEP_KEYS)}")
    name = data.get("name")
    if not isinstance(name, str) or not backend.WORD.fullmatch(name):
        raise UserError('the sweep needs a name = "..." of letters, digits, "_", ".", "+" or "-"')
    params, matrix = _table(data, "params"), _table(data, "matrix")
    include, exclude = _rules(data, "include"), _rules(data, "exclude")
    slurm = SlurmOptions.from_table(_table(data, "slurm"))
    out = str(out_override) if out_override else data.get("out", f"results/runs/sweeps/{name}")
    if not isinstance(out, str) or not out or backend.CONTROL.search(out) or "%" in out:
        raise UserError(f"out must be a folder path without '%' or control characters, got {out!r}")
    for key, values in matrix.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"matrix.{key} must be a non-empty list of values, got {values!r}")
        for value in values:
            _scalar("matrix", key, value)
        if key in params:
            raise UserError(f"{key} is both in [params] and in [matrix]")
    for key, value in params.items():
        _scalar("params", key, value)
    for rule in include:
        for key, value in rule.items():
            _scalar("include", key, value)
    for rule in exclude:
        for key in rule:
            if key not in matrix:
                raise UserError(f"exclude rule key {key!r} is not a matrix axis{_suggest(key, matrix)}")
    if not matrix and not include:
        raise UserError("the sweep has an empty matrix: add [matrix] axes or [[include]] points")
    top_workload = data.get("workload")
    if top_workload is not None and not isinstance(top_workload, str):
        raise UserError(f"workload must be a subcommand name such as \"decode\", got {top_workload!r}")
    if "workload" in params:
        raise UserError("set the workload with the top-level workload = \"...\", not in [params]")

    def combos():
        keys = list(matrix)
        excludes = [{k: v if isinstance(v, list) else [v] for k, v in rule.items()} for rule in exclude]
        for values in itertools.product(*matrix.values()) if matrix else ():
            combo = dict(zip(keys, values))
            if not any(all(combo[k] in allowed for k, allowed in rule.items()) for rule in excludes):
                yield {**params, **combo}
        for rule in include:
            yield {**params, **rule}

    options: dict[str, Options] = {}
    points, seen = [], set()
    for raw in combos():
        workload = raw.pop("workload", top_workload)
        if workload is None:
            raise UserError('the sweep needs a workload = "decode" (or a workload axis in [matrix])')
        if workload not in options:
            options[workload] = Options(workload)
        opts = options[workload]
        pid = point_id(workload, raw)
        if pid in seen:
            continue
        seen.add(pid)
        argv = list(opts.words)
        for key, value in raw.items():
            argv += opts.args(key, value)
        nproc = 1
        if opts.distributed:
            nproc = int(raw.get("nproc", slurm.gpus_per_task or 1))
            if "nproc" not in raw and nproc > 1:
                argv += opts.args("nproc", nproc)
            if slurm.gpus_per_task and nproc > slurm.gpus_per_task:
                raise UserError(f"a point asks for nproc = {nproc} but [slurm] gpus_per_task is {slurm.gpus_per_task}")
        points.append(Point(len(points), pid, workload, raw, argv, nproc))
    if not points:
        raise UserError("every combination of the matrix is excluded: the sweep has no points")
    return Sweep(name, Path(out).absolute(), points, slurm, _table(data, "slurm"))


def load(path: Path, out: Path | None = None) -> Sweep:
    try:
        text = Path(path).read_text()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise UserError(f"no sweep file at {path}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path} is not valid TOML: {exc}") from None
    return from_dict(data, out)


# ---------------------------------------------------------------- the sweep's folder


def _write_json(path: Path, data: dict) -> None:
    """Write a whole JSON file or nothing: a reader never sees half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def manifest_for(sweep: Sweep, python: str) -> dict:
    return {
        "manifest_version": MANIFEST_VERSION, "name": sweep.name, "created": _now(), "dir": str(sweep.out),
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
    _write_json(directory / MANIFEST, manifest)
    return manifest


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
    state = {"index": index, "id": point["id"], "state": "running", "attempt": attempt, "started": _now(),
             "host": socket.gethostname(), "pid": os.getpid(),
             **{key: os.environ.get(var) for key, var in SLURM_IDS.items()}, "command": command, "log": str(log)}
    _write_json(path, state)
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
    state.update(state=outcome, finished=_now(), returncode=returncode, records=len(records), error=error)
    _write_json(path, state)
    shutil.rmtree(stage, ignore_errors=True)
    return outcome


# ---------------------------------------------------------------- commands


def cmd_plan(args) -> int:
    started = time.perf_counter()
    sweep = load(args.file, args.out)
    elapsed = time.perf_counter() - started
    print(f"sweep {sweep.name}: {len(sweep.points)} points, planned in {elapsed:.2f} s; results in {sweep.out}")
    for p in sweep.points[:args.limit]:
        launcher = f"torchrun x{p.nproc} " if p.nproc > 1 else ""
        print(f"  {p.index:>5}  {p.id}  {launcher}llmbench {shlex.join(p.argv)}")
    if len(sweep.points) > args.limit:
        print(f"  ... and {len(sweep.points) - args.limit} more")
    return 0


def cmd_run(args) -> int:
    from tqdm import tqdm

    sweep = load(args.file, args.out)
    manifest = prepare(sweep, os.path.abspath(sys.executable))
    directory = sweep.out
    todo = [s["index"] for s in task_states(directory, manifest) if s["state"] not in ("done", "oom")]
    if len(todo) < len(sweep.points):
        print(f"{len(sweep.points) - len(todo)} of {len(sweep.points)} points already finished in {directory}",
              file=sys.stderr)
    with tqdm(todo, desc=f"sweep {sweep.name}", unit="point", file=sys.stderr, disable=None) as bar:
        for index in bar:
            point = manifest["points"][index]
            began = time.perf_counter()
            outcome = run_task(directory, index, quiet=True)
            tqdm.write(f"[{index}] {point['id']} llmbench {shlex.join(point['argv'])}: {outcome} "
                       f"({time.perf_counter() - began:.1f} s)", file=sys.stderr)
    tally = print_status(directory)
    if not args.no_report:
        collect(directory)
    return 0 if tally["done"] == len(sweep.points) else 1


def scripts(manifest: dict, opts: SlurmOptions) -> tuple[str, str]:
    directory = Path(manifest["dir"])
    python = opts.python or manifest["python"]
    array = backend.render("array", manifest["name"], [python, "-m", "harness.sweep", "task", str(directory)],
                           opts, directory / MANIFEST, directory / "sweep.sbatch")
    collect_script = backend.render("collect", manifest["name"], [python, "-m", "harness.sweep", "collect",
                                                                  str(directory)],
                                    opts, directory / MANIFEST, directory / "collect.sbatch")
    return array, collect_script


def cmd_submit(args) -> int:
    target = Path(args.target)
    if args.resume:
        if args.out is not None:
            raise UserError("--resume takes the sweep's folder; --out does not apply")
        directory = target.absolute()
        manifest = read_manifest(directory)
        still = backend.queued([job["id"] for job in manifest["jobs"]])
        if still:
            raise UserError(f"job(s) {', '.join(still)} of this sweep are still queued or running; wait for them "
                            "(or scancel them) before resuming")
        states = task_states(directory, manifest)
        indices = [s["index"] for s in states if s["state"] not in ("done", "oom")]
        if not indices:
            print(f"nothing to resubmit: {counts(states)['done']} done, {counts(states)['oom']} out of memory")
            return 0
        opts = SlurmOptions.from_table(manifest["slurm"])
    else:
        if target.is_dir():
            raise UserError(f"{target} is a folder: resubmit its missing points with "
                            f"`llmbench sweep submit {target} --resume`, or pass a sweep file")
        sweep = load(target, args.out)
        opts = sweep.slurm
        manifest = manifest_for(sweep, os.path.abspath(sys.executable))
        directory = sweep.out
        if (directory / MANIFEST).exists():
            raise UserError(f"{directory} already holds a sweep; resubmit its missing points with "
                            f"`llmbench sweep submit {directory} --resume`, or choose another out")
        indices = [p.index for p in sweep.points]
    array_text, collect_text = scripts(manifest, opts)
    chunks = backend.array_chunks(indices, backend.max_array_size())
    log_dir = directory / "logs"
    array_cmds = [backend.array_command(directory / "sweep.sbatch", c, opts.max_concurrent, log_dir) for c in chunks]
    if args.dry_run:
        print(f"# {directory / 'sweep.sbatch'}\n{array_text}\n# {directory / 'collect.sbatch'}\n{collect_text}")
        print(f"# {len(indices)} point(s) in {len(chunks)} array(s); nothing was submitted (--dry-run). Would run:")
        for cmd in array_cmds:
            print(" ".join(cmd))
        print(" ".join(backend.collect_command(directory / "collect.sbatch", ["<array job ids>"], log_dir)))
        return 0
    if not args.resume:
        manifest = prepare(sweep, manifest["python"])
    (directory / "sweep.sbatch").write_text(array_text)
    (directory / "collect.sbatch").write_text(collect_text)
    ids = []
    try:
        for cmd, chunk in zip(array_cmds, chunks):
            ids.append(backend.submit(cmd))
            manifest["jobs"].append({"id": ids[-1], "kind": "array", "array": chunk.spec(opts.max_concurrent),
                                     "offset": chunk.offset, "points": len(chunk.indices), "submitted": _now()})
        collect_id = backend.submit(backend.collect_command(directory / "collect.sbatch", ids, log_dir))
        manifest["jobs"].append({"id": collect_id, "kind": "collect", "after": ids, "submitted": _now()})
    except UserError as exc:
        if not ids and not args.resume:  # nothing reached the queue: leave no sweep behind, so the file can be fixed
            _remove_new_sweep(directory)
            raise
        _write_json(directory / MANIFEST, manifest)
        raise UserError(f"{exc}; job(s) {', '.join(ids)} went in before that (see {directory / MANIFEST}); "
                        f"after fixing, `llmbench sweep submit {directory} --resume`") from None
    _write_json(directory / MANIFEST, manifest)
    print(f"submitted {len(indices)} point(s) of sweep {manifest['name']} as array job(s) {', '.join(ids)}; "
          f"collect job {collect_id} writes the report when they end")
    print(f"follow with: llmbench sweep status {directory}")
    return 0


def _remove_new_sweep(directory: Path) -> None:
    for name in (MANIFEST, "sweep.sbatch", "collect.sbatch"):
        (directory / name).unlink(missing_ok=True)
    for sub in ("tasks", "logs", ""):
        try:
            (directory / sub).rmdir()
        except OSError:  # not empty: it held something before
            pass


def print_status(directory: Path) -> dict[str, int]:
    manifest = read_manifest(directory)
    states = task_states(directory, manifest)
    tally = counts(states)
    print(f"sweep {manifest['name']}: {len(states)} points in {directory}")
    print("  ".join(f"{state} {n}" for state, n in tally.items()))
    for s in states:
        if s["state"] in ("failed", "oom"):
            point = manifest["points"][s["index"]]
            last = (s.get("error") or "").strip().splitlines()[-1:] or [""]
            print(f"  {s['state']:>6}  [{s['index']}] {point['id']} llmbench {shlex.join(point['argv'])}: "
                  f"{last[0][:160]}")
    return tally


def collect(directory: Path) -> int:
    """Write the report over the sweep's records and ``collect.json`` with the final counts."""
    from harness.records import RECORDS_FILE
    from harness.report import build

    directory = Path(directory).absolute()
    manifest = read_manifest(directory)
    tally = counts(task_states(directory, manifest))
    result = {"finished": _now(), "counts": tally, "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "report": None}
    if (directory / RECORDS_FILE).exists():
        md, html = build([directory / RECORDS_FILE], directory / "report")
        result["report"] = str(html)
        print(f"report: {html}\n        {md}")
    else:
        print(f"no records in {directory} yet: no report", file=sys.stderr)
    _write_json(directory / "collect.json", result)
    return 0 if result["report"] else 1


def add_parser(sub) -> None:
    """Register ``llmbench sweep`` and its subcommands."""
    sw = sub.add_parser(
        "sweep", help="sweeps from a TOML matrix: plan, run here, or submit as SLURM job arrays",
        description="Expand a sweep file into points (one plain llmbench command each) and run them here one by "
                    "one, or submit them as SLURM job arrays with a dependent collect-and-report job.",
    )
    steps = sw.add_subparsers(dest="sweep_command", required=True, metavar="STEP")
    p = steps.add_parser("plan", help="check a sweep file and preview its points")
    p.add_argument("file", type=Path, help="sweep file (TOML)")
    p.add_argument("--out", type=Path, default=None, help="results folder (default: the file's out)")
    p.add_argument("--limit", type=int, default=10, help="points to preview")
    r = steps.add_parser("run", help="run every point here, one after another, each in a fresh process")
    r.add_argument("file", type=Path, help="sweep file (TOML)")
    r.add_argument("--out", type=Path, default=None, help="results folder (default: the file's out)")
    r.add_argument("--no-report", action="store_true", help="skip the report at the end")
    s = steps.add_parser("submit", help="submit the points as SLURM job arrays plus a dependent collect job")
    s.add_argument("target", metavar="FILE|DIR", help="sweep file, or with --resume the sweep's folder")
    s.add_argument("--out", type=Path, default=None, help="results folder (default: the file's out)")
    s.add_argument("--dry-run", action="store_true", help="print the scripts and sbatch commands; submit nothing")
    s.add_argument("--resume", action="store_true", help="resubmit the points that are missing or failed")
    t = steps.add_parser("task", help="run one point of a sweep (what each array task does)")
    t.add_argument("directory", type=Path, metavar="DIR", help="the sweep's folder")
    t.add_argument("--index", type=int, required=True, help="point index")
    st = steps.add_parser("status", help="done / failed / oom / running / pending counts from the task files")
    st.add_argument("directory", type=Path, metavar="DIR", help="the sweep's folder")
    c = steps.add_parser("collect", help="write the report over the sweep's records (the collect job runs this)")
    c.add_argument("directory", type=Path, metavar="DIR", help="the sweep's folder")


def main(args) -> int:
    if args.sweep_command == "plan":
        return cmd_plan(args)
    if args.sweep_command == "run":
        return cmd_run(args)
    if args.sweep_command == "submit":
        return cmd_submit(args)
    if args.sweep_command == "task":
        outcome = run_task(args.directory, args.index)
        print(f"point {args.index}: {outcome}", file=sys.stderr)
        return 0 if outcome == "done" else 1
    if args.sweep_command == "status":
        print_status(args.directory)
        return 0
    return collect(args.directory)


def standalone(argv: list[str] | None = None) -> int:
    """``python -m harness.sweep STEP ...``: ``llmbench sweep STEP ...`` without the other subcommands' imports."""
    parser = argparse.ArgumentParser(prog="llmbench")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sweep", *(sys.argv[1:] if argv is None else argv)])
    try:
        return main(args)
    except UserError as exc:
        print(f"llmbench sweep: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(standalone())
