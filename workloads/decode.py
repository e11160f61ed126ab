"""The decode workload: prefill plus token-by-token generation with a KV cache.

Two engines run the same model. ``hf`` is Hugging Face's ``generate()``: the
model runs as a user would run it, with the generation options users tune passed
through; the timed region is one ``generate()`` call, and a stopping criterion,
which ``generate()`` calls once after every new token, marks each token on the
caller's clock, so prefill (time to first token) and every decode step are timed
separately without adding a host synchronisation. ``lean`` is ``workloads.lean``:
a static cache and a fixed (on a GPU, CUDA-graph) decode step, marked the same way.
``hf-static`` is ``generate()`` with a static cache. A ``DecodeWorkload`` is one
model in one precision and engine over a list of points; ``harness.runner``
times it (``workloads.workload``): warm-up generations, then timed ones, whose
per-token marks ``summarize`` turns into tokens/s, TTFT and TPOT.

Prompts are fresh random token ids for every call (never the same buffer twice).

Quantized variants (``kv_cache`` int8/fp8, ``weights`` int8, ``workloads.quantize``)
count their bytes as stored (``cost.Storage``), and before quantizing, ``setup``
replays one accuracy prompt per point on the unquantized model; after the timed runs,
``quality(point)`` feeds the same prompt and the reference's greedy tokens to the
quantized model and compares (token agreement, first-step logit error, and with
``quality_data`` the perplexity on a local text dataset). This costs two untimed
generations per point and never enters a timed region.

Tensor parallel (``tp`` > 1, one process per GPU under torchrun, see
``workloads.tensor_parallel``): every process builds its shard and runs the same
generations on the same prompts; the collectives keep them in step and every
process picks the same tokens. The cost block is per GPU: the weights and KV
cache one process reads (its shards: about ``1/tp`` of each) and its FLOPs, so
MBU and MFU compare one GPU with one GPU's ceilings; beside them the collectives'
bytes per step (``comm_*``, nccl-tests' bus bytes per process), which go over the
GPU links, not HBM. Tokens/s stays the whole batch's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList
from transformers.generation.configuration_utils import STATIC_CACHE_IMPLEMENTATIONS

from workloads import cost
from workloads.attention import check_attn
from workloads.choices import CACHES, ENGINES, KV_FORMATS, WEIGHT_FORMATS
from workloads.distributed import Dist
from workloads.errors import UserError
from workloads.precision import Precision, check_supported, matmul_mode
from workloads.presets import ModelSpec, build_model, meta_model
from workloads.stats import spread, summary
from workloads.workload import Clock, Runs


QUALITY_PROMPT = 10**9  # prompt index of the accuracy check of quantized variants (never a timed prompt)
PPL_ROWS, PPL_CONTEXT, PPL_TOKENS = 4, 16, 112  # perplexity text: rows x (context + scored tokens)


@dataclass(frozen=True)
class DecodePoint:
    batch_size: int
    prompt_len: int
    new_tokens: int


@dataclass(frozen=True)
class GenerationOptions:
    """What users tune in ``generate()``; greedy with a dynamic cache by default."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    num_beams: int = 1
    repetition_penalty: float = 1.0
    cache: str = "dynamic"
    compile: bool = True  # let generate() compile the step when it can (static cache on GPU)

    def validate(self, device: torch.device | None) -> None:
        """Refuse options generate() cannot honour (device-specific ones only when ``device`` is given)."""
        if self.cache not in CACHES:
            raise UserError(f"unknown cache {self.cache!r}; choose from {', '.join(CACHES)}")
        if self.cache.startswith("offloaded") and device is not None and device.type != "cuda":
            raise UserError(f"cache {self.cache!r} offloads GPU memory to the host; it needs --device cuda")
        if self.num_beams < 1:
            raise UserError(f"--num-beams must be at least 1, got {self.num_beams}")
        for name in ("temperature", "top_p", "repetition_penalty"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise UserError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
        if self.temperature <= 0:
            raise UserError(f"--temperature must be positive, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise UserError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise UserError(f"--top-k must be at least 1, got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise UserError(f"--repetition-penalty must be positive, got {self.repetition_penalty}")

    def compiled(self, device: torch.device, engine: str = "hf") -> bool:
        """Whether the decode step is compiled: generate()'s own rule is a static cache on a GPU; the
        lean engine compiles (captures) its step on a GPU."""
        static = self.cache in STATIC_CACHE_IMPLEMENTATIONS or engine == "lean"
        return self.compile and device.type == "cuda" and static

    def record_fields(self, device: torch.device, engine: str = "hf") -> dict:
        return {**asdict(self), "compile": self.compiled(device, engine)}


def check_point(spec: ModelSpec, point: DecodePoint) -> None:
    for field in ("batch_size", "prompt_len"):
        if getattr(point, field) < 1:
            raise UserError(f"--{field.replace('_', '-')} must be at least 1, got {getattr(point, field)}")
    if point.new_tokens < 2:
        raise UserError(f"--new-tokens must be at least 2 (one prefill token and one decode step), got {point.new_tokens}")
    total = point.prompt_len + point.new_tokens
    if total > spec.max_positions:
        raise UserError(
            f"prompt {point.prompt_len} + new tokens {point.new_tokens} = {total} exceeds {spec.name}'s "
            f"{spec.max_positions} positions"
        )


def engine_options(options: GenerationOptions, engine: str) -> GenerationOptions:
    """The generation options an engine runs with: hf-static is generate() with a static cache, and the
    lean engine always decodes over its own static cache."""
    return replace(options, cache="static") if engine in ("hf-static", "lean") else options


def check(spec: ModelSpec, precisions: list[Precision], device: torch.device | None, points: list[DecodePoint],
          attn: str, options: GenerationOptions, engines: list[str], repeats: int | None = 1, tp: int = 1,
          kv_caches: list[str] = ("auto",), weights: list[str] = ("auto",)) -> None:
    """Refuse a decode request that cannot run, before anything is built (without ``device``: what can
    be judged anywhere, as when a sweep is planned away from the GPUs)."""
    from workloads import tensor_parallel

    tensor_parallel.check(spec, tp)
    check_formats(precisions, device, attn, options, engines, kv_caches, weights, tp)
    if not precisions:
        raise UserError("--dtype needs at least one precision, e.g. bf16,fp32")
    if len({p.name for p in precisions}) != len(precisions):
        raise UserError(f"--dtype lists a precision twice: {', '.join(p.name for p in precisions)}")
    for precision in precisions if device is not None else ():
        check_supported(precision, device)
    check_attn(attn, device)
    for point in points:
        check_point(spec, point)
    options.validate(device)
    for engine in engines:
        if engine not in ENGINES:
            raise UserError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    if not engines or len(set(engines)) != len(engines):
        raise UserError(f"--engine needs distinct engines from {', '.join(ENGINES)}, got {','.join(engines)!r}")
    if "lean" in engines:
        from workloads.lean import check_options

        check_options(options)
    if repeats is not None and repeats < 1:
        raise UserError("--repeats must be at least 1 (or auto)")


def stored_float(precision: Precision) -> str:
    """The name of the float format ``precision`` stores weights and cache in (tf32 stores fp32)."""
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[precision.dtype_name]


def check_formats(precisions: list[Precision], device: torch.device | None, attn: str, options: GenerationOptions,
                  engines: list[str], kv_caches: list[str], weights: list[str], tp: int = 1) -> None:
    """Refuse KV-cache and weight formats (``--kv-cache``, ``--weights``) the engines cannot run."""
    for name, given, known in (("--kv-cache", kv_caches, KV_FORMATS), ("--weights", weights, WEIGHT_FORMATS)):
        unknown = [g for g in given if g not in known]
        if unknown or not given or len(set(given)) != len(given):
            raise UserError(f"{name} takes distinct formats from {', '.join(known)}, got {','.join(given)!r}")
    quantized_kv = [k for k in kv_caches if k in ("int8", "fp8")]
    for kv in set(kv_caches) - {"auto", *quantized_kv}:
        wrong = [p.name for p in precisions if stored_float(p) != kv]
        if wrong:
            raise UserError(f"--kv-cache {kv}: a float cache is stored in the compute dtype, and --dtype "
                            f"{','.join(wrong)} computes in another; use --kv-cache auto, int8 or fp8")
    quantized = quantized_kv or set(weights) != {"auto"}
    if quantized and tp > 1:
        raise UserError("--kv-cache int8/fp8 and --weights int8 run on one GPU; drop --tp")
    if quantized and options.do_sample:
        raise UserError("quantized formats are compared with greedy decoding (their accuracy is greedy-token "
                        "agreement with the unquantized model); drop --do-sample")
    for engine in engines:
        for kv in kv_caches:
            if kv in quantized_kv and engine == "lean" and attn != "triton":
                raise UserError(f"--kv-cache {kv} with --engine lean is read by our decode kernel: add --attn "
                                f"triton (got --attn {attn})")
            if kv in quantized_kv and (engine == "hf-static" or (engine == "hf" and options.cache != "quantized")):
                raise UserError(f"--kv-cache {kv} runs in the lean engine (--engine lean --attn triton) or in "
                                "generate() with transformers' QuantizedCache (--engine hf --cache quantized); "
                                f"--engine {engine} with --cache {options.cache} keeps a float cache")
            if kv not in quantized_kv and engine == "hf" and options.cache == "quantized":
                raise UserError(f"--cache quantized stores the cache as int8 (hqq backend) or fp8: give --kv-cache "
                                f"int8 or fp8, not {kv}")
    if "int8" in quantized_kv and "hf" in engines and options.cache == "quantized":
        from workloads.quantize import require_hqq

        require_hqq()
    if "fp8" in quantized_kv and device is not None and device.type == "cuda" \
            and torch.cuda.get_device_capability(device) < (8, 9):
        raise UserError("--kv-cache fp8 needs a GPU of compute capability 8.9 or newer (Ada, Hopper); use int8")
    if "int8" in weights and device is not None and device.type != "cuda":
        from kernels.common import interpreting

        if not interpreting():
            raise UserError("--weights int8 runs our Triton kernel, which needs a CUDA GPU; on the CPU use "
                            "--weights int8-torchao (TRITON_INTERPRET=1 runs the kernel slowly, for tests)")
    if "int8-torchao" in weights:
        from workloads.quantize import require_torchao

        require_torchao()


def text_rows(spec: ModelSpec, folder, split: str) -> torch.Tensor:
    """``PPL_ROWS`` rows of ``PPL_CONTEXT + PPL_TOKENS`` token ids of a local text dataset (packed), tokenized
    with the model directory's tokenizer, or for a preset with the byte-level one (``workloads.data``)."""
    from workloads import data

    tokenizer = data.local_tokenizer(spec.path) if spec.path is not None else data.byte_tokenizer()
    texts = data.read_texts(folder, split, None)
    try:
        blocks = data.tokenize(texts, tokenizer, PPL_CONTEXT + PPL_TOKENS, "pack", PPL_ROWS, str(folder))
    except UserError:  # not one row (its message speaks of fine-tuning options)
        blocks = None
    if blocks is None or blocks.unique_rows < PPL_ROWS:
        raise UserError(f"--quality-data {folder} ({split}) holds {blocks.unique_rows if blocks else 0} row(s) of "
                        f"{PPL_CONTEXT + PPL_TOKENS} tokens; perplexity needs {PPL_ROWS}")
    return blocks.input_ids[:PPL_ROWS]


def perplexity(engine, rows: torch.Tensor) -> float:
    """exp(mean negative log-likelihood) of each row's last ``PPL_TOKENS`` tokens after its first
    ``PPL_CONTEXT``, decoded step by step (every token is read back from the KV cache as stored)."""
    _, _, nll = engine.replay(rows[:, :PPL_CONTEXT], PPL_TOKENS, forced=rows[:, PPL_CONTEXT:])
    return math.exp(nll.mean().item())


def rates(timelines: list, point: DecodePoint) -> list[float]:
    """Decode tokens/s of each generation: batch x decode steps over first-to-last token."""
    steps = point.new_tokens - 1
    return [point.batch_size * steps / ((t.ticks_ms[-1] - t.ticks_ms[0]) / 1e3) for t in timelines]


def summarize(timelines: list, point: DecodePoint) -> dict:
    """Latency and throughput of the timed generations of one point: medians with their 95% CI, CV
    and spread, and the samples themselves (``samples``: per generation, TPOT per step)."""
    ttft = [t.ticks_ms[0] for t in timelines]
    decode = [t.ticks_ms[-1] - t.ticks_ms[0] for t in timelines]
    tpot = [b - a for t in timelines for a, b in zip(t.ticks_ms, t.ticks_ms[1:])]
    e2e = [t.end_ms for t in timelines]
    tokens_per_s = rates(timelines, point)
    return {
        **summary(tokens_per_s, "tokens_per_s"),
        **spread(tokens_per_s, "tokens_per_s"),
        **summary(ttft, "ttft_ms"),
        **spread(ttft, "ttft_ms"),
        **summary(tpot, "tpot_ms"),
        **spread(tpot, "tpot_ms"),
        "decode_ms": float(np.median(decode)),
        "e2e_ms": float(np.median(e2e)),
        "e2e_tokens_per_s": point.batch_size * point.new_tokens / (float(np.median(e2e)) / 1e3),
        "repeats": len(timelines),
        "decode_steps_timed": len(tpot),
        "samples": {"tokens_per_s": tokens_per_s, "ttft_ms": ttft, "tpot_ms": tpot},
    }


class _MarkEachToken(StoppingCriteria):
    """Called by generate() after every new token: mark it on the clock, never stop."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.never = None

    def __call__(self, input_ids, scores, **kwargs):
        self.clock.tick()
        if self.never is None or self.never.shape[0] != input_ids.shape[0]:
            self.never = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return self.never


class DecodeWorkload:
    """One model in one precision and engine on one device, over any number of decode points.

    ``engine``: ``hf`` (generate()), ``hf-static`` (generate() with a static cache) or ``lean``.
    """

    def __init__(
        self,
        spec: ModelSpec,
        precision: Precision,
        device: torch.device,
        attn: str = "sdpa",
        options: GenerationOptions = GenerationOptions(),
        seed: int = 0,
        engine: str = "hf",
        points: list[DecodePoint] = (),
        warmup: int = 1,
        repeats: int | None = 3,
        max_time_s: float = 60.0,
        dist: Dist = Dist(),
        kv_cache: str = "auto",
        weights: str = "auto",
        quality_data: tuple | None = None,
    ):
        self.spec, self.precision, self.device = spec, precision, device
        self.dist, self.tp = dist, dist.world_size
        self.attn, self.seed, self.engine = attn, seed, engine
        self.options = engine_options(options, engine)
        self.points, self.warmup, self.repeats, self.max_time_s = list(points), warmup, repeats, max_time_s
        self.kv_format = stored_float(precision) if kv_cache == "auto" else kv_cache
        self.kv_quantized = self.kv_format in ("int8", "fp8")
        self.weights = weights  # auto, int8 (our kernel) or int8-torchao
        self.quantized = self.kv_quantized or weights != "auto"
        self.storage = cost.FLOAT
        self.reference = {}  # point -> the unquantized model's greedy replay (quantized variants only)
        self.quality_data = quality_data  # (folder, split) of a local text dataset for perplexity, or None
        self.text = None  # its token rows (PPL_ROWS, PPL_CONTEXT + PPL_TOKENS)
        self.ppl_reference = self.ppl = None
        self.model = None
        self.lean = None
        self.shape = None

    def setup(self) -> None:
        if self.tp > 1:
            from workloads import tensor_parallel

            self.model = tensor_parallel.build(self.spec, self.precision.dtype, self.device, self.attn, self.seed,
                                               self.dist.rank, self.tp)
            self.shape = tensor_parallel.local_shape(self.spec, self.tp)
        else:
            self.model = build_model(self.spec, self.precision.dtype, self.device, self.attn, self.seed)
            self.shape = cost.model_shape(self.model)
        if self.quantized:
            self._quantize()
        if self.engine == "lean":
            from workloads.lean import LeanEngine

            self.lean = LeanEngine(self.model, compile=self.options.compile,
                                   kv_format=self.kv_format if self.kv_quantized else None)

    def _quantize(self) -> None:
        """Replay every point's accuracy prompt on the unquantized model first (the reference of
        ``quality``), then store the weights as int8 when asked; the cache is quantized as it is written."""
        from workloads import quantize
        from workloads.lean import LeanEngine

        reference = LeanEngine(self.model, compile=False)
        with matmul_mode(self.precision):
            self.reference = {p: reference.replay(self.prompt(p, QUALITY_PROMPT), p.new_tokens) for p in self.points}
            if self.quality_data is not None:
                self.text = text_rows(self.spec, *self.quality_data).to(self.device)
                self.ppl_reference = perplexity(reference, self.text)
        del reference
        values = scales = 0
        if self.weights != "auto":
            values, scales = quantize.quantized_weight_counts(self.model)
            quantize.quantize_weights(self.model, self.weights)
        self.storage = cost.Storage(values, scales, 1 if self.kv_quantized else None)

    def quality(self, point: DecodePoint) -> dict | None:
        """Accuracy of a quantized variant against the same model unquantized in the compute dtype, on
        one prompt per point (not a timed one): the reference's greedy tokens are fed to this variant
        (teacher forcing); ``token_agreement`` is the share of steps where it picks the same token,
        ``identical_prefix_tokens`` the mean count of leading tokens it would generate identically on its
        own, and the logit errors are those of the first step (the prompt's forward). With a local text
        dataset (``quality_data``), the perplexity of both models on ``PPL_ROWS`` rows of it."""
        if not self.quantized:
            return None
        ref_logits, ref_tokens, _ = self.reference[point]
        with matmul_mode(self.precision):
            logits, chosen, _ = self._replayer().replay(self.prompt(point, QUALITY_PROMPT), point.new_tokens,
                                                        forced=ref_tokens)
            if self.text is not None and self.ppl is None:  # the same for every point: once
                self.ppl = perplexity(self._replayer(), self.text)
        same = chosen == ref_tokens
        prefix = torch.where(same.all(-1), same.shape[-1], (~same).int().argmax(-1))
        error = (logits - ref_logits).abs()
        ppl = {} if self.ppl is None else {
            "ppl": self.ppl, "ppl_reference": self.ppl_reference, "ppl_delta": self.ppl - self.ppl_reference,
            "ppl_tokens": PPL_ROWS * PPL_TOKENS, "ppl_data": f"{self.quality_data[0]} ({self.quality_data[1]})"}
        return {
            "reference": f"{self.precision.name} weights and KV cache, same model and prompt",
            "token_agreement": same.float().mean().item(),
            "identical_prefix_tokens": prefix.float().mean().item(),
            "logit_max_abs_err": error.max().item(),
            "logit_mean_abs_err": error.mean().item(),
            "tokens_compared": same.numel(),
            **ppl,
        }

    def _replayer(self):
        """What replays this variant for ``quality``: the lean engine, or for generate() with transformers'
        QuantizedCache, an uncompiled lean loop over a fresh cache of that kind."""
        from workloads.lean import LeanEngine

        if self.lean is not None:
            return self.lean
        engine = LeanEngine(self.model, compile=False)
        engine.make_cache = lambda batch, length: self._hf_quantized_cache()
        return engine

    def _hf_quantized_cache(self):
        from transformers import QuantizedCache

        return QuantizedCache(config=self.model.config, **self._hf_cache_config())

    def _hf_cache_config(self) -> dict:
        """transformers' QuantizedCache settings for ``--kv-cache``: hqq at 8 bits for int8, with a residual of
        one token (every older token is stored quantized, as in our cache; its default keeps the last 128 in
        the compute dtype), or its per-tensor fp8. Both attend to the prompt's own K and V unquantized in the
        prefill, so their first-step logits are exact where ours read the quantized prompt."""
        return {"backend": "hqq", "nbits": 8, "residual_length": 1} if self.kv_format == "int8" else {"backend": "fp8"}

    def teardown(self) -> None:
        self.model = self.lean = None
        self.reference = {}
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def prompt(self, point: DecodePoint, index: int) -> torch.Tensor:
        """Random token ids for call ``index``: different for every call, same across precisions."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        vocab = self.model.config.vocab_size
        ids = torch.randint(0, vocab, (point.batch_size, point.prompt_len), generator=generator)
        return ids.to(self.device)

    def generation_config(self, point: DecodePoint) -> GenerationConfig:
        opts = self.options
        sampling = {"temperature": opts.temperature, "top_k": opts.top_k, "top_p": opts.top_p} if opts.do_sample else {}
        return GenerationConfig(
            max_new_tokens=point.new_tokens,
            do_sample=opts.do_sample,
            num_beams=opts.num_beams,
            repetition_penalty=opts.repetition_penalty,
            cache_implementation=opts.cache,
            cache_config=self._hf_cache_config() if opts.cache == "quantized" else None,
            disable_compile=not opts.compile,
            eos_token_id=None,  # random weights: never stop early, every run makes exactly new_tokens
            min_new_tokens=point.new_tokens,  # and should an EOS still resolve (run()), it is never picked
            pad_token_id=0,
            **sampling,
        )

    def run(self, point: DecodePoint, prompt: torch.Tensor, clock: Clock):
        """The timed region: one generate() call (or the lean engine's). Returns the clock's timeline."""
        if self.engine == "lean":
            opts = self.options
            with matmul_mode(self.precision):
                tokens, timeline = self.lean.generate(prompt, point.new_tokens, clock, opts.do_sample,
                                                      opts.temperature, opts.top_k, seed=self.seed)
            if tokens.shape != (point.batch_size, point.new_tokens) or len(timeline.ticks_ms) != point.new_tokens:
                raise RuntimeError(f"the lean engine made {tuple(tokens.shape)} tokens in {len(timeline.ticks_ms)} "
                                   f"steps, expected {point.new_tokens}; refusing to report a timing")
            return timeline
        # generate() fills every option left None (EOS included) from the model's own generation config, which
        # carries the preset's EOS: clear it, so no EOS check or stop runs in the timed loop (transformers 5.x)
        self.model.generation_config.eos_token_id = None
        config = self.generation_config(point)
        mark = _MarkEachToken(clock)
        with torch.inference_mode(), matmul_mode(self.precision):
            clock.start()
            out = self.model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                generation_config=config,
                stopping_criteria=StoppingCriteriaList([mark]),
            )
            timeline = clock.stop()
        made = out.shape[1] - point.prompt_len
        if made != point.new_tokens or len(timeline.ticks_ms) != point.new_tokens:
            raise RuntimeError(
                f"generate() made {made} tokens in {len(timeline.ticks_ms)} steps, expected {point.new_tokens}; "
                "refusing to report a timing for the wrong amount of work"
            )
        return timeline

    def fields(self, point: DecodePoint) -> dict:
        return {
            "workload": "decode",
            "model": self.spec.name,
            "model_path": str(self.spec.path) if self.spec.path else None,
            "random_weights": self.spec.random_weights,
            "engine": self.engine,
            "attn": self.attn,
            "dtype": self.precision.name,
            "weights_dtype": self.precision.dtype_name,
            "kv_format": self.kv_format,
            "weight_format": "int8" if self.weights != "auto" else stored_float(self.precision),
            "weight_impl": {"int8": "triton", "int8-torchao": "torchao"}.get(self.weights),
            "matmul_precision": self.precision.matmul_precision,
            "device": str(self.device),
            "batch_size": point.batch_size,
            "prompt_len": point.prompt_len,
            "new_tokens": point.new_tokens,
            "seq_len": point.prompt_len + point.new_tokens,
            **self.options.record_fields(self.device, self.engine),
            "seed": self.seed,
            "tp": self.tp,
            "world_size": self.tp,
            "nodes": 1,
            "parallel": "tp" if self.tp > 1 else None,
        }

    def region(self, point: DecodePoint) -> Runs:
        """Warm-up and timed generations, each on fresh prompts (``prompt(point, index)``)."""
        return Runs(run=lambda clock, index: self.run(point, self.prompt(point, index), clock),
                    summarize=lambda timelines: summarize(timelines, point), warmup=self.warmup,
                    repeats=self.repeats, tokens=point.batch_size * point.new_tokens,
                    headline=lambda timelines: rates(timelines, point), max_time_s=self.max_time_s)

    def footprint_bytes(self) -> int | None:
        """What this variant keeps resident: its weights and, for the largest point, its KV cache. None under
        tensor parallelism: every process must take the same path through the runner, and the free memory
        each one sees may differ, so its variants run one after another."""
        if self.tp > 1:
            return None
        elem = self.precision.bytes_per_element
        shape = self.shape or cost.model_shape(meta_model(self.spec))
        storage = self.storage
        if self.quantized and storage is cost.FLOAT:  # not set up yet: count what setup will store
            from workloads.quantize import quantized_weight_counts

            counts = quantized_weight_counts(meta_model(self.spec)) if self.weights != "auto" else (0, 0)
            storage = cost.Storage(*counts, 1 if self.kv_quantized else None)
        tokens = max((p.batch_size * self.options.num_beams * (p.prompt_len + p.new_tokens) for p in self.points),
                     default=0)
        weights = storage.weight_bytes(shape, 0, elem) + shape.gathered_params * elem  # every table, whole
        return weights + tokens * storage.kv_bytes_per_token(shape, elem)

    def _comm(self, point: DecodePoint, sequences: int, elem: int) -> dict:
        """The collectives of a decode step and of the prefill (``cost.tp_comm``), per process."""
        from workloads.tensor_parallel import head_split

        config = self.spec.config
        args = (config.num_hidden_layers, config.hidden_size, config.vocab_size)
        step = cost.tp_comm(*args, sequences, sequences, self.tp, elem, head_split(self.spec))
        pre = cost.tp_comm(*args, sequences * point.prompt_len, sequences, self.tp, elem, head_split(self.spec))
        return {"tp": self.tp, "comm_allreduce_bytes_per_step": step.allreduce_bytes,
                "comm_allgather_bytes_per_step": step.allgather_bytes, "comm_bus_bytes_per_step": step.bus_bytes,
                "prefill_comm_bus_bytes": pre.bus_bytes, "per_gpu": True}

    def cost(self, point: DecodePoint) -> cost.Cost:
        """Bytes and FLOPs of the decode steps of one generation (timed by ``decode_ms``, first to last
        token) and of its prefill (timed by ``ttft_ms``); the record keeps the mean per step too. Under
        tensor parallelism they are one GPU's (its shards), with the collectives' bytes beside them."""
        sequences = point.batch_size * self.options.num_beams
        elem = self.precision.bytes_per_element
        run = cost.decode_run(self.shape, sequences, point.prompt_len, point.new_tokens, elem, self.storage)
        pre = cost.prefill(self.shape, sequences, point.prompt_len, elem, self.storage)
        steps = point.new_tokens - 1
        details = {
            "bytes_per_step": run.bytes / steps,
            "flops_per_step": run.flops / steps,
            "weight_bytes_per_step": run.weight_bytes / steps,
            "kv_read_bytes_per_step": run.kv_read_bytes / steps,
            "kv_write_bytes_per_step": run.kv_write_bytes / steps,
            "decode_steps": steps,
            "decode_bytes": run.bytes,
            "decode_flops": run.flops,
            "prefill_bytes": pre.bytes,
            "prefill_flops": pre.flops,
            "params": self.shape.params,
            "kv_bytes_per_token": self.storage.kv_bytes_per_token(self.shape, elem),
        }
        if self.tp > 1:
            details.update(self._comm(point, sequences, elem))
        return cost.Cost(run.bytes, run.flops, "decode_ms", details,
                         {"prefill": cost.Cost(pre.bytes, pre.flops, "ttft_ms")})
