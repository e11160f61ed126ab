"""``llmbench kernel attention|decode-attention``: records, skipped backends, and errors for bad input."""

import pytest

from harness import cli
from harness.records import read_records
from workloads.kernelbench import AttentionPoint, attention_cost

SMALL = ["kernel", "attention", "--seq-len", "24,40", "--head-dim", "16", "--heads", "4", "--tokens", "80",
         "--no-progress", "--no-ceilings", "--device", "cpu"]


def test_sweep_records_every_implementation(tmp_path, capsys):
    code = cli.main([*SMALL, "--impl", "triton,sdpa-math,eager", "--mode", "fwd,bwd", "--causal", "yes",
                     "--gqa", "1,2", "--dtype", "fp32", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    recs = read_records([tmp_path / "records.jsonl"])
    assert len(recs) == 3 * 2 * 2 * 2  # impls x modes x seq lens x gqa ratios
    for r in recs:
        assert r["workload"] == "attention" and r["causal"] is True and r["head_dim"] == 16
        assert r["batch_size"] == 80 // r["seq_len"] and r["heads"] == 4 and r["kv_heads"] in (4, 2)
    triton = [r for r in recs if r["attn"] == "triton"]
    assert all(r["status"] == "skipped" and "CUDA" in r["error"] for r in triton)  # this machine has no GPU
    for r in recs:
        if r["attn"] == "triton":
            continue
        assert r["status"] == "ok", r["error"]
        m, c, d = r["metrics"], r["cost"], r["derived"]
        assert m["time_ms_p10"] <= m["time_ms"] <= m["time_ms_p90"] and m["repeats"] >= 3
        assert d["achieved_tflops"] == pytest.approx(c["flops"] / (m["time_ms"] / 1e3) / 1e12)
        point = AttentionPoint(r["attn"], r["batch_size"], r["heads"], r["kv_heads"], r["seq_len"], r["head_dim"],
                               r["causal"], r["mode"])
        assert c["flops"] == attention_cost(point, 4).flops
    assert "skipped triton at 8 point(s)" in out
    assert "sdpa-math" in out and "eager" in out


@pytest.mark.parametrize("extra,message", [
    (["--impl", "flash3"], "unknown impl 'flash3'"),
    (["--mode", "sideways"], "unknown mode"),
    (["--gqa", "3"], "--gqa 3 does not divide 4"),
    (["--heads", "0"], "argument --heads: must be at least 1"),
    (["--dtype", "fp8"], "fp8"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, extra, message):
    try:
        code = cli.main([*SMALL, *extra, "--out", str(tmp_path / "out")])
    except SystemExit as exc:  # a malformed value, refused by argparse
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_decode_attention_sweep(tmp_path, capsys):
    code = cli.main(["kernel", "decode-attention", "--context", "40,100", "--batch-size", "2", "--heads", "8",
                     "--gqa", "4", "--head-dim", "16", "--dtype", "fp32", "--no-progress", "--no-ceilings",
                     "--device", "cpu", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    recs = read_records([tmp_path / "records.jsonl"])
    assert len(recs) == 4 * 2 and {r["workload"] for r in recs} == {"decode-attention"}
    for r in recs:
        if r["attn"].startswith("triton"):
            assert r["status"] == "skipped"
            continue
        assert r["status"] == "ok" and r["kv_heads"] == 2
        # K and V of every cached token once, plus Q and O, in fp32
        kv = 2 * 2 * 2 * r["context"] * 16 * 4
        assert r["cost"]["bytes"] == kv + 2 * 2 * 8 * 16 * 4
        assert r["derived"]["achieved_gbps"] == pytest.approx(r["cost"]["bytes"] / r["metrics"]["time_ms"] / 1e6)
    assert "x sdpa" in out and "skipped triton-paged at 2 point(s)" in out


COMPILE = ["kernel", "compile", "--no-progress"]


@pytest.mark.parametrize("extra,message", [
    (["--arch", "sm_75"], "unknown GPU architecture 'sm_75'; known: sm_80"),
    (["--arch", ","], "--arch names no architecture"),
    (["--case", "sideways"], "unknown case 'sideways'"),
    (["--family", "matmul"], "unknown kernel family 'matmul'"),
    (["--dtype", "fp8"], "unknown dtype 'fp8'"),
    (["--head-dim", "512"], "head dim 512 is not supported"),
    (["--head-dim", "0"], "argument --head-dim: every value must be at least 1"),
    (["--workers", "0"], "argument --workers: must be at least 1"),
])
def test_compile_bad_input_is_one_line_and_exit_2(tmp_path, capsys, extra, message):
    try:
        code = cli.main([*COMPILE, *extra, "--out", str(tmp_path / "out")])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.compile
def test_compile_records_every_candidate_of_every_launch(tmp_path, capsys):
    from kernels.decode_attention import SPLIT_CONFIGS
    from kernels.resources import ptxas_missing

    if ptxas_missing():
        pytest.skip(ptxas_missing())
    code = cli.main([*COMPILE, "--family", "decode_attention", "--case", "contiguous", "--arch", "sm_90",
                     "--head-dim", "64", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    recs = read_records([tmp_path / "records.jsonl"])
    assert len(recs) == len(SPLIT_CONFIGS["hopper"]) + 1  # every split candidate, and the combine kernel
    assert {r["kernel"] for r in recs} == {"decode_attention.split", "decode_attention.combine"}
    for r in recs:
        assert r["workload"] == "kernel-compile" and r["status"] == "ok" and r["device"] is None
        assert r["arch"] == "sm_90" and r["head_dim"] == 64 and r["case"] == "contiguous" and r["dtype"] == "bf16"
        m = r["metrics"]
        assert m["clean"] and m["registers"] > 0 and m["shared_bytes"] > 0 and m["programs_per_sm"] >= 1
        assert r["config"]["num_warps"] in (4, 8) and r["candidate"].endswith(f"s{r['config']['num_stages']}")
    assert "decode_attention.split" in out


def test_decode_attention_kv_dtype_runs_our_kernel_on_quantized_caches(tmp_path, capsys):
    argv = ["kernel", "decode-attention", "--context", "40", "--batch-size", "1", "--heads", "4", "--gqa", "2",
            "--head-dim", "16", "--dtype", "fp32", "--no-progress", "--no-ceilings", "--device", "cpu"]
    code = cli.main([*argv, "--impl", "triton,sdpa", "--kv-dtype", "auto,int8,fp8", "--out", str(tmp_path)])
    assert code == 0
    recs = read_records([tmp_path / "records.jsonl"])
    assert sorted((r["attn"], str(r["kv_dtype"])) for r in recs) == [
        ("sdpa", "None"), ("triton", "None"), ("triton", "fp8"), ("triton", "int8")]
    code = cli.main([*argv, "--impl", "sdpa", "--kv-dtype", "int8", "--out", str(tmp_path / "none")])
    assert code == 2 and "no point to run" in capsys.readouterr().err
