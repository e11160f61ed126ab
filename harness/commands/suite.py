"""``llmbench suite``: characterise a node in one command, and check DESIGN.md's targets.

Runs, in order, the ceilings (``peak``); bf16 vs fp32 decode; the decode engines (hf, hf-static, lean)
with sdpa and with triton attention; the fused attention kernel against every SDPA backend (fwd, bwd);
the decode-attention kernel (contiguous and paged) against SDPA; a fine-tune in bf16 and in fp32; and on
a GPU the GPU tests (``pytest -m gpu``). Each step is a plain ``llmbench`` command line in its own process
with ``--out DIR`` (printed before it runs, so it can be re-run by hand); a step that fails is noted and
the suite goes on. Then ``llmbench report DIR --out DIR/report``, and ``DIR/targets.md``: one row per
target with the measured value, the goal and the verdict, written first and shown first in the report
(``--first``). The steps and
targets live in ``harness.suite``.

Exit code 0 when every step that was to run here ran cleanly (steps that need a GPU are skipped on a
CPU, with the reason), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from harness import options


def add_parser(sub) -> None:
    s = sub.add_parser(
        "suite", help="characterise this node: ceilings, decode, kernels, fine-tune, and the targets checked",
        description="Run the whole benchmark suite (peak; decode bf16 vs fp32; decode engines with sdpa and "
                    "triton attention; attention and decode-attention kernels; fine-tune bf16 and fp32; the GPU "
                    "tests on a GPU), each step a plain llmbench command in its own process, then the report "
                    "and targets.md (DESIGN.md's targets: met, not met, not measured here).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    s.add_argument("--quick", action="store_true",
                   help="small presets, few tokens and small kernel shapes (about 5 minutes on a 2-core CPU) "
                        "instead of the targets' real presets and shapes")
    options.add_device(s)
    s.add_argument("--out", type=options.folder, default=None,
                   help="folder for records, logs, report and targets.md (default: results/<device>-<date>)")
    s.add_argument("--dry-run", action="store_true", help="print the steps' command lines and run nothing")


def run(args) -> int:
    from harness import suite
    from harness.envinfo import capture
    from harness.records import read_records
    from workloads.precision import resolve_device

    device = resolve_device(args.device)
    env = capture(device)
    out = args.out or Path("results") / f"{suite.device_slug(env.get('device_name') or device.type)}-{date.today()}"
    todo = suite.steps(args.quick, device.type, args.device)
    if args.dry_run:
        print(f"# llmbench suite{' --quick' if args.quick else ''} on {env.get('device_name')} ({device.type}) "
              f"into {out}")
        for step in todo:
            line = " ".join(suite.command(step, out))
            print(f"# {step.name}: skipped ({step.skip})\n# {line}" if step.skip else line)
        print(" ".join([sys.executable, "-m", "harness", "report", str(out), "--out", str(out / "report"), "--first",
                        str(out / "targets.md")]))
        return 0
    options.check_writable(out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"llmbench suite{' --quick' if args.quick else ''}: {len(todo)} steps on {env.get('device_name')} "
          f"({device.type}) into {out}")
    env_stub = {k: env.get(k) for k in ("device_name", "device_type", "host")}
    outcomes = suite.run(todo, out, env=env_stub)
    rows = suite.targets(read_records([out / "records.jsonl"]) if (out / "records.jsonl").exists() else [])
    markdown = suite.targets_markdown(rows, outcomes)
    (out / "targets.md").write_text(f"# llmbench suite{' --quick' if args.quick else ''}: "
                                    f"{env.get('device_name')} ({device.type}), {date.today()}\n\n{markdown}")
    report = suite.Step("report", ["report", str(out), "--out", str(out / "report"), "--first",
                                   str(out / "targets.md")], 30)
    code = suite.run_process([sys.executable, "-m", "harness", *report.argv], out / "logs" / "report.log")
    (out / "suite.json").write_text(json.dumps({
        "quick": args.quick, "device": env.get("device_name"), "device_type": device.type, "date": str(date.today()),
        "steps": [{"name": o.step.name, "status": o.status, "returncode": o.returncode, "seconds": round(o.seconds, 1),
                   "records": o.records, "command": suite.command(o.step, out), "notes": o.notes} for o in outcomes],
        "report_returncode": code,
    }, indent=1) + "\n")
    failed = [o.step.name for o in outcomes if o.status == "failed"]
    skipped = [o.step.name for o in outcomes if o.status == "skipped"]
    print()
    print(markdown)
    print(f"targets: {out / 'targets.md'}\nreport:  {out / 'report' / 'report.html'}")
    if skipped:
        print(f"skipped: {', '.join(skipped)} ({', '.join(sorted({o.notes[0] for o in outcomes if o.notes and o.status == 'skipped'}))})")
    if failed or code:
        print(f"llmbench suite: not everything ran: {', '.join(failed + (['report'] if code else []))} failed "
              f"(see {out / 'logs'})", file=sys.stderr)
        return 1
    return 0
