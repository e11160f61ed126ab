"""Tensor-parallel decode (``llmbench decode --tp N``): one model split across N processes of a node.

The layout is Megatron's, the one transformers' ``tp_plan`` gives Llama and Qwen2:
in every layer the q, k, v, gate and up projections are split by output rows
(each process computes its own heads and its own slice of the MLP), the o and
down projections by input columns (each process multiplies its slice; the
partial sums are all-reduced), and the LM head by vocabulary rows (each process
computes its slice of the logits; they are all-gathered, so every process picks
the same token). Embeddings and norms stay whole in every process. Per decode
step that is two all-reduces of ``batch x hidden`` activations per layer and one
all-gather of the logits (``workloads.cost.tp_comm``).

Built directly, with plain tensors, not DTensor: parameters are created on the
``meta`` device (buffers such as the rotary frequencies on the real one), and
each process fills only its shard, from the same random stream
``workloads.presets.build_model`` draws (each full parameter in turn, on the
device, then sliced), so ``--tp N`` runs exactly the weights ``--tp 1`` does
while no process ever holds more than its shards plus one full parameter. That
is what makes a 70B model fit 8 GPUs, and the ``--tp 2`` tokens comparable
with ``--tp 1``. The collectives are PyTorch's functional collectives, which
``torch.compile`` can trace, so the lean engine's captured step may hold them
(not yet run on a GPU; ``--no-compile`` is the fallback). A model whose LM head
is tied to its embedding keeps the head whole in every process.

Supported: Llama-style decoders (``llama``, ``mistral``, ``qwen2``) whose heads,
KV heads, MLP width and vocabulary divide by N; anything else is refused in one
line. The KV cache follows from the local K and V (transformers allocates it from
their shapes): each process holds ``kv_heads / N`` heads of it.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import replace

import torch
import torch.distributed as torch_dist
import torch.distributed._functional_collectives as funcol
from torch import nn
from transformers import AutoModelForCausalLM
from transformers.initialization import no_init_weights

from workloads import cost
from workloads.errors import UserError
from workloads.presets import ModelSpec, init_parameter

MODEL_TYPES = ("llama", "mistral", "qwen2")
COLUMNS = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")  # split by output rows (dim 0)
ROWS = ("o_proj", "down_proj")  # split by input columns (dim 1), outputs all-reduced


def check(spec: ModelSpec, tp: int) -> None:
    """Refuse a model that cannot be split ``tp`` ways, before anything is built."""
    if tp < 1:
        raise UserError(f"--tp must be at least 1, got {tp}")
    if tp == 1:
        return
    config = spec.config
    if config.model_type not in MODEL_TYPES:
        raise UserError(f"--tp splits Llama-style models ({', '.join(MODEL_TYPES)}); {spec.name} is "
                        f"{config.model_type!r}")
    sizes = {"attention heads": config.num_attention_heads,
             "KV heads": getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
             "MLP width": config.intermediate_size, "vocabulary": config.vocab_size}
    for what, size in sizes.items():
        if size % tp:
            raise UserError(f"--tp {tp}: {spec.name}'s {size} {what} do not divide into {tp} equal parts")


def plan(name: str, tied_head: bool) -> int | None:
    """The dimension parameter ``name`` is split along (0: output rows, 1: input columns), or None (whole)."""
    module, _, kind = name.rpartition(".")
    leaf = module.rsplit(".", 1)[-1]
    if leaf in COLUMNS:
        return 0
    if leaf in ROWS and kind == "weight":
        return 1
    if leaf == "lm_head" and not tied_head:
        return 0
    return None


@contextlib.contextmanager
def _parameters_on_meta():
    """Modules built inside get their parameters on ``meta`` (no storage), their buffers where they are made."""
    register = nn.Module.register_parameter

    def on_meta(module, name, param):
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _skeleton(spec: ModelSpec, dtype: torch.dtype, device: torch.device, attn: str) -> nn.Module:
    with torch.device(device), no_init_weights(), _parameters_on_meta():
        model = AutoModelForCausalLM.from_config(copy.deepcopy(spec.config), dtype=dtype, attn_implementation=attn)
    model.tie_weights()
    return model


def _tied_head(model: nn.Module) -> bool:
    output, embedding = model.get_output_embeddings(), model.get_input_embeddings()
    return output is not None and embedding is not None and output.weight is embedding.weight


def _set(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, kind = name.rpartition(".")
    module = model.get_submodule(module_name)
    setattr(module, kind, nn.Parameter(tensor, requires_grad=False))


def _shard(tensor: torch.Tensor, dim: int | None, rank: int, tp: int) -> torch.Tensor:
    return tensor if dim is None else tensor.chunk(tp, dim)[rank].contiguous()


def _all_reduce(module, inputs, output):
    out = funcol.all_reduce(output, "sum", torch_dist.group.WORLD)
    bias = getattr(module, "tp_bias", None)
    return out + bias if bias is not None else out


def _all_gather_last(module, inputs, output):
    """Every process's slice of the last dimension (the vocabulary), in rank order."""
    tp = torch_dist.get_world_size()
    parts = funcol.all_gather_single(output.contiguous(), 0, torch_dist.group.WORLD)
    return torch.cat(parts.chunk(tp, 0), dim=-1)


def _wire(model: nn.Module, tied_head: bool) -> None:
    """Point each split linear at its shard's sizes and add the collectives after the row-split ones and
    the LM head."""
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if not isinstance(module, nn.Linear):
            continue
        if leaf in COLUMNS or (leaf == "lm_head" and not tied_head):
            module.out_features = module.weight.shape[0]
        if leaf in ROWS:
            module.in_features = module.weight.shape[1]
            if module.bias is not None:  # added once, after the partial sums are reduced
                module.register_buffer("tp_bias", module.bias.detach(), persistent=False)
                module.bias = None
            module.register_forward_hook(_all_reduce)
        if leaf == "lm_head" and not tied_head:
            module.register_forward_hook(_all_gather_last)


def build(spec: ModelSpec, dtype: torch.dtype, device: torch.device, attn: str, seed: int, rank: int,
          tp: int) -> nn.Module:
    """This process's shard of the model in eval mode, with the weights ``presets.build_model`` would draw
    for ``seed`` (the process group must be joined: its size is ``tp``)."""
    if attn == "triton":
        from workloads.attention import register

        register()
    model = _skeleton(spec, dtype, device, attn)
    tied = _tied_head(model)
    torch.manual_seed(seed)  # the stream build_model draws from, parameter by parameter, in the same order
    with torch.no_grad():
        for name, param in list(model.named_parameters()):
            full = torch.empty(param.shape, dtype=param.dtype, device=device)
            init_parameter(name, full)
            _set(model, name, _shard(full, plan(name, tied), rank, tp))
            del full
    if tied:
        model.tie_weights()
    _wire(model, tied)
    return model.eval()


def local_shape(spec: ModelSpec, tp: int) -> cost.ModelShape:
    """The cost model's shape of one process's shard: its own parameters (the split matrices' slices, the
    whole embeddings and norms) and ``heads / tp``, ``kv_heads / tp``; nothing is allocated."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(copy.deepcopy(spec.config))
    model.tie_weights()
    tied = _tied_head(model)
    with torch.no_grad():
        for name, param in list(model.named_parameters()):
            _set(model, name, _shard(param, plan(name, tied), 0, tp))
    if tied:
        model.tie_weights()
    shape = cost.model_shape(model)
    return replace(shape, heads=shape.heads // tp, kv_heads=shape.kv_heads // tp)


def head_split(spec: ModelSpec) -> bool:
    """Whether the LM head is split (not tied to the embedding), so its logits are all-gathered."""
    return not getattr(spec.config, "tie_word_embeddings", False)
