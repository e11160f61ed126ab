"""``llmbench import-pytest-benchmark``: a pytest-benchmark JSON file -> records (``harness.pytest_bench``)."""

from __future__ import annotations

import sys
from pathlib import Path

from harness import options


def add_parser(sub) -> None:
    p = sub.add_parser(
        "import-pytest-benchmark", help="turn a pytest-benchmark JSON file into records",
        description="Read FILE (written by pytest --benchmark-json=FILE) and append one record per benchmark "
                    "to OUT/records.jsonl, so `llmbench report` and `llmbench compare` see them.",
    )
    p.add_argument("file", type=Path, metavar="FILE.json", help="pytest-benchmark JSON output")
    options.add_out(p)


def run(args) -> int:
    import json

    from harness import views
    from harness.pytest_bench import to_records
    from harness.records import RECORDS_FILE, append_record, new_run_id
    from workloads.errors import UserError

    try:
        data = json.loads(args.file.read_text())
    except OSError as exc:
        raise UserError(f"cannot read {args.file}: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{args.file} is not JSON (run pytest with --benchmark-json=FILE)") from None
    records = to_records(data, new_run_id())
    options.check_writable(args.out)
    for record in records:
        append_record(args.out / RECORDS_FILE, record)
    print(views.pytest_benchmark_table(records))
    print(f"\n{len(records)} record(s) appended to {args.out / RECORDS_FILE}", file=sys.stderr)
    return 0
