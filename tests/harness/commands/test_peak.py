"""``llmbench peak``: copy and triad at every buffer size, a square matmul per precision (plus a model's
shapes with --model), stored as records; the table shows the best per kind, the lines below it the
spread and the sizes tried, and the fingerprint."""

import pytest

from harness import cli
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
