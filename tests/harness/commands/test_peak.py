"""``llmbench peak``: copy and triad at every buffer size, a square matmul per precision (plus a model's
shapes with --model), stored as records; the table shows the best per kind, the lines below it the
spread and the sizes tried, and the fingerprint; with --nproc 2 the all-reduce ceiling over gloo."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import ceilings, cli
from harness.commands.peak import spread_line
from harness.records import read_records


def test_peak_command_stores_ceilings(tmp_path, capsys):
    args = ["peak", "--device", "cpu", "--buffer-mb", "1,2", "--matmul-n", "64", "--out", str(tmp_path)]
    assert cli.main([*args, "--dtype", "fp32,bf16"]) == 0
    out = capsys.readouterr().out
    recs = read_records([tmp_path])
    assert [(r["workload"], r["dtype"], r.get("buffer_bytes") or r["m"]) for r in recs] == [
        ("copy", "fp32", 1 << 20), ("copy", "fp32", 2 << 20), ("triad", "fp32", 1 << 20), ("triad", "fp32", 2 << 20),
        ("matmul", "fp32", 64), ("matmul", "bf16", 64)]
    copy = recs[0]
    assert copy["cost"]["bytes"] == 2 * 2**20
    assert copy["derived"]["achieved_gbps"] == pytest.approx(copy["cost"]["bytes"] / copy["metrics"]["time_ms_min"] / 1e6)
    assert recs[4]["cost"]["flops"] == 2 * 64**3
    table, spread = out.split("best of every call")
    best_copy = max(recs[:2], key=lambda r: r["derived"]["achieved_gbps"])
    assert table.count("copy") == 1 and table.count("triad") == 1 and "TFLOP/s" in table  # one row per kind
    assert f"{best_copy['derived']['achieved_gbps']:.4g}" in table
    assert "copy fp32: best" in spread and "sizes tried: 1 MiB" in spread and "2 MiB" in spread
    assert "matmul bf16: best" in spread and "64x64x64" in spread and "p10-p90" in spread
    assert "fingerprint" in spread and "threads=" in spread and "torch=" in spread
    assert all(r["fingerprint"]["threads"] >= 1 for r in recs)
    assert cli.main([*args, "--dtype", "tf32"]) == 2


def test_model_adds_its_prefill_and_decode_shapes(tmp_path, capsys):
    assert cli.main(["peak", "--device", "cpu", "--buffer-mb", "1", "--matmul-n", "16", "--dtype", "fp32",
                     "--model", "tiny-llama", "--tokens", "1,8", "--out", str(tmp_path)]) == 0
    shapes = [(r["m"], r["n"], r["k"]) for r in read_records([tmp_path]) if r["workload"] == "matmul"]
    assert shapes == [(16, 16, 16), (1, 64, 64), (1, 128, 64), (8, 64, 64), (8, 128, 64)]
    assert "1x128x64" in capsys.readouterr().out


def test_spread_line_reports_best_median_p10_p90_and_sizes():
    def rec(mib, best, median, p10, p90, status="ok"):
        derived = {"achieved_gbps": best, "median_gbps": median, "p10_gbps": p10, "p90_gbps": p90}
        return {"workload": "copy", "dtype": "fp32", "status": status, "elements": mib << 18,
                "derived": derived if status == "ok" else {}, "metrics": {"repeats": 20}}

    small, large, failed = rec(64, 18.0, 8.0, 6.0, 9.0), rec(256, 28.0, 24.0, 19.0, 26.0), rec(512, 0, 0, 0, 0, "oom")
    assert spread_line(large, [small, large, failed]) == (
        "copy fp32: best 28 GB/s at 256 MiB (there: median 24, p10-p90 19-26 GB/s, 20 calls); "
        "sizes tried: 64 MiB 18, 256 MiB 28, 512 MiB oom")
    assert spread_line(failed, [failed]) == "copy fp32: oom at every size tried (512 MiB)"


@pytest.mark.parametrize("args, message", [
    (["--buffer-mb", "0"], "argument --buffer-mb: every value must be at least 1"),
    (["--dtype", ","], "--dtype needs at least one value"),
    (["--dtype", "bf17"], "unknown dtype 'bf17'"),
    (["--model", "no-such-model"], "unknown model preset 'no-such-model'"),
    (["--allreduce-mb", "0"], "argument --allreduce-mb: every value must be at least 1"),
    (["--nproc", "0"], "argument --nproc: must be at least 1"),
])
def test_bad_input_exits_2(tmp_path, capsys, args, message):
    try:
        code = cli.main(["peak", "--device", "cpu", *args, "--out", str(tmp_path / "out")])
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out" / "records.jsonl").exists()


def test_a_buffer_larger_than_free_memory_is_refused(tmp_path, capsys):
    assert cli.main(["peak", "--device", "cpu", "--buffer-mb", f"1,{1 << 40}", "--out", str(tmp_path / "out")]) == 2
    assert f"--buffer-mb {1 << 40}: triad needs three buffers" in capsys.readouterr().err
    assert not (tmp_path / "out" / "records.jsonl").exists()


@pytest.mark.slow
def test_nproc_2_adds_the_allreduce_ceiling_over_gloo(tmp_path):
    """After its own ceilings, peak starts 2 processes under torchrun; they all-reduce 1 and 2 MiB fp32
    messages (gloo) and rank 0 records the bus bandwidth: 2 (n-1)/n = 1x the message bytes per call at n = 2."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    cmd = [sys.executable, "-m", "harness", "peak", "--device", "cpu", "--buffer-mb", "1", "--matmul-n", "16",
           "--dtype", "fp32", "--nproc", "2", "--allreduce-mb", "1,2", "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_records([tmp_path])
    assert [r["workload"] for r in records] == ["copy", "triad", "matmul", "allreduce", "allreduce"]
    reduce = records[3:]
    assert [r["message_bytes"] for r in reduce] == [1 << 20, 2 << 20]
    for r in reduce:
        assert (r["status"], r["world_size"], r["nodes"], r["backend"], r["dtype"]) == ("ok", 2, 1, "gloo", "fp32")
        assert r["cost"] == {"message_bytes": r["message_bytes"], "bus_bytes": r["message_bytes"], "bus_factor": 1.0}
        assert r["metrics"]["repeats"] == 20 and r["metrics"]["time_ms_p90"] >= r["metrics"]["time_ms_min"] > 0
        assert r["derived"]["achieved_gbps"] == pytest.approx(r["message_bytes"] / r["metrics"]["time_ms_min"] / 1e6)
    found = ceilings.from_records(records)[ceilings.device_key(records[0])]
    assert found.allreduce_gbps == {2: max(r["derived"]["achieved_gbps"] for r in reduce)}
    assert found.copy_gbps and found.fingerprint == records[0]["fingerprint"]  # the others' fingerprint stays current
    assert "all-reduce over 2 processes on 1 node(s), gloo" in done.stdout and "allreduce fp32: best" in done.stdout
    assert "sizes tried: 1 MiB" in done.stdout


def test_under_torchrun_one_process_cannot_all_reduce(tmp_path, monkeypatch, capsys):
    for name, value in {"LOCAL_WORLD_SIZE": "1", "WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["peak", "--device", "cpu", "--out", str(tmp_path)]) == 2
    assert "measures the all-reduce ceiling, which needs 2 or more processes" in capsys.readouterr().err
