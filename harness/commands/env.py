"""``llmbench env``: the environment every record is stamped with, plus the GPU's NVML identity."""

from __future__ import annotations

import json

from harness import options


def add_parser(sub) -> None:
    e = sub.add_parser("env", help="print the environment records are stamped with")
    options.add_device(e)
    e.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
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
