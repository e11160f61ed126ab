"""``llmbench peak``: copy, triad and a matmul per precision, stored as records, printed against spec."""

import pytest

from harness import cli
from harness.records import read_records


def test_peak_command_stores_ceilings(tmp_path, capsys):
    args = ["peak", "--device", "cpu", "--buffer-mb", "4", "--matmul-n", "64", "--out", str(tmp_path)]
    assert cli.main([*args, "--dtype", "fp32,bf16"]) == 0
    out = capsys.readouterr().out
    assert "copy" in out and "triad" in out and "TFLOP/s" in out
    recs = read_records([tmp_path])
    assert [(r["workload"], r["dtype"]) for r in recs] == [("copy", "fp32"), ("triad", "fp32"), ("matmul", "fp32"),
                                                           ("matmul", "bf16")]
    copy = recs[0]
    assert copy["cost"]["bytes"] == 2 * 4 * 2**20
    assert copy["derived"]["achieved_gbps"] == pytest.approx(copy["cost"]["bytes"] / copy["metrics"]["time_ms"] / 1e6)
    assert recs[2]["cost"]["flops"] == 2 * 64**3
    assert cli.main([*args, "--dtype", "tf32"]) == 2


@pytest.mark.parametrize("args, message", [
    (["--buffer-mb", "0"], "argument --buffer-mb: must be at least 1"),
    (["--dtype", ","], "--dtype needs at least one value"),
    (["--dtype", "bf17"], "unknown dtype 'bf17'"),
])
def test_bad_input_exits_2(tmp_path, capsys, args, message):
    try:
        code = cli.main(["peak", "--device", "cpu", *args, "--out", str(tmp_path / "out")])
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out" / "records.jsonl").exists()
