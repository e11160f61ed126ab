"""Roofline report: records + ceilings -> Markdown, one self-contained HTML file, and plots.

All records under the given folders are read (several machines and runs may be
mixed), grouped by device, and each decode record's MBU, MFU and bound are
recomputed against its device's measured ceilings, so ceilings measured after a
benchmark still explain it. Fine-tune records get a table per device (tokens/s,
MFU, peak memory, loss at start and end).
"""

from __future__ import annotations

import base64
import html as htmlmod
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

from harness import plots, pytest_bench, roofline, tables
from harness.ceilings import Ceilings, device_key, from_records
from harness.records import read_records
from workloads.errors import UserError

DECODE_COLUMNS = [
    ("model", "model", ""), ("batch_size", "batch", "d"), ("prompt_len", "prompt", "d"), ("new_tokens", "new", "d"),
    ("tokens_per_s", "tok/s", ".2f"), ("ttft_ms", "TTFT ms", ".1f"), ("tpot_ms", "TPOT p50 ms", ".2f"),
    ("gbps", "GB/s", ".1f"), ("pct_bw", "% meas. BW", ".1f"), ("pct_bw_spec", "% spec BW", ".1f"),
    ("tflops", "TFLOP/s", ".3f"), ("mfu", "MFU %", ".2f"), ("bound", "bound", ""),
    ("prefill_mfu", "prefill MFU %", ".1f"), ("prefill_bound", "prefill bound", ""),
]
CEILING_COLUMNS = [("what", "ceiling", ""), ("measured", "measured", ".4g"), ("spec", "spec", ".1f"),
                   ("pct", "% of spec", ".1f")]


def _pct(value):
    return None if value is None else 100 * value


def decode_row(r: dict) -> dict:
    m, d = r["metrics"], r["derived"]
    return {
        "model": r["model"], "batch_size": r["batch_size"], "prompt_len": r["prompt_len"],
        "new_tokens": r["new_tokens"], "tokens_per_s": m["tokens_per_s"], "ttft_ms": m["ttft_ms"],
        "tpot_ms": m["tpot_ms_p50"], "gbps": d["achieved_gbps"], "pct_bw": _pct(d.get("mbu")),
        "pct_bw_spec": _pct(d.get("mbu_spec")), "tflops": d["achieved_tflops"], "mfu": _pct(d.get("mfu")),
        "bound": d.get("bound"), "prefill_mfu": _pct(d.get("prefill_mfu")), "prefill_bound": d.get("prefill_bound"),
    }


FINETUNE_COLUMNS = [
    ("model", "model", ""), ("trainer", "trainer", ""), ("dtype", "dtype", ""), ("batch", "batch", "d"),
    ("seq", "seq", "d"), ("accum", "accum", "d"), ("world", "world", "d"), ("tok_s", "tok/s", ".1f"),
    ("samples_s", "samples/s", ".2f"), ("p50", "step p50 ms", ".1f"), ("tflops", "TFLOP/s", ".4g"),
    ("mfu", "MFU %", ".1f"), ("mem", "peak mem GB", ".2f"), ("loss", "loss start -> end", ""),
]
FINETUNE_NOTE = ("Tokens/s counts every rank's tokens per optimizer step over the median step time. MFU: the cost "
                 "model's FLOPs (forward + backward, attention included, no recomputation) over the measured matmul "
                 "rate of the precision, times the GPUs of the run. bf16/fp16 are mixed precision over fp32 weights.")


def finetune_rows(records: list[dict]) -> list[dict]:
    from harness.finetune import table_rows

    order = {d: i for i, d in enumerate(plots.ORDER)}
    keyed = sorted(records, key=lambda r: (r["model"], r.get("trainer") or "", order.get(r["dtype"], 9),
                                           r.get("batch_size") or 0, r.get("seq_len") or 0))
    return table_rows(keyed)


def ceiling_rows(c: Ceilings) -> list[dict]:
    spec = c.spec
    rows = [{"what": "copy bandwidth (GB/s)", "measured": c.copy_gbps, "spec": spec.mem_gbps if spec else None},
            {"what": "triad bandwidth (GB/s)", "measured": c.triad_gbps, "spec": spec.mem_gbps if spec else None}]
    for dtype in sorted(c.matmul_tflops, key=plots.ORDER.index):
        rows.append({"what": f"{dtype} matmul (TFLOP/s)", "measured": c.matmul_tflops[dtype],
                     "spec": spec.tflops.get(dtype) if spec else None})
    for row in rows:
        row["pct"] = 100 * row["measured"] / row["spec"] if row["measured"] and row["spec"] else None
    return rows


def attention_tables(rs: list[dict]) -> list[tuple]:
    """Report blocks: per precision and mode, TFLOP/s of each implementation side by side per point,
    and ours over SDPA's flash backend."""
    blocks = []
    for dtype, mode in sorted({(r["dtype"], r["mode"]) for r in rs},
                              key=lambda k: (plots.ORDER.index(k[0]) if k[0] in plots.ORDER else 9,
                                             plots.MODES.index(k[1]))):
        group = [r for r in rs if (r["dtype"], r["mode"]) == (dtype, mode)]
        impls = [i for i in plots.IMPL_STYLE if any(r["attn"] == i for r in group)]
        rows = {}
        for r in sorted(group, key=lambda r: (not r["causal"], r["head_dim"], r["kv_heads"], r["seq_len"])):
            key = (r["causal"], r["head_dim"], r["heads"], r["kv_heads"], r["seq_len"], r["batch_size"])
            row = rows.setdefault(key, {"causal": "yes" if r["causal"] else "no", "head_dim": r["head_dim"],
                                        "heads": f"{r['heads']}/{r['kv_heads']}", "seq_len": r["seq_len"],
                                        "batch_size": r["batch_size"]})
            row[r["attn"]] = r["derived"]["achieved_tflops"]
            row[f"{r['attn']}_ms"] = r["metrics"]["time_ms"]
        for row in rows.values():
            if "triton_ms" in row and "sdpa-flash_ms" in row:
                row["ratio"] = row["sdpa-flash_ms"] / row["triton_ms"]
        columns = [("causal", "causal", ""), ("head_dim", "head dim", "d"), ("heads", "heads/kv", ""),
                   ("seq_len", "seq", "d"), ("batch_size", "batch", "d")]
        columns += [(impl, f"{impl} TFLOP/s", ".4g") for impl in impls]
        if "triton" in impls and "sdpa-flash" in impls:
            columns.append(("ratio", "triton speed / sdpa-flash", ".2f"))
        blocks += [("h3", f"Attention, {dtype}, {mode}"), ("table", list(rows.values()), columns)]
    return blocks


def _not_completed(failed: list[dict]) -> list[dict]:
    """One row per distinct (workload, implementation, model, dtype, status, reason), with a count:
    a backend skipped at every point of a sweep is one line, not hundreds."""
    counts: dict[tuple, int] = {}
    for r in failed:
        reason = (r.get("error") or "").strip().splitlines()
        key = (r.get("workload"), r.get("attn"), r.get("model"), r.get("dtype"), r["status"],
               reason[-1][:120] if reason else "")
        counts[key] = counts.get(key, 0) + 1
    fields = ("workload", "attn", "model", "dtype", "status", "error")
    return [{**dict(zip(fields, key)), "points": n} for key, n in counts.items()]


def _explain(rs: list[dict]) -> str:
    """One sentence on bf16 vs fp32 where both ran the same point."""
    by_point = defaultdict(dict)
    for r in rs:
        by_point[plots.point_label(r)][r["dtype"]] = r
    lines = []
    for label, g in by_point.items():
        if "fp32" in g and "bf16" in g:
            f, b = g["fp32"], g["bf16"]
            speed = b["metrics"]["tokens_per_s"] / f["metrics"]["tokens_per_s"]
            ratio = f["cost"]["bytes_per_step"] / b["cost"]["bytes_per_step"]
            lines.append(
                f"{label}: bf16 decodes {speed:.2f}x as fast as fp32. Each step moves {ratio:.2f}x fewer bytes "
                f"({b['cost']['bytes_per_step'] / 1e6:.1f} vs {f['cost']['bytes_per_step'] / 1e6:.1f} MB: weights "
                f"and KV cache halve), at {b['derived']['achieved_gbps']:.1f} vs {f['derived']['achieved_gbps']:.1f}"
                " GB/s achieved."
            )
    return "\n".join(f"- {line}" for line in lines)


def build(inputs: list[Path], out: Path) -> tuple[Path, Path]:
    records = read_records(inputs)
    if not records:
        raise UserError(f"no records found under {', '.join(map(str, inputs))}; run `llmbench decode` or `llmbench finetune` first")
    ceilings = from_records(records)
    decode, finetune = defaultdict(list), defaultdict(list)
    attention, pytest_benchmarks = defaultdict(list), defaultdict(list)
    for r in records:
        if r.get("status") != "ok":
            continue
        if r.get("workload") in ("decode", "finetune"):
            group = decode if r["workload"] == "decode" else finetune
            group[device_key(r)].append(roofline.with_ceilings(r, ceilings.get(device_key(r))))
        elif r.get("workload") == "attention":
            attention[device_key(r)].append(r)
        elif r.get("workload") == pytest_bench.WORKLOAD:
            pytest_benchmarks[device_key(r)].append(r)
    figures = out / "plots"
    md = ["# llmbench report", "",
          f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} from {len(records)} records in "
          f"{', '.join(map(str, inputs))}. Decimal units (1 GB/s = 1e9 B/s). MBU and MFU divide by the measured "
          "ceilings (`llmbench peak`); % spec divides by the datasheet. Bytes per decode step = weights + KV read "
          "+ KV written.", ""]
    sections = []  # (heading, markdown body, html body) per block, rendered to both formats
    failed = [r for r in records if r.get("status") not in ("ok", None)]
    devices = set(ceilings) | set(decode) | set(finetune) | set(attention) | set(pytest_benchmarks)
    for n, device in enumerate(sorted(devices)):
        c, rs = ceilings.get(device), decode.get(device, [])
        blocks = [("h2", device)]
        if c and (c.copy_gbps or c.matmul_tflops):
            blocks += [("h3", "Ceilings" + (f" (spec: {c.spec.name})" if c.spec else " (no spec entry)")),
                       ("table", ceiling_rows(c), CEILING_COLUMNS)]
        else:
            blocks += [("p", "No ceilings measured for this device: run `llmbench peak` on it for MBU/MFU.")]
        for dtype in sorted({r["dtype"] for r in rs}, key=lambda d: plots.ORDER.index(d) if d in plots.ORDER else 9):
            rows = [decode_row(r) for r in rs if r["dtype"] == dtype]
            blocks += [("h3", f"Decode, {dtype}"), ("table", rows, DECODE_COLUMNS)]
        if finetune.get(device):
            blocks += [("h3", "Fine-tune"), ("p", FINETUNE_NOTE),
                       ("table", finetune_rows(finetune[device]), FINETUNE_COLUMNS)]
        explanation = _explain(rs)
        if explanation:
            blocks += [("h3", "bf16 vs fp32"), ("p", explanation)]
        for stem in (
            plots.roofline(device, c, rs, figures, f"roofline-{n}"),
            plots.precision_comparison(device, rs, figures, f"precisions-{n}"),
            plots.scaling(device, rs, "batch_size", "batch size", figures, f"batch-{n}"),
            plots.scaling(device, rs, "prompt_len", "context (prompt tokens)", figures, f"context-{n}"),
        ):
            if stem:
                blocks.append(("img", stem))
        att = attention.get(device, [])
        blocks += attention_tables(att)
        for dtype in sorted({r["dtype"] for r in att}):
            peak = c.matmul_tflops.get(dtype) if c else None
            stem = plots.attention(device, [r for r in att if r["dtype"] == dtype], peak, figures,
                                   f"attention-{n}-{dtype}")
            if stem:
                blocks.append(("img", stem))
        blocks += pytest_bench.report_blocks(pytest_benchmarks.get(device, []))
        sections.append(blocks)
    stem = plots.devices(decode, figures, "devices")
    if stem:
        sections.append([("h2", "Across devices"), ("img", stem)])
    if failed:
        columns = [(k, k, "") for k in ("workload", "attn", "model", "dtype", "status", "error")]
        sections.append([("h2", "Points that did not complete"),
                         ("table", _not_completed(failed), [*columns, ("points", "points", "d")])])

    html_parts = []
    for blocks in sections:
        for block in blocks:
            kind = block[0]
            if kind in ("h2", "h3"):
                md += [("## " if kind == "h2" else "### ") + block[1], ""]
                html_parts.append(f"<{kind}>{htmlmod.escape(block[1])}</{kind}>")
            elif kind == "p":
                md += [block[1], ""]
                html_parts.append("<p>" + htmlmod.escape(block[1]).replace("\n", "<br>") + "</p>")
            elif kind == "table":
                md += [tables.markdown(block[1], block[2]), ""]
                html_parts.append(tables.html(block[1], block[2]))
            else:
                md += [f"![{block[1]}](plots/{block[1]}.png)", ""]
                data = base64.b64encode((figures / f"{block[1]}.png").read_bytes()).decode()
                html_parts.append(f'<img alt="{block[1]}" src="data:image/png;base64,{data}">')
    out.mkdir(parents=True, exist_ok=True)
    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text("\n".join(md))
    html_path.write_text(HTML.format(body="\n".join(html_parts), intro=htmlmod.escape(md[2])))
    return md_path, html_path


HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>llmbench report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1250px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; }} th {{ background: #f3f3f3; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
img {{ max-width: 100%; margin: 0.5em 0 1.5em; }}
</style></head><body>
<h1>llmbench report</h1><p>{intro}</p>
{body}
</body></html>
"""
