"""``llmbench finetune``: training steps timed on one device or under torchrun, one record per run.

A run is warm-up optimizer steps (untimed: allocator warm-up, compilation), then
timed steps, each marked on the step clock; ``harness.runner`` times the
``workloads.finetune.FinetuneWorkload``. Throughput is the global tokens of one
optimizer step (batch x seq-len x grad-accum x world size) over the median step
time; MFU divides the cost model's FLOPs per step by the measured matmul ceiling
of the precision (``llmbench peak``), per GPU.

Under ``torchrun`` every process trains and times its steps; a step takes as long
as its slowest process (DDP's all-reduce waits for it), so step times are the
per-step maximum over processes, peak memory is the largest process's, and only
rank 0 writes the one record of the run. Ceilings are looked up (or measured)
after training, on rank 0, so they never compete with the training processes.

``--nproc N`` starts the N processes itself (``harness.launch``): this process
becomes torchrun's elastic agent and runs ``python -m harness finetune`` with the
same options in each; the command is printed first, so it can be run by hand.
Everything is checked here before any process starts, so a mistake is one line,
not N tracebacks. Started by torchrun (by hand, or on each node of a multi-node
SLURM job), leave ``--nproc`` out (see ``harness.launch``); given, it must equal
the processes torchrun started on the node.
``--fsdp`` shards the model with FSDP2 instead of replicating it (DDP).
"""

from __future__ import annotations

import argparse
import sys

from harness import options
from workloads.choices import ATTN_IMPLEMENTATIONS, PACKINGS, TRAIN_MODEL, TRAINERS


def add_parser(sub) -> None:
    f = sub.add_parser(
        "finetune",
        help="fine-tune benchmark (HF Trainer or a lean loop): tokens/s, MFU, memory, loss",
        description=(
            "Train a model preset with random weights (or a local checkpoint) for a few optimizer steps on "
            "synthetic tokens or a local dataset folder, and print tokens/s, samples/s, step time, MFU, peak "
            "memory and the loss at start and end. bf16/fp16 are mixed precision (fp32 master weights, "
            "autocast), as TrainingArguments(bf16=True). --nproc N starts N processes under torchrun (DDP, or "
            "FSDP2 with --fsdp; works under torchrun too, as on each node of a multi-node job); rank 0 writes "
            "one record to OUT/records.jsonl."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    options.add_model(f, TRAIN_MODEL)
    f.add_argument("--dtype", default="bf16", help="fp32, tf32, bf16 or fp16 (bf16/fp16: mixed precision)")
    f.add_argument("--batch-size", type=options.positive_int, default=4, help="sequences per device per micro-batch")
    f.add_argument("--seq-len", type=options.positive_int, default=512, help="tokens per sequence")
    f.add_argument("--steps", type=options.positive_int, default=20, help="timed optimizer steps")
    f.add_argument("--warmup-steps", type=options.non_negative_int, default=2, help="untimed optimizer steps first")
    f.add_argument("--grad-accum", type=options.positive_int, default=1, help="micro-batches per optimizer step")
    f.add_argument("--trainer", choices=TRAINERS, default="lean", help="lean loop or transformers Trainer")
    options.add_device(f, " (torchrun: each rank's GPU)")
    f.add_argument("--nproc", type=options.positive_int, default=None,
                   help="processes on this node, one GPU each (None: 1, or under torchrun the ones it "
                        "started); more than one starts them under torchrun (DDP, or FSDP with --fsdp; gloo on CPU)")
    f.add_argument("--fsdp", action="store_true",
                   help="shard parameters, gradients and optimizer state over the processes (FSDP2 "
                        "fully_shard, one unit per decoder layer) instead of DDP's full replicas")
    f.add_argument("--attn", choices=ATTN_IMPLEMENTATIONS, default="sdpa", help="attention implementation")
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
    options.add_seed(m, "weights and data")
    options.add_out(m)
    options.add_ceilings(m, when="after the run", lacks="MFU")
    f.set_defaults(validate=validate, command_parser=f)


def _request(args, device=None):
    """The model, precision, point and training options asked for, all checked (the device-specific
    checks only when ``device`` is given)."""
    from workloads.finetune import FinetunePoint, TrainOptions, check
    from workloads.precision import check_supported, parse_precision
    from workloads.presets import resolve_model

    model = TRAIN_MODEL[device.type if device is not None else "cuda"] if args.model == "auto" else args.model
    spec = resolve_model(model) if device is not None else options.model_once(model)
    precision = parse_precision(args.dtype)
    if device is not None:
        check_supported(precision, device)
    point = FinetunePoint(args.batch_size, args.seq_len, args.grad_accum, args.steps, args.warmup_steps)
    train = TrainOptions(args.trainer, args.attn, args.data, args.split, args.text_column, args.packing, args.lr,
                         args.grad_checkpointing, args.compile, args.seed, args.fsdp)
    check(spec, precision, device, point, train)
    return spec, precision, point, train


def validate(args) -> None:
    """What a sweep checks before submitting a point: everything but the device and the data."""
    _request(args)


def run(args) -> int:
    from harness import ceilings, launch, roofline, runner, views
    from harness.envinfo import capture, device_name
    from harness.records import RECORDS_FILE, append_record, new_run_id
    from workloads.distributed import Dist
    from workloads.finetune import FinetuneWorkload
    from workloads.micro import model_matmul_shapes, projection_sizes
    from workloads.precision import resolve_device

    dist = Dist.from_env()
    nproc = launch.processes(args.nproc, dist)
    device = dist.device(resolve_device(args.device))
    spec, precision, point, train = _request(args, device)
    if nproc > 1:
        launch.check_gpus(nproc, device)
        workload = FinetuneWorkload(spec, precision, device, point, train)
        workload.load_data()  # the data's mistakes are the user's: one line here, before any process starts
        options.check_writable(args.out)
        return launch.local("finetune", args, nproc, device)
    workload = FinetuneWorkload(spec, precision, device, point, train, dist)
    workload.load_data()
    if dist.main:
        options.check_writable(args.out)
        strategy = dist.parallel(train.fsdp) or "one process"
        print(f"llmbench finetune: {spec.name} on {device} ({device_name(device)}), {precision.name}, "
              f"trainer {train.trainer}, {dist.world_size} process(es) on {dist.nodes} node(s), {strategy}",
              file=sys.stderr)

    dist.init(device, always=train.fsdp)
    run_id, env = new_run_id(), capture(device)
    try:
        [record] = runner.run([workload], run_id, env, progress=False)
    finally:
        dist.close()
    if not dist.main:
        return 0 if record["status"] == "ok" else 1
    if record["status"] == "ok" and args.ceilings:
        tokens = [point.batch_size * point.seq_len]
        known = ceilings.stored_or_measured(
            args.out, device, [precision], run_id, env, remeasure=args.remeasure,
            matmul_shapes=model_matmul_shapes(*projection_sizes(spec.config), tokens))
        record = roofline.with_ceilings(record, known)
    append_record(args.out / RECORDS_FILE, record)
    print(views.finetune_table([record]))
    print(f"\nrecords: {args.out / RECORDS_FILE}")
    if record["status"] != "ok":
        print(f"the run did not complete ({record['status']}): {record['error'].splitlines()[-1]}", file=sys.stderr)
        return 1
    return 0
