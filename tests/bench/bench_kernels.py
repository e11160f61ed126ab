"""Kernel and step microbenchmarks for pytest-benchmark: copy bandwidth, matmul per precision,
fused attention (GPU) and one decode step with a KV cache. Sizes are large on a GPU and small
on a CPU, so the suite also runs (as a smoke test) on a laptop without one."""

import pytest
import torch

from workloads import cost, micro
from workloads.precision import PRECISIONS, matmul_mode

GPU = torch.cuda.is_available()


def test_copy(timed, device):
    point = micro.MicroPoint((1 << 30) if GPU else (16 << 20))
    m = micro.MicroWorkload("copy", device, [point])
    timed(m.region(point).fn, rounds=50 if GPU else 10, warmup=5 if GPU else 1, bytes=m.cost(point).bytes)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_matmul(timed, device, dtype):
    precision = PRECISIONS[dtype]
    point = micro.MicroPoint(8192 if GPU else 256)
    m = micro.MicroWorkload("matmul", device, [point], precision)
    c = m.cost(point)
    with matmul_mode(precision):
        timed(m.region(point).fn, rounds=30 if GPU else 5, warmup=5 if GPU else 1, flops=c.flops, bytes=c.bytes)


@pytest.mark.skipif(not GPU, reason="compiled Triton kernels need a GPU (the interpreter is far too slow to time)")
@pytest.mark.parametrize("impl", ["triton", "sdpa-flash"])
@pytest.mark.parametrize("seq_len", [1024, 4096])
def test_attention(timed, device, impl, seq_len):
    from workloads.kernelbench import AttentionPoint, attention_case, attention_cost
    from workloads.workload import Unsupported

    precision = PRECISIONS["bf16"]
    point = AttentionPoint(impl, 16384 // seq_len, 16, 16, seq_len, 128, True, "fwd")
    try:
        case = attention_case(point, precision, device)
    except Unsupported as exc:
        pytest.skip(str(exc))
    c = attention_cost(point, precision.bytes_per_element)
    timed(case.fn, rounds=50, warmup=10, flops=c.flops, bytes=c.bytes)


@pytest.mark.parametrize("dtype", ["bf16"])
def test_decode_step(timed, device, dtype):
    """One token through the model with ``context`` tokens already in the KV cache; the cache is cut
    back to ``context`` before every round (untimed), so every round does the same work."""
    from transformers import DynamicCache

    from workloads.presets import build_model, resolve_model

    precision = PRECISIONS[dtype]
    spec = resolve_model("llama-3.2-1b" if GPU else "tiny-llama")
    model = build_model(spec, precision.dtype, device, "sdpa")
    batch, context = 1, 512 if GPU else 32
    cache = DynamicCache(config=model.config)
    ids = torch.randint(0, model.config.vocab_size, (batch, context + 1), device=device)
    with torch.inference_mode():
        model(input_ids=ids[:, :context], past_key_values=cache, use_cache=True)

    def step():
        with torch.inference_mode():
            model(input_ids=ids[:, context:], past_key_values=cache, use_cache=True)

    def reset():
        extra = cache.get_seq_length() - context
        if extra:
            cache.crop(-extra)

    step_cost = cost.decode_step(cost.model_shape(model), batch, context, precision.bytes_per_element)
    with matmul_mode(precision):
        timed(step, rounds=100 if GPU else 10, warmup=10 if GPU else 2, setup=reset,
              bytes=step_cost.bytes, flops=step_cost.flops)
