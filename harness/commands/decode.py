"""``llmbench decode``: bf16 vs fp32 (or any precisions, engines and points) decode benchmark.

Every combination of precision, engine and point (batch x prompt x new tokens)
is timed by ``harness.runner`` over a ``workloads.decode.DecodeWorkload`` (one
model built per precision and engine), one record each, then printed as one
table with each row's speed against the first precision and engine at its point.
The variants are one comparison: their timed generations alternate when their
models fit in memory together (see ``harness.runner``).
"""

from __future__ import annotations

import argparse
import sys

from harness import options
from workloads.choices import ATTN_IMPLEMENTATIONS, CACHES, DECODE_MODEL


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
    d.add_argument("--attn", default="sdpa", choices=ATTN_IMPLEMENTATIONS, help="attention implementation")
    d.add_argument("--engine", default="hf", metavar="ENGINE[,ENGINE...]",
                   help="decode engines to compare, first is the baseline: hf (generate()), hf-static (generate() "
                        "with a static cache), lean (static cache, CUDA-graph step, on-device sampling)")
    d.add_argument("--cache", default="dynamic", choices=CACHES, help="KV cache implementation of the hf engine")
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
    d.set_defaults(validate=validate)


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
    check(spec, precisions, device, points, args.attn, generation, engines, args.repeats)
    return spec, precisions, points, generation, engines


def validate(args) -> None:
    """What a sweep checks before submitting a point: everything but the device."""
    _request(args)


def run(args) -> int:
    from harness import ceilings, runner, views
    from harness.envinfo import capture, device_name
    from harness.records import RECORDS_FILE, new_run_id
    from workloads.decode import DecodeWorkload
    from workloads.micro import model_matmul_shapes, projection_sizes
    from workloads.precision import resolve_device

    device = resolve_device(args.device)
    spec, precisions, points, generation, engines = _request(args, device)
    options.check_writable(args.out)

    print(f"llmbench decode: {spec.name} on {device} ({device_name(device)}), "
          f"{', '.join(p.name for p in precisions)}, {len(points)} point(s)", file=sys.stderr)
    run_id, env = new_run_id(), capture(device)
    known = None
    if args.ceilings:  # ceilings at the shapes this model runs: prefill (batch x prompt) and decode (batch) tokens
        tokens = sorted({p.batch_size * p.prompt_len for p in points} | {p.batch_size for p in points})
        known = ceilings.stored_or_measured(
            args.out, device, precisions, run_id, env, remeasure=args.remeasure,
            matmul_shapes=model_matmul_shapes(*projection_sizes(spec.config), tokens))
    workloads = [DecodeWorkload(spec, precision, device, args.attn, generation, args.seed, engine, points,
                                args.warmup, args.repeats, args.max_time)
                 for precision in precisions for engine in engines]
    records = runner.run(workloads, run_id, env, out=args.out, ceilings=known, progress=args.progress,
                         desc="decode", note=views.decode_note, interleave=True)
    print(views.decode_table(records))
    print(f"\nrecords: {args.out / RECORDS_FILE}")
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        print(f"{len(failed)} of {len(records)} point(s) did not complete; see the error field of their records",
              file=sys.stderr)
        return 1
    return 0
