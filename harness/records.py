"""Records: one measurement per JSON line, schema v1 (see DESIGN.md).

What an append guarantees (``append_record``):

- A complete record is never lost or damaged by another writer. The line goes
  down on an ``O_APPEND`` descriptor under an exclusive ``fcntl.flock``, all of
  it before the lock is let go, then ``fsync``; a write or ``fsync`` that fails
  is cut back off. A writer killed in the middle of its write (``kill -9``, a
  node lost) can still leave the first part of its line behind (the kernel may
  have taken part of a large write when the process dies); the next append, under
  the lock, cuts that unfinished tail (everything after the last newline) and
  says so in a warning naming the file and the bytes dropped, so it is never
  glued onto a good record. Only the record whose writer died is lost.
- The lock has to exclude writers on every node that shares the file: true on
  local disks, NFSv4, GPFS and Lustre mounted with ``flock``. Where ``flock``
  only locks within one node (Lustre ``localflock``, NFS ``local_lock=flock``),
  writers on different nodes must not share one records file.
- A measurement outlives a sick file system. When the append fails (disk full,
  quota, read-only, no permission, or ``flock`` unsupported as on Lustre/GPFS
  without it) it is retried once; then the record goes to a file of this
  process's own next to the records file, ``records.<host>.<pid>.jsonl`` (one
  writer, so no lock is needed, and the loader reads it with the records file);
  as a last resort it is printed to stderr as one JSON line under a message that
  says so. ``append_record`` returns where the record went (``None`` for stderr)
  and never raises ``OSError``; ``diverted()`` lists every record of this process
  that did not reach its records file, so a command can exit 1 after a complete
  measurement whose record is not where the user asked.

The loader (``read_records``) reads the records files and folders it is given
(every ``*.jsonl`` under a folder; a records file together with its
``records.<host>.<pid>.jsonl`` siblings), skips with a warning naming file and
line anything that does not parse (not UTF-8, not JSON, not a schema v1 record,
the unfinished tail of a killed writer) and anything named ``*.jsonl`` that is
not a file, and turns a file it cannot read into a ``UserError`` of one line.
``load_records`` returns a flat pandas DataFrame (``metrics.tokens_per_s`` columns).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import math
import os
import re
import socket
import sys
import time
import uuid
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from workloads.errors import UserError

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "oom", "skipped")
RECORDS_FILE = "records.jsonl"
RETRY_DELAY_S = 0.5  # pause before the one retry of a failed append (a transient NFS or quota hiccup)
_TAIL_CHUNK = 1 << 16


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
    quality: dict | None = None,
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
    if quality:  # quantized or approximate variants against their reference (absent for the reference)
        record["quality"] = quality
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


# ---------------------------------------------------------------- appending


@dataclass(frozen=True)
class Diversion:
    """A record that did not reach its records file: where it was meant to go, where it went
    (the per-process fallback file, or ``None`` when it was printed to stderr), and why."""

    intended: Path
    went_to: Path | None
    error: str


_DIVERTED: list[Diversion] = []


def diverted() -> list[Diversion]:
    """Every record this process could not append to its records file, oldest first.

    A command compares the length before and after its work: more means a measurement's record is
    not in ``records.jsonl`` (it is in a fallback file or on stderr) and the command should exit 1."""
    return list(_DIVERTED)


def fallback_path(path: str | Path) -> Path:
    """This process's own file next to ``path``: ``records.<host>.<pid>.jsonl`` for ``records.jsonl``."""
    path = Path(path)
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "host"
    return path.with_name(f"{path.stem}.{host}.{os.getpid()}.jsonl")


def fallback_files(path: str | Path) -> list[Path]:
    """The per-process fallback files written next to the records file ``path``, sorted."""
    path = Path(path)
    pattern = re.compile(re.escape(path.stem) + r"\.[A-Za-z0-9_.-]+\.\d+\.jsonl")
    try:
        found = path.parent.glob(glob.escape(path.stem) + ".*.*.jsonl")
        return sorted(p for p in found if pattern.fullmatch(p.name) and p.is_file())
    except OSError:
        return []


def _describe(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno, "") if exc.errno else ""
    text = exc.strerror or str(exc)
    return f"{name}: {text}" if name else text


def _end_of_last_line(fd: int, size: int) -> int:
    """Offset just past the last newline in the file (0 when there is none)."""
    end = size
    while end > 0:
        begin = max(0, end - _TAIL_CHUNK)
        chunk = os.pread(fd, end - begin, begin)
        if len(chunk) != end - begin:
            raise OSError(errno.EIO, "short read while looking for the last complete record")
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            return begin + cut + 1
        end = begin
    return 0


def _cut_unfinished_tail(fd: int, path: Path) -> None:
    """A file that does not end in a newline holds the first part of a record whose writer was
    killed mid-write: cut it, so the next line is not glued onto it. Called under the lock."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    keep = _end_of_last_line(fd, size)
    os.ftruncate(fd, keep)
    warnings.warn(f"{path}: cut {size - keep} bytes at its end, the unfinished part of a record whose "
                  f"writer was killed mid-write; every complete record before it is kept", stacklevel=4)


def _append_line(path: Path, line: bytes, *, need_lock: bool) -> None:
    """Append ``line`` to ``path`` under the lock, cutting an unfinished tail first; on any failure
    the file is cut back to where it was and the ``OSError`` goes to the caller. ``need_lock=False``
    (a file of this process's own) goes on without the lock where ``flock`` is not supported."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            if need_lock:
                raise
        _cut_unfinished_tail(fd, path)
        start = os.fstat(fd).st_size
        try:
            view, done = memoryview(line), 0
            while done < len(line):  # O_APPEND and the lock: every piece lands at the end, in order
                written = os.write(fd, view[done:])
                if written <= 0:
                    raise OSError(errno.ENOSPC, f"short write ({done} of {len(line)} bytes)")
                done += written
            os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise
    finally:
        with contextlib.suppress(OSError):  # after a good fsync the record is stored; close only unlocks
            os.close(fd)


def append_record(path: str | Path, record: dict) -> Path | None:
    """Append one record as one line (see the module docstring for what is guaranteed).

    Returns where the record went: ``path``; this process's fallback file next to it when ``path``
    failed twice (disk full, quota, read-only, no permission, ``flock`` unsupported, ...); or ``None``
    when that failed too and the record was printed to stderr. Never raises ``OSError``: the
    measurement is done and its record is kept somewhere; ``diverted()`` tells the caller."""
    line = (json.dumps(_plain(record), allow_nan=False) + "\n").encode()
    path = Path(path)
    try:
        _append_line(path, line, need_lock=True)
        return path
    except OSError:
        time.sleep(RETRY_DELAY_S)  # once, for what is transient (NFS hiccup, quota freed by a cleaner)
    try:
        _append_line(path, line, need_lock=True)
        return path
    except OSError as exc:
        reason = f"could not append to {path} ({_describe(exc)})"
    fallback = fallback_path(path)
    try:
        _append_line(fallback, line, need_lock=False)
    except OSError as exc:
        reason += f" nor to {fallback} ({_describe(exc)})"
        _DIVERTED.append(Diversion(path, None, reason))
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(f"llmbench: {reason}; the record follows as one JSON line: save it into a *.jsonl "
                             f"file next to {path.name} to keep it\n{line.decode()}")
            sys.stderr.flush()
        return None
    _DIVERTED.append(Diversion(path, fallback, reason))
    warnings.warn(f"{reason}; the record went to {fallback} instead, which report and compare read "
                  f"with {path.name}", stacklevel=2)
    return fallback


# ---------------------------------------------------------------- loading


def _unreadable(path: Path, exc: OSError) -> UserError:
    advice = "; fix its permissions or leave it out" if exc.errno in (errno.EACCES, errno.EPERM) else ""
    return UserError(f"cannot read records at {path}: {_describe(exc)}{advice}")


def record_files(paths) -> list[Path]:
    """Every ``*.jsonl`` file under the given folders, and each given file with its fallback
    siblings (``records.<host>.<pid>.jsonl``), each once, in a stable order."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        try:
            if path.is_dir():
                for found in sorted(path.rglob("*.jsonl")):
                    if found.is_file():
                        files.append(found)
                    else:
                        warnings.warn(f"{found}: skipped, a folder (or other non-file) named like a records file",
                                      stacklevel=3)
            elif path.is_file():
                files += [path, *fallback_files(path)]
            elif fallback_files(path):  # every append to it went to the fallback files
                files += fallback_files(path)
            else:
                raise UserError(f"no records at {path}: not a file or folder")
        except OSError as exc:  # a name too long, a folder we may not enter, ...
            raise _unreadable(path, exc) from None
    seen: set[Path] = set()
    unique = []
    for file in files:
        key = file.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(file)
    return unique


def _parse(file: Path, number: int, raw: bytes) -> dict | None:
    """The record on this line, or ``None`` after a warning naming file, line and what is wrong."""
    def skip(why: str) -> None:
        warnings.warn(f"{file}:{number}: skipped a line that is {why}", stacklevel=4)

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return skip("not UTF-8 text")
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError, an int over Python's digit limit, deep nesting
        if not raw.endswith(b"\n"):
            return skip("not valid JSON (the unfinished end of a record whose writer was killed or is still writing)")
        return skip("not valid JSON")
    if not isinstance(record, dict) or record.get("schema_version") != SCHEMA_VERSION:
        return skip("not a schema v1 record")
    return record


def read_records(paths) -> list[dict]:
    """The records under ``paths`` (files and folders, see ``record_files``), in file and line order."""
    records = []
    for file in record_files(paths):
        try:
            with open(file, "rb") as handle:
                for number, raw in enumerate(handle, 1):
                    record = _parse(file, number, raw)
                    if record is not None:
                        records.append(record)
        except FileNotFoundError:  # removed since it was listed (a sweep's staging folder, cleaned up)
            warnings.warn(f"{file}: skipped, it went away while the records were read", stacklevel=2)
        except OSError as exc:
            raise _unreadable(file, exc) from None
    return records


def load_records(paths):
    """All records under ``paths`` as a flat DataFrame (nested fields as ``metrics.x`` columns)."""
    import pandas as pd

    records = read_records(paths)
    return pd.json_normalize(records) if records else pd.DataFrame()
