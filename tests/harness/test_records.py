"""Records round-trip; appends keep every complete record (a killed writer's tail is cut, a sick file
system diverts the record to a per-process file or stderr instead of losing it); the loader survives
damaged files and turns unreadable ones into one-line errors."""

import errno
import json
import math
import os
import re
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from harness import records
from workloads.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def sample(run_id="r1", **metrics):
    return records.make_record(
        run_id=run_id,
        point={"workload": "decode", "model": "tiny-llama", "dtype": "bf16", "batch_size": 1},
        metrics={"tokens_per_s": 12.5, **metrics},
        cost={"bytes_per_step": 1000},
        env={"device_name": "cpu"},
    )


def run_ids(paths):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean file loads without a single warning
        return [r["run_id"] for r in records.read_records(paths)]


@pytest.fixture(autouse=True)
def no_retry_pause(monkeypatch):
    monkeypatch.setattr(records, "RETRY_DELAY_S", 0)


def fd_name(fd: int) -> str:
    return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))


def break_call(monkeypatch, call: str, code: int, name: str | None = "records.jsonl", times: int | None = None):
    """Make ``os.<call>`` (``flock``: ``fcntl.flock``) raise ``OSError(code)`` for the file ``name``
    (``None``: every file), every time or only the first ``times`` times; every other file works.
    Returns the names of the failed calls' files."""
    module = records.fcntl if call == "flock" else records.os
    real = getattr(module, call)
    calls = []

    def broken(first, *args, **kwargs):
        target = os.path.basename(first) if call == "open" else fd_name(first)
        if name in (None, target) and (times is None or len(calls) < times):
            calls.append(target)
            raise OSError(code, os.strerror(code))
        return real(first, *args, **kwargs)

    monkeypatch.setattr(module, call, broken)
    return calls


# ---------------------------------------------------------------- round trip


def test_round_trip_to_dataframe(tmp_path):
    path = tmp_path / "runs" / "records.jsonl"
    assert records.append_record(path, sample("a")) == path
    records.append_record(path, sample("b", ttft_ms=np.float32(3.5)))
    back = records.read_records([tmp_path])
    assert [r["run_id"] for r in back] == ["a", "b"]
    assert back[1]["metrics"]["ttft_ms"] == 3.5 and back[0]["schema_version"] == 1
    assert "telemetry" not in back[0]  # absent, not zeros
    frame = records.load_records([path])
    assert list(frame["metrics.tokens_per_s"]) == [12.5, 12.5]
    assert set(frame["status"]) == {"ok"} and "env.device_name" in frame.columns


def test_non_finite_numbers_become_null(tmp_path):
    path = tmp_path / "records.jsonl"
    records.append_record(path, sample(tokens_per_s=math.nan, ttft_ms=math.inf))
    line = json.loads(path.read_text())
    assert line["metrics"]["tokens_per_s"] is None and line["metrics"]["ttft_ms"] is None


# ---------------------------------------------------------------- a writer killed mid-write

WRITER = r"""
import os, sys, time
from harness import records

real_write = os.write

def torn(fd, data):  # the kernel took half of the line, then the process is killed
    real_write(fd, bytes(data[: len(data) // 2]))
    print("torn", flush=True)
    time.sleep(3600)

os.write = torn
records.append_record(sys.argv[1], {"schema_version": 1, "run_id": "killed", "blob": "x" * int(sys.argv[2])})
"""


def test_a_writer_killed_mid_write_loses_only_its_own_record(tmp_path):
    path = tmp_path / "records.jsonl"
    records.append_record(path, sample("before-1"))
    records.append_record(path, sample("before-2", blob="y" * 1_000_000))
    intact = path.read_bytes()
    size = 8_000_000
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(size)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "torn\n", writer.stderr.read()
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    torn = len(json.dumps({"schema_version": 1, "run_id": "killed", "blob": "x" * size}) + "\n") // 2
    assert path.read_bytes()[: len(intact)] == intact and path.stat().st_size == len(intact) + torn

    with pytest.warns(UserWarning, match=rf"records\.jsonl: cut {torn} bytes at its end") as caught:
        assert records.append_record(path, sample("after")) == path
    assert len(caught) == 1
    assert path.read_bytes().startswith(intact) and path.read_bytes().endswith(b"\n")
    assert run_ids([path]) == ["before-1", "before-2", "after"]


def test_a_file_with_no_complete_line_is_cut_to_nothing_and_a_clean_one_is_left_alone(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_bytes(b'{"schema_version": 1, "run_id": "ha')
    with pytest.warns(UserWarning, match="cut 35 bytes"):
        records.append_record(path, sample("a"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no tail to cut: no warning
        records.append_record(path, sample("b"))
    assert run_ids([path]) == ["a", "b"]


def test_a_failed_write_is_cut_back_and_the_record_kept_elsewhere(tmp_path, monkeypatch):
    path = tmp_path / "records.jsonl"
    records.append_record(path, sample("kept"))
    before = path.read_bytes()
    real_write = records.os.write

    def half_then_full(fd, data):  # the disk fills in the middle of the line
        if fd_name(fd) != "records.jsonl":
            return real_write(fd, data)
        if len(data) > 100:
            return real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(records.os, "write", half_then_full)
    with pytest.warns(UserWarning, match="ENOSPC"):
        went = records.append_record(path, sample("diverted"))
    assert path.read_bytes() == before  # no half line left behind
    assert went != path and run_ids([went]) == ["diverted"]


@pytest.mark.parametrize("call", ["write", "fsync"])
def test_a_failure_after_part_of_the_line_never_leaves_it_behind(tmp_path, monkeypatch, call):
    path = tmp_path / "records.jsonl"
    records.append_record(path, sample("kept"))
    before = path.read_bytes()
    break_call(monkeypatch, call, errno.EIO)
    with pytest.warns(UserWarning, match="EIO"):
        went = records.append_record(path, sample("diverted"))
    assert path.read_bytes() == before and run_ids([went]) == ["diverted"]


# ---------------------------------------------------------------- a sick file system keeps the record


def test_a_transient_failure_is_retried_once(tmp_path, monkeypatch):
    path = tmp_path / "records.jsonl"
    calls = break_call(monkeypatch, "write", errno.ENOSPC, times=1)
    before = len(records.diverted())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert records.append_record(path, sample("a")) == path
    assert calls and run_ids([path]) == ["a"] and len(records.diverted()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["records.jsonl"]


@pytest.mark.parametrize("call, code", [
    ("write", errno.ENOSPC), ("write", errno.EDQUOT), ("open", errno.EROFS), ("open", errno.EACCES),
    ("write", errno.EROFS), ("fsync", errno.ENOSPC),
    ("flock", errno.ENOLCK), ("flock", errno.EOPNOTSUPP), ("flock", errno.EINVAL), ("flock", errno.ENOSYS),
])
def test_an_environment_failure_sends_the_record_to_a_file_of_this_process(tmp_path, monkeypatch, call, code):
    path = tmp_path / "records.jsonl"
    records.append_record(path, sample("first"))
    calls = break_call(monkeypatch, call, code, name=None if call == "flock" else "records.jsonl")  # flock: the mount
    before = len(records.diverted())
    with pytest.warns(UserWarning, match=rf"could not append to .*records\.jsonl \({errno.errorcode[code]}: .*"
                                         rf"the record went to .*records\..+\.{os.getpid()}\.jsonl instead"):
        went = records.append_record(path, sample("second"))
    assert calls.count("records.jsonl") == 2  # tried, retried once, then fell back
    assert re.fullmatch(rf"records\.[A-Za-z0-9_.-]+\.{os.getpid()}\.jsonl", went.name) and went.parent == tmp_path
    assert went == records.fallback_path(path)
    (diversion,) = records.diverted()[before:]
    assert diversion.intended == path and diversion.went_to == went and errno.errorcode[code] in diversion.error
    with pytest.warns(UserWarning):
        assert records.append_record(path, sample("third")) == went  # the same file for the whole process
    # the loader merges it: given the folder, the records file, or both
    assert run_ids([path]) == ["first", "second", "third"]
    assert run_ids([tmp_path]) == ["first", "second", "third"]
    assert run_ids([tmp_path, path]) == ["first", "second", "third"]


def test_fallback_files_are_read_even_when_the_records_file_never_got_written(tmp_path, monkeypatch):
    path = tmp_path / "out" / "records.jsonl"
    break_call(monkeypatch, "open", errno.EACCES)
    with pytest.warns(UserWarning):
        records.append_record(path, sample("only"))
    assert not path.exists() and run_ids([path]) == ["only"]
    (tmp_path / "out" / "records.old.jsonl").write_text("")  # not a fallback name: not merged into the file's
    assert records.record_files([path]) == [records.fallback_path(path)]


def test_when_everything_fails_the_record_is_printed_to_stderr(tmp_path, monkeypatch, capsys):
    path = tmp_path / "records.jsonl"
    break_call(monkeypatch, "open", errno.EROFS)
    break_call(monkeypatch, "open", errno.ENOSPC, name=records.fallback_path(path).name)
    before = len(records.diverted())
    assert records.append_record(path, sample("last-resort", tokens_per_s=math.nan)) is None
    message, line = capsys.readouterr().err.splitlines()
    assert "could not append to" in message and "EROFS" in message and "ENOSPC" in message
    assert "one JSON line" in message
    assert json.loads(line) == json.loads(json.dumps(records._plain(sample("last-resort", tokens_per_s=math.nan))))
    assert json.loads(line)["run_id"] == "last-resort"
    (diversion,) = records.diverted()[before:]
    assert diversion.intended == path and diversion.went_to is None
    assert not list(tmp_path.iterdir())


def test_append_never_raises_an_os_error(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert records.append_record(blocker / "records.jsonl", sample("x")) is None  # ENOTDIR both times
    assert json.loads(capsys.readouterr().err.splitlines()[-1])["run_id"] == "x"


# ---------------------------------------------------------------- the loader


def test_loader_skips_damage_with_a_warning(tmp_path):
    path = tmp_path / "records.jsonl"
    records.append_record(path, sample("good"))
    with open(path, "ab") as f:
        f.write(b'{"schema_version": 1, "run_id": "tru\n')
        f.write(b'{"schema_version": 99}\n')
        f.write(b'{"schema_version": 1, "run_id": "caf\xe9"}\n')  # latin-1, not UTF-8
        f.write(b"[" * 100_000 + b"\n")  # deeper than the parser goes
        f.write(b'{"schema_version": 1, "n": ' + b"9" * 5000 + b"}\n")  # over Python's int digit limit
        f.write(b"\n")
    records.append_record(path, sample("also-good"))
    with open(path, "ab") as f:
        f.write(b'{"schema_version": 1, "run_id": "unfin')
    with pytest.warns(UserWarning) as caught:
        back = records.read_records([path])
    messages = [str(w.message) for w in caught]
    assert any("records.jsonl:2: skipped a line that is not valid JSON" in m for m in messages)
    assert any("records.jsonl:3: skipped a line that is not a schema v1 record" in m for m in messages)
    assert any("records.jsonl:4: skipped a line that is not UTF-8 text" in m for m in messages)
    assert any("records.jsonl:5: skipped a line that is not valid JSON" in m for m in messages)
    assert any("records.jsonl:6: skipped a line that is not valid JSON" in m for m in messages)
    assert any("records.jsonl:9: skipped a line that is not valid JSON (the unfinished end" in m for m in messages)
    assert len(messages) == 6
    assert [r["run_id"] for r in back] == ["good", "also-good"]


def test_a_folder_named_like_a_records_file_is_skipped(tmp_path):
    records.append_record(tmp_path / "records.jsonl", sample("top"))
    records.append_record(tmp_path / "odd.jsonl" / "records.jsonl", sample("inside"))
    with pytest.warns(UserWarning, match=r"odd\.jsonl: skipped, a folder"):
        assert [r["run_id"] for r in records.read_records([tmp_path])] == ["inside", "top"]
    assert run_ids([tmp_path / "odd.jsonl"]) == ["inside"]  # named itself: a folder like any other


def test_an_unreadable_records_file_is_a_one_line_user_error(tmp_path, monkeypatch):
    path = tmp_path / "records.jsonl"
    records.append_record(path, sample("a"))
    real_open = open

    def no_access(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(records, "open", no_access, raising=False)
    for given in ([path], [tmp_path]):
        with pytest.raises(UserError) as caught:
            records.read_records(given)
        message = str(caught.value)
        assert "\n" not in message and str(path) in message and "EACCES" in message and "permissions" in message


def test_bad_inputs(tmp_path):
    with pytest.raises(UserError, match="no records at"):
        records.read_records(["/nonexistent/place"])
    with pytest.raises(UserError, match="cannot read records at .*File name too long"):
        records.read_records([tmp_path / ("x" * 300)])
    with pytest.raises(ValueError, match="status"):
        records.make_record(run_id="x", point={}, status="great")


def test_run_ids_are_unique_and_sortable():
    ids = [records.new_run_id() for _ in range(50)]
    assert len(set(ids)) == 50 and all(i[8] == "T" for i in ids)
