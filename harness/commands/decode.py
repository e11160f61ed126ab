"""``llmbench decode``: bf16 vs fp32 (or any precisions, engines and points) decode benchmark.

Every combination of precision, engine, weight format, KV-cache format
(``--weights``, ``--kv-cache``: int8/fp8 variants, ``workloads.quantize``) and point
(batch x prompt x new tokens) is timed by ``harness.runner`` over a
``workloads.decode.DecodeWorkload`` (one model built per variant), one record each,
with an accuracy block for the quantized variants, then printed as one
table with each row's speed against the first precision and engine at its point.
The variants are one comparison: their timed generations alternate when their
models fit in memory together (see ``harness.runner``).

``--tp N`` splits the model across N GPUs of the node (``workloads.tensor_parallel``):
this process starts N processes under torchrun (``harness.launch``), each runs
the same command on its shard, and rank 0 writes the records. Every process must
take the same steps through the runner, so under ``--tp`` the variants run one
after another and ``--repeats auto`` becomes a fixed ``TP_REPEATS`` (a confidence
interval judged in each process could stop them at different runs and leave the
others waiting in a collective).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness import options
from workloads.choices import ATTN_IMPLEMENTATIONS, CACHES, DECODE_MODEL, KV_FORMATS, WEIGHT_FORMATS

TP_REPEATS = 5  # timed generations per point under --tp with --repeats auto


def add_parser(sub) -> None:
    d = sub.add_parser(
        "decode",
        help="decode benchmark (prefill + generation with a KV cache), one row per precision and point",
        description=(
            "Run Hugging Face generate() on a model preset with random weights (or a local checkpoint) "
            "in each precision and print tokens/s, time to first token, time per output token and the "
            "achieved memory bandwidth. Comma-separated lists sweep every combination. Records are "
            "appended to OUT/records.jsonl."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    options.add_model(d, DECODE_MODEL)
    d.add_argument("--dtype", default="bf16,fp32",
                   help="precisions to compare, first is the baseline: fp32, tf32, bf16, fp16")
    d.add_argument("--batch-size", type=options.int_list, default=[1], metavar=options.INT_LIST,
                   help="sequences per batch")
    d.add_argument("--prompt-len", type=options.int_list, default=[128], metavar=options.INT_LIST,
                   help="prompt tokens")
    d.add_argument("--new-tokens", type=options.int_list, default=[64], metavar=options.INT_LIST,
                   help="tokens to generate")
    options.add_device(d)
    d.add_argument("--tp", type=options.positive_int, default=1,
                   help="tensor parallel: split the model across this many GPUs of the node (one process each, "
                        "started under torchrun; gloo processes on CPU); Llama-style models")
    d.add_argument("--attn", default="sdpa", choices=ATTN_IMPLEMENTATIONS, help="attention implementation")
    d.add_argument("--engine", default="hf", metavar="ENGINE[,ENGINE...]",
                   help="decode engines to compare, first is the baseline: hf (generate()), hf-static (generate() "
                        "with a static cache), lean (static cache, CUDA-graph step, on-device sampling)")
    d.add_argument("--cache", default="dynamic", choices=CACHES,
                   help="KV cache implementation of the hf engine (quantized: transformers' QuantizedCache in the "
                        "format of --kv-cache)")
    q = d.add_argument_group("quantized decode (each quantized variant's record carries its accuracy against the "
                             "unquantized model: greedy-token agreement and first-step logit error)")
    q.add_argument("--kv-cache", default="auto", metavar="FORMAT[,FORMAT...]",
                   help=f"how the KV cache is stored, compared like --dtype: {', '.join(KV_FORMATS)} (auto: the "
                        "model's dtype; int8/fp8: one float32 scale per token and KV head, read by our decode "
                        "kernel in --engine lean --attn triton, or transformers' QuantizedCache with --engine hf "
                        "--cache quantized; fp8 needs compute capability 8.9+)")
    q.add_argument("--weights", default="auto", metavar="FORMAT[,FORMAT...]",
                   help=f"how linear weights are stored, compared like --dtype: {', '.join(WEIGHT_FORMATS)} (int8: "
                        "per-output-channel scales, our Triton kernel; int8-torchao: torchao's int8 weight-only "
                        "layers, an optional extra)")
    q.add_argument("--quality-data", type=Path, default=None, metavar="PATH",
                   help="a local text dataset (save_to_disk folder, or parquet/json/csv/txt files, e.g. an offline "
                        "wikitext copy): quantized records then also carry the perplexity change on it")
    q.add_argument("--quality-split", default="test", help="its split, with optional slicing (test[:20%%])")
    d.add_argument("--no-compile", dest="compile", action="store_false",
                   help="stop generate() from compiling the step (it does with a static cache on GPU)")
    g = d.add_argument_group("generation (greedy unless --do-sample or --num-beams)")
    g.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    g.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    g.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens")
    g.add_argument("--top-p", type=float, default=None, help="nucleus sampling probability mass")
    g.add_argument("--num-beams", type=int, default=1, help="beam search width")
    g.add_argument("--repetition-penalty", type=float, default=1.0, help="penalty on repeated tokens")
    m = d.add_argument_group("measurement")
    m.add_argument("--repeats", type=options.repeats, default="auto",
                   help="timed generations per point; auto = at least 5, then more until the 95%% CI of the "
                        "median tokens/s is within 2%% (or --max-time is spent)")
    m.add_argument("--max-time", type=options.positive_float, default=60.0,
                   help="seconds of timed generations per point (all compared variants together) for --repeats auto")
    m.add_argument("--warmup", type=options.non_negative_int, default=1, help="untimed generations per point first")
    options.add_seed(m)
    options.add_out(m)
    options.add_progress(m)
    options.add_ceilings(m)
    d.set_defaults(validate=validate, command_parser=d)


def _request(args, device=None):
    """The model, precisions, points, generation options and engines asked for, all checked (the
    device-specific checks only when ``device`` is given)."""
    from workloads.decode import DecodePoint, GenerationOptions, check
    from workloads.precision import parse_precision
    from workloads.presets import resolve_model

    model = args.model
    if model == "auto":
        model = DECODE_MODEL[device.type if device is not None else "cuda"]
    spec = resolve_model(model) if device is not None else options.model_once(model)
    precisions = [parse_precision(name) for name in args.dtype.split(",") if name.strip()]
    points = [DecodePoint(b, p, n) for b in args.batch_size for p in args.prompt_len for n in args.new_tokens]
    generation = GenerationOptions(
        do_sample=args.do_sample, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        num_beams=args.num_beams, repetition_penalty=args.repetition_penalty, cache=args.cache,
        compile=args.compile,
    )
    engines = [e.strip() for e in args.engine.split(",") if e.strip()]
    kv_caches = [k.strip() for k in args.kv_cache.split(",") if k.strip()]
    weights = [w.strip() for w in args.weights.split(",") if w.strip()]
    if args.quality_data is not None:
        from workloads.errors import UserError

        if not args.quality_data.exists():
            raise UserError(f"--quality-data {args.quality_data}: no such file or folder")
        if set(kv_caches) <= {"auto", "fp32", "bf16", "fp16"} and set(weights) == {"auto"}:
            raise UserError("--quality-data scores quantized variants against the unquantized model: add "
                            "--kv-cache int8 or fp8, or --weights int8")
    check(spec, precisions, device, points, args.attn, generation, engines, args.repeats, args.tp, kv_caches, weights)
    return spec, precisions, points, generation, engines, kv_caches, weights


def validate(args) -> None:
    """What a sweep checks before submitting a point: everything but the device."""
    _request(args)


def run(args) -> int:
    from harness import launch
    from harness.envinfo import device_name
    from workloads.distributed import Dist
    from workloads.errors import UserError
    from workloads.precision import resolve_device

    dist = Dist.from_env()
    if dist.under_launcher() and (dist.world_size != args.tp or dist.nodes != 1):
        raise UserError(f"--tp {args.tp}, but torchrun started {dist.world_size} process(es) on {dist.nodes} "
                        "node(s): tensor parallelism runs one process per GPU of one node, as many as --tp")
    device = dist.device(resolve_device(args.device))
    spec, precisions, points, generation, engines, kv_caches, weights = _request(args, device)
    options.check_writable(args.out)
    if args.tp > 1 and not dist.under_launcher():
        launch.check_gpus(args.tp, device)
        return launch.local("decode", args, args.tp, device)

    if dist.main:
        tp = f", tensor parallel over {args.tp} processes" if args.tp > 1 else ""
        print(f"llmbench decode: {spec.name} on {device} ({device_name(device)}), "
              f"{', '.join(p.name for p in precisions)}, {len(points)} point(s){tp}", file=sys.stderr)
    dist.init(device)
    try:
        return _measure(args, dist, device, spec, precisions, points, generation, engines, kv_caches, weights)
    finally:
        dist.close()


def _measure(args, dist, device, spec, precisions, points, generation, engines, kv_caches, weights) -> int:
    from harness import ceilings, runner, views
    from harness.envinfo import capture
    from harness.records import RECORDS_FILE, new_run_id
    from workloads.decode import DecodeWorkload
    from workloads.micro import model_matmul_shapes, projection_sizes

    run_id, env = new_run_id(), capture(device)
    known = None
    if args.ceilings and dist.main:  # ceilings at the shapes this model runs: prefill and decode tokens
        tokens = sorted({p.batch_size * p.prompt_len for p in points} | {p.batch_size for p in points})
        known = ceilings.stored_or_measured(
            args.out, device, precisions, run_id, env, remeasure=args.remeasure,
            matmul_shapes=model_matmul_shapes(*projection_sizes(spec.config), tokens))
    repeats = TP_REPEATS if args.tp > 1 and args.repeats is None else args.repeats
    workloads = [DecodeWorkload(spec, precision, device, args.attn, generation, args.seed, engine, points,
                                args.warmup, repeats, args.max_time, dist, kv, weight,
                                (args.quality_data, args.quality_split) if args.quality_data else None)
                 for precision in precisions for engine in engines for weight in weights for kv in kv_caches]
    records = runner.run(workloads, run_id, env, out=args.out if dist.main else None, ceilings=known,
                         progress=args.progress and dist.main, desc="decode",
                         note=views.decode_note if dist.main else None, interleave=True)
    if not dist.main:
        return 0 if all(r["status"] == "ok" for r in records) else 1
    print(views.decode_table(records))
    print(f"\nrecords: {args.out / RECORDS_FILE}")
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        print(f"{len(failed)} of {len(records)} point(s) did not complete; see the error field of their records",
              file=sys.stderr)
        return 1
    return 0
