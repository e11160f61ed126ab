"""``llmbench report``: the roofline report (Markdown, HTML, plots) from the records of one or more runs."""

from __future__ import annotations

import sys
from pathlib import Path

from harness import options


def add_parser(sub) -> None:
    rp = sub.add_parser(
        "report", help="roofline report (Markdown, self-contained HTML, PNG plots) from records",
        description="Read every record under the given folders (several machines and runs may be mixed), group "
                    "by device, and write report.md, a self-contained report.html (headline findings first, "
                    "sortable tables, collapsible sections) and PNG plots.",
    )
    rp.add_argument("inputs", nargs="+", type=Path, metavar="RESULTS_DIR", help="folders or records files")
    rp.add_argument("--out", type=options.folder, default=None, help="report folder (default: FIRST_INPUT/report)")
    rp.add_argument("--title", type=_title, default=None, help="the report's title (default: llmbench report)")
    rp.add_argument("--svg", action="store_true", help="also write every figure as SVG (vector, slower)")
    rp.add_argument("--first", type=Path, default=None, metavar="FILE.md",
                    help="a Markdown file to show first, rendered like the rest (e.g. llmbench suite's targets.md)")


def _title(text: str) -> str:
    import argparse

    text = text.strip()
    if not text or "\n" in text:
        raise argparse.ArgumentTypeError("expected a one-line, non-empty title")
    return text


def run(args) -> int:
    from harness.report import TITLE, build

    first = args.inputs[0]
    out = args.out or ((first if first.is_dir() else first.parent) / "report")
    options.check_writable(out)
    try:
        md, html = build(args.inputs, out, title=args.title or TITLE, svg=args.svg, first=args.first)
    except OSError as exc:  # a full disk or a folder gone read-only while writing: the records are untouched
        print(f"llmbench report: could not write the report to {out}: {exc.strerror or exc}; the records are "
              "unchanged, free some space or pass --out elsewhere", file=sys.stderr)
        return 1
    print(f"report: {html}\n        {md}")
    return 0
