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
split-K decode kernel reading the cache only up to the sequence's length.
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
    if options.cache not in ("dynamic", "static"):
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

    def __init__(self, model, compile: bool = True):
        self.model = model
        self.device = next(model.parameters()).device
        self.cache = None
        self.cache_shape = None
        self.position = torch.zeros(1, dtype=torch.long, device=self.device)
        step = self._step
        if compile and self.device.type == "cuda":
            step = torch.compile(step, mode="reduce-overhead", fullgraph=False, dynamic=False)
        self.step = step
        self.compiled = step is not self._step

    def _step(self, token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=token, past_key_values=self.cache, cache_position=position, use_cache=True)
        return out.logits[:, -1]

    def _cache_for(self, batch: int, length: int) -> StaticCache:
        if self.cache_shape != (batch, length):
            self.cache = StaticCache(config=self.model.config, max_cache_len=length)
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
        cache = self._cache_for(batch, prompt_len + new_tokens)
        generator = torch.Generator(device=self.device).manual_seed(seed) if do_sample else None
        tokens = torch.empty((batch, new_tokens), dtype=torch.long, device=self.device)
        clock.start()
        out = self.model(input_ids=prompt, past_key_values=cache, use_cache=True, logits_to_keep=1,
                         cache_position=torch.arange(prompt_len, device=self.device))
        token = select(out.logits[:, -1], do_sample, temperature, top_k, generator)
        tokens[:, :1] = token
        clock.tick()
        for i in range(1, new_tokens):
            self.position.fill_(prompt_len + i - 1)
            logits = self.step(token, self.position)
            token = select(logits, do_sample, temperature, top_k, generator)
            tokens[:, i:i + 1] = token
            clock.tick()
        return tokens, clock.stop()
