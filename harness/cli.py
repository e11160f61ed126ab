"""The ``llmbench`` command line (also ``python -m harness``).

Subcommands:
  decode   bf16 vs fp32 (or any precisions) decode benchmark; prints a comparison table
  finetune training steps (HF Trainer or a lean loop, torchrun for DDP): tokens/s, MFU, memory, loss
  peak     measure the device's ceilings (copy/triad bandwidth, matmul rate per precision)
  report   roofline report (Markdown, HTML, plots) from the records of one or more runs
  models   the model presets with parameter counts and weight bytes per precision
  env      the environment records are stamped with
  kernel   kernel microbenchmarks: our Triton kernels against PyTorch's (kernel attention)
  compare  regression check of NEW against BASELINE (or a TOML reference); side-by-side environments
  import-pytest-benchmark  pytest-benchmark JSON -> records
  sweep    sweeps from a TOML matrix: plan, run here, submit as SLURM arrays, task, status, collect

Everything the user asked for is checked before any work starts; a mistake is
one line on stderr and exit code 2, with nothing written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Never reach for the hub: presets are built from local configs, checkpoints are local folders.
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read when transformers is first imported

from harness import compare, kernelbench, pytest_bench, sweep  # noqa: E402
from workloads.errors import UserError  # noqa: E402

DEFAULT_MODEL = {"cuda": "llama-3.2-1b", "cpu": "qwen2.5-0.5b"}
EXIT_USAGE = 2


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from harness import finetune
    from workloads.choices import ATTN_IMPLEMENTATIONS, CACHES

    parser = argparse.ArgumentParser(
        prog="llmbench",
        description="Benchmark LLM workloads on this GPU (or CPU) and explain them against the hardware's limits.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    d.add_argument("--model", default="auto",
                   help="preset name (see `llmbench models`) or local model directory; "
                        f"auto = {DEFAULT_MODEL['cuda']} on GPU, {DEFAULT_MODEL['cpu']} on CPU")
    d.add_argument("--dtype", default="bf16,fp32",
                   help="precisions to compare, first is the baseline: fp32, tf32, bf16, fp16")
    d.add_argument("--batch-size", type=int_list, default=[1], metavar="N[,N...]", help="sequences per batch")
    d.add_argument("--prompt-len", type=int_list, default=[128], metavar="N[,N...]", help="prompt tokens")
    d.add_argument("--new-tokens", type=int_list, default=[64], metavar="N[,N...]", help="tokens to generate")
    d.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
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
    m.add_argument("--repeats", type=positive_int, default=3, help="timed generations per point")
    m.add_argument("--warmup", type=positive_int, default=1, help="untimed generations per point first")
    m.add_argument("--seed", type=int, default=0, help="seed for weights and prompts")
    m.add_argument("--out", type=Path, default=Path("results/runs"), help="folder for records.jsonl")
    m.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    m.add_argument("--no-ceilings", dest="ceilings", action="store_false",
                   help="do not measure missing ceilings first (records then lack MBU, MFU and bound)")

    finetune.add_parser(sub)

    pk = sub.add_parser(
        "peak", help="measure this device's ceilings: copy/triad bandwidth and matmul rate per precision",
        description="STREAM-style copy and triad bandwidth (bytes read + written) and dense square matmul "
                    "TFLOP/s per precision, stored as records next to the benchmarks they explain.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    pk.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    pk.add_argument("--dtype", default="all", help="matmul precisions; all = every one this device supports")
    pk.add_argument("--buffer-mb", type=positive_int, default=None,
                    help="MiB per bandwidth buffer (default 1024 on GPU, 256 on CPU)")
    pk.add_argument("--matmul-n", type=positive_int, default=None, help="matmul side (default 8192 GPU, 1024 CPU)")
    pk.add_argument("--out", type=Path, default=Path("results/runs"), help="folder for records.jsonl")

    rp = sub.add_parser(
        "report", help="roofline report (Markdown, HTML, PNG/SVG plots) from records",
        description="Read every record under the given folders (several machines and runs may be mixed), group "
                    "by device and precision, and write report.md, a self-contained report.html and plots.",
    )
    rp.add_argument("inputs", nargs="+", type=Path, metavar="RESULTS_DIR", help="folders or records files")
    rp.add_argument("--out", type=Path, default=None, help="report folder (default: FIRST_INPUT/report)")

    mo = sub.add_parser("models", help="list model presets with parameter counts and bytes per precision")
    mo.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")

    e = sub.add_parser("env", help="print the environment records are stamped with")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    e.add_argument("--json", action="store_true", help="print JSON")

    kernelbench.add_parser(sub)
    compare.add_parser(sub)
    pytest_bench.add_parser(sub)
    sweep.add_parser(sub)
    return parser


def cmd_decode(args) -> int:
    from harness.envinfo import capture, device_name
    from harness.records import new_run_id
    from harness.runner import DecodeJob, run_decode
    from workloads.attention import check_attn
    from workloads.choices import ENGINES
    from workloads.decode import DecodePoint, GenerationOptions, check_point
    from workloads.precision import check_supported, parse_precision, resolve_device
    from workloads.presets import resolve_model

    device = resolve_device(args.device)
    spec = resolve_model(DEFAULT_MODEL[device.type] if args.model == "auto" else args.model)
    precisions = [parse_precision(name) for name in args.dtype.split(",") if name.strip()]
    if not precisions:
        raise UserError("--dtype needs at least one precision, e.g. bf16,fp32")
    if len({p.name for p in precisions}) != len(precisions):
        raise UserError(f"--dtype lists a precision twice: {args.dtype}")
    for precision in precisions:
        check_supported(precision, device)
    check_attn(args.attn, device)
    points = [
        DecodePoint(b, p, n) for b in args.batch_size for p in args.prompt_len for n in args.new_tokens
    ]
    for point in points:
        check_point(spec, point)
    options = GenerationOptions(
        do_sample=args.do_sample, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        num_beams=args.num_beams, repetition_penalty=args.repetition_penalty, cache=args.cache,
        compile=args.compile,
    )
    options.validate(device)
    engines = [e.strip() for e in args.engine.split(",") if e.strip()]
    for engine in engines:
        if engine not in ENGINES:
            raise UserError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    if not engines or len(set(engines)) != len(engines):
        raise UserError(f"--engine needs distinct engines from {', '.join(ENGINES)}, got {args.engine!r}")
    if "lean" in engines:
        from workloads.lean import check_options

        check_options(options)
    if args.repeats < 1:
        raise UserError("--repeats must be at least 1")
    check_writable(args.out)

    print(f"llmbench decode: {spec.name} on {device} ({device_name(device)}), "
          f"{', '.join(p.name for p in precisions)}, {len(points)} point(s)", file=sys.stderr)
    run_id, env = new_run_id(), capture(device)
    ceilings = stored_or_measured_ceilings(args.out, device, precisions, run_id, env) if args.ceilings else None
    job = DecodeJob(spec, precisions, device, points, args.attn, options, tuple(engines), args.repeats, args.warmup,
                    args.seed, args.out, ceilings)
    records = run_decode(job, run_id, env, progress=args.progress)
    print(decode_table(records))
    print(f"\nrecords: {args.out / 'records.jsonl'}")
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        print(f"{len(failed)} of {len(records)} point(s) did not complete; see the error field of their records",
              file=sys.stderr)
        return 1
    return 0


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK):
        raise UserError(f"output folder {out} is not writable")


def stored_or_measured_ceilings(out: Path, device, precisions, run_id: str, env: dict):
    """This device's ceilings from the records in ``out``; what is missing is measured now and stored."""
    from harness import ceilings
    from harness.records import RECORDS_FILE, append_record, read_records

    key = ceilings.device_key({"env": env})
    known = ceilings.from_records(read_records([out]) if out.exists() else []).get(key)
    missing = [p for p in precisions if not known or p.name not in known.matmul_tflops]
    if known and known.copy_gbps and not missing:
        return known
    print("measuring this device's ceilings first (llmbench peak stores them for next time)", file=sys.stderr)
    measured = ceilings.measure(device, missing, run_id, env)
    for record in measured:
        append_record(out / RECORDS_FILE, record)
    return ceilings.from_records(read_records([out])).get(key)


def decode_table(records: list[dict]) -> str:
    """One row per record, grouped by point; speedup is tokens/s against the first
    precision (and engine) that completed at the same point."""
    from harness.tables import render

    keys = [(r["model"], r["batch_size"], r["prompt_len"], r["new_tokens"]) for r in records]
    baseline: dict[tuple, float] = {}
    for key, r in zip(keys, records):
        if r["metrics"].get("tokens_per_s") is not None:
            baseline.setdefault(key, r["metrics"]["tokens_per_s"])
    point_order = list(dict.fromkeys(keys))
    rows = []
    for key, r in sorted(zip(keys, records), key=lambda pair: point_order.index(pair[0])):
        m, d, c = r["metrics"], r["derived"], r["cost"]
        rate = m.get("tokens_per_s")
        rows.append({
            "model": r["model"], "dtype": r["dtype"], "engine": r.get("engine"), "batch": r["batch_size"],
            "prompt": r["prompt_len"],
            "new": r["new_tokens"], "status": r["status"], "tok_s": rate, "ttft": m.get("ttft_ms"),
            "tpot50": m.get("tpot_ms_p50"), "tpot90": m.get("tpot_ms_p90"), "gbps": d.get("achieved_gbps"),
            "speedup": rate / baseline[key] if rate is not None else None,
            "mem": m["peak_mem_bytes"] / 1e9 if "peak_mem_bytes" in m else None,
            "mb_step": c["bytes_per_step"] / 1e6 if "bytes_per_step" in c else None,
            "mbu": 100 * d["mbu"] if "mbu" in d else None, "bound": d.get("bound"),
        })
    engine = [("engine", "engine", "")] if len({r.get("engine") for r in records}) > 1 else []
    return render(rows, [
        ("model", "model", ""), ("dtype", "dtype", ""), *engine, ("batch", "batch", "d"), ("prompt", "prompt", "d"),
        ("new", "new", "d"), ("tok_s", "tok/s", ".2f"), ("speedup", "speedup", ".2f"),
        ("ttft", "TTFT ms", ".1f"), ("tpot50", "TPOT p50 ms", ".2f"), ("tpot90", "TPOT p90 ms", ".2f"),
        ("mb_step", "MB/step", ".1f"), ("gbps", "GB/s", ".2f"), ("mbu", "% peak BW", ".1f"),
        ("bound", "bound", ""), ("mem", "peak mem GB", ".2f"), ("status", "status", ""),
    ])


def cmd_peak(args) -> int:
    from harness import ceilings
    from harness.envinfo import capture
    from harness.records import RECORDS_FILE, append_record, new_run_id
    from harness.tables import render
    from workloads.precision import PRECISIONS, check_supported, parse_precision, resolve_device

    device = resolve_device(args.device)
    if args.dtype == "all":
        precisions = []
        for precision in PRECISIONS.values():
            try:
                check_supported(precision, device)
                precisions.append(precision)
            except UserError:
                pass
    else:
        precisions = [parse_precision(name) for name in args.dtype.split(",") if name.strip()]
        for precision in precisions:
            check_supported(precision, device)
    if args.buffer_mb == 0 or args.matmul_n == 0:
        raise UserError("--buffer-mb and --matmul-n must be positive")
    check_writable(args.out)
    env = capture(device)
    records = ceilings.measure(device, precisions, new_run_id(), env,
                               args.buffer_mb << 20 if args.buffer_mb else None, args.matmul_n)
    for record in records:
        append_record(args.out / RECORDS_FILE, record)
    spec = ceilings.spec_for(env["device_name"])
    rows = []
    for r in records:
        bandwidth = r["workload"] != "matmul"
        value = r["derived"]["achieved_gbps" if bandwidth else "achieved_tflops"]
        peak = (spec.mem_gbps if bandwidth else spec.tflops.get(r["dtype"])) if spec else None
        rows.append({"what": r["workload"], "dtype": r["dtype"], "value": value,
                     "unit": "GB/s" if bandwidth else "TFLOP/s", "spec": peak,
                     "pct": 100 * value / peak if peak else None, "ms": r["metrics"]["time_ms"]})
    print(f"{env['device_name']}" + (f" (spec: {spec.name})" if spec else " (no spec entry: measured values only)"))
    print(render(rows, [("what", "benchmark", ""), ("dtype", "dtype", ""), ("value", "measured", ".4g"),
                        ("unit", "unit", ""), ("spec", "spec", ".1f"), ("pct", "% of spec", ".1f"),
                        ("ms", "median ms", ".3f")]))
    print(f"\nrecords: {args.out / RECORDS_FILE}")
    return 0


def cmd_report(args) -> int:
    from harness.report import build

    first = args.inputs[0]
    out = args.out or ((first if first.is_dir() else first.parent) / "report")
    check_writable(out)
    md, html = build(args.inputs, out)
    print(f"report: {html}\n        {md}")
    return 0


def cmd_models(args) -> int:
    from harness.tables import render
    from workloads.cost import model_shape
    from workloads.presets import meta_model, preset_names, resolve_model

    rows = []
    for name in preset_names():
        spec = resolve_model(name)
        shape = model_shape(meta_model(spec))
        rows.append({
            "name": name, "family": spec.config.model_type, "params": shape.params,
            "params_m": shape.params / 1e6, "fp32_gb": shape.params * 4 / 1e9, "bf16_gb": shape.params * 2 / 1e9,
            "layers": shape.layers, "heads": shape.heads, "kv_heads": shape.kv_heads, "head_dim": shape.head_dim,
            "hidden": spec.config.hidden_size, "vocab": spec.config.vocab_size, "max_positions": spec.max_positions,
            "source": spec.source or "(test preset)",
        })
    if args.format == "json":
        print(json.dumps(rows, indent=1))
    elif args.format == "csv":
        import pandas as pd

        print(pd.DataFrame(rows).to_csv(index=False), end="")
    else:
        print(render(rows, [
            ("name", "preset", ""), ("family", "family", ""), ("params_m", "params (M)", ".1f"),
            ("fp32_gb", "fp32 GB", ".2f"), ("bf16_gb", "bf16/fp16 GB", ".2f"), ("layers", "layers", "d"),
            ("hidden", "hidden", "d"), ("heads", "heads", "d"), ("kv_heads", "kv heads", "d"),
            ("head_dim", "head dim", "d"), ("vocab", "vocab", "d"), ("max_positions", "max pos", "d"),
            ("source", "config from", ""),
        ]))
    return 0


def cmd_env(args) -> int:
    from harness.envinfo import capture
    from harness.telemetry import device_identity
    from workloads.precision import resolve_device

    device = resolve_device(args.device)
    env = capture(device)
    env.update({f"nvml_{k}": v for k, v in device_identity(device).items()})
    if args.json:
        print(json.dumps(env, indent=1))
    else:
        width = max(map(len, env))
        for key, value in env.items():
            print(f"{key.ljust(width)}  {'-' if value is None else value}")
    return 0


def cmd_finetune(args) -> int:
    from harness import finetune

    return finetune.main(args)


COMMANDS = {"decode": cmd_decode, "finetune": cmd_finetune, "peak": cmd_peak, "report": cmd_report,
            "models": cmd_models, "env": cmd_env, "kernel": kernelbench.main, "compare": compare.main,
            "import-pytest-benchmark": pytest_bench.main, "sweep": sweep.main}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"llmbench {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"llmbench {args.command}: interrupted; records written so far are complete", file=sys.stderr)
        return 130
