"""``llmbench compare``: regression check of NEW against BASELINE (or a TOML reference); side by side.

The matching, the significance test, thresholds and references are
``harness.compare``'s; this module reads the command line, prints, and sets the
exit code (1 on a regression, 2 on bad input).
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.compare import DEFAULT_METRICS


def add_parser(sub) -> None:
    c = sub.add_parser(
        "compare", help="compare runs (or a TOML reference) point by point; exit 1 on a regression",
        description="Match the records of BASELINE and NEW by their point and give each metric a verdict: "
                    "regression, improvement or no significant change. A change is a regression only when it is "
                    "statistically significant (Mann-Whitney p < 0.05 and the 95% bootstrap CI of the ratio of "
                    "medians excludes 1, on the samples the records keep) AND beyond --threshold in the worse "
                    "direction; records without samples are checked against the threshold only. Exit code 1 on "
                    "any regression (or a value outside a TOML reference's range), 0 otherwise, 2 for bad input. "
                    "With --side-by-side, one table of the same points across every environment (device and "
                    "host) found in the inputs.",
    )
    c.add_argument("inputs", nargs="+", type=Path, metavar="RESULTS",
                   help="BASELINE NEW: results folders, records files, or a reference .toml as BASELINE; "
                        "with --side-by-side, any number of results folders")
    c.add_argument("--metric", action="append", default=None, metavar="NAME[:higher|lower]",
                   help="metric to compare (repeatable or comma-separated; from metrics, derived or telemetry); "
                        f"default: those of {', '.join(DEFAULT_METRICS)} the records have. Metrics not known "
                        "to llmbench need :higher or :lower")
    c.add_argument("--threshold", default="5%",
                   help="smallest change that counts, in percent (default 5%%): a significant change within it is "
                        "no significant change")
    c.add_argument("--side-by-side", action="store_true", help="one column per environment instead of a check")


def run(args) -> int:
    from harness import compare
    from workloads.errors import UserError

    metrics = compare.parse_metrics(args.metric)
    threshold = compare.parse_threshold(args.threshold)
    for path in args.inputs:
        if not path.exists():
            raise UserError(f"no results at {path}: not a file or folder")
    if args.side_by_side:
        print(compare.side_by_side(args.inputs, metrics))
        return 0
    if len(args.inputs) != 2:
        raise UserError("compare takes BASELINE and NEW (or --side-by-side with any number of folders)")
    base_path, new_path = args.inputs
    new = compare.read(new_path)
    if base_path.suffix == ".toml":
        rows, failed = compare.compare_reference(compare.load_reference(base_path), new)
        print(compare.check_table(rows, reference=True))
        notes = []
    else:
        rows, failed, notes = compare.compare_runs(compare.read(base_path), new, metrics, threshold)
        print(compare.check_table(rows))
        notes.insert(0, compare.rule(threshold))
    for note in notes:
        print(note)
    if failed:
        print(f"llmbench compare: {failed} regression(s)", file=sys.stderr)
        return 1
    return 0
