"""``llmbench sweep``: plan, run here, submit as SLURM job arrays, and the steps those jobs run.

The steps: ``plan`` (check a sweep file and every point in it, preview its
points), ``run`` (every point here, one after another; Ctrl-C stops the point
and the sweep), ``submit`` (arrays plus a dependent collect job; ``--resume``
resubmits what is missing, failed, lost or never started), ``task`` (one
point: what each array task runs), ``status`` (counts from the task files,
checked against what is still alive) and ``collect`` (the report: what the
collect job runs).

A sweep file is checked against the whole command line, so ``run`` hands
``harness.sweep`` the root parser that the CLI puts in ``args.parser``. Only
``run`` and ``collect`` reach for heavy modules, and only when they run, so
``llmbench --help`` and the array tasks start fast.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

from harness import sweep, sweep_tasks
from harness.options import folder, non_negative_int, positive_int
from slurm import backend
from slurm.backend import SlurmOptions
from workloads.errors import UserError


def add_parser(subparsers) -> None:
    """Register ``llmbench sweep`` and its steps."""
    sw = subparsers.add_parser(
        "sweep", help="sweeps from a TOML matrix: plan, run here, or submit as SLURM job arrays",
        description="Expand a sweep file into points (one plain llmbench command each) and run them here one by "
                    "one, or submit them as SLURM job arrays with a dependent collect-and-report job.",
    )
    steps = sw.add_subparsers(dest="sweep_command", required=True, metavar="STEP")
    p = steps.add_parser("plan", help="check a sweep file and preview its points")
    p.add_argument("file", type=Path, help="sweep file (TOML)")
    p.add_argument("--out", type=folder, default=None, help="results folder (default: the file's out)")
    p.add_argument("--limit", type=positive_int, default=10, help="points to preview")
    r = steps.add_parser("run", help="run every point here, one after another, each in a fresh process")
    r.add_argument("file", type=Path, help="sweep file (TOML)")
    r.add_argument("--out", type=folder, default=None, help="results folder (default: the file's out)")
    r.add_argument("--no-report", action="store_true", help="skip the report at the end")
    s = steps.add_parser("submit", help="submit the points as SLURM job arrays plus a dependent collect job")
    s.add_argument("target", metavar="FILE|DIR", help="sweep file, or with --resume the sweep's folder")
    s.add_argument("--out", type=folder, default=None, help="results folder (default: the file's out)")
    s.add_argument("--dry-run", action="store_true", help="print the scripts and sbatch commands; submit nothing")
    s.add_argument("--resume", action="store_true",
                   help="resubmit the points that are not done: failed, lost, interrupted, pending or never started")
    t = steps.add_parser("task", help="run one point of a sweep (what each array task does)")
    t.add_argument("directory", type=folder, metavar="DIR", help="the sweep's folder")
    t.add_argument("--index", type=non_negative_int, required=True, help="point index")
    st = steps.add_parser("status", help="done / failed / oom / interrupted / lost / running / pending / never-started "
                                         "counts from the task files")
    st.add_argument("directory", type=folder, metavar="DIR", help="the sweep's folder")
    c = steps.add_parser("collect", help="write the report over the sweep's records (the collect job runs this)")
    c.add_argument("directory", type=folder, metavar="DIR", help="the sweep's folder")


def run(args) -> int:
    if args.sweep_command == "plan":
        return cmd_plan(args)
    if args.sweep_command == "run":
        return cmd_run(args)
    if args.sweep_command == "submit":
        return cmd_submit(args)
    if args.sweep_command == "task":
        outcome = sweep_tasks.run_task(args.directory, args.index)
        print(f"point {args.index}: {outcome}", file=sys.stderr)
        return 0 if outcome == "done" else 130 if outcome == "interrupted" else 1
    if args.sweep_command == "status":
        print_status(args.directory)
        return 0
    return sweep_tasks.collect(args.directory)


def cmd_plan(args) -> int:
    started = time.perf_counter()
    plan = sweep.load(args.file, args.parser, args.out)
    elapsed = time.perf_counter() - started
    print(f"sweep {plan.name}: {len(plan.points)} points, each checked, planned in {elapsed:.2f} s; "
          f"results in {plan.out}")
    nodes = plan.slurm.nodes
    for p in plan.points[:args.limit]:
        launcher = f"srun x{nodes} nodes: torchrun --nnodes {nodes} --nproc-per-node {p.nproc}: " if nodes > 1 else ""
        print(f"  {p.index:>5}  {p.id}  {launcher}llmbench {shlex.join(p.argv)}")
    if len(plan.points) > args.limit:
        print(f"  ... and {len(plan.points) - args.limit} more")
    return 0


def cmd_run(args) -> int:
    from tqdm import tqdm

    plan = sweep.load(args.file, args.parser, args.out)
    if plan.slurm.nodes > 1:
        raise UserError(f"[slurm] nodes = {plan.slurm.nodes}: a multi-node sweep runs only on a cluster, through "
                        f"`llmbench sweep submit {args.file}`")
    manifest = sweep_tasks.prepare(plan, os.path.abspath(sys.executable))
    directory = plan.out
    states = sweep_tasks.task_states(directory, manifest)
    todo = sweep_tasks.unfinished(states)
    finished = sum(s["state"] in sweep_tasks.FINISHED for s in states)
    if finished:
        print(f"{finished} of {len(plan.points)} points already finished in {directory}", file=sys.stderr)
    elsewhere = [s for s in states if s["state"] == "running"]
    if elsewhere:
        print(f"{len(elsewhere)} point(s) are running elsewhere (e.g. [{elsewhere[0]['index']}] on "
              f"{elsewhere[0].get('host')}, pid {elsewhere[0].get('pid')}); they are left alone", file=sys.stderr)
    with tqdm(todo, desc=f"sweep {plan.name}", unit="point", file=sys.stderr, disable=None) as bar:
        for index in bar:
            point = manifest["points"][index]
            began = time.perf_counter()
            outcome = sweep_tasks.run_task(directory, index, quiet=True)
            tqdm.write(f"[{index}] {point['id']} llmbench {shlex.join(point['argv'])}: {outcome} "
                       f"({time.perf_counter() - began:.1f} s)", file=sys.stderr)
            if outcome == "interrupted":
                bar.close()
                print_status(directory)
                print(f"llmbench sweep: interrupted; point {index} was stopped and marked interrupted; the points "
                      f"finished so far are kept: run `llmbench sweep run {args.file}` again to go on",
                      file=sys.stderr)
                return 130
    tally = print_status(directory)
    if not args.no_report:
        sweep_tasks.collect(directory)
    return 0 if tally["done"] == len(plan.points) else 1


def cmd_submit(args) -> int:
    target = Path(args.target)
    if args.resume:
        if args.out is not None:
            raise UserError("--resume takes the sweep's folder; --out does not apply")
        directory = target.absolute()
        manifest = sweep_tasks.read_manifest(directory)
        still = backend.queued([job["id"] for job in manifest["jobs"]])
        if still:
            raise UserError(f"job(s) {', '.join(still)} of this sweep are still queued or running; wait for them "
                            "(or scancel them) before resuming")
        states = sweep_tasks.task_states(directory, manifest)
        indices = sweep_tasks.unfinished(states)
        if not indices:
            tally = sweep_tasks.counts(states)
            running = f", {tally['running']} running elsewhere" if tally["running"] else ""
            print(f"nothing to resubmit: {tally['done']} done, {tally['oom']} out of memory{running}")
            return 0
        opts = SlurmOptions.from_table(manifest["slurm"])
    else:
        if target.is_dir():
            raise UserError(f"{target} is a folder: resubmit its missing points with "
                            f"`llmbench sweep submit {target} --resume`, or pass a sweep file")
        plan = sweep.load(target, args.parser, args.out)
        opts = plan.slurm
        manifest = sweep_tasks.manifest_for(plan, os.path.abspath(sys.executable))
        directory = plan.out
        if (directory / sweep_tasks.MANIFEST).exists():
            raise UserError(f"{directory} already holds a sweep; resubmit its missing points with "
                            f"`llmbench sweep submit {directory} --resume`, or choose another out")
        indices = [p.index for p in plan.points]
    array_script, collect_script = (directory / name for name in sweep_tasks.SCRIPTS)
    array_text, collect_text = sweep_tasks.scripts(manifest, opts)
    chunks = backend.array_chunks(indices, backend.max_array_size())
    log_dir = directory / "logs"
    array_cmds = [backend.array_command(array_script, c, opts.max_concurrent, log_dir) for c in chunks]
    if args.dry_run:
        print(f"# {array_script}\n{array_text}\n# {collect_script}\n{collect_text}")
        print(f"# {len(indices)} point(s) in {len(chunks)} array(s); nothing was submitted (--dry-run). Would run:")
        for cmd in array_cmds:
            print(" ".join(cmd))
        print(" ".join(backend.collect_command(collect_script, ["<array job ids>"], log_dir)))
        return 0
    if not args.resume:
        manifest = sweep_tasks.prepare(plan, manifest["python"])
    array_script.write_text(array_text)
    collect_script.write_text(collect_text)
    ids = []
    try:
        for cmd, chunk in zip(array_cmds, chunks):
            ids.append(backend.submit(cmd))
            manifest["jobs"].append({"id": ids[-1], "kind": "array", "array": chunk.spec(opts.max_concurrent),
                                     "offset": chunk.offset, "points": len(chunk.indices),
                                     "submitted": sweep_tasks.now()})
        collect_id = backend.submit(backend.collect_command(collect_script, ids, log_dir))
        manifest["jobs"].append({"id": collect_id, "kind": "collect", "after": ids, "submitted": sweep_tasks.now()})
    except UserError as exc:
        if not ids and not args.resume:  # nothing reached the queue: leave no sweep behind, so the file can be fixed
            sweep_tasks.remove_new(directory)
            raise
        sweep_tasks.write_json(directory / sweep_tasks.MANIFEST, manifest)
        raise UserError(f"{exc}; job(s) {', '.join(ids)} went in before that (see "
                        f"{directory / sweep_tasks.MANIFEST}); after fixing, "
                        f"`llmbench sweep submit {directory} --resume`") from None
    sweep_tasks.write_json(directory / sweep_tasks.MANIFEST, manifest)
    print(f"submitted {len(indices)} point(s) of sweep {manifest['name']} as array job(s) {', '.join(ids)}; "
          f"collect job {collect_id} writes the report when they end")
    print(f"follow with: llmbench sweep status {directory}")
    return 0


def print_status(directory: Path) -> dict[str, int]:
    manifest = sweep_tasks.read_manifest(directory)
    states = sweep_tasks.task_states(directory, manifest)
    tally = sweep_tasks.counts(states)
    print(f"sweep {manifest['name']}: {len(states)} points in {directory}")
    print("  ".join(f"{state} {n}" for state, n in tally.items()))
    for state in ("failed", "oom", "interrupted", "lost", "never-started"):
        shown = [s for s in states if s["state"] == state]
        for s in shown[:sweep_tasks.SHOWN_PER_STATE]:
            point = manifest["points"][s["index"]]
            print(f"  {state:>13}  [{s['index']}] {point['id']} llmbench {shlex.join(point['argv'])}: "
                  f"{sweep_tasks.reason(s)}")
        if len(shown) > sweep_tasks.SHOWN_PER_STATE:
            print(f"  {state:>13}  ... and {len(shown) - sweep_tasks.SHOWN_PER_STATE} more")
    return tally
