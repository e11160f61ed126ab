"""Quantized decode: int8 linear weights and an int8/fp8 KV cache for the lean engine.

Decode reads every weight and every cached key and value once per step, so storing
them in fewer bytes is the one lever a bandwidth-bound step has. Two formats, as
the tools users compare against store them:

- **Weights** (``--weights int8``): every linear layer of the model (attention and
  MLP projections and the LM head; embedding tables stay in the compute dtype, a
  step only gathers a row of them) becomes an ``Int8Linear``: int8 values with one
  float32 scale per output channel, symmetric (gpt-fast's int8 weight-only mode).
  Its forward is ``kernels.int8_linear`` (a dequantizing GEMV for decode, a matmul
  for prefill). ``--weights int8-torchao`` is the peer: torchao's int8 weight-only
  quantization of the same layers (an optional extra, ``pip install .[quant]``).
- **KV cache** (``--kv-cache int8|fp8``): ``QuantizedStaticCache``, transformers'
  static cache with every layer storing K and V as int8 or float8_e4m3fn and one
  float32 scale per token and KV head, quantized as each token is written. Our
  attention (``--attn triton``) reads it: decode steps through
  ``kernels.decode_attention`` with the scales applied in registers; the prefill
  (over an empty cache) through the fused kernel on the dequantized cache.
  The model's forward gets the cache again as the ``quantized_kv`` keyword, which
  transformers hands on to the attention function, so it finds the scales of the
  layer it runs (``scales(kwargs, module)``).

Formats by name: ``workloads.choices.WEIGHT_FORMATS`` and ``KV_FORMATS``; a float
name means "stored in that dtype", which must be the model's (``auto``;
``workloads.decode.stored_float``).
``cost.Storage`` counts their bytes.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.cache_utils import Cache, StaticLayer

from kernels.decode_attention import QUANTIZED_KV_DTYPES, dequantize_kv, quantize_kv
from kernels.int8_linear import int8_linear, quantize_weight
from workloads.errors import UserError

KV_QUANTIZED = {"int8": torch.int8, "fp8": torch.float8_e4m3fn}


# ---------------------------------------------------------------- int8 weights


class Int8Linear(nn.Module):
    """A linear layer stored as int8 (out_features, in_features) with a float32 scale per output
    channel; ``forward`` is ``kernels.int8_linear``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        values, scale = quantize_weight(weight.contiguous())
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.register_buffer("weight", values)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return int8_linear(x, self.weight, self.scale, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel"


def _linears(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute, layer) of every linear layer: ``nn.Linear`` and GPT-2's transposed ``Conv1D``."""
    from transformers.pytorch_utils import Conv1D

    found = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, (nn.Linear, Conv1D)):
                found.append((parent, name, child))
    return found


@torch.no_grad()
def quantize_weights(model: nn.Module, fmt: str) -> None:
    """Store every linear layer of ``model`` as int8, in place: ``int8`` (our Triton kernel) or
    ``int8-torchao`` (torchao's int8 weight-only layers)."""
    from transformers.pytorch_utils import Conv1D

    if fmt == "int8-torchao":
        _torchao_int8(model)
        return
    if fmt != "int8":
        raise ValueError(f"unknown weight format {fmt!r}")
    for parent, name, layer in _linears(model):
        weight = layer.weight.t() if isinstance(layer, Conv1D) else layer.weight  # Conv1D keeps (in, out)
        setattr(parent, name, Int8Linear(weight, layer.bias))


def _optional(module: str, package: str, what: str):
    """Import an optional extra's module, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"{what} needs {package}, an optional extra: pip install '.[quant]' from the llmbench "
                        f"checkout (or pip install {package}); it could not be imported ({exc})") from None


def require_torchao() -> None:
    _optional("torchao.quantization", "torchao", "--weights int8-torchao")


def require_hqq() -> None:
    _optional("hqq", "hqq", "--engine hf --cache quantized --kv-cache int8 (transformers' hqq backend)")


def _torchao_int8(model: nn.Module) -> None:
    ao = _optional("torchao.quantization", "torchao", "--weights int8-torchao")
    ao.quantize_(model, ao.Int8WeightOnlyConfig())


def quantized_weight_counts(model: nn.Module) -> tuple[int, int]:
    """(weight values, output channels) of every linear layer of an unquantized ``model``: the int8 values
    and float32 scales ``quantize_weights`` will store."""
    from transformers.pytorch_utils import Conv1D

    layers = [layer for _, _, layer in _linears(model)]
    values = sum(layer.weight.numel() for layer in layers)
    channels = sum(layer.weight.shape[1 if isinstance(layer, Conv1D) else 0] for layer in layers)
    return values, channels


# ---------------------------------------------------------------- int8 / fp8 KV cache


class QuantizedStaticLayer(StaticLayer):
    """One layer of ``QuantizedStaticCache``: K and V (batch, kv_heads, capacity, head_dim) as int8 or
    float8_e4m3fn and their scales (batch, kv_heads, capacity) float32, written in place."""

    def __init__(self, max_cache_len: int, dtype: torch.dtype, **kwargs):
        super().__init__(max_cache_len=max_cache_len, **kwargs)
        self.stored_dtype = dtype
        self.k_scale = self.v_scale = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.compute_dtype = self.dtype
        self.keys = self.keys.to(self.stored_dtype)
        self.values = self.values.to(self.stored_dtype)
        self.k_scale = torch.zeros(self.keys.shape[:3], dtype=torch.float32, device=self.device)
        self.v_scale = torch.zeros(self.keys.shape[:3], dtype=torch.float32, device=self.device)
        for t in (self.keys, self.values, self.k_scale, self.v_scale):
            torch._dynamo.mark_static_address(t)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        positions = torch.arange(key_states.shape[-2], device=self.device) + self.cumulative_length
        self.cumulative_length.add_(key_states.shape[-2])
        for states, values, scale in ((key_states, self.keys, self.k_scale), (value_states, self.values, self.v_scale)):
            q, s = quantize_kv(states, self.stored_dtype)
            if values.dtype == torch.float8_e4m3fn:  # index_copy_ has no fp8 kernel (CPU): copy the bytes
                values, q = values.view(torch.uint8), q.view(torch.uint8)
            values.index_copy_(2, positions, q)
            scale.index_copy_(2, positions, s)
        return self.keys, self.values

    def reset(self) -> None:
        super().reset()
        if self.is_initialized:
            self.k_scale.zero_()
            self.v_scale.zero_()


class QuantizedStaticCache(Cache):
    """transformers' static cache with K and V stored as int8 or float8_e4m3fn (``KV_QUANTIZED``), one
    float32 scale per token and KV head. Full-attention models only."""

    def __init__(self, config, max_cache_len: int, fmt: str):
        text = config.get_text_config(decoder=True)
        types = getattr(text, "layer_types", None) or ["full_attention"] * text.num_hidden_layers
        if set(types) != {"full_attention"} or getattr(text, "use_sliding_window", False) and \
                getattr(text, "sliding_window", None):
            raise UserError(f"--kv-cache {fmt} supports models whose layers all use full attention; this one has "
                            f"{', '.join(sorted(set(types)))} layers or a sliding window")
        layers = [QuantizedStaticLayer(max_cache_len, KV_QUANTIZED[fmt]) for _ in range(text.num_hidden_layers)]
        super().__init__(layers=layers)


def scales(kwargs: dict, module: nn.Module, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (k_scale, v_scale) of the quantized cache layer that ``module`` (an attention layer) reads:
    the attention function finds the cache in its keyword arguments as ``quantized_kv``."""
    cache = kwargs.get("quantized_kv")
    if cache is None or keys.dtype not in QUANTIZED_KV_DTYPES:
        raise ValueError(f"{keys.dtype} keys need the QuantizedStaticCache passed as quantized_kv= to the model's "
                         "forward, so the attention can find their scales")
    layer = cache.layers[module.layer_idx]
    return layer.k_scale, layer.v_scale


def dequantized(keys: torch.Tensor, values: torch.Tensor, k_scale: torch.Tensor, v_scale: torch.Tensor,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The float cache a quantized one stands for (the prefill's attention reads this)."""
    return dequantize_kv(keys, k_scale, dtype), dequantize_kv(values, v_scale, dtype)
