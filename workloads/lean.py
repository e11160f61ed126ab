"""The lean decode engine (``--engine lean``): prefill, then one fixed decode step per token.

What ``generate()`` does around the model (logits processors, stopping criteria,
cache bookkeeping, a host round trip per token) is what a bandwidth-bound decode
step cannot afford. This engine keeps only what decoding needs:

- a static KV cache pre-allocated for ``prompt + new tokens`` (transformers'
  ``StaticCache``, reset between calls, never re-allocated for the same shape);
- a prefill that computes logits for the last position only;
- a decode step with fixed shapes (one token per sequence, the position as a
  device tensor updated in place), which on a GPU is compiled with
  ``torch.compile(mode="reduce-overhead")``, i.e. captured in a CUDA graph and
  replayed every step; compilation happens in the warm-up calls, never in a timed one;
- token selection on the device: greedy ``argmax`` by default, or sampling with a
  temperature (and optionally top-k) through the Gumbel-max trick, which needs no
  ``multinomial`` and no host synchronisation. Nothing is read back to the host
  until the last token.

With the ``triton`` attention implementation, each step's attention is our
split-K decode kernel reading the cache only up to the sequence's length; with
``kv_format`` int8 or fp8 the cache is ``workloads.quantize.QuantizedStaticCache``
and the kernel reads the quantized values with their scales. ``replay`` decodes
greedily with teacher forcing, untimed, for the accuracy of quantized variants.
In fp32 its greedy tokens are the ones ``generate()`` picks for the same model.
"""

from __future__ import annotations

import torch
from transformers import StaticCache

from workloads.errors import UserError


def check_options(options) -> None:
    """The generation options the lean engine supports (it exists to be fast, not complete)."""
    unsupported = []
    if options.num_beams != 1:
        unsupported.append("--num-beams")
    if options.top_p is not None:
        unsupported.append("--top-p")
    if options.repetition_penalty != 1.0:
        unsupported.append("--repetition-penalty")
    if options.cache not in ("dynamic", "static", "quantized"):  # quantized: the lean engine's is --kv-cache
        unsupported.append(f"--cache {options.cache}")
    if unsupported:
        raise UserError(f"--engine lean does greedy decoding or sampling with --temperature/--top-k over its own "
                        f"static cache; it does not support {', '.join(unsupported)} (use --engine hf)")


def select(logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int | None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token per sequence, (batch, 1), on the device: argmax, or Gumbel-max sampling."""
    logits = logits.float()
    if not do_sample:
        return logits.argmax(-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    uniform = torch.rand(logits.shape, device=logits.device, generator=generator).clamp_(min=1e-20)
    return (logits - torch.log(-torch.log(uniform))).argmax(-1, keepdim=True)


class LeanEngine:
    """Decodes with one model; ``compile`` captures the decode step (GPU only)."""

    def __init__(self, model, compile: bool = True, kv_format: str | None = None):
        self.model = model
        self.device = next(model.parameters()).device
        self.kv_format = kv_format  # None: the cache in the model's dtype; "int8" or "fp8": workloads.quantize
        self.make_cache = None  # (batch, length) -> a fresh cache of another kind, made for every call
        self.cache = None
        self.cache_shape = None
        self.position = torch.zeros(1, dtype=torch.long, device=self.device)
        step = self._step
        if compile and self.device.type == "cuda":
            step = torch.compile(step, mode="reduce-overhead", fullgraph=False, dynamic=False)
        self.step = step
        self.compiled = step is not self._step

    def _forward(self, ids: torch.Tensor, position: torch.Tensor, **kwargs):
        if self.kv_format is not None:  # the attention finds the quantized cache's scales through this keyword
            kwargs["quantized_kv"] = self.cache
        return self.model(input_ids=ids, past_key_values=self.cache, cache_position=position, use_cache=True,
                          **kwargs)

    def _step(self, token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        return self._forward(token, position).logits[:, -1]

    def _prefill(self, prompt: torch.Tensor) -> torch.Tensor:
        """The prompt forward over the reset cache; the last position's logits."""
        return self._forward(prompt, torch.arange(prompt.shape[1], device=self.device), logits_to_keep=1).logits[:, -1]

    def _cache_for(self, batch: int, length: int):
        if self.make_cache is not None:
            self.cache = self.make_cache(batch, length)
        elif self.cache_shape != (batch, length):
            if self.kv_format is None:
                self.cache = StaticCache(config=self.model.config, max_cache_len=length)
            else:
                from workloads.quantize import QuantizedStaticCache

                self.cache = QuantizedStaticCache(self.model.config, length, self.kv_format)
            self.cache_shape = (batch, length)
        else:
            self.cache.reset()
        return self.cache

    @torch.inference_mode()
    def generate(self, prompt: torch.Tensor, new_tokens: int, clock, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int | None = None, seed: int = 0) -> torch.Tensor:
        """``new_tokens`` tokens per sequence after ``prompt`` (batch, prompt_len), with ``clock.tick()``
        after each (no synchronisation). Returns the (batch, new_tokens) token ids and the clock's timeline."""
        batch, prompt_len = prompt.shape
        self._cache_for(batch, prompt_len + new_tokens)
        generator = torch.Generator(device=self.device).manual_seed(seed) if do_sample else None
        tokens = torch.empty((batch, new_tokens), dtype=torch.long, device=self.device)
        clock.start()
        token = select(self._prefill(prompt), do_sample, temperature, top_k, generator)
        tokens[:, :1] = token
        clock.tick()
        for i in range(1, new_tokens):
            self.position.fill_(prompt_len + i - 1)
            logits = self.step(token, self.position)
            token = select(logits, do_sample, temperature, top_k, generator)
            tokens[:, i:i + 1] = token
            clock.tick()
        return tokens, clock.stop()

    @torch.inference_mode()
    def replay(self, prompt: torch.Tensor, new_tokens: int, forced: torch.Tensor | None = None):
        """Greedy decoding for accuracy checks (untimed): returns the first step's logits (float32, (batch,
        vocab)), the greedy choice at each of ``new_tokens`` steps and the negative log-likelihood of each
        step's token (both (batch, new_tokens)). Step ``i``'s token is ``forced[:, i]`` when given (teacher
        forcing: the choices are what this model predicts after the forced text), else its own choice
        (then the choices are ``generate``'s greedy tokens)."""
        batch, prompt_len = prompt.shape
        self._cache_for(batch, prompt_len + new_tokens)
        chosen = torch.empty((batch, new_tokens), dtype=torch.long, device=self.device)
        nll = torch.empty((batch, new_tokens), dtype=torch.float32, device=self.device)
        logits = self._prefill(prompt).float()
        first = logits.clone()
        for i in range(new_tokens):
            chosen[:, i] = logits.argmax(-1)
            token = forced[:, i] if forced is not None else chosen[:, i]
            nll[:, i] = -torch.log_softmax(logits, -1).gather(-1, token[:, None])[:, 0]
            if i + 1 < new_tokens:
                self.position.fill_(prompt_len + i)
                logits = self.step(token[:, None], self.position).float()
        return first, chosen, nll
