"""Records: one measurement per JSON line, schema v1 (see DESIGN.md).

Appends are atomic: the whole line goes down in one ``write`` on an
``O_APPEND`` descriptor under an exclusive lock, and a write that comes up short
is cut back off, so a killed or failing run never leaves half a record behind
and records already in the file stay valid. The loader skips (with a warning
naming file and line) anything that still does not parse, e.g. a file damaged by
hand, and returns a flat pandas DataFrame (``metrics.tokens_per_s`` columns).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path

from workloads.errors import UserError

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "oom", "skipped")
RECORDS_FILE = "records.jsonl"


def new_run_id() -> str:
    """Sortable and unique across hosts: UTC time plus a random suffix."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def make_record(
    *,
    run_id: str,
    point: dict,
    status: str = "ok",
    error: str | None = None,
    metrics: dict | None = None,
    cost: dict | None = None,
    derived: dict | None = None,
    env: dict | None = None,
    telemetry: dict | None = None,
    warnings: list[str] | None = None,
) -> dict:
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    record = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": status,
        "error": error,
        **point,
        "metrics": metrics or {},
        "cost": cost or {},
        "derived": derived or {},
        "env": env or {},
    }
    if telemetry:  # absent, never zeros, when there is no telemetry
        record["telemetry"] = telemetry
    record["warnings"] = list(warnings or [])  # impossible or doubtful values, in words
    return record


def _plain(value):
    """JSON-safe copy: numpy/torch scalars become Python numbers, NaN and inf become null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def append_record(path: str | Path, record: dict) -> None:
    """Append one record as one line, atomically (see the module docstring)."""
    line = (json.dumps(_plain(record), allow_nan=False) + "\n").encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        start = os.fstat(fd).st_size
        written = 0
        try:
            written = os.write(fd, line)
        finally:
            if written != len(line):
                os.ftruncate(fd, start)
        if written != len(line):
            raise OSError(f"short write to {path} ({written} of {len(line)} bytes); the record was not kept")
        os.fsync(fd)
    finally:
        os.close(fd)


def record_files(paths) -> list[Path]:
    """Every ``*.jsonl`` under the given files and folders, in a stable order."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(path.rglob("*.jsonl")))
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"no records at {path}: not a file or folder")
    return files


def read_records(paths) -> list[dict]:
    records = []
    for file in record_files(paths):
        with open(file, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    warnings.warn(f"{file}:{number}: skipped a line that is not valid JSON", stacklevel=2)
                    continue
                if not isinstance(record, dict) or record.get("schema_version") != SCHEMA_VERSION:
                    warnings.warn(f"{file}:{number}: skipped a line that is not a schema v1 record", stacklevel=2)
                    continue
                records.append(record)
    return records


def load_records(paths):
    """All records under ``paths`` as a flat DataFrame (nested fields as ``metrics.x`` columns)."""
    import pandas as pd

    records = read_records(paths)
    return pd.json_normalize(records) if records else pd.DataFrame()
