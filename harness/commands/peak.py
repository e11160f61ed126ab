"""``llmbench peak``: measure this device's ceilings and store them as records.

STREAM-style copy and triad bandwidth (bytes read + written) and a dense square
matmul per precision (``harness.ceilings``), printed against the datasheet. The
records go next to the benchmarks they explain; every later command on the same
``--out`` divides by them.
"""

from __future__ import annotations

import argparse

from harness import options


def add_parser(sub) -> None:
    pk = sub.add_parser(
        "peak", help="measure this device's ceilings: copy/triad bandwidth and matmul rate per precision",
        description="STREAM-style copy and triad bandwidth (bytes read + written) and dense square matmul "
                    "TFLOP/s per precision, stored as records next to the benchmarks they explain.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    options.add_device(pk)
    pk.add_argument("--dtype", default="all", help="matmul precisions; all = every one this device supports")
    pk.add_argument("--buffer-mb", type=options.positive_int, default=None,
                    help="MiB per bandwidth buffer (default 1024 on GPU, 256 on CPU)")
    pk.add_argument("--matmul-n", type=options.positive_int, default=None,
                    help="matmul side (default 8192 GPU, 1024 CPU)")
    options.add_out(pk)


def run(args) -> int:
    from harness import ceilings, views
    from harness.envinfo import capture
    from harness.records import RECORDS_FILE, new_run_id
    from workloads.choices import PRECISIONS
    from workloads.errors import UserError
    from workloads.precision import check_supported, parse_precision, resolve_device

    device = resolve_device(args.device)
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
    options.check_writable(args.out)
    env = capture(device)
    records = ceilings.measure(device, precisions, new_run_id(), env,
                               args.buffer_mb << 20 if args.buffer_mb else None, args.matmul_n, out=args.out)
    spec = ceilings.spec_for(env["device_name"])
    print(f"{env['device_name']}" + (f" (spec: {spec.name})" if spec else " (no spec entry: measured values only)"))
    print(views.peak_table(records, spec))
    print(f"\nrecords: {args.out / RECORDS_FILE}")
    return 0 if all(r["status"] == "ok" for r in records) else 1
