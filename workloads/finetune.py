"""The fine-tune workload: causal-LM training steps, with the Hugging Face Trainer or a lean loop.

Two trainers run the same model on the same token blocks (``workloads.data``):

* ``hf``: ``transformers.Trainer`` with ``TrainingArguments`` as users write them
  (per-device batch, gradient accumulation, bf16/fp16/tf32 flags, gradient
  checkpointing, fused AdamW, no reporting integrations, nothing saved). A
  ``TrainerCallback`` marks the end of every optimizer step on the caller's clock
  (CUDA events on a GPU, read after training, so marking never adds a
  synchronisation) and collects the loss the Trainer logs every step. The
  Trainer's defaults stay, gradient clipping at 1.0 included; the learning rate
  is constant so both trainers see the same schedule.
* ``lean``: a plain loop: autocast where the precision asks for it, a GradScaler
  for fp16 only, fused AdamW where the device has it, DDP's ``no_sync`` on all
  but the last micro-batch, optional ``torch.compile`` (its compilation happens
  in the warm-up steps, outside the timed region). No clipping, no logging
  inside the timed region: losses stay on the device until the end.

Precision (see ``workloads.precision``): ``fp32`` and ``tf32`` train fp32
weights (``tf32`` lets matmuls use TF32 tensor cores). ``bf16`` and ``fp16`` mean
what ``TrainingArguments(bf16=True)`` means: mixed precision, fp32 master weights,
gradients and optimizer state, with matmuls and activations in bf16/fp16 under
autocast. They are not pure bf16 weights. Records say so: ``weights_dtype``
float32 and ``autocast_dtype`` bfloat16.

Multi-process: under ``torchrun`` (which ``llmbench finetune --nproc N`` starts
itself) each process trains on its own shard of the blocks; gloo on CPU, nccl on
GPU. The global batch per optimizer step is ``batch_size x grad_accum x
world_size`` sequences. Two ways to spread the model:

* DDP (the default): every process holds the whole model and optimizer state;
  gradients are all-reduced once per optimizer step (``no_sync`` on the other
  micro-batches).
* FSDP (``fsdp=True``, FSDP2's ``fully_shard``): parameters, gradients and
  optimizer state are sharded over the processes, each decoder layer its own
  unit (the model's ``_no_split_modules``), then the root; a layer's parameters
  are all-gathered for its forward and again for its backward, gradients are
  reduce-scattered. This is what lets a model larger than one GPU's memory train.
  Mixed precision stays autocast over fp32 shards, the same numerics as DDP.

Records say ``parallel`` (``ddp``, ``fsdp``, or None for one plain process),
``world_size``, ``nodes`` and ``nproc_per_node``; the report divides tokens/s per
process by the 1-process point's for scaling efficiency. The cost block carries
the gradient bytes each process contributes to the gradient reduction per
optimizer step (trainable parameters x 4 bytes: fp32 gradients), from first
principles; how many bytes the collective moves on the wire depends on the
algorithm (ring all-reduce: 2 (N-1)/N of it per process, see ``cost.allreduce``).
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as torch_dist

from workloads import cost, data
from workloads.attention import check_attn
from workloads.choices import PACKINGS, TRAINERS
from workloads.distributed import Dist
from workloads.errors import UserError
from workloads.precision import Precision, matmul_mode
from workloads.presets import ModelSpec, build_model
from workloads.stats import spread, summary
from workloads.workload import Clock, Runs


@dataclass(frozen=True)
class FinetunePoint:
    batch_size: int  # sequences per device per micro-batch
    seq_len: int
    grad_accum: int = 1
    steps: int = 10  # timed optimizer steps
    warmup_steps: int = 2  # untimed optimizer steps first


@dataclass(frozen=True)
class TrainOptions:
    trainer: str = "lean"
    attn: str = "sdpa"
    data: str = "synthetic"  # or a local dataset folder / file
    split: str = "train"
    text_column: str | None = None
    packing: str = "pack"
    lr: float = 1e-4
    grad_checkpointing: bool = False
    compile: bool = False
    seed: int = 0
    fsdp: bool = False


def training_dtypes(precision: Precision) -> tuple[torch.dtype, torch.dtype | None]:
    """(weights dtype, autocast dtype or None): bf16/fp16 are mixed precision over fp32 weights."""
    if precision.dtype in (torch.bfloat16, torch.float16):
        return torch.float32, precision.dtype
    return precision.dtype, None


def check(spec: ModelSpec, precision: Precision, device: torch.device | None, point: FinetunePoint,
          options: TrainOptions) -> None:
    """Refuse what cannot run, before anything is built (without ``device``: what can be judged
    anywhere, as when a sweep is planned away from the GPUs)."""
    for name in ("batch_size", "seq_len", "grad_accum", "steps"):
        if getattr(point, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(point, name)}")
    if point.warmup_steps < 0:
        raise UserError(f"--warmup-steps must not be negative, got {point.warmup_steps}")
    if point.seq_len < 2:
        raise UserError("--seq-len must be at least 2 (a token and the one it predicts)")
    if point.seq_len > spec.max_positions:
        raise UserError(f"--seq-len {point.seq_len} exceeds {spec.name}'s {spec.max_positions} positions")
    if options.trainer not in TRAINERS:
        raise UserError(f"unknown trainer {options.trainer!r}; choose from {', '.join(TRAINERS)}")
    check_attn(options.attn, device)
    if options.packing not in PACKINGS:
        raise UserError(f"unknown packing {options.packing!r}; choose from {', '.join(PACKINGS)}")
    if precision.name == "fp16" and device is not None and device.type != "cuda":
        raise UserError("fp16 mixed precision needs a GPU (its GradScaler and fp16 kernels); on the CPU use bf16 "
                        "or fp32")
    if options.compile and point.warmup_steps < 1:
        raise UserError("--compile needs --warmup-steps 1 or more, so compilation stays out of the timed steps")
    if not 0 < options.lr < math.inf:
        raise UserError(f"--lr must be a positive finite number, got {options.lr}")
    if options.fsdp and options.trainer != "lean":
        raise UserError("--fsdp runs with --trainer lean (the hf Trainer shards through accelerate's own FSDP "
                        "config, which this benchmark does not set up)")
    if options.trainer == "hf" and device is not None and device.type == "cuda" and (device.index or 0) != 0:
        raise UserError("--trainer hf runs on the first visible GPU; pick one with CUDA_VISIBLE_DEVICES instead "
                        f"of --device {device}")


def load_blocks(spec: ModelSpec, point: FinetunePoint, options: TrainOptions, world_size: int) -> data.TokenBlocks:
    """Every sequence the run trains on, all ranks together (each rank trains on its shard)."""
    rows = (point.warmup_steps + point.steps) * point.grad_accum * point.batch_size * world_size
    vocab = spec.config.vocab_size
    if options.data == "synthetic":
        return data.synthetic(vocab, rows, point.seq_len, options.seed)
    texts = data.read_texts(Path(options.data).expanduser(), options.split, options.text_column)
    tokenizer = data.local_tokenizer(spec.path) if spec.path else data.byte_tokenizer()
    if len(tokenizer) > vocab:
        raise UserError(f"the tokenizer has {len(tokenizer)} tokens but {spec.name}'s vocabulary only {vocab}")
    return data.tokenize(texts, tokenizer, point.seq_len, options.packing, rows, options.data)


@dataclass
class TrainResult:
    step_ms: list[float]  # timed optimizer steps, this process
    losses: list[float]  # every step, warm-up included, averaged over micro-batches and ranks
    optimizer: str


class FinetuneWorkload:
    """One model, precision and point: ``load_data()``, ``setup()``, then ``run()`` once."""

    def __init__(self, spec: ModelSpec, precision: Precision, device: torch.device, point: FinetunePoint,
                 options: TrainOptions, dist: Dist = Dist()):
        self.spec, self.precision, self.device = spec, precision, device
        self.point, self.options, self.dist = point, options, dist
        self.points = [point]
        self.model = None
        self.blocks = None
        self.shape = None
        self.result: TrainResult | None = None
        self.trainable_params = 0

    def load_data(self) -> None:
        """Read and tokenize the data first: its mistakes are the user's, found before any model is built."""
        self.blocks = load_blocks(self.spec, self.point, self.options, self.dist.world_size)

    def setup(self) -> None:
        if self.blocks is None:
            self.load_data()
        weights, _ = training_dtypes(self.precision)
        self.model = build_model(self.spec, weights, self.device, self.options.attn, self.options.seed)
        self.model.config.use_cache = False
        self.shape = cost.model_shape(self.model)
        self.trainable_params = sum(q.numel() for q in self.model.parameters() if q.requires_grad)

    def run(self, clock: Clock) -> TrainResult:
        """Warm-up steps, then the timed steps, each marked on ``clock`` (started after the warm-up)."""
        with matmul_mode(self.precision):
            if self.options.trainer == "hf":
                return _run_hf(self, clock)
            return _run_lean(self, clock)

    def region(self, point: FinetunePoint) -> Runs:
        """One training run (its warm-up steps inside it); step times and peak memory are the largest
        over the processes of a multi-process run, since every step waits for the slowest."""
        def summarize(results: list[TrainResult]) -> dict:
            self.result = results[-1]
            step_ms = _max_over_ranks(self.result.step_ms, self.dist.world_size, self.device)
            metrics = summarize_steps(step_ms, self.result.losses, self.cost(point).details)
            return {**metrics, "tokens_per_s_per_process": metrics["tokens_per_s"] / self.dist.world_size}

        tokens = point.batch_size * point.grad_accum * self.dist.world_size * point.seq_len * point.steps
        return Runs(run=lambda clock, index: self.run(clock), summarize=summarize, tokens=tokens,
                    peak=lambda peak: int(_max_over_ranks([float(peak)], self.dist.world_size, self.device)[0]))

    def teardown(self) -> None:
        self.model = self.blocks = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def cost(self, point: FinetunePoint | None = None) -> cost.Cost:
        """FLOPs of one optimizer step, all micro-batches of all ranks (see ``cost.finetune_step``),
        timed by the median step."""
        p = self.point
        sequences = p.batch_size * p.grad_accum * self.dist.world_size
        trainable = self.trainable_params
        flops = cost.finetune_step(self.shape, sequences, p.seq_len)
        return cost.Cost(None, flops, "step_ms_p50", {
            "flops_per_step": flops,
            "flops_per_token": flops / (sequences * p.seq_len),
            "tokens_per_step": sequences * p.seq_len,
            "sequences_per_step": sequences,
            "params": self.shape.params,
            "trainable_params": trainable,
            "grad_sync_bytes_per_step": grad_sync_bytes(trainable, self.dist.world_size),
        })

    def fields(self, point: FinetunePoint | None = None) -> dict:
        """The record's point fields; the optimizer once a run has told which one it used."""
        p, o, precision = self.point, self.options, self.precision
        weights, autocast = training_dtypes(precision)
        fields = {
            "workload": "finetune", "model": self.spec.name,
            "model_path": str(self.spec.path) if self.spec.path else None,
            "random_weights": self.spec.random_weights, "engine": "hf", "trainer": o.trainer, "attn": o.attn,
            "dtype": precision.name, "matmul_precision": precision.matmul_precision, "device": str(self.device),
            "batch_size": p.batch_size, "seq_len": p.seq_len, "grad_accum": p.grad_accum,
            "world_size": self.dist.world_size, "nodes": self.dist.nodes,
            "nproc_per_node": self.dist.local_world_size, "parallel": self.dist.parallel(o.fsdp),
            "steps": p.steps, "warmup_steps": p.warmup_steps, "seed": o.seed,
            **self.record_fields(),
        }
        if self.result is not None:
            fields["optimizer"] = self.result.optimizer
        return fields

    def record_fields(self) -> dict:
        weights, autocast = training_dtypes(self.precision)
        o, p = self.options, self.point
        return {
            "weights_dtype": str(weights).removeprefix("torch."),
            "autocast_dtype": str(autocast).removeprefix("torch.") if autocast else None,
            "data": o.data,
            "data_split": None if o.data == "synthetic" else o.split,
            "text_column": o.text_column,
            "packing": "pack" if o.data == "synthetic" else o.packing,
            "tokenizer": None if o.data == "synthetic" else ("model" if self.spec.path else "byte-level"),
            "data_unique_rows": self.blocks.unique_rows if self.blocks is not None else None,
            "padding_fraction": self.blocks.padding_fraction if self.blocks is not None else None,
            "global_batch_size": p.batch_size * p.grad_accum * self.dist.world_size,
            "lr": o.lr,
            "grad_checkpointing": o.grad_checkpointing,
            "compile": o.compile,
            "max_grad_norm": 1.0 if o.trainer == "hf" else None,
        }


def _fused_adamw(params, lr: float) -> tuple[torch.optim.Optimizer, str]:
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=True), "adamw-fused"
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, foreach=True), "adamw-foreach"


def _mean_over_ranks(values: torch.Tensor, dist: Dist) -> torch.Tensor:
    if dist.world_size > 1:
        torch_dist.all_reduce(values)  # SUM: gloo has no AVG
        values = values / dist.world_size
    return values


def _run_lean(w: FinetuneWorkload, clock: Clock) -> TrainResult:
    p, o, dist, device = w.point, w.options, w.dist, w.device
    model = w.model.train()
    if o.grad_checkpointing:  # renamed to activation checkpointing in transformers 5.x
        (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    if o.fsdp:
        shard(model, device)  # before the optimizer: it must see the sharded parameters
    optimizer, name = _fused_adamw([q for q in model.parameters() if q.requires_grad], o.lr)
    if dist.world_size > 1 and not o.fsdp:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                          else None)
    forward = torch.compile(model) if o.compile else model
    _, autocast = training_dtypes(w.precision)
    scaler = torch.amp.GradScaler(device.type) if autocast == torch.float16 else None
    pin = device.type == "cuda"
    rows = list(range(dist.rank, len(w.blocks), dist.world_size))  # this rank's shard, in order

    def step(index: int) -> torch.Tensor:
        total = torch.zeros((), device=device)
        for micro in range(p.grad_accum):
            start = (index * p.grad_accum + micro) * p.batch_size
            batch = w.blocks.batch(rows[start:start + p.batch_size])
            batch = {k: (v.pin_memory() if pin else v).to(device, non_blocking=True) for k, v in batch.items()}
            last = micro == p.grad_accum - 1
            if o.fsdp:  # reduce-scatter the gradients on the last micro-batch only
                model.set_requires_gradient_sync(last)
            sync = contextlib.nullcontext() if last or dist.world_size == 1 or o.fsdp else model.no_sync()
            with sync:
                with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
                    loss = forward(**batch).loss / p.grad_accum
                (scaler.scale(loss) if scaler else loss).backward()
            total += loss.detach()
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total

    losses = [step(i) for i in range(p.warmup_steps)]
    clock.start()
    for i in range(p.warmup_steps, p.warmup_steps + p.steps):
        losses.append(step(i))
        clock.tick()
    timeline = clock.stop()
    per_step = _mean_over_ranks(torch.stack(losses).float(), dist).tolist()
    return TrainResult(_step_times(timeline.ticks_ms), per_step, name)


def shard(model: torch.nn.Module, device: torch.device) -> None:
    """FSDP2: every decoder layer (the classes a Hugging Face model lists in ``_no_split_modules``) its
    own ``fully_shard`` unit, then the root (embeddings, final norm, head), over all processes."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (torch_dist.get_world_size(),))
    layers = set(getattr(model, "_no_split_modules", None) or ())
    for module in list(model.modules()):
        if module is not model and type(module).__name__ in layers:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)


def grad_sync_bytes(trainable_params: int, world_size: int) -> int:
    """Gradient bytes each process hands to the gradient reduction per optimizer step: every trainable
    parameter's fp32 gradient (mixed precision keeps fp32 gradients), or 0 for one process."""
    return 4 * trainable_params if world_size > 1 else 0


def _step_times(ticks_ms: list[float]) -> list[float]:
    return [b - a for a, b in zip([0.0, *ticks_ms], ticks_ms)]


def _checkpointing_argument(arguments_class, enabled: bool) -> dict:
    """Gradient checkpointing under the name this transformers version uses (renamed in 5.x)."""
    if not enabled:
        return {}
    fields = arguments_class.__dataclass_fields__
    return {"activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing": True}


def _run_hf(w: FinetuneWorkload, clock: Clock) -> TrainResult:
    try:
        from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerCallback, TrainingArguments
        from transformers.data.data_collator import default_data_collator

        import accelerate  # noqa: F401  (the Trainer needs it; say so before anything runs)
    except ImportError:
        raise UserError("--trainer hf needs the `accelerate` package (pip install accelerate); "
                        "--trainer lean works without it") from None
    p, o, device = w.point, w.options, w.device
    cuda = device.type == "cuda"

    class StepMarks(TrainerCallback):
        """Marks the end of each optimizer step on the clock; collects the loss logged every step."""

        def __init__(self):
            self.losses: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            if p.warmup_steps == 0:
                clock.start()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == p.warmup_steps:
                clock.start()
            elif state.global_step > p.warmup_steps:
                clock.tick()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    optimizer = "adamw_torch_fused"
    with tempfile.TemporaryDirectory(prefix="llmbench-hf-") as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            per_device_train_batch_size=p.batch_size,
            gradient_accumulation_steps=p.grad_accum,
            max_steps=p.warmup_steps + p.steps,
            learning_rate=o.lr,
            lr_scheduler_type="constant",
            weight_decay=0.0,
            optim=optimizer,
            bf16=w.precision.name == "bf16",
            fp16=w.precision.name == "fp16",
            tf32=(w.precision.name == "tf32") if cuda else None,
            torch_compile=o.compile,
            report_to="none",
            save_strategy="no",
            logging_strategy="steps",
            logging_steps=1,
            disable_tqdm=True,
            seed=o.seed,
            data_seed=o.seed,
            use_cpu=not cuda,
            dataloader_pin_memory=cuda,
            ddp_backend=("nccl" if cuda else "gloo") if w.dist.world_size > 1 else None,
            ddp_find_unused_parameters=False,
            **_checkpointing_argument(TrainingArguments, o.grad_checkpointing),
        )
        marks = StepMarks()
        trainer = Trainer(model=w.model, args=args, train_dataset=w.blocks, data_collator=default_data_collator,
                          callbacks=[marks])
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        trainer.train()
        timeline = clock.stop()
    return TrainResult(_step_times(timeline.ticks_ms), marks.losses, "adamw-fused")


def summarize_steps(step_ms: list[float], losses: list[float], cost_block: dict) -> dict:
    """Throughput from the median optimizer step; the step times' CI, CV and spread, and the samples;
    the loss at start and end."""
    step_s = float(np.median(step_ms)) / 1e3
    return {
        "tokens_per_s": cost_block["tokens_per_step"] / step_s,
        "samples_per_s": cost_block["sequences_per_step"] / step_s,
        **summary(step_ms, "step_ms"),
        **spread(step_ms, "step_ms"),
        "step_ms_mean": float(np.mean(step_ms)),
        "steps_timed": len(step_ms),
        "loss_start": losses[0] if losses else None,
        "loss_end": losses[-1] if losses else None,
        "loss_steps": len(losses),
        "samples": {"step_ms": list(step_ms)},
    }


def _max_over_ranks(values: list[float], world_size: int, device: torch.device) -> list[float]:
    if world_size == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)  # nccl reduces GPU tensors only
    torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.MAX)
    return tensor.tolist()
