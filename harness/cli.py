"""The ``llmbench`` command line (also ``python -m harness``): the table of subcommands and ``main``.

Each subcommand is a module of ``harness.commands`` with ``add_parser(subparsers)``
and ``run(args)``; this file only registers them, parses, and turns a user's
mistake (``UserError``) into one line on stderr and exit code 2, with nothing
written. Everything the user asked for is checked before any work starts. The
whole parser reaches every command as ``args.parser`` (the sweep checks its
points against it). A command whose records could not reach ``records.jsonl``
(disk full, no file locks) exits 1, saying where they went instead. Only
``harness/__main__.py`` imports this module.
"""

from __future__ import annotations

import argparse
import os
import sys

# Never reach for the hub: presets are built from local configs, checkpoints are local folders.
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read when transformers is first imported

from harness import options, records  # noqa: E402
from harness.commands import (  # noqa: E402
    compare, decode, env, finetune, import_pytest_benchmark, kernel, models, peak, report, suite, sweep,
)
from workloads.errors import UserError  # noqa: E402

COMMANDS = {"decode": decode, "finetune": finetune, "peak": peak, "report": report, "models": models, "env": env,
            "kernel": kernel, "compare": compare, "import-pytest-benchmark": import_pytest_benchmark,
            "sweep": sweep, "suite": suite}
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = options.Parser(
        prog="llmbench",
        description="Benchmark LLM workloads on this GPU (or CPU) and explain them against the hardware's limits.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS.values():
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.parser = parser
    before = len(records.diverted())
    try:
        code = COMMANDS[args.command].run(args)
    except UserError as exc:
        print(f"llmbench {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"llmbench {args.command}: interrupted; records written so far are complete", file=sys.stderr)
        return 130
    lost = records.diverted()[before:]
    if lost:  # the measurement is kept, but not where the user looks for it
        print(f"llmbench {args.command}: {len(lost)} record(s) did not reach {lost[0].intended}; they are in "
              f"{lost[0].went_to or 'the lines printed above'} (see the warnings above)", file=sys.stderr)
        return code or 1
    return code
