"""``llmbench peak``: measure this device's ceilings and store them as records.

STREAM-style copy and triad bandwidth (bytes read + written) at several buffer
sizes well beyond the last-level cache, and per precision a dense square matmul
plus, with ``--model``, the shapes that model's projections run at prefill and
decode (``harness.ceilings``). Each record is one size; its rate is the shortest
call's, with the spread kept beside it. The table shows the best per kind against
the datasheet; below it, each kind's spread and the sizes tried, and the
environment fingerprint the ceilings belong to. The records go next to the
benchmarks they explain; every later command on the same ``--out`` divides by them
(and measures them again when its fingerprint differs).

With more than one GPU on the node (or ``--nproc N`` > 1, on CPUs too, over gloo)
it then measures the communication ceiling: it starts N processes under torchrun
(``harness.launch``), and each runs ``llmbench peak`` again, which under torchrun
measures only that: sum all-reduces of fp32 messages from 1 MiB to 1 GiB (64 MiB
on a CPU), the bus bandwidth as nccl-tests defines it (``workloads.micro``),
recorded by rank 0. Started by torchrun on several nodes (a multi-node sweep
point), it measures the all-reduce across the nodes.
"""

from __future__ import annotations

import argparse

from harness import options


def add_parser(sub) -> None:
    pk = sub.add_parser(
        "peak", help="measure this device's ceilings: copy/triad bandwidth and matmul rate per precision",
        description="STREAM-style copy and triad bandwidth (bytes read + written) at several buffer sizes and "
                    "dense matmul TFLOP/s per precision (square, plus a model's shapes with --model); each "
                    "ceiling is the best call over repeated calls at every size, stored as records next to "
                    "the benchmarks they explain.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    options.add_device(pk)
    pk.add_argument("--dtype", default="all", help="matmul precisions; all = every one this device supports")
    pk.add_argument("--buffer-mb", type=options.int_list, default=None, metavar=options.INT_LIST,
                    help="MiB per bandwidth buffer, each size tried (default: from 4x the last-level cache, at least 256 "
                         "MiB on GPU and 64 on CPU, then 4x and 8x that on GPU, 1.5x and 2x on CPU)")
    pk.add_argument("--matmul-n", type=options.positive_int, default=None,
                    help="square matmul side (default 8192 GPU, 1024 CPU)")
    pk.add_argument("--model", default=None,
                    help="also measure the matmul shapes of this preset's projections (or local model directory)")
    pk.add_argument("--tokens", type=options.int_list, default=[1, 512], metavar=options.INT_LIST,
                    help="with --model: the token counts its projections run at (decode batch, prefill batch x prompt)")
    pk.add_argument("--nproc", type=options.positive_int, default=None,
                    help="processes for the all-reduce ceiling, one GPU each (default: this node's GPUs when more "
                         "than one, else 1: none); more than one starts them under torchrun after the other "
                         "ceilings. Under torchrun, peak measures only the all-reduce, across all its processes")
    pk.add_argument("--allreduce-mb", type=options.int_list, default=None, metavar=options.INT_LIST,
                    help="MiB per all-reduce message, each size tried (default 1,4,16,64,256,1024 on GPU; "
                         "1,4,16,64 on CPU)")
    options.add_out(pk)
    pk.set_defaults(validate=validate, command_parser=pk)


ALLREDUCE_MB = {"cuda": [1, 4, 16, 64, 256, 1024], "cpu": [1, 4, 16, 64]}


def _size(r: dict) -> str:
    if r["workload"] == "allreduce":
        return f"{r['message_bytes'] / 2**20:g} MiB"
    if r["workload"] == "matmul":
        return f"{r['m']}x{r['n']}x{r['k']}"
    return f"{r['elements'] * 4 / 2**20:g} MiB"


def spread_line(best: dict, group: list[dict]) -> str:
    """One ceiling kind: the best rate and its size, that size's median and p10-p90 rates, and
    every size tried (with its best)."""
    unit, rate = ("TFLOP/s", "tflops") if best["workload"] == "matmul" else ("GB/s", "gbps")
    head = f"{best['workload']} {best['dtype']}: "
    if best["status"] != "ok":
        return head + f"{best['status']} at every size tried ({', '.join(_size(r) for r in group)})"
    d = best["derived"]
    tried = ", ".join(f"{_size(r)} {r['derived'][f'achieved_{rate}']:.4g}" if r["status"] == "ok"
                      else f"{_size(r)} {r['status']}" for r in group)
    return (head + f"best {d[f'achieved_{rate}']:.4g} {unit} at {_size(best)} (there: median "
            f"{d[f'median_{rate}']:.4g}, p10-p90 {d[f'p10_{rate}']:.4g}-{d[f'p90_{rate}']:.4g} {unit}, "
            f"{best['metrics']['repeats']} calls); sizes tried: {tried}")


def validate(args) -> None:
    """What a sweep checks before submitting a point: the precision names."""
    from workloads.choices import PRECISIONS

    if args.dtype != "all":
        options.names(args.dtype, PRECISIONS, "dtype")


def allreduce(args, dist) -> int:
    """Under torchrun: the all-reduce ceiling across every process of the job; rank 0 records and prints."""
    from harness import ceilings, runner, views
    from harness.envinfo import capture
    from harness.memory import available_bytes
    from harness.records import new_run_id
    from workloads.errors import UserError
    from workloads.micro import AllReduceWorkload, MicroPoint
    from workloads.precision import resolve_device

    device = dist.device(resolve_device(args.device))
    if dist.world_size < 2:
        raise UserError("under torchrun, llmbench peak measures the all-reduce ceiling, which needs 2 or more "
                        "processes; torchrun started 1")
    sizes = args.allreduce_mb or ALLREDUCE_MB["cuda" if device.type == "cuda" else "cpu"]
    share = available_bytes(device) // (dist.local_world_size if device.type == "cpu" else 1)
    if 2 * (max(sizes) << 20) > share:
        raise UserError(f"--allreduce-mb {max(sizes)}: more than half the {share >> 20} MiB free per process")
    if dist.main:
        options.check_writable(args.out)
    dist.init(device)
    try:
        env = capture(device)
        work = AllReduceWorkload(device, [MicroPoint(mb << 20) for mb in sizes], dist,
                                 ceilings.fingerprint(device, env))
        records = runner.run([work], new_run_id(), env, out=args.out if dist.main else None, progress=False,
                             note=views.ceiling_note if dist.main else None)
    finally:
        dist.close()
    if dist.main:
        print(f"all-reduce over {dist.world_size} processes on {dist.nodes} node(s), {records[0].get('backend')}: "
              "bus bandwidth (nccl-tests: message bytes / time x 2 (n-1)/n), best call of each size")
        for best, group in ceilings.best_per_kind(records):
            print("  " + spread_line(best, group))
    return 0 if all(r["status"] == "ok" for r in records) else 1


def run(args) -> int:
    import torch

    from harness import ceilings, launch, views
    from harness.envinfo import capture
    from harness.memory import available_bytes
    from harness.records import RECORDS_FILE, new_run_id
    from workloads.choices import PRECISIONS
    from workloads.distributed import Dist
    from workloads.errors import UserError
    from workloads.micro import model_matmul_shapes, projection_sizes
    from workloads.precision import check_supported, parse_precision, resolve_device

    dist = Dist.from_env()
    if dist.under_launcher():
        launch.processes(args.nproc, dist)
        return allreduce(args, dist)
    device = resolve_device(args.device)
    # by default every GPU of the node, unless one GPU was picked (--device cuda:1): then that one alone
    gpus = torch.cuda.device_count() if device.type == "cuda" and device.index in (None, 0) else 1
    nproc = launch.processes(args.nproc, dist) if args.nproc else gpus
    launch.check_gpus(nproc, device)
    if args.dtype == "all":
        precisions = []
        for name in PRECISIONS:
            try:
                check_supported(parse_precision(name), device)
                precisions.append(parse_precision(name))
            except UserError:
                pass
    else:
        precisions = [parse_precision(name) for name in options.names(args.dtype, PRECISIONS, "dtype")]
        for precision in precisions:
            check_supported(precision, device)
    shapes = []
    if args.model:
        from workloads.presets import resolve_model

        shapes = model_matmul_shapes(*projection_sizes(resolve_model(args.model).config), args.tokens)
    largest = max(args.buffer_mb or [0])
    if largest and 3 * (largest << 20) > available_bytes(device):
        raise UserError(f"--buffer-mb {largest}: triad needs three buffers, {3 * largest} MiB, more "
                        f"than the {available_bytes(device) >> 20} MiB free on {device}")
    options.check_writable(args.out)
    env = capture(device)
    records = ceilings.measure(device, precisions, new_run_id(), env,
                               buffer_bytes=[mb << 20 for mb in args.buffer_mb] if args.buffer_mb else None,
                               matmul_n=args.matmul_n, matmul_shapes=shapes, out=args.out)
    spec = ceilings.spec_for(env["device_name"])
    kinds = ceilings.best_per_kind(records)
    print(f"{env['device_name']}" + (f" (spec: {spec.name})" if spec else " (no spec entry: measured values only)"))
    print(views.peak_table([best for best, _ in kinds], spec))
    print("\nbest of every call at every size; the spread is the best size's:")
    for best, group in kinds:
        print("  " + spread_line(best, group))
    fingerprint = ceilings.fingerprint(device, env)
    print("fingerprint (other commands measure again when it changes): "
          + ", ".join(f"{k}={v}" for k, v in fingerprint.items()))
    print(f"\nrecords: {args.out / RECORDS_FILE}")
    code = 0 if all(r["status"] == "ok" for r in records) else 1
    if nproc > 1:
        print(f"\nthe all-reduce ceiling, over {nproc} processes:", flush=True)
        code = max(code, launch.local("peak", args, nproc, device))
    return code
