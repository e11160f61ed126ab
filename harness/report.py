"""Roofline report: records + ceilings -> Markdown, one self-contained HTML file, and plots.

All records under the given folders are read (several machines and runs may be
mixed), grouped by device, and each decode, fine-tune and kernel record's MBU,
MFU, roof fraction, bound and roofline warnings are recomputed against its
device's measured ceilings, so ceilings measured after a benchmark still explain
it. Fine-tune records get a table per device (tokens/s, MFU, peak memory, loss at
start and end). A rate above its measured ceiling is marked '!' in the tables
and listed under the device's warnings with the hint to re-run ``llmbench peak``.
"""

from __future__ import annotations

import base64
import html as htmlmod
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

from harness import plots, pytest_bench, roofline, tables, views
from harness.ceilings import device_key, from_records
from harness.records import read_records
from workloads.errors import UserError

def final_failures(records: list[dict]) -> tuple[list[dict], int]:
    """The records that did not complete, counting a sweep point by its final outcome: a point that
    failed and later completed (a resumed sweep) is no failure. Also how many points that was."""
    attempts: dict[tuple, list[dict]] = {}
    for r in records:
        if r.get("sweep_point_id") is not None:
            attempts.setdefault((r.get("sweep"), r["sweep_point_id"]), []).append(r)
    recovered = {key for key, rs in attempts.items() if any(r.get("status") == "ok" for r in rs)}
    retried = {key for key in recovered if any(r.get("status") != "ok" for r in attempts[key])}
    failed = [r for r in records if r.get("status") not in ("ok", None)
              and (r.get("sweep"), r.get("sweep_point_id")) not in recovered]
    return failed, len(retried)


def build(inputs: list[Path], out: Path) -> tuple[Path, Path]:
    records = read_records(inputs)
    if not records:
        raise UserError(f"no records found under {', '.join(map(str, inputs))}; run `llmbench decode` or `llmbench finetune` first")
    ceilings = from_records(records)
    decode, finetune = defaultdict(list), defaultdict(list)
    attention, pytest_benchmarks = defaultdict(list), defaultdict(list)
    kernels = defaultdict(list)  # attention and decode-attention, for their warnings
    for r in records:
        if r.get("status") != "ok":
            continue
        if r.get("workload") in ("decode", "finetune", "attention", "decode-attention"):
            r = roofline.with_ceilings(r, ceilings.get(device_key(r)))
        if r.get("workload") in ("decode", "finetune"):
            group = decode if r["workload"] == "decode" else finetune
            group[device_key(r)].append(r)
        elif r.get("workload") in ("attention", "decode-attention"):
            kernels[device_key(r)].append(r)
            if r["workload"] == "attention":
                attention[device_key(r)].append(r)
        elif r.get("workload") == pytest_bench.WORKLOAD:
            pytest_benchmarks[device_key(r)].append(r)
    figures = out / "plots"
    md = ["# llmbench report", "",
          f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} from {len(records)} records in "
          f"{', '.join(map(str, inputs))}. Decimal units (1 GB/s = 1e9 B/s). MBU and MFU divide by the measured "
          "ceilings (`llmbench peak`); % spec divides by the datasheet. Bytes per decode step = weights + KV read "
          f"+ KV written. {BOUND_SENTENCE} A value marked '!' lies above its measured ceiling, which is impossible: "
          f"{roofline.PEAK_HINT}.",
          ""]
    sections = []  # (heading, markdown body, html body) per block, rendered to both formats
    failed, retried = final_failures(records)
    devices = set(ceilings) | set(decode) | set(finetune) | set(attention) | set(pytest_benchmarks)
    for n, device in enumerate(sorted(devices)):
        c, rs = ceilings.get(device), decode.get(device, [])
        blocks = [("h2", device)]
        if c and (c.copy_gbps or c.matmul_tflops):
            blocks += [("h3", "Ceilings" + (f" (spec: {c.spec.name})" if c.spec else " (no spec entry)")),
                       ("table", views.ceiling_rows(c), views.CEILING_COLUMNS)]
        else:
            blocks += [("p", "No ceilings measured for this device: run `llmbench peak` on it for MBU/MFU.")]
        blocks += warning_blocks([*rs, *finetune.get(device, []), *kernels.get(device, [])])
        for dtype in sorted({r["dtype"] for r in rs}, key=lambda d: plots.ORDER.index(d) if d in plots.ORDER else 9):
            rows = [views.decode_row(r) for r in rs if r["dtype"] == dtype]
            blocks += [("h3", f"Decode, {dtype}"), ("table", rows, views.DECODE_COLUMNS), *notes(rows)]
        if finetune.get(device):
            rows = views.finetune_report_rows(finetune[device])
            blocks += [("h3", "Fine-tune"), ("p", views.FINETUNE_NOTE),
                       ("table", rows, views.FINETUNE_REPORT_COLUMNS), *notes(rows)]
        explanation = views.bf16_vs_fp32(rs)
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
        blocks += views.attention_report_blocks(att)
        for dtype in sorted({r["dtype"] for r in att}):
            peak = c.matmul_tflops.get(dtype) if c else None
            stem = plots.attention(device, [r for r in att if r["dtype"] == dtype], peak, figures,
                                   f"attention-{n}-{dtype}")
            if stem:
                blocks.append(("img", stem))
        blocks += views.pytest_benchmark_report_blocks(pytest_benchmarks.get(device, []))
        sections.append(blocks)
    stem = plots.devices(decode, figures, "devices")
    if stem:
        sections.append([("h2", "Across devices"), ("img", stem)])
    if failed:
        sections.append([("h2", "Points that did not complete"),
                         ("table", views.not_completed_rows(failed), views.NOT_COMPLETED_COLUMNS)])
    if retried:
        sections.append([("h2", "Sweep points that needed more than one attempt"),
                         ("p", f"{retried} point(s) failed at first and completed on a later attempt "
                               "(`llmbench sweep submit --resume`); only their final outcome counts above.")])

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


BOUND_SENTENCE = (
    f"Bound: a point reaching under {100 * roofline.OVERHEAD_BELOW:.0f}% of the roof at its arithmetic intensity, "
    "min(matmul peak, intensity x copy bandwidth), is overhead-bound (launch, host and framework time); otherwise "
    "it is memory-bound below the ridge point (matmul FLOP/s over copy bandwidth) and compute-bound above it; "
    "% roof is the fraction reached.")


def notes(rows: list[dict]) -> list[tuple]:
    """The line under a report table that explains its '!' marks, when it has any (the bound labels are
    explained once, in the introduction)."""
    return [("p", line) for line in views.roof_notes(rows, explain_bound=False)]


def warning_blocks(records: list[dict]) -> list[tuple]:
    """A device's warnings: rates above a measured ceiling (with the hint, once), then the rest (noise,
    drift), one line per record and warning."""
    impossible, other = views.roofline_warnings(records), views.other_warnings(records)
    if not impossible and not other:
        return []
    blocks = [("h3", "Warnings")]
    if impossible:
        blocks.append(("p", f"Rates above a measured ceiling, impossible: {roofline.PEAK_HINT}.\n"
                            + "\n".join(f"- {line}" for line in impossible)))
    if other:
        blocks.append(("p", "\n".join(f"- {line}" for line in other)))
    return blocks


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
