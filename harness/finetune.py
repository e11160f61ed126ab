"""``llmbench finetune``: arguments, one measured training run, its record and table.

A run is warm-up optimizer steps (untimed: allocator warm-up, compilation), then
timed steps, each marked on the step clock (``harness.timing``). Throughput is
the global tokens of one optimizer step (batch x seq-len x grad-accum x world
size) over the median step time; MFU divides the cost model's FLOPs per step by
the measured matmul ceiling of the precision (``llmbench peak``), per GPU.

Under ``torchrun`` every process trains and times its steps; a step takes as long
as its slowest process (DDP's all-reduce waits for it), so step times are the
per-step maximum over processes, peak memory is the largest process's, and only
rank 0 writes the one record of the run. Ceilings are looked up (or measured)
after training, on rank 0, so they never compete with the training processes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


from harness.cli import DEFAULT_MODEL, check_writable, positive_int, stored_or_measured_ceilings
from workloads.errors import UserError

# Training costs ~3x a forward per token and keeps AdamW state: on a CPU the decode default is too slow.
DEFAULT_TRAIN_MODEL = {**DEFAULT_MODEL, "cpu": "gpt2"}


def add_parser(sub) -> None:
    from workloads.choices import ATTN_IMPLEMENTATIONS as ATTN_BACKENDS
    from workloads.choices import PACKINGS, TRAINERS

    f = sub.add_parser(
        "finetune",
        help="fine-tune benchmark (HF Trainer or a lean loop): tokens/s, MFU, memory, loss",
        description=(
            "Train a model preset with random weights (or a local checkpoint) for a few optimizer steps on "
            "synthetic tokens or a local dataset folder, and print tokens/s, samples/s, step time, MFU, peak "
            "memory and the loss at start and end. bf16/fp16 are mixed precision (fp32 master weights, "
            "autocast), as TrainingArguments(bf16=True). Works under torchrun (DDP); rank 0 writes one record "
            "to OUT/records.jsonl."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    f.add_argument("--model", default="auto",
                   help="preset name (see `llmbench models`) or local model directory; "
                        f"auto = {DEFAULT_TRAIN_MODEL['cuda']} on GPU, {DEFAULT_TRAIN_MODEL['cpu']} on CPU")
    f.add_argument("--dtype", default="bf16", help="fp32, tf32, bf16 or fp16 (bf16/fp16: mixed precision)")
    f.add_argument("--batch-size", type=positive_int, default=4, help="sequences per device per micro-batch")
    f.add_argument("--seq-len", type=positive_int, default=512, help="tokens per sequence")
    f.add_argument("--steps", type=positive_int, default=20, help="timed optimizer steps")
    f.add_argument("--warmup-steps", type=positive_int, default=2, help="untimed optimizer steps first")
    f.add_argument("--grad-accum", type=positive_int, default=1, help="micro-batches per optimizer step")
    f.add_argument("--trainer", choices=TRAINERS, default="lean", help="lean loop or transformers Trainer")
    f.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (torchrun: each rank's GPU)")
    f.add_argument("--attn", choices=ATTN_BACKENDS, default="sdpa", help="attention implementation")
    f.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (constant)")
    f.add_argument("--grad-checkpointing", action="store_true", help="recompute activations in the backward")
    f.add_argument("--compile", action="store_true", help="torch.compile the model (in the warm-up steps)")
    d = f.add_argument_group("data")
    d.add_argument("--data", default="synthetic",
                   help="synthetic (a learnable random token stream) or a local dataset folder or file "
                        "(save_to_disk folder, or parquet/json/csv/txt files)")
    d.add_argument("--split", default="train", help="split with optional slicing, e.g. train[:10%%]")
    d.add_argument("--text-column", default=None, help="text column; None: 'text', or the only text column")
    d.add_argument("--packing", choices=PACKINGS, default="pack",
                   help="pack documents into full blocks, or pad one document per row")
    m = f.add_argument_group("measurement")
    m.add_argument("--seed", type=int, default=0, help="seed for weights and data")
    m.add_argument("--out", type=Path, default=Path("results/runs"), help="folder for records.jsonl")
    m.add_argument("--no-ceilings", dest="ceilings", action="store_false",
                   help="do not measure missing ceilings after the run (the record then lacks MFU)")


def summarize(step_ms: list[float], losses: list[float], cost: dict) -> dict:
    from harness.timing import spread

    import numpy as np

    step_s = float(np.median(step_ms)) / 1e3
    return {
        "tokens_per_s": cost["tokens_per_step"] / step_s,
        "samples_per_s": cost["sequences_per_step"] / step_s,
        **spread(step_ms, "step_ms"),
        "step_ms_mean": float(np.mean(step_ms)),
        "steps_timed": len(step_ms),
        "loss_start": losses[0] if losses else None,
        "loss_end": losses[-1] if losses else None,
        "loss_steps": len(losses),
    }


def _max_over_ranks(values: list[float], world_size: int, device: torch.device) -> list[float]:
    if world_size == 1:
        return values
    import torch
    import torch.distributed as torch_dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)  # nccl reduces GPU tensors only
    torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.MAX)
    return tensor.tolist()


def run(workload, fields: dict, run_id: str, env: dict) -> dict:
    """Train once and return the record (without ceilings); failures become ``oom``/``failed`` records."""
    from harness.memory import PeakMemory
    from harness.records import make_record
    from harness.roofline import derive_finetune
    from harness.runner import describe_failure
    from harness.timing import StepClock

    dist = workload.dist
    peak = PeakMemory(workload.device)
    try:
        workload.setup()
        result = workload.run(StepClock(workload.device), peak.reset)
        step_ms = _max_over_ranks(result.step_ms, dist.world_size, workload.device)
        peak_bytes = int(_max_over_ranks([float(peak.read())], dist.world_size, workload.device)[0])
        cost = workload.cost()
        metrics = {**summarize(step_ms, result.losses, cost), "peak_mem_bytes": peak_bytes,
                   "peak_mem_kind": peak.kind}
        point = {**fields, **workload.record_fields(), "optimizer": result.optimizer}
        return make_record(run_id=run_id, point=point, metrics=metrics, cost=cost,
                           derived=derive_finetune(metrics, cost), env=env)
    except UserError:
        raise
    except Exception as exc:  # recorded and reported; the command then exits 1
        status, error = describe_failure(exc)
        return make_record(run_id=run_id, point={**fields, **workload.record_fields()}, status=status, error=error,
                           env=env)
    finally:
        workload.teardown()


def main(args) -> int:
    from harness import roofline
    from harness.envinfo import capture, device_name
    from harness.records import RECORDS_FILE, append_record, new_run_id
    from workloads.finetune import Dist, FinetunePoint, FinetuneWorkload, TrainOptions, check
    from workloads.precision import check_supported, parse_precision, resolve_device
    from workloads.presets import resolve_model

    dist = Dist.from_env()
    device = dist.device(resolve_device(args.device))
    spec = resolve_model(DEFAULT_TRAIN_MODEL[device.type] if args.model == "auto" else args.model)
    precision = parse_precision(args.dtype)
    check_supported(precision, device)
    point = FinetunePoint(args.batch_size, args.seq_len, args.grad_accum, args.steps, args.warmup_steps)
    options = TrainOptions(args.trainer, args.attn, args.data, args.split, args.text_column, args.packing, args.lr,
                           args.grad_checkpointing, args.compile, args.seed)
    check(spec, precision, device, point, options)
    workload = FinetuneWorkload(spec, precision, device, point, options, dist)
    workload.load_data()
    if dist.main:
        check_writable(args.out)
        print(f"llmbench finetune: {spec.name} on {device} ({device_name(device)}), {precision.name}, "
              f"trainer {options.trainer}, {dist.world_size} process(es)", file=sys.stderr)

    dist.init(device)
    run_id, env = new_run_id(), capture(device)
    fields = {
        "workload": "finetune", "model": spec.name, "model_path": str(spec.path) if spec.path else None,
        "random_weights": spec.random_weights, "engine": "hf", "trainer": options.trainer, "attn": options.attn,
        "dtype": precision.name, "matmul_precision": precision.matmul_precision, "device": str(device),
        "batch_size": point.batch_size, "seq_len": point.seq_len, "grad_accum": point.grad_accum,
        "world_size": dist.world_size, "steps": point.steps, "warmup_steps": point.warmup_steps,
        "seed": options.seed,
    }
    try:
        record = run(workload, fields, run_id, env)
    finally:
        dist.close()
    if not dist.main:
        return 0 if record["status"] == "ok" else 1
    if record["status"] == "ok" and args.ceilings:
        ceilings = stored_or_measured_ceilings(args.out, device, [precision], run_id, env)
        record = roofline.with_ceilings(record, ceilings)
    append_record(args.out / RECORDS_FILE, record)
    print(finetune_table([record]))
    print(f"\nrecords: {args.out / RECORDS_FILE}")
    if record["status"] != "ok":
        print(f"the run did not complete ({record['status']}): {record['error'].splitlines()[-1]}", file=sys.stderr)
        return 1
    return 0


def table_rows(records: list[dict]) -> list[dict]:
    rows = []
    for r in records:
        m, d = r["metrics"], r["derived"]
        loss = f"{m['loss_start']:.3f} -> {m['loss_end']:.3f}" if m.get("loss_start") is not None else None
        rows.append({
            "model": r["model"], "trainer": r.get("trainer"), "dtype": r["dtype"], "batch": r.get("batch_size"),
            "seq": r.get("seq_len"), "accum": r.get("grad_accum"), "world": r.get("world_size"),
            "tok_s": m.get("tokens_per_s"), "samples_s": m.get("samples_per_s"), "p50": m.get("step_ms_p50"),
            "p90": m.get("step_ms_p90"), "tflops": d.get("achieved_tflops"),
            "mfu": 100 * d["mfu"] if "mfu" in d else None,
            "mem": m["peak_mem_bytes"] / 1e9 if "peak_mem_bytes" in m else None, "loss": loss, "status": r["status"],
        })
    return rows


COLUMNS = [
    ("model", "model", ""), ("trainer", "trainer", ""), ("dtype", "dtype", ""), ("batch", "batch", "d"),
    ("seq", "seq", "d"), ("accum", "accum", "d"), ("world", "world", "d"), ("tok_s", "tok/s", ".1f"),
    ("samples_s", "samples/s", ".2f"), ("p50", "step p50 ms", ".1f"), ("p90", "step p90 ms", ".1f"),
    ("tflops", "TFLOP/s", ".4g"), ("mfu", "MFU %", ".1f"), ("mem", "peak mem GB", ".2f"),
    ("loss", "loss start -> end", ""), ("status", "status", ""),
]


def finetune_table(records: list[dict]) -> str:
    from harness.tables import render

    return render(table_rows(records), COLUMNS)
