"""``llmbench kernel attention|decode-attention``: our Triton kernels against PyTorch's.

``attention``: our fused attention against PyTorch SDPA's backends and eager.
Sweeps sequence length, causal or not, head dim, GQA ratio, precision and mode
(forward, backward, forward+backward); every implementation runs every point, on
fresh random inputs, timed by ``harness.runner`` (``triton.testing.do_bench`` on
a GPU: median and p10/p90 of its repetitions). Each point is one record
(workload ``attention``, ``attn`` = implementation) with time, TFLOP/s and GB/s
from the cost model, MFU against the measured matmul ceiling and the bound. A
backend that cannot run a point is recorded as ``skipped`` with PyTorch's
reason, one that runs out of memory as ``oom``; neither stops the sweep.

Sizes follow FlashAttention's benchmark: ``batch = tokens // seq_len`` and
``heads = 2048 // head_dim`` unless given, so every point does comparable work.

``decode-attention``: one new token per sequence over a full KV cache, our
split-K kernel (contiguous and paged) against SDPA and eager, over batch size,
context length, GQA ratio and precision; the figure of merit is the bandwidth of
the KV read (GB/s and % of the measured copy bandwidth).

``compile``: no GPU needed. Compiles every kernel, in every autotune candidate of each
architecture's table, for sm_80/sm_90/sm_100 (``workloads.kernelcompile``) and records
what the chip would spend: registers, spills, shared memory, occupancy. A candidate
that spills or does not fit is a defect the interpreter-run tests cannot see. Exit 1
when a kernel x arch x dtype x head dim x case has no spill-free candidate that fits, or a
candidate fails to compile.
"""

from __future__ import annotations

import argparse
import sys
from itertools import product

from harness import options
from workloads import kernelcompile
from workloads.choices import ATTENTION_IMPLS, ATTENTION_MODES, DECODE_ATTENTION_IMPLS, PRECISIONS, SDPA_BACKENDS
from workloads.errors import UserError

DEFAULT_SEQ = {"cuda": [512, 1024, 2048, 4096, 8192, 16384], "cpu": [128, 256, 512]}
DEFAULT_CONTEXT = {"cuda": [1024, 4096, 16384, 32768], "cpu": [256, 1024]}
CAUSAL = {"both": (True, False), "yes": (True,), "no": (False,)}


def _csv(values: list[int]) -> str:
    return ",".join(map(str, values))


def add_parser(sub) -> None:
    k = sub.add_parser("kernel", help="kernel microbenchmarks: our Triton kernels against PyTorch's",
                       description="Benchmark one kernel family across implementations; records go to OUT.")
    ksub = k.add_subparsers(dest="kernel", required=True, metavar="KERNEL")
    a = ksub.add_parser(
        "attention", help="fused attention: triton (ours) vs SDPA backends vs eager, forward and backward",
        description="Time fused attention over a sweep of sequence lengths, causal/non-causal, head dims, GQA "
                    "ratios, precisions and modes. Every implementation runs every point; unavailable ones are "
                    "recorded as skipped. Records are appended to OUT/records.jsonl.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    a.add_argument("--impl", default="triton,sdpa,eager",
                   help=f"implementations: {', '.join(ATTENTION_IMPLS)}; sdpa = every SDPA backend")
    a.add_argument("--dtype", default="bf16", help="precisions: bf16, fp16, fp32, tf32")
    a.add_argument("--seq-len", type=options.int_list, default=None, metavar=options.INT_LIST,
                   help=f"sequence lengths (queries = keys); default {_csv(DEFAULT_SEQ['cuda'])} on GPU, "
                        f"{_csv(DEFAULT_SEQ['cpu'])} on CPU")
    a.add_argument("--head-dim", type=options.int_list, default=[64, 128], metavar=options.INT_LIST,
                   help="head dims")
    a.add_argument("--causal", choices=tuple(CAUSAL), default="both", help="causal masking")
    a.add_argument("--gqa", type=options.int_list, default=[1], metavar="R[,R...]",
                   help="query heads per KV head (1 = multi-head attention)")
    a.add_argument("--mode", default="fwd,fwd+bwd", help=f"what is timed: {', '.join(ATTENTION_MODES)}")
    a.add_argument("--tokens", type=options.positive_int, default=16384, help="batch = tokens // seq_len (at least 1)")
    a.add_argument("--batch-size", type=options.positive_int, default=None, help="fixed batch size instead of --tokens")
    a.add_argument("--heads", type=options.positive_int, default=None, help="query heads (default 2048 // head_dim)")
    _add_common(a)

    d = ksub.add_parser(
        "decode-attention", help="decode attention over a KV cache: triton (ours, contiguous and paged) vs SDPA "
                                 "vs eager",
        description="Time one new token per sequence attending to a full KV cache, over batch sizes, context "
                    "lengths, GQA ratios and precisions. Reports the KV-read bandwidth against the measured copy "
                    "bandwidth. Records are appended to OUT/records.jsonl.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d.add_argument("--impl", default=",".join(DECODE_ATTENTION_IMPLS),
                   help=f"implementations: {', '.join(DECODE_ATTENTION_IMPLS)}")
    d.add_argument("--dtype", default="bf16", help="precisions: bf16, fp16, fp32")
    d.add_argument("--batch-size", type=options.int_list, default=[1, 8, 32, 64], metavar=options.INT_LIST,
                   help="sequences")
    d.add_argument("--context", type=options.int_list, default=None, metavar=options.INT_LIST,
                   help=f"cached tokens per sequence; default {_csv(DEFAULT_CONTEXT['cuda'])} on GPU, "
                        f"{_csv(DEFAULT_CONTEXT['cpu'])} on CPU")
    d.add_argument("--heads", type=options.positive_int, default=32, help="query heads (Llama-3.1-8B: 32)")
    d.add_argument("--gqa", type=options.int_list, default=[4], metavar="R[,R...]",
                   help="query heads per KV head (Llama-3.1-8B: 4)")
    d.add_argument("--head-dim", type=options.int_list, default=[128], metavar=options.INT_LIST, help="head dims")
    d.add_argument("--kv-dtype", default="auto",
                   help="KV-cache formats: auto (the compute dtype), int8, fp8 (float8_e4m3fn, sm_89+); int8 and "
                        "fp8 store a float32 scale per token and KV head, are read by our kernel only, and their "
                        "bytes are counted as stored")
    _add_common(d)

    c = ksub.add_parser(
        "compile", help="compile every kernel and autotune candidate for real GPU architectures, no GPU needed: "
                        "registers, spills, shared memory, occupancy",
        description="Compile our Triton kernels (fused attention forward and backward, decode attention split and "
                    "combine) in every autotune candidate of each architecture's table, the way the wrappers launch "
                    "them (causal, masked, GQA, paged ...), with Triton's bundled ptxas, and record registers per "
                    "thread, spill bytes, shared memory and programs per SM. No GPU is needed. Compiled kernels are "
                    "cached (Triton's cache), so a second run is fast. Exits 1 when some kernel x arch x dtype x "
                    "head dim x case has no candidate that fits without spilling. Records go to OUT/records.jsonl "
                    "(workload kernel-compile).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    c.add_argument("--arch", default=",".join(kernelcompile.DEFAULT_ARCHS),
                   help="GPU architectures: sm_80 (A100), sm_86, sm_89, sm_90 (H100/H200), sm_100 (B200), sm_120")
    c.add_argument("--dtype", default="bf16", help=f"precisions: {', '.join(kernelcompile.DTYPES)}")
    c.add_argument("--head-dim", type=options.int_list, default=list(kernelcompile.DEFAULT_HEAD_DIMS),
                   metavar=options.INT_LIST, help="head dims (the presets use 64, 128; up to 256)")
    c.add_argument("--family", default=",".join(kernelcompile.CASES),
                   help=f"kernel families: {', '.join(kernelcompile.CASES)}")
    c.add_argument("--case", default="all",
                   help="cases to compile, 'all' or a list of: " + "; ".join(
                       f"{family}: {', '.join(cases)}" for family, cases in kernelcompile.CASES.items()))
    c.add_argument("--workers", type=options.positive_int, default=None,
                   help="compiler processes (default: one per CPU core)")
    c.set_defaults(validate=validate)
    options.add_out(c)
    options.add_progress(c)


def _add_common(p) -> None:
    p.set_defaults(validate=validate)
    options.add_device(p)
    options.add_seed(p, "inputs")
    options.add_out(p)
    options.add_progress(p)
    options.add_ceilings(p)


def _precisions(text: str, device) -> list:
    from workloads.precision import check_supported, parse_precision

    precisions = [parse_precision(n) for n in options.names(text, PRECISIONS, "dtype")]
    for precision in precisions if device is not None else ():
        check_supported(precision, device)
    return precisions


def _default(sizes: dict, device) -> list[int]:
    return sizes["cpu" if device is not None and device.type != "cuda" else "cuda"]


def decode_points(args, device) -> list:
    """Every (precision, point) of a decode-attention sweep, implementations innermost."""
    from workloads.kernelbench import QUANTIZED_KV, DecodeAttentionPoint, check_point

    impls = options.names(args.impl, DECODE_ATTENTION_IMPLS, "impl")
    kv_dtypes = [None if kv == "auto" else kv for kv in options.names(args.kv_dtype, ["auto", *QUANTIZED_KV],
                                                                      "KV-cache format")]
    contexts = args.context or _default(DEFAULT_CONTEXT, device)
    out = []
    for precision, head_dim, gqa, batch, context, kv, impl in product(
            _precisions(args.dtype, device), args.head_dim, args.gqa, args.batch_size, contexts, kv_dtypes, impls):
        if args.heads % gqa:
            raise UserError(f"--gqa {gqa} does not divide {args.heads} query heads")
        if kv is not None and not impl.startswith("triton"):
            continue  # only our kernel reads a quantized cache; the others run at the compute dtype
        point = DecodeAttentionPoint(impl, batch, args.heads, args.heads // gqa, context, head_dim, kv)
        check_point(point)
        out.append((precision, point))
    if not out:
        raise UserError("no point to run: int8 and fp8 caches are read by the triton implementations only")
    return out


def attention_points(args, device) -> list:
    """Every (precision, point) of the sweep, implementations innermost so comparisons sit together."""
    from workloads.kernelbench import AttentionPoint, check_point

    impls = options.names(args.impl, ATTENTION_IMPLS, "impl", {"sdpa": list(SDPA_BACKENDS)})
    modes = options.names(args.mode, ATTENTION_MODES, "mode")
    precisions = _precisions(args.dtype, device)
    seq_lens = args.seq_len or _default(DEFAULT_SEQ, device)
    out = []
    for precision, head_dim, causal, gqa, seq, mode, impl in product(
            precisions, args.head_dim, CAUSAL[args.causal], args.gqa, seq_lens, modes, impls):
        heads = args.heads or max(1, 2048 // head_dim)
        if heads % gqa:
            raise UserError(f"--gqa {gqa} does not divide {heads} query heads")
        batch = args.batch_size or max(1, args.tokens // seq)
        point = AttentionPoint(impl, batch, heads, heads // gqa, seq, head_dim, causal, mode)
        check_point(point)
        out.append((precision, point))
    return out


def compile_tasks(args) -> list:
    """Every (case, arch) a compile run covers, arch innermost."""
    from kernels.resources import ARCHS, parse_arch

    archs = []
    for text in (a for a in args.arch.split(",") if a.strip()):
        try:
            archs.append(ARCHS[parse_arch(text)].name)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    if not archs:
        raise UserError("--arch names no architecture")
    families = options.names(args.family, list(kernelcompile.CASES), "kernel family")
    known = [case for family in families for case in kernelcompile.CASES[family]]
    chosen = known if args.case.strip() == "all" else options.names(args.case, list(dict.fromkeys(known)), "case")
    dtypes = options.names(args.dtype, kernelcompile.DTYPES, "dtype")
    big = [d for d in args.head_dim if d > 256]
    if big:
        raise UserError(f"head dim {big[0]} is not supported by the kernels (at most 256)")
    cases = [c for c in kernelcompile.cases(families, dtypes, args.head_dim) if c.case in chosen]
    return [(case, arch) for case in cases for arch in dict.fromkeys(archs)]


def validate(args) -> None:
    """What a sweep checks before submitting a point: every point of the sweep, without the device."""
    if args.kernel == "compile":
        compile_tasks(args)
    else:
        decode_points(args, None) if args.kernel == "decode-attention" else attention_points(args, None)


def run_compile(args) -> int:
    import torch
    from tqdm import tqdm

    from harness import views
    from harness.envinfo import capture
    from harness.records import RECORDS_FILE, append_record, make_record, new_run_id
    from kernels.resources import ptxas_missing

    tasks = compile_tasks(args)
    missing = ptxas_missing()
    if missing:
        raise UserError(missing)
    options.check_writable(args.out)
    print(f"llmbench kernel compile: {len(tasks)} case(s) x arch, every autotune candidate; no GPU used",
          file=sys.stderr)
    run_id, env = new_run_id(), capture(torch.device("cpu"))
    records = []
    with tqdm(total=len(tasks), desc="compile", unit="case", disable=not args.progress) as bar:
        for rows in kernelcompile.run(tasks, args.workers, done=lambda *_: bar.update()):
            for row in rows:
                record = make_record(run_id=run_id, point=row["point"], status=row["status"], error=row["error"],
                                     metrics=row["metrics"], env=env)
                append_record(args.out / RECORDS_FILE, record)
                records.append(record)
    print(views.compile_table(records))
    lacking = kernelcompile.without_clean(records)
    for kernel, arch, dtype, head_dim, case in lacking:
        print(f"no spill-free candidate that fits: {kernel} on {arch}, {dtype}, head dim {head_dim}, case {case}",
              file=sys.stderr)
    failed = sum(r["status"] == "failed" for r in records)
    if failed:
        print(f"{failed} candidate(s) failed to compile (see the error column)", file=sys.stderr)
    print(f"\nrecords: {args.out / RECORDS_FILE}")
    return 1 if lacking or failed else 0


def _print_chosen(decode: bool) -> None:
    """What the autotuner picked for our kernels and what that candidate costs on this GPU (registers,
    spills, shared memory), so a timing comes with its reason. Nothing under the interpreter."""
    from kernels import attention, decode_attention
    from kernels.resources import chosen

    tuned = (decode_attention if decode else attention).autotuners()
    lines = [f"  {name} {pick['key']}: {pick['candidate']}, {pick['registers']} registers, {pick['spills']} spilled, "
             f"{pick['shared_bytes'] / 1024:.0f} KB shared"
             for name, kernel in tuned.items() for pick in chosen(kernel)]
    if lines:
        print("\nour kernels' autotuned candidates (tuning key: choice, resources):", *lines, sep="\n")


def run(args) -> int:
    if args.kernel == "compile":
        return run_compile(args)
    from harness import ceilings, runner, views
    from harness.envinfo import capture, device_name
    from harness.records import RECORDS_FILE, new_run_id
    from workloads.kernelbench import KernelWorkload
    from workloads.precision import resolve_device

    device = resolve_device(args.device)
    decode = args.kernel == "decode-attention"
    sweep = decode_points(args, device) if decode else attention_points(args, device)
    options.check_writable(args.out)
    print(f"llmbench kernel {args.kernel}: {len(sweep)} point(s) on {device} ({device_name(device)})",
          file=sys.stderr)
    run_id, env = new_run_id(), capture(device)
    precisions = list(dict.fromkeys(p for p, _ in sweep))
    known = ceilings.stored_or_measured(args.out, device, precisions, run_id, env,
                                        remeasure=args.remeasure) if args.ceilings else None
    workloads = [KernelWorkload(args.kernel, precision, device, [pt for p, pt in sweep if p == precision], args.seed)
                 for precision in precisions]
    records = runner.run(workloads, run_id, env, out=args.out, ceilings=known, progress=args.progress,
                         desc=args.kernel)
    print(views.decode_attention_table(records) if decode else views.attention_table(records))
    _print_chosen(decode)
    print(f"\nrecords: {args.out / RECORDS_FILE}")
    return 1 if any(r["status"] == "failed" for r in records) else 0
