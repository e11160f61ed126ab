"""llmbench finetune end to end on tiny presets: both trainers learn the synthetic stream, a
wikitext-style folder trains offline, torchrun with 2 gloo processes writes one record, --nproc 2
launches them itself (FSDP: the same losses as one process on the whole batch), two launchers form
a 2-node job through c10d rendezvous, MFU comes from stored ceilings, and bad input exits 2 with
one line."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness import ceilings, cli
from harness.envinfo import capture
from harness.records import RECORDS_FILE, append_record, make_record, read_records

TINY = ["finetune", "--seq-len", "32", "--batch-size", "4", "--steps", "5", "--warmup-steps", "1",
        "--lr", "3e-3", "--device", "cpu"]


def only_record(out: Path) -> dict:
    records = read_records([out / RECORDS_FILE])
    assert len(records) == 1
    return records[0]


def check_metrics(r: dict, steps: int) -> None:
    m, c, d = r["metrics"], r["cost"], r["derived"]
    assert r["status"] == "ok" and r["workload"] == "finetune" and r["error"] is None
    assert m["steps_timed"] == steps and m["loss_steps"] == steps + r["warmup_steps"]
    assert m["step_ms_p90"] >= m["step_ms_p50"] >= m["step_ms_p10"] > 0
    assert m["tokens_per_s"] == pytest.approx(c["tokens_per_step"] / (m["step_ms_p50"] / 1e3))
    assert m["samples_per_s"] == pytest.approx(c["sequences_per_step"] / (m["step_ms_p50"] / 1e3))
    assert c["tokens_per_step"] == r["batch_size"] * r["grad_accum"] * r["world_size"] * r["seq_len"]
    assert d["achieved_tflops"] == pytest.approx(c["flops_per_step"] / (m["step_ms_p50"] / 1e3) / 1e12)
    assert m["peak_mem_bytes"] > 0
    assert m["loss_end"] < m["loss_start"] - 0.1  # the synthetic chain is learnable


def test_lean_learns_and_mfu_comes_from_the_stored_ceiling(tmp_path, capsys):
    env = capture(torch.device("cpu"))
    same = ceilings.fingerprint(torch.device("cpu"), env)  # ceilings of this very setup are reused
    append_record(tmp_path / RECORDS_FILE, make_record(
        run_id="p", point={"workload": "matmul", "dtype": "fp32", "fingerprint": same},
        derived={"achieved_gbps": 0.0, "achieved_tflops": 0.5}, env=env))
    append_record(tmp_path / RECORDS_FILE, make_record(
        run_id="p", point={"workload": "copy", "dtype": "fp32", "fingerprint": same},
        derived={"achieved_gbps": 20.0}, env=env))
    assert cli.main([*TINY, "--model", "tiny-llama", "--dtype", "fp32", "--out", str(tmp_path)]) == 0
    r = [r for r in read_records([tmp_path]) if r["workload"] == "finetune"]
    assert len(r) == 1
    r = r[0]
    check_metrics(r, steps=5)
    assert (r["trainer"], r["optimizer"], r["weights_dtype"], r["autocast_dtype"]) == \
        ("lean", "adamw-fused", "float32", None)
    assert (r["world_size"], r["grad_accum"], r["data"], r["packing"]) == (1, 1, "synthetic", "pack")
    assert r["derived"]["mfu"] == pytest.approx(r["derived"]["achieved_tflops"] / 0.5)
    out = capsys.readouterr().out.splitlines()
    assert "tok/s" in out[0] and "MFU %" in out[0] and "loss start -> end" in out[0]
    assert out[2].split()[:3] == ["tiny-llama", "lean", "fp32"]


def test_lean_learns_through_our_triton_attention(tmp_path):
    """Forward and backward through kernels.attention (the Triton interpreter on this CPU), bf16 autocast."""
    args = [*TINY, "--model", "tiny-llama", "--dtype", "bf16", "--attn", "triton", "--no-ceilings",
            "--out", str(tmp_path)]
    assert cli.main(args) == 0
    r = only_record(tmp_path)
    check_metrics(r, steps=5)
    assert r["attn"] == "triton" and r["autocast_dtype"] == "bfloat16"


def test_hf_trainer_mixed_bf16_with_accumulation(tmp_path):
    args = [*TINY, "--model", "tiny-gpt2", "--trainer", "hf", "--dtype", "bf16", "--grad-accum", "2",
            "--batch-size", "2", "--no-ceilings", "--out", str(tmp_path)]
    assert cli.main(args) == 0
    r = only_record(tmp_path)
    check_metrics(r, steps=5)
    assert (r["trainer"], r["weights_dtype"], r["autocast_dtype"], r["max_grad_norm"]) == \
        ("hf", "float32", "bfloat16", 1.0)
    assert r["global_batch_size"] == 4 and r["cost"]["sequences_per_step"] == 4
    assert "mfu" not in r["derived"]


@pytest.fixture(scope="module")
def wikitext(tmp_path_factory):
    datasets = pytest.importorskip("datasets")
    root = tmp_path_factory.mktemp("data") / "wikitext-2-raw-v1"
    lines = [" = Robert Boulter = \n", "", " Robert Boulter is an English film , television and theatre actor .\n",
             " He had a guest @-@ starring role on the television series The Bill in 2000 .\n"]
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": lines * 40}),
                          "test": datasets.Dataset.from_dict({"text": lines})}).save_to_disk(str(root))
    return root


def test_finetunes_offline_from_a_local_wikitext_folder(tmp_path, wikitext):
    args = [*TINY, "--model", "tiny-opt", "--dtype", "fp32", "--data", str(wikitext), "--split", "train[:50%]",
            "--seq-len", "48", "--no-ceilings", "--out", str(tmp_path)]
    assert cli.main(args) == 0
    r = only_record(tmp_path)
    check_metrics(r, steps=5)
    assert (r["data"], r["data_split"], r["tokenizer"], r["packing"]) == \
        (str(wikitext), "train[:50%]", "byte-level", "pack")
    assert 0 < r["data_unique_rows"] <= r["cost"]["sequences_per_step"] * 6


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[3])}


@pytest.mark.slow
def test_torchrun_two_cpu_processes_write_one_record(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "harness", *TINY, "--model", "tiny-llama",
           "--dtype", "fp32", "--steps", "3", "--batch-size", "2", "--no-ceilings", "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    r = only_record(tmp_path)
    assert r["status"] == "ok" and r["world_size"] == 2 and r["global_batch_size"] == 4
    assert (r["nodes"], r["nproc_per_node"], r["parallel"]) == (1, 2, "ddp")
    assert r["metrics"]["steps_timed"] == 3
    assert r["cost"]["tokens_per_step"] == 2 * 2 * 32
    assert r["cost"]["grad_sync_bytes_per_step"] == 4 * r["cost"]["trainable_params"]
    assert r["metrics"]["tokens_per_s_per_process"] == pytest.approx(r["metrics"]["tokens_per_s"] / 2)
    assert done.stdout.count("tiny-llama") == 1  # only rank 0 prints the table


SAME_RUN = [*TINY, "--model", "tiny-llama", "--dtype", "fp32", "--steps", "2", "--no-ceilings"]


@pytest.mark.slow
def test_nproc_2_fsdp_launches_itself_and_trains_like_one_process_on_the_whole_batch(tmp_path):
    """Two FSDP processes of 2 sequences each see the same rows per step as one process of 4, so their
    losses (the mean over ranks of each rank's mean) are the same numbers, fp32."""
    cmd = [sys.executable, "-m", "harness", *SAME_RUN, "--batch-size", "2", "--nproc", "2", "--fsdp",
           "--out", str(tmp_path / "two")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "+ torchrun --standalone --nproc-per-node=2" in done.stderr
    two = only_record(tmp_path / "two")
    assert (two["status"], two["world_size"], two["nodes"], two["parallel"]) == ("ok", 2, 1, "fsdp")
    assert two["global_batch_size"] == 4 and done.stdout.count("tiny-llama") == 1
    assert cli.main([*SAME_RUN, "--batch-size", "4", "--out", str(tmp_path / "one")]) == 0
    one = only_record(tmp_path / "one")
    assert (one["world_size"], one["parallel"], one["cost"]["grad_sync_bytes_per_step"]) == (1, None, 0)
    for key in ("loss_start", "loss_end"):
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], rel=1e-4)


@pytest.mark.slow
def test_two_launchers_on_localhost_form_a_two_node_job(tmp_path):
    """What each node of a multi-node SLURM job runs: torchrun with --nnodes 2, meeting at a c10d
    rendezvous on the first node (here both on localhost, one process each)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
           f"127.0.0.1:{port}", "--rdzv-id", "llmbench-test", "-m", "harness", *SAME_RUN, "--batch-size", "2",
           "--out", str(tmp_path)]
    nodes = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
             for _ in range(2)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    r = only_record(tmp_path)  # rank 0 only
    assert (r["status"], r["world_size"], r["nodes"], r["nproc_per_node"], r["parallel"]) == ("ok", 2, 2, 1, "ddp")


def test_fsdp_alone_shards_over_a_group_of_one(tmp_path):
    assert cli.main([*SAME_RUN, "--fsdp", "--out", str(tmp_path)]) == 0
    r = only_record(tmp_path)
    assert (r["status"], r["parallel"], r["world_size"], r["nodes"]) == ("ok", "fsdp", 1, 1)
    assert not torch.distributed.is_initialized()


def test_nproc_must_match_what_torchrun_started(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main([*SAME_RUN, "--nproc", "3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("llmbench finetune: error: --nproc 3, but torchrun started 2 process(es) on this node: give the "
                   "same number to both (or leave --nproc out under torchrun)")


@pytest.mark.parametrize("args, message", [
    (["--data", "./no/such/folder"], "no such file or folder"),
    (["--seq-len", "513"], "exceeds tiny-llama's 512 positions"),
    (["--dtype", "fp16"], "fp16 mixed precision needs a GPU"),
    (["--dtype", "tf32"], "tf32"),
    (["--dtype", "bf17"], "unknown dtype"),
    (["--batch-size", "0"], "argument --batch-size: must be at least 1"),
    (["--steps", "0"], "argument --steps: must be at least 1"),
    (["--compile", "--warmup-steps", "0"], "--compile needs --warmup-steps"),
    (["--lr", "0"], "--lr must be a positive finite number"),
    (["--model", "tiny-lama"], "Did you mean tiny-llama"),
    (["--fsdp", "--trainer", "hf"], "--fsdp runs with --trainer lean"),
    (["--nproc", "0"], "argument --nproc: must be at least 1"),
    (["--nproc", "2", "--data", "./no/such/folder"], "no such file or folder"),
])
def test_bad_input_exits_2_with_one_clear_line(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    try:
        code = cli.main([*TINY, "--model", "tiny-llama", *args, "--out", str(out)])
    except SystemExit as exc:  # a malformed value: argparse's usage line, then the error
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert message in err and "Traceback" not in err
    assert lines[-1].startswith("llmbench finetune: error:") and (len(lines) == 1 or lines[0].startswith("usage:"))
    assert not (out / RECORDS_FILE).exists()


@pytest.mark.parametrize("kind, message", [
    ("numbers", "has no text column (columns: label)"),
    ("split", "has splits train, test, not 'validation'"),
])
def test_dataset_mistakes_exit_2(tmp_path, capsys, wikitext, kind, message):
    datasets = pytest.importorskip("datasets")
    path, split = wikitext, "validation"
    if kind == "numbers":
        path, split = tmp_path / "numbers", "train"
        datasets.Dataset.from_dict({"label": [1, 2, 3]}).save_to_disk(str(path))
    capsys.readouterr()  # the progress bar of save_to_disk
    out = tmp_path / "out"
    code = cli.main([*TINY, "--model", "tiny-llama", "--data", str(path), "--split", split, "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (out / RECORDS_FILE).exists()


def test_out_of_memory_is_recorded_and_exits_1(tmp_path, monkeypatch, capsys):
    from workloads.finetune import FinetuneWorkload

    def run(self, clock):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(FinetuneWorkload, "run", run)
    args = [*TINY, "--model", "tiny-llama", "--dtype", "fp32", "--no-ceilings", "--out", str(tmp_path)]
    assert cli.main(args) == 1
    r = only_record(tmp_path)
    assert r["status"] == "oom" and "20.00 GiB" in r["error"] and r["metrics"] == {}
    assert r["workload"] == "finetune" and r["trainer"] == "lean"
    assert "did not complete (oom)" in capsys.readouterr().err
