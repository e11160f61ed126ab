"""``llmbench models``: the model presets with parameter counts and weight bytes per precision."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    mo = sub.add_parser("models", help="list model presets with parameter counts and bytes per precision")
    mo.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")


def run(args) -> int:
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
