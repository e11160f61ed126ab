"""Attention implementations a workload can run with, and our Triton kernel's hook into transformers.

``sdpa`` and ``eager`` are transformers' own. ``triton`` is ``kernels.attention``
registered under that name in transformers' attention interface, so
``AutoModelForCausalLM.from_config(cfg, attn_implementation="triton")`` works for
every model that dispatches through the interface (Llama, Qwen2, Mistral, OPT,
GPT-2, ...). Masks come from transformers' ``sdpa_mask``, registered for the same
name: it returns no mask when the pattern is plainly causal (or a single query
token), which the kernel runs as ``causal=True`` without reading a mask, and a
boolean (batch, 1, q_len, kv_len) mask otherwise (padding, a static cache's unused
tail, sliding windows), which the kernel applies tile by tile. Attention dropout
and logit soft-capping are refused.

Up to ``DECODE_MAX_QUERIES`` new tokens over a KV cache (a decode step, or a
speculative one) go to ``kernels.decode_attention`` instead when no gradient is
needed: split-K over the cache, each KV head read once for its query heads, and a
static cache read only up to each sequence's length rather than to its capacity.
A quantized cache (int8 or fp8 keys and values, ``workloads.quantize``) is read
there with its scales; a prefill over one attends to its dequantized values.
"""

from __future__ import annotations

import torch

from workloads.choices import ATTN_IMPLEMENTATIONS
from workloads.errors import UserError

DECODE_MAX_QUERIES = 8  # up to this many new tokens over a cache go to the decode kernel


def check_attn(attn: str, device: torch.device | None) -> None:
    """Refuse an implementation this device cannot run (only unknown names when ``device`` is None,
    as when a sweep is planned on a login node), before any model is built."""
    if attn not in ATTN_IMPLEMENTATIONS:
        raise UserError(f"unknown attention implementation {attn!r}; choose from {', '.join(ATTN_IMPLEMENTATIONS)}")
    if attn == "triton" and device is not None and device.type != "cuda":
        from kernels.common import interpreting

        if not interpreting():
            raise UserError("--attn triton runs our Triton kernels, which need a CUDA GPU; "
                            "on the CPU use sdpa or eager (TRITON_INTERPRET=1 runs them slowly, for tests)")


def triton_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, dropout: float = 0.0,
                             scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    """transformers' attention-function signature: (batch, heads, seq, dim) in, (batch, seq, heads, dim) out."""
    from kernels.attention import attention

    if dropout:
        raise ValueError("triton attention has no dropout; set the model's attention dropout to 0 or use sdpa")
    if kwargs.get("softcap") is not None:
        raise ValueError("triton attention does not support logit soft-capping; use eager")
    if attention_mask is not None and attention_mask.dtype != torch.bool:
        raise ValueError("triton attention takes boolean masks (from sdpa_mask); got an additive "
                         f"{attention_mask.dtype} mask")
    q_len, kv_len = query.shape[2], key.shape[2]
    # Without a mask, transformers means "every key" only for a single query; for more it means
    # causal from the top-left (an empty static cache being filled), which is the fused kernel's job.
    over_cache = kv_len > q_len and (q_len == 1 or attention_mask is not None)
    decode = over_cache and q_len <= DECODE_MAX_QUERIES and not (torch.is_grad_enabled() and query.requires_grad)
    kv_scales = None
    if key.dtype.itemsize == 1:  # an int8/fp8 cache (workloads.quantize): its scales ride along
        from workloads.quantize import dequantized, scales

        kv_scales = scales(kwargs, module, key)
        if not decode:
            key, value = dequantized(key, value, *kv_scales, query.dtype)
            kv_scales = None
    else:  # under autocast the projections may come out in different dtypes; the kernels take one
        key, value = key.to(query.dtype), value.to(query.dtype)
    if decode:
        out = _decode(query, key, value, attention_mask, scaling, kv_scales)
    else:
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        causal = bool(causal) and q_len > 1 and attention_mask is None
        out = attention(query, key, value, causal=causal, scale=scaling, mask=attention_mask)
    return out.transpose(1, 2).contiguous(), None


def _decode(query, key, value, attention_mask, scaling, kv_scales=None):
    """A few new tokens over a KV cache: the split-K decode kernel, reading each sequence only up to its
    length. Without a mask every sequence is the whole cache; with one (a static cache's unused tail, left
    padding), the length is the last position the last new token may see, found on the device."""
    from kernels.decode_attention import decode_attention

    batch, kv_len = query.shape[0], key.shape[2]
    if attention_mask is None:
        lengths = torch.full((batch,), kv_len, dtype=torch.int32, device=query.device)
        mask = None
    else:
        mask = attention_mask[:, 0].expand(batch, query.shape[2], kv_len)
        positions = torch.arange(1, kv_len + 1, dtype=torch.int32, device=query.device)
        lengths = (mask[:, -1] * positions).amax(-1).to(torch.int32)
    k_scale, v_scale = kv_scales if kv_scales is not None else (None, None)
    return decode_attention(query, key, value, lengths, scale=scaling, mask=mask, k_scale=k_scale, v_scale=v_scale)


def register() -> None:
    """Make ``attn_implementation="triton"`` known to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register("triton", triton_attention_forward)
    AttentionMaskInterface.register("triton", sdpa_mask)
