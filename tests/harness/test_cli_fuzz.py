"""Bad input across every subcommand, table-driven: each is exit 2, one line on stderr naming what was
wrong, no traceback, and nothing written. Everything runs in-process and stops before any work."""

import json

import pytest

from harness import cli

DECODE = ["decode", "--model", "tiny-llama", "--no-progress"]
FINETUNE = ["finetune", "--model", "tiny-llama", "--device", "cpu"]
ATTENTION = ["kernel", "attention", "--device", "cpu", "--no-progress"]
DECODE_ATTENTION = ["kernel", "decode-attention", "--device", "cpu", "--no-progress"]
PEAK = ["peak", "--device", "cpu"]

CASES = [
    # the command itself
    [], ["nope"], ["decode", "--nope"], ["kernel"], ["kernel", "flash"], ["sweep"], ["sweep", "plan"],
    # decode: sizes and counts
    *[[*DECODE, flag, value] for flag in ("--batch-size", "--prompt-len", "--new-tokens")
      for value in ("0", "-1", "x", "", ",", "1,x", "1.5", "2**70")],
    [*DECODE, "--new-tokens", "1"], [*DECODE, "--prompt-len", "600"], [*DECODE, "--prompt-len", "500,20"],
    *[[*DECODE, "--repeats", value] for value in ("0", "-3", "many", "", "1.5")],
    *[[*DECODE, "--warmup", value] for value in ("-1", "x", "")],
    *[[*DECODE, "--max-time", value] for value in ("0", "-1", "nan", "inf", "x")],
    *[[*DECODE, "--seed", value] for value in ("-1", str(2**70), "x", "4294967296")],
    # decode: names
    *[[*DECODE, "--dtype", value] for value in ("bf17", ",", "", "bf16,bf16", "fp8", "tf32", "fp16,x")],
    *[[*DECODE, "--engine", value] for value in ("vllm", ",", "hf,hf", "lean,trt")],
    *[[*DECODE, "--attn", value] for value in ("flash", "", "SDPA")],
    *[[*DECODE, "--cache", value] for value in ("quantized", "offloaded", "")],
    [*DECODE, "--device", "quantum"], [*DECODE, "--device", "cuda"], [*DECODE, "--device", "cuda:x"],
    *[["decode", "--model", value, "--no-progress"] for value in ("llama-9b", "./no/such/dir", "", "--help-me",
                                                                   "~nouser/model", "x" * 300)],
    # decode: generation options
    *[[*DECODE, "--temperature", value] for value in ("0", "-1", "nan", "inf", "x")],
    *[[*DECODE, "--top-p", value] for value in ("0", "1.5", "nan", "-0.1")],
    *[[*DECODE, "--top-k", value] for value in ("0", "-5", "x")],
    *[[*DECODE, "--num-beams", value] for value in ("0", "-1", "x")],
    *[[*DECODE, "--repetition-penalty", value] for value in ("0", "-1", "inf", "nan")],
    [*DECODE, "--engine", "lean", "--num-beams", "2"], [*DECODE, "--engine", "lean", "--top-p", "0.9"],
    [*DECODE, "--out", ""],
    # finetune
    *[[*FINETUNE, flag, value] for flag in ("--batch-size", "--seq-len", "--steps", "--grad-accum")
      for value in ("0", "-1", "x")],
    *[[*FINETUNE, "--warmup-steps", value] for value in ("-1", "x")],
    [*FINETUNE, "--seq-len", "1"], [*FINETUNE, "--seq-len", "513"], [*FINETUNE, "--dtype", "fp16"],
    [*FINETUNE, "--dtype", "tf32"], [*FINETUNE, "--dtype", "bf17"], [*FINETUNE, "--trainer", "deepspeed"],
    [*FINETUNE, "--attn", "flash"], [*FINETUNE, "--packing", "stack"], [*FINETUNE, "--lr", "0"],
    [*FINETUNE, "--lr", "nan"], [*FINETUNE, "--lr", "inf"], [*FINETUNE, "--lr", "x"],
    [*FINETUNE, "--compile", "--warmup-steps", "0"], [*FINETUNE, "--data", "./no/such/folder"],
    ["finetune", "--model", "tiny-lama", "--device", "cpu"], [*FINETUNE, "--out", ""],
    # kernel attention
    *[[*ATTENTION, flag, value] for flag in ("--seq-len", "--head-dim", "--gqa")
      for value in ("0", "-1", "x", ",")],
    *[[*ATTENTION, flag, value] for flag in ("--tokens", "--batch-size", "--heads") for value in ("0", "-2", "x")],
    [*ATTENTION, "--impl", "flash3"], [*ATTENTION, "--impl", ","], [*ATTENTION, "--mode", "sideways"],
    [*ATTENTION, "--mode", ""], [*ATTENTION, "--causal", "maybe"], [*ATTENTION, "--dtype", "fp8"],
    [*ATTENTION, "--dtype", "tf32"], [*ATTENTION, "--heads", "4", "--gqa", "3"],
    # kernel decode-attention
    *[[*DECODE_ATTENTION, flag, value] for flag in ("--batch-size", "--context", "--head-dim", "--gqa")
      for value in ("0", "x")],
    [*DECODE_ATTENTION, "--heads", "0"], [*DECODE_ATTENTION, "--impl", "paged"],
    [*DECODE_ATTENTION, "--heads", "32", "--gqa", "5"], [*DECODE_ATTENTION, "--dtype", ","],
    # peak
    *[[*PEAK, flag, value] for flag in ("--buffer-mb", "--matmul-n") for value in ("0", "-1", "x")],
    [*PEAK, "--dtype", ","], [*PEAK, "--dtype", "bf17"], [*PEAK, "--dtype", "tf32"],
    [*PEAK, "--buffer-mb", "10000000"], [*PEAK, "--device", "tpu"],
    # report, compare, models, env, import
    ["report"], ["report", "{missing}"], ["report", "{empty}"], ["report", "{empty}", "--out", ""],
    ["compare"], ["compare", "{missing}", "{missing}"], ["compare", "{empty}", "{empty}"],
    ["compare", "{run}", "{run}", "--threshold", "nan"], ["compare", "{run}", "{run}", "--threshold", "inf"],
    ["compare", "{run}", "{run}", "--threshold", "-5%"], ["compare", "{run}", "{run}", "--threshold", "five"],
    ["compare", "{run}", "{run}", "--metric", "wibble"], ["compare", "{run}"],
    ["models", "--format", "xml"], ["env", "--device", "tpu"],
    ["import-pytest-benchmark", "{missing}"], ["import-pytest-benchmark", "{notjson}"],
    ["import-pytest-benchmark", "{emptyjson}"], ["import-pytest-benchmark", "{nanbench}"],
    ["import-pytest-benchmark", "{wrongtypes}"], ["import-pytest-benchmark", "{binary}"],
    # sweep
    ["sweep", "plan", "{missing}"], ["sweep", "plan", "{notjson}"], ["sweep", "plan", "{binary}"],
    ["sweep", "plan", "{badsweep}"], ["sweep", "plan", "{run}", "--limit", "0"],
    ["sweep", "status", "{missing}"], ["sweep", "status", "{empty}"], ["sweep", "task", "{empty}", "--index", "-1"],
    ["sweep", "collect", "{empty}"],
]


@pytest.fixture()
def paths(tmp_path):
    (tmp_path / "empty").mkdir()
    run = tmp_path / "run"
    run.mkdir()
    record = {"schema_version": 1, "run_id": "r", "timestamp": "2026-01-01T00:00:00+00:00", "status": "ok",
              "error": None, "workload": "decode", "model": "m", "dtype": "bf16", "batch_size": 1,
              "metrics": {"tokens_per_s": 10.0}, "cost": {}, "derived": {}, "env": {"device_name": "cpu"}}
    (run / "records.jsonl").write_text(json.dumps(record) + "\n")
    files = {"notjson": "not json", "emptyjson": "{}", "badsweep": 'name = "t"\nworkload = "decode"\n',
             "nanbench": json.dumps({"benchmarks": [{"name": "x", "stats": {"median": float("nan")}}]}),
             "wrongtypes": json.dumps({"benchmarks": [{"name": 3, "stats": {"median": "fast"}}],
                                       "machine_info": []})}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00bad")
    return {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "run": run,
            **{name: tmp_path / name for name in [*files, "binary"]}}


def exit_code(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("argv", CASES, ids=[" ".join(c)[:60] or "(none)" for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, paths, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [a.format(**paths) for a in argv]
    out = tmp_path / "out"
    if argv and argv[0] in ("decode", "finetune", "kernel", "peak", "import-pytest-benchmark") and "--out" not in argv:
        argv += ["--out", str(out)]
    code = exit_code(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "error" in lines[0], err
    assert not out.exists() and not (tmp_path / "results").exists()


def test_there_are_at_least_150_cases():
    assert len(CASES) >= 150
