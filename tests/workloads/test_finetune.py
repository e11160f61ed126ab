"""The fine-tune workload directly: precision semantics, refusals, and the lean loop's options
(gradient checkpointing, eager attention, padded rows) on a tiny preset."""

import pytest
import torch

from workloads.finetune import FinetunePoint, FinetuneWorkload, TrainOptions, check, training_dtypes
from workloads.errors import UserError
from workloads.precision import PRECISIONS
from workloads.presets import resolve_model

CPU = torch.device("cpu")


def test_mixed_precision_keeps_fp32_weights():
    assert training_dtypes(PRECISIONS["bf16"]) == (torch.float32, torch.bfloat16)
    assert training_dtypes(PRECISIONS["fp16"]) == (torch.float32, torch.float16)
    assert training_dtypes(PRECISIONS["tf32"]) == (torch.float32, None)
    assert training_dtypes(PRECISIONS["fp32"]) == (torch.float32, None)


@pytest.mark.parametrize("point, options, message", [
    (FinetunePoint(1, 1), TrainOptions(), "--seq-len must be at least 2"),
    (FinetunePoint(1, 8, grad_accum=0), TrainOptions(), "--grad-accum must be at least 1"),
    (FinetunePoint(1, 8, warmup_steps=-1), TrainOptions(), "--warmup-steps must not be negative"),
    (FinetunePoint(1, 8), TrainOptions(trainer="deepspeed"), "unknown trainer"),
    (FinetunePoint(1, 8), TrainOptions(attn="flash"), "unknown attention implementation"),
    (FinetunePoint(1, 8), TrainOptions(packing="stack"), "unknown packing"),
])
def test_refusals(point, options, message):
    with pytest.raises(UserError, match=message):
        check(resolve_model("tiny-llama"), PRECISIONS["fp32"], CPU, point, options)


def test_lean_with_checkpointing_eager_attention_and_bf16_autocast(clock_class):
    point = FinetunePoint(batch_size=1, seq_len=16, grad_accum=2, steps=3, warmup_steps=1)
    options = TrainOptions(attn="eager", grad_checkpointing=True, lr=3e-3)
    workload = FinetuneWorkload(resolve_model("tiny-llama"), PRECISIONS["bf16"], CPU, point, options)
    workload.setup()
    starts = []

    class Clock(clock_class):
        def start(self):
            starts.append(True)
            super().start()

    result = workload.run(Clock())
    assert starts == [True] and len(result.step_ms) == 3 and all(ms > 0 for ms in result.step_ms)
    assert len(result.losses) == 4 and result.losses[-1] < result.losses[0]
    model = workload.model
    assert getattr(model, "is_activation_checkpointing", None) or model.is_gradient_checkpointing
    assert next(workload.model.parameters()).dtype == torch.float32  # master weights stay fp32
    cost = workload.cost().details
    assert cost["tokens_per_step"] == 1 * 2 * 16 and cost["trainable_params"] == cost["params"]
    assert workload.record_fields()["autocast_dtype"] == "bfloat16"


def test_gradient_bytes_synchronised_per_step():
    from workloads.finetune import grad_sync_bytes

    assert grad_sync_bytes(139_584, 1) == 0  # one process reduces nothing
    assert grad_sync_bytes(139_584, 2) == 4 * 139_584  # fp32 gradients of every trainable parameter


def test_fsdp_needs_the_lean_trainer():
    with pytest.raises(UserError, match="--fsdp runs with --trainer lean"):
        check(resolve_model("tiny-llama"), PRECISIONS["fp32"], CPU, FinetunePoint(1, 8),
              TrainOptions(trainer="hf", fsdp=True))
