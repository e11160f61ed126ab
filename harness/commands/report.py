"""``llmbench report``: the roofline report (Markdown, HTML, plots) from the records of one or more runs."""

from __future__ import annotations

import sys
from pathlib import Path

from harness import options


def add_parser(sub) -> None:
    rp = sub.add_parser(
        "report", help="roofline report (Markdown, HTML, PNG/SVG plots) from records",
        description="Read every record under the given folders (several machines and runs may be mixed), group "
                    "by device and precision, and write report.md, a self-contained report.html and plots.",
    )
    rp.add_argument("inputs", nargs="+", type=Path, metavar="RESULTS_DIR", help="folders or records files")
    rp.add_argument("--out", type=options.folder, default=None, help="report folder (default: FIRST_INPUT/report)")


def run(args) -> int:
    from harness.report import build

    first = args.inputs[0]
    out = args.out or ((first if first.is_dir() else first.parent) / "report")
    options.check_writable(out)
    try:
        md, html = build(args.inputs, out)
    except OSError as exc:  # a full disk or a folder gone read-only while writing: the records are untouched
        print(f"llmbench report: could not write the report to {out}: {exc.strerror or exc}; the records are "
              "unchanged, free some space or pass --out elsewhere", file=sys.stderr)
        return 1
    print(f"report: {html}\n        {md}")
    return 0
