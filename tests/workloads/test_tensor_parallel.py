"""Tensor-parallel shards: which models split, how each parameter splits, the shards are exactly the
weights build_model draws, one process's shape and cost by hand, and (two gloo processes) the same
greedy tokens as one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workloads import cost, tensor_parallel
from workloads.decode import DecodePoint, DecodeWorkload
from workloads.distributed import Dist
from workloads.errors import UserError
from workloads.precision import PRECISIONS
from workloads.presets import build_model, resolve_model

CPU = torch.device("cpu")


@pytest.mark.parametrize("model, tp, message", [
    ("tiny-gpt2", 2, "--tp splits Llama-style models (llama, mistral, qwen2); tiny-gpt2 is 'gpt2'"),
    ("tiny-llama", 4, "--tp 4: tiny-llama's 2 KV heads do not divide into 4 equal parts"),
    ("tiny-llama", 3, "--tp 3: tiny-llama's 4 attention heads do not divide into 3 equal parts"),
])
def test_models_that_cannot_split_are_refused(model, tp, message):
    with pytest.raises(UserError) as err:
        tensor_parallel.check(resolve_model(model), tp)
    assert str(err.value) == message


def test_the_big_presets_split_eight_ways_and_anything_runs_as_one():
    for name in ("llama-3.1-70b", "qwen2.5-72b", "llama-3.1-8b"):
        tensor_parallel.check(resolve_model(name), 8)
    tensor_parallel.check(resolve_model("tiny-gpt2"), 1)


def test_the_split_of_each_parameter():
    plan = tensor_parallel.plan
    assert plan("model.layers.0.self_attn.q_proj.weight", False) == 0
    assert plan("model.layers.0.self_attn.q_proj.bias", False) == 0  # Qwen2's QKV bias splits with its rows
    assert plan("model.layers.3.mlp.down_proj.weight", False) == 1
    assert plan("model.layers.3.self_attn.o_proj.bias", False) is None  # added once, after the reduce
    assert plan("lm_head.weight", False) == 0 and plan("lm_head.weight", True) is None
    assert plan("model.embed_tokens.weight", False) is None and plan("model.norm.weight", False) is None


def test_shards_are_exactly_the_weights_of_one_process():
    spec = resolve_model("tiny-llama")
    full = dict(build_model(spec, torch.float32, CPU, "sdpa", seed=3).named_parameters())
    shards = [dict(tensor_parallel.build(spec, torch.float32, CPU, "sdpa", 3, rank, 2).named_parameters())
              for rank in range(2)]
    assert set(shards[0]) == set(full)
    for name, weight in full.items():
        dim = tensor_parallel.plan(name, tied_head=False)
        joined = shards[0][name] if dim is None else torch.cat([s[name] for s in shards], dim)
        assert torch.equal(joined, weight), name
    rank0 = tensor_parallel.build(spec, torch.float32, CPU, "sdpa", 3, 0, 2)
    attention = rank0.model.layers[0].self_attn
    assert (attention.q_proj.out_features, attention.o_proj.in_features) == (32, 32)
    assert all(torch.isfinite(b).all() for b in rank0.buffers())  # rotary frequencies made, not left empty


def test_one_process_shape_by_hand():
    """tiny-llama (vocab 512, hidden 64, MLP 128, 2 layers, heads 4 / KV 2 of 16) over 2 processes."""
    shape = tensor_parallel.local_shape(resolve_model("tiny-llama"), 2)
    layer = 64 * 64 // 2 + 2 * 64 * 32 // 2 + 64 * 64 // 2 + 3 * 64 * 128 // 2  # q, k+v, o, gate+up+down
    assert shape.matmul_params == 2 * layer + 512 * 64 // 2  # and half the LM head
    assert shape.params == 2 * (layer + 2 * 64) + 64 + 512 * 64 + 512 * 64 // 2  # norms and embedding whole
    assert (shape.heads, shape.kv_heads, shape.head_dim, shape.lm_head_params) == (2, 1, 16, 512 * 32)


def test_decode_cost_is_per_gpu_with_the_collectives_beside_it():
    spec, point = resolve_model("tiny-llama"), DecodePoint(1, 8, 3)
    w = DecodeWorkload(spec, PRECISIONS["fp32"], CPU, points=[point], dist=Dist(world_size=2, local_world_size=2))
    w.shape = tensor_parallel.local_shape(spec, 2)
    d = w.cost(point).details
    weights = 2 * 18432 + 16384 + 2 * 128 + 64 + 64  # matrices' shards, norms, one embedding row (batch 1)
    assert d["weight_bytes_per_step"] == 4 * weights
    assert d["kv_bytes_per_token"] == 4 * 2 * 2 * 1 * 16  # K and V, 2 layers, 1 of 2 KV heads, head dim 16
    assert d["comm_allreduce_bytes_per_step"] == 4 * 2 * 2 * 64  # o_proj and down_proj outputs, 2 layers
    assert d["comm_allgather_bytes_per_step"] == 4 * 512  # the logits
    assert d["comm_bus_bytes_per_step"] == 4 * 2 * 2 * 64 * 1.0 + 4 * 512 * 0.5
    assert d["prefill_comm_bus_bytes"] == 4 * 2 * 2 * 64 * 8 + 4 * 512 * 0.5
    assert (d["tp"], d["per_gpu"]) == (2, True)
    fields = w.fields(point)
    assert (fields["tp"], fields["world_size"], fields["parallel"]) == (2, 2, "tp")
    assert w.footprint_bytes() is None
    assert cost.tp_comm(80, 8192, 128256, 1, 1, 1, 2).bus_bytes == 0  # one process talks to nobody


SCRIPT = """
import json, sys, torch
from harness.timing import StepClock
from workloads.decode import DecodePoint, DecodeWorkload
from workloads.distributed import Dist
from workloads.lean import LeanEngine
from workloads.precision import PRECISIONS
from workloads.presets import resolve_model

dist, cpu, point = Dist.from_env(), torch.device("cpu"), DecodePoint(2, 8, 8)
dist.init(cpu)
w = DecodeWorkload(resolve_model("tiny-llama"), PRECISIONS["fp32"], cpu, points=[point], dist=dist)
w.setup()
prompt = w.prompt(point, 0)
w.model.generation_config.eos_token_id = None
with torch.inference_mode():
    hf = w.model.generate(prompt, attention_mask=torch.ones_like(prompt), generation_config=w.generation_config(point))
lean, _ = LeanEngine(w.model, compile=False).generate(prompt, point.new_tokens, StepClock(cpu))
if dist.main:
    json.dump({"hf": hf[:, point.prompt_len:].tolist(), "lean": lean.tolist()}, open(sys.argv[1], "w"))
dist.close()
"""


@pytest.mark.slow
def test_two_processes_pick_the_greedy_tokens_of_one(tmp_path):
    script = tmp_path / "tokens.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one.json")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", str(script), str(tmp_path / "two.json")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    tokens = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two")]
    assert tokens[0] == tokens[1]
    assert tokens[0]["hf"] == tokens[0]["lean"] and len(tokens[0]["hf"][0]) == 8
