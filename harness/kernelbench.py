"""``llmbench kernel attention|decode-attention``: our Triton kernels against PyTorch's.

``attention``: our fused attention against PyTorch SDPA's backends and eager.

Sweeps sequence length, causal or not, head dim, GQA ratio, precision and mode
(forward, backward, forward+backward); every implementation runs every point, on
fresh random inputs, timed with ``triton.testing.do_bench`` on a GPU (median and
p10/p90 of its repetitions). Each point is one record (workload ``attention``,
``attn`` = implementation) with time, TFLOP/s and GB/s from the cost model, MFU
against the measured matmul ceiling and the bound. A backend that cannot run a
point is recorded as ``skipped`` with PyTorch's reason, one that runs out of
memory as ``oom``; neither stops the sweep.

Sizes follow FlashAttention's benchmark: ``batch = tokens // seq_len`` and
``heads = 2048 // head_dim`` unless given, so every point does comparable work.

``decode-attention``: one new token per sequence over a full KV cache, our
split-K kernel (contiguous and paged) against SDPA and eager, over batch size,
context length, GQA ratio and precision; the figure of merit is the bandwidth of
the KV read (GB/s and % of the measured copy bandwidth).
"""

from __future__ import annotations

import argparse
import sys
from itertools import product
from pathlib import Path


from workloads.errors import UserError

DEFAULT_SEQ = {"cuda": [512, 1024, 2048, 4096, 8192, 16384], "cpu": [128, 256, 512]}
DEFAULT_CONTEXT = {"cuda": [1024, 4096, 16384, 32768], "cpu": [256, 1024]}
CAUSAL = {"both": (True, False), "yes": (True,), "no": (False,)}


def add_parser(sub) -> None:
    from harness.cli import int_list, positive_int
    from workloads.choices import ATTENTION_IMPLS as IMPLS
    from workloads.choices import ATTENTION_MODES as MODES

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
                   help=f"implementations: {', '.join(IMPLS)}; sdpa = every SDPA backend")
    a.add_argument("--dtype", default="bf16", help="precisions: bf16, fp16, fp32, tf32")
    a.add_argument("--seq-len", type=int_list, default=None, metavar="N[,N...]",
                   help="sequence lengths (queries = keys); default "
                        f"{','.join(map(str, DEFAULT_SEQ['cuda']))} on GPU, {','.join(map(str, DEFAULT_SEQ['cpu']))} "
                        "on CPU")
    a.add_argument("--head-dim", type=int_list, default=[64, 128], metavar="N[,N...]", help="head dims")
    a.add_argument("--causal", choices=tuple(CAUSAL), default="both", help="causal masking")
    a.add_argument("--gqa", type=int_list, default=[1], metavar="R[,R...]",
                   help="query heads per KV head (1 = multi-head attention)")
    a.add_argument("--mode", default="fwd,fwd+bwd", help=f"what is timed: {', '.join(MODES)}")
    a.add_argument("--tokens", type=positive_int, default=16384, help="batch = tokens // seq_len (at least 1)")
    a.add_argument("--batch-size", type=positive_int, default=None, help="fixed batch size instead of --tokens")
    a.add_argument("--heads", type=positive_int, default=None, help="query heads (default 2048 // head_dim)")
    _add_common(a)

    from workloads.choices import DECODE_ATTENTION_IMPLS as DECODE_IMPLS

    d = ksub.add_parser(
        "decode-attention", help="decode attention over a KV cache: triton (ours, contiguous and paged) vs SDPA "
                                 "vs eager",
        description="Time one new token per sequence attending to a full KV cache, over batch sizes, context "
                    "lengths, GQA ratios and precisions. Reports the KV-read bandwidth against the measured copy "
                    "bandwidth. Records are appended to OUT/records.jsonl.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d.add_argument("--impl", default=",".join(DECODE_IMPLS), help=f"implementations: {', '.join(DECODE_IMPLS)}")
    d.add_argument("--dtype", default="bf16", help="precisions: bf16, fp16, fp32")
    d.add_argument("--batch-size", type=int_list, default=[1, 8, 32, 64], metavar="N[,N...]", help="sequences")
    d.add_argument("--context", type=int_list, default=None, metavar="N[,N...]",
                   help="cached tokens per sequence; default "
                        f"{','.join(map(str, DEFAULT_CONTEXT['cuda']))} on GPU, "
                        f"{','.join(map(str, DEFAULT_CONTEXT['cpu']))} on CPU")
    d.add_argument("--heads", type=positive_int, default=32, help="query heads (Llama-3.1-8B: 32)")
    d.add_argument("--gqa", type=int_list, default=[4], metavar="R[,R...]",
                   help="query heads per KV head (Llama-3.1-8B: 4)")
    d.add_argument("--head-dim", type=int_list, default=[128], metavar="N[,N...]", help="head dims")
    _add_common(d)


def _add_common(p) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0, help="seed for the inputs")
    p.add_argument("--out", type=Path, default=Path("results/runs"), help="folder for records.jsonl")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    p.add_argument("--no-ceilings", dest="ceilings", action="store_false",
                   help="do not measure missing ceilings first (records then lack MBU, MFU and bound)")


def _names(text: str, allowed, what: str, aliases: dict | None = None) -> list[str]:
    out = []
    for name in (n.strip() for n in text.split(",")):
        if not name:
            continue
        expanded = (aliases or {}).get(name, [name])
        for item in expanded:
            if item not in allowed:
                raise UserError(f"unknown {what} {item!r}; choose from {', '.join(allowed)}")
            if item not in out:
                out.append(item)
    if not out:
        raise UserError(f"--{what} needs at least one value")
    return out


def _precisions(text: str, device: torch.device) -> list:
    from workloads.precision import check_supported, parse_precision

    precisions = [parse_precision(n) for n in _names(text, ("fp32", "tf32", "bf16", "fp16"), "dtype")]
    for precision in precisions:
        check_supported(precision, device)
    return precisions


def decode_points(args, device: torch.device) -> list:
    """Every (precision, point) of a decode-attention sweep, implementations innermost."""
    from workloads.kernelbench import DECODE_IMPLS, DecodeAttentionPoint, check_point

    impls = _names(args.impl, DECODE_IMPLS, "impl")
    contexts = args.context or DEFAULT_CONTEXT["cuda" if device.type == "cuda" else "cpu"]
    out = []
    for precision, head_dim, gqa, batch, context, impl in product(
            _precisions(args.dtype, device), args.head_dim, args.gqa, args.batch_size, contexts, impls):
        if gqa < 1 or args.heads % gqa:
            raise UserError(f"--gqa {gqa} does not divide {args.heads} query heads")
        point = DecodeAttentionPoint(impl, batch, args.heads, args.heads // gqa, context, head_dim)
        check_point(point)
        out.append((precision, point))
    return out


def points(args, device: torch.device) -> list:
    """Every (precision, point) of the sweep, implementations innermost so comparisons sit together."""
    from workloads.kernelbench import IMPLS, MODES, SDPA_BACKENDS, AttentionPoint, check_point

    impls = _names(args.impl, IMPLS, "impl", {"sdpa": list(SDPA_BACKENDS)})
    modes = _names(args.mode, MODES, "mode")
    precisions = _precisions(args.dtype, device)
    seq_lens = args.seq_len or DEFAULT_SEQ["cuda" if device.type == "cuda" else "cpu"]
    out = []
    for precision, head_dim, causal, gqa, seq, mode, impl in product(
            precisions, args.head_dim, CAUSAL[args.causal], args.gqa, seq_lens, modes, impls):
        heads = args.heads or max(1, 2048 // head_dim)
        if gqa < 1 or heads % gqa:
            raise UserError(f"--gqa {gqa} does not divide {heads} query heads")
        batch = args.batch_size or max(1, args.tokens // seq)
        point = AttentionPoint(impl, batch, heads, heads // gqa, seq, head_dim, causal, mode)
        check_point(point)
        out.append((precision, point))
    return out


def main(args) -> int:
    from tqdm import tqdm

    from harness.cli import check_writable, stored_or_measured_ceilings
    from harness.envinfo import capture, device_name
    from harness.records import RECORDS_FILE, append_record, new_run_id
    from workloads.precision import resolve_device

    device = resolve_device(args.device)
    decode = args.kernel == "decode-attention"
    sweep = decode_points(args, device) if decode else points(args, device)
    check_writable(args.out)
    print(f"llmbench kernel {args.kernel}: {len(sweep)} point(s) on {device} ({device_name(device)})",
          file=sys.stderr)
    run_id, env = new_run_id(), capture(device)
    precisions = list(dict.fromkeys(p for p, _ in sweep))
    ceilings = stored_or_measured_ceilings(args.out, device, precisions, run_id, env) if args.ceilings else None
    records = []
    with tqdm(sweep, desc=args.kernel, unit="point", file=sys.stderr, disable=None if args.progress else True,
              leave=False) as bar:
        for precision, point in bar:
            bar.set_description(f"{point.impl} {precision.name} " + (
                f"b={point.batch_size} ctx={point.context}" if decode else
                f"s={point.seq_len} d={point.head_dim} {point.mode}"))
            record = measure(args.kernel, point, precision, device, args.seed, run_id, env, ceilings)
            append_record(args.out / RECORDS_FILE, record)
            records.append(record)
    print(decode_attention_table(records) if decode else attention_table(records))
    print(f"\nrecords: {args.out / RECORDS_FILE}")
    return 1 if any(r["status"] == "failed" for r in records) else 0


def measure(kernel: str, point, precision, device: torch.device, seed: int, run_id: str, env: dict,
            ceilings) -> dict:
    """One record for one point of ``kernel`` (attention or decode-attention): ok with metrics, or
    skipped / oom / failed with the reason."""
    import numpy as np
    import torch

    from harness.records import make_record
    from harness.roofline import utilization
    from harness.runner import describe_failure
    from harness.timing import bench, spread
    from workloads import kernelbench as kb
    from workloads.precision import matmul_mode

    make_case, cost_of = {"attention": (kb.attention_case, kb.attention_cost),
                          "decode-attention": (kb.decode_attention_case, kb.decode_attention_cost)}[kernel]
    fields = {"workload": kernel, "attn": point.impl, "dtype": precision.name,
              "weights_dtype": precision.dtype_name, "matmul_precision": precision.matmul_precision,
              "device": str(device), **point.fields(), "seed": seed}
    case = None
    try:
        with matmul_mode(precision):
            case = make_case(point, precision, device, seed)
            times = bench(case.fn, device, grad_to_none=case.grads)
    except kb.Unsupported as exc:
        return make_record(run_id=run_id, point=fields, status="skipped", error=str(exc), env=env)
    except Exception as exc:  # recorded, and the sweep goes on
        status, error = describe_failure(exc)
        return make_record(run_id=run_id, point=fields, status=status, error=error, env=env)
    finally:
        del case
        if device.type == "cuda":
            torch.cuda.empty_cache()
    seconds = float(np.median(times)) / 1e3
    cost = cost_of(point, precision.bytes_per_element)
    gbps, tflops = cost.bytes / seconds / 1e9, cost.flops / seconds / 1e12
    intensity = cost.flops / cost.bytes
    derived = {"achieved_gbps": gbps, "achieved_tflops": tflops, "arithmetic_intensity": intensity,
               **utilization(gbps, tflops, intensity, precision.name, ceilings)}
    return make_record(run_id=run_id, point=fields,
                       metrics={"time_ms": seconds * 1e3, **spread(times, "time_ms"), "repeats": len(times)},
                       cost={"bytes": cost.bytes, "flops": cost.flops}, derived=derived, env=env)


def attention_table(records: list[dict]) -> str:
    """One row per record that ran; speedup is SDPA-flash's time over this implementation's at the same
    point. Skipped implementations are summarised below the table, once per reason."""
    from harness.tables import render

    def key(r):
        return (r["dtype"], r["mode"], r["causal"], r["head_dim"], r["kv_heads"], r["seq_len"], r["batch_size"])

    flash = {key(r): r["metrics"]["time_ms"] for r in records if r["attn"] == "sdpa-flash" and r["status"] == "ok"}
    skipped: dict[tuple[str, str], int] = {}
    rows = []
    for r in records:
        if r["status"] == "skipped":
            reason = (r["attn"], r["error"] or "")
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        m, d = r["metrics"], r["derived"]
        ms = m.get("time_ms")
        base = flash.get(key(r))
        rows.append({
            "impl": r["attn"], "dtype": r["dtype"], "mode": r["mode"], "causal": "yes" if r["causal"] else "no",
            "head_dim": r["head_dim"], "heads": f"{r['heads']}/{r['kv_heads']}", "seq": r["seq_len"],
            "batch": r["batch_size"], "ms": ms, "tflops": d.get("achieved_tflops"),
            "vs_flash": base / ms if base and ms else None, "mfu": 100 * d["mfu"] if "mfu" in d else None,
            "status": r["status"] if r["status"] == "ok" else f"{r['status']}: {(r['error'] or '')[:60]}",
        })
    table = render(rows, [
        ("impl", "impl", ""), ("dtype", "dtype", ""), ("mode", "mode", ""), ("causal", "causal", ""),
        ("head_dim", "head dim", "d"), ("heads", "heads/kv", ""), ("seq", "seq", "d"), ("batch", "batch", "d"),
        ("ms", "median ms", ".3f"), ("tflops", "TFLOP/s", ".4g"), ("vs_flash", "x sdpa-flash", ".2f"),
        ("mfu", "% matmul peak", ".1f"), ("status", "status", ""),
    ])
    notes = [f"skipped {impl} at {n} point(s): {reason}" for (impl, reason), n in skipped.items()]
    return "\n".join([table, *notes])


def decode_attention_table(records: list[dict]) -> str:
    """One row per record that ran: KV-read bandwidth, % of measured copy bandwidth, speed over SDPA."""
    from harness.tables import render

    def key(r):
        return (r["dtype"], r["head_dim"], r["kv_heads"], r["batch_size"], r["context"])

    sdpa = {key(r): r["metrics"]["time_ms"] for r in records if r["attn"] == "sdpa" and r["status"] == "ok"}
    rows, notes = [], {}
    for r in records:
        if r["status"] == "skipped":
            notes[(r["attn"], r["error"] or "")] = notes.get((r["attn"], r["error"] or ""), 0) + 1
            continue
        m, d = r["metrics"], r["derived"]
        ms, base = m.get("time_ms"), sdpa.get(key(r))
        rows.append({
            "impl": r["attn"], "dtype": r["dtype"], "batch": r["batch_size"], "context": r["context"],
            "heads": f"{r['heads']}/{r['kv_heads']}", "head_dim": r["head_dim"],
            "us": ms * 1e3 if ms else None, "gbps": d.get("achieved_gbps"),
            "mbu": 100 * d["mbu"] if "mbu" in d else None, "vs_sdpa": base / ms if base and ms else None,
            "status": r["status"] if r["status"] == "ok" else f"{r['status']}: {(r['error'] or '')[:60]}",
        })
    table = render(rows, [
        ("impl", "impl", ""), ("dtype", "dtype", ""), ("batch", "batch", "d"), ("context", "context", "d"),
        ("heads", "heads/kv", ""), ("head_dim", "head dim", "d"), ("us", "median us", ".1f"),
        ("gbps", "GB/s", ".1f"), ("mbu", "% peak BW", ".1f"), ("vs_sdpa", "x sdpa", ".2f"), ("status", "status", ""),
    ])
    return "\n".join([table, *(f"skipped {impl} at {n} point(s): {why}" for (impl, why), n in notes.items())])
