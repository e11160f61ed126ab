"""``llmbench decode``: end-to-end on a tiny preset, engines and attention compared, tensor parallel over two
gloo processes, clear errors for bad input."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness import cli
from harness.records import read_records
from workloads.decode import DecodeWorkload


def exit_code(argv: list[str]) -> int:
    """The exit code of ``llmbench ARGV``, whether argparse (SystemExit) or a command decided it."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code

TINY = ["decode", "--model", "tiny-llama", "--prompt-len", "12", "--new-tokens", "5", "--repeats", "2",
        "--no-progress", "--no-ceilings"]


def test_decode_end_to_end(tmp_path, capsys):
    code = cli.main([*TINY, "--dtype", "bf16,fp32", "--batch-size", "1,2", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    recs = read_records([tmp_path / "records.jsonl"])
    # the two precisions alternate point by point (both models fit in memory together)
    assert [(r["dtype"], r["batch_size"]) for r in recs] == [("bf16", 1), ("fp32", 1), ("bf16", 2), ("fp32", 2)]
    assert len({r["run_id"] for r in recs}) == 1
    for r in recs:
        assert r["status"] == "ok" and r["workload"] == "decode" and r["engine"] == "hf"
        assert r["prompt_len"] == 12 and r["new_tokens"] == 5 and r["seq_len"] == 17
        m, c, d = r["metrics"], r["cost"], r["derived"]
        assert m["repeats"] == 2 and m["decode_steps_timed"] == 2 * 4
        assert m["tokens_per_s"] > 0 and m["ttft_ms"] > 0 and m["tpot_ms_p90"] >= m["tpot_ms_p50"] > 0
        assert m["peak_mem_bytes"] > 0
        assert d["achieved_gbps"] == pytest.approx(c["decode_bytes"] / (m["decode_ms"] / 1e3) / 1e9)
        assert r["env"]["torch"] == torch.__version__ and r["env"]["host"]
    fp32 = next(r for r in recs if r["dtype"] == "fp32")
    bf16 = next(r for r in recs if r["dtype"] == "bf16")
    assert fp32["weights_dtype"] == "float32" and bf16["weights_dtype"] == "bfloat16"
    assert fp32["cost"]["weight_bytes_per_step"] == 2 * bf16["cost"]["weight_bytes_per_step"]
    lines = out.splitlines()
    assert "tok/s" in lines[0] and "speedup" in lines[0] and "GB/s" in lines[0]
    assert [line.split()[1] for line in lines[2:6]] == ["bf16", "fp32", "bf16", "fp32"]
    assert lines[2].split()[6] == "1.00"  # the first precision is the baseline
    assert "records.jsonl" in out


def test_failed_point_is_recorded_and_the_rest_go_on(tmp_path, monkeypatch, capsys):
    real_run = DecodeWorkload.run

    def run(self, point, prompt, clock):
        if point.batch_size == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        return real_run(self, point, prompt, clock)

    monkeypatch.setattr(DecodeWorkload, "run", run)
    code = cli.main([*TINY, "--dtype", "fp32", "--batch-size", "1,2,3", "--out", str(tmp_path)])
    assert code == 1
    recs = read_records([tmp_path])
    assert [r["status"] for r in recs] == ["ok", "oom", "ok"]
    assert "80.00 GiB" in recs[1]["error"] and recs[1]["metrics"] == {}
    assert "did not complete" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--model", "llama-9b"], "unknown model preset 'llama-9b'"),
    (["--model", "tiny-llama", "--dtype", "bf17"], "unknown dtype 'bf17'"),
    (["--model", "tiny-llama", "--dtype", "bf16,bf16"], "twice"),
    (["--model", "tiny-llama", "--dtype", "tf32", "--device", "cpu"], "tf32"),
    (["--model", "tiny-llama", "--device", "quantum"], "unknown device"),
    (["--model", "./no/such/dir"], "does not exist"),
    (["--model", "tiny-llama", "--batch-size", "-1"], "argument --batch-size: every value must be at least 1"),
    (["--model", "tiny-llama", "--new-tokens", "1"], "--new-tokens must be at least 2"),
        (["--model", "tiny-llama", "--new-tokens", "0"], "argument --new-tokens: every value must be at least 1"),
    (["--model", "tiny-llama", "--prompt-len", "600"], "exceeds tiny-llama's 512 positions"),
    (["--model", "tiny-llama", "--repeats", "0"], "argument --repeats: must be at least 1"),
    (["--model", "tiny-llama", "--warmup", "-1"], "argument --warmup: must not be negative"),
    (["--model", "tiny-llama", "--out", ""], "argument --out: expected a folder path"),
    (["--model", "tiny-llama", "--num-beams", "0"], "--num-beams"),
    (["--model", "tiny-gpt2", "--tp", "2"], "--tp splits Llama-style models (llama, mistral, qwen2); tiny-gpt2 is"),
    (["--model", "tiny-llama", "--tp", "4"], "--tp 4: tiny-llama's 2 KV heads do not divide into 4 equal parts"),
    (["--model", "tiny-llama", "--tp", "0"], "argument --tp: must be at least 1"),
])
def test_bad_input_exits_2_with_one_clear_line(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert exit_code(["decode", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert "llmbench decode: error:" in err
    assert not (out / "records.jsonl").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu(capsys):
    assert cli.main(["decode", "--device", "cuda"]) == 2
    assert "no CUDA device is visible" in capsys.readouterr().err


def test_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main([*TINY, "--out", str(blocker / "sub")]) == 2
    assert "cannot create output folder" in capsys.readouterr().err


def test_decode_with_our_triton_attention(tmp_path):
    """On this CPU the kernel runs in Triton's interpreter (tests/conftest.py); on a GPU, compiled."""
    assert cli.main([*TINY, "--dtype", "fp32", "--attn", "triton", "--out", str(tmp_path)]) == 0
    (record,) = read_records([tmp_path / "records.jsonl"])
    assert record["status"] == "ok" and record["attn"] == "triton"


def test_triton_attention_without_gpu_or_interpreter_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert cli.main([*TINY, "--device", "cpu", "--attn", "triton", "--out", str(tmp_path / "out")]) == 2
    assert "need a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_decode_compares_engines(tmp_path, capsys):
    assert cli.main([*TINY, "--dtype", "fp32", "--engine", "hf,hf-static,lean", "--out", str(tmp_path)]) == 0
    recs = read_records([tmp_path / "records.jsonl"])
    assert [(r["engine"], r["cache"]) for r in recs] == [("hf", "dynamic"), ("hf-static", "static"),
                                                          ("lean", "static")]
    assert all(r["status"] == "ok" and r["metrics"]["decode_steps_timed"] == 2 * 4 for r in recs)
    lines = capsys.readouterr().out.splitlines()
    assert "engine" in lines[0] and [line.split()[2] for line in lines[2:5]] == ["hf", "hf-static", "lean"]


@pytest.mark.parametrize("extra,message", [
    (["--engine", "vllm"], "unknown engine 'vllm'"),
    (["--engine", "lean", "--num-beams", "2"], "does not support --num-beams"),
])
def test_bad_engine_choices(tmp_path, capsys, extra, message):
    assert cli.main([*TINY, *extra, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_tp_2_starts_two_processes_and_rank_0_writes_per_gpu_records(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    cmd = [sys.executable, "-m", "harness", "decode", "--model", "tiny-llama", "--device", "cpu", "--dtype", "fp32",
           "--engine", "hf,lean", "--prompt-len", "8", "--new-tokens", "4", "--tp", "2", "--no-ceilings",
           "--no-progress", "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "+ torchrun --standalone --nproc-per-node=2" in done.stderr and "--tp 2" in done.stderr
    records = read_records([tmp_path / "records.jsonl"])
    assert [r["engine"] for r in records] == ["hf", "lean"]  # one after another, written by rank 0 only
    for r in records:
        assert (r["status"], r["tp"], r["world_size"], r["parallel"]) == ("ok", 2, 2, "tp")
        assert r["metrics"]["repeats"] == 5  # --repeats auto is a fixed count under --tp
        assert r["cost"]["per_gpu"] and r["cost"]["comm_bus_bytes_per_step"] == 4 * 2 * 2 * 64 + 4 * 512 / 2
    assert done.stdout.count("tiny-llama") == 2  # the table once, from rank 0


def test_tp_must_match_what_torchrun_started(tmp_path, monkeypatch, capsys):
    for name, value in {"LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    assert exit_code([*TINY, "--out", str(tmp_path)]) == 2
    assert "--tp 1, but torchrun started 2 process(es) on 1 node(s)" in capsys.readouterr().err


def test_quantized_kv_cache_and_weights_compared_with_their_accuracy(tmp_path):
    """One run compares the float lean engine with int8 KV (our kernel, in Triton's interpreter) and int8
    weights (torchao's layers here: ours are slow in the interpreter, tests/workloads/test_quantize.py runs
    them); the quantized records carry their accuracy against the float model and count stored bytes."""
    assert cli.main([*TINY, "--dtype", "fp32", "--engine", "lean", "--attn", "triton", "--kv-cache", "auto,int8",
                     "--weights", "auto,int8-torchao", "--prompt-len", "6", "--new-tokens", "3", "--repeats", "1", "--warmup", "0",
                     "--out", str(tmp_path)]) == 0
    recs = read_records([tmp_path / "records.jsonl"])
    assert [(r["weight_format"], r["kv_format"]) for r in recs] == [("fp32", "fp32"), ("fp32", "int8"),
                                                                     ("int8", "fp32"), ("int8", "int8")]
    assert all(r["status"] == "ok" for r in recs)
    assert [r["weight_impl"] for r in recs] == [None, None, "torchao", "torchao"]
    assert "quality" not in recs[0]
    for r in recs[1:]:
        q = r["quality"]
        assert q["tokens_compared"] == 3 and 0 <= q["token_agreement"] <= 1 and q["logit_max_abs_err"] > 0
    bytes_ = [r["cost"]["bytes_per_step"] for r in recs]
    assert bytes_[0] > bytes_[1] > bytes_[2] > bytes_[3]


@pytest.mark.parametrize("extra,message", [
    (["--engine", "lean", "--kv-cache", "int8"], "add --attn triton"),
    (["--kv-cache", "int8"], "--engine hf with --cache dynamic keeps a float cache"),
    (["--cache", "quantized"], "give --kv-cache int8 or fp8"),
    (["--dtype", "fp32", "--kv-cache", "bf16"], "a float cache is stored in the compute dtype"),
    (["--weights", "int4"], "--weights takes distinct formats from auto, int8, int8-torchao"),
])
def test_bad_quantized_requests(tmp_path, capsys, extra, message):
    assert cli.main([*TINY, *extra, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_quality_data_needs_a_quantized_variant_and_an_existing_folder(tmp_path, capsys):
    assert cli.main([*TINY, "--quality-data", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "add --kv-cache int8 or fp8, or --weights int8" in capsys.readouterr().err
    assert cli.main([*TINY, "--weights", "int8-torchao", "--quality-data", str(tmp_path / "nope"),
                     "--out", str(tmp_path / "out")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
