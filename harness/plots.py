"""Report figures (matplotlib, headless): roofline, precision comparison, scaling, devices.

Every figure is saved as PNG and SVG; functions return the file stem they wrote,
or None when the records hold nothing for that figure. A point above its
measured roof (an impossible value: re-run ``llmbench peak``) gets a red ring.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from harness.roofline import OVERHEAD_BELOW, PEAK_HINT, ROUNDOFF, above_roof  # noqa: E402
from harness.views import decode_label  # noqa: E402
from workloads.choices import ATTENTION_MODES, PRECISIONS  # noqa: E402

COLORS = {"fp32": "#1f77b4", "tf32": "#9467bd", "bf16": "#2ca02c", "fp16": "#ff7f0e"}
ORDER = list(PRECISIONS)
IMPOSSIBLE = "#d62728"  # the ring around a point above its measured roof


def _ring(ax, xs, ys, label=None) -> None:
    """Red rings around points that lie above their measured roof."""
    if xs:
        ax.scatter(xs, ys, s=190, facecolors="none", edgecolors=IMPOSSIBLE, linewidths=1.8, zorder=4, label=label)


def _color(dtype: str) -> str:
    return COLORS.get(dtype, "#7f7f7f")


def _save(fig, out: Path, stem: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out / f"{stem}.png", dpi=130)
    fig.savefig(out / f"{stem}.svg")
    plt.close(fig)
    return stem


def roofline(device: str, ceilings, records: list[dict], out: Path, stem: str) -> str | None:
    """Log-log roofline: measured ceiling per precision (solid), spec (dashed), one marker per record
    for its decode steps (circle) and its prefill (triangle). A dotted line per precision that has
    points marks ``OVERHEAD_BELOW`` of the measured roof (points under it are overhead-bound); a red
    ring marks a point above its measured roof."""
    if not records or not ceilings or not ceilings.copy_gbps:
        return None
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    points = [r["derived"]["arithmetic_intensity"] for r in records]
    points += [r["derived"]["prefill_arithmetic_intensity"] for r in records]
    ridges = [t * 1e3 / ceilings.copy_gbps for t in ceilings.matmul_tflops.values()]
    x = np.logspace(np.log10(min(points + ridges) / 4), np.log10(max(points + ridges) * 4), 300)
    for dtype in sorted(ceilings.matmul_tflops, key=ORDER.index):
        peak = ceilings.matmul_tflops[dtype]
        ax.plot(x, np.minimum(peak, ceilings.copy_gbps * x / 1e3), color=_color(dtype), lw=2,
                label=f"measured {dtype}: {ceilings.copy_gbps:.4g} GB/s, {peak:.4g} TFLOP/s")
    spec = ceilings.spec
    if spec:
        for dtype, peak in spec.tflops.items():
            if dtype in ceilings.matmul_tflops:
                ax.plot(x, np.minimum(peak, spec.mem_gbps * x / 1e3), color=_color(dtype), lw=1, ls="--",
                        label=f"spec {dtype}: {spec.mem_gbps:.0f} GB/s, {peak:.0f} TFLOP/s")
    shown = [d for d in ORDER if d in ceilings.matmul_tflops and any(r["dtype"] == d for r in records)]
    for i, dtype in enumerate(shown):
        roof = np.minimum(ceilings.matmul_tflops[dtype], ceilings.copy_gbps * x / 1e3)
        ax.plot(x, OVERHEAD_BELOW * roof, color=_color(dtype), lw=0.8, ls=":", alpha=0.8,
                label=f"{100 * OVERHEAD_BELOW:.0f}% of the measured roof: overhead-bound below" if i == 0 else None)
    over_x, over_y = [], []
    for r in records:
        d, color = r["derived"], _color(r["dtype"])
        peak = ceilings.matmul_tflops.get(r["dtype"], float("inf"))
        for intensity, tflops, marker, size, what in (
                (d["arithmetic_intensity"], d["achieved_tflops"], "o", 45, "decode"),
                (d["prefill_arithmetic_intensity"], d["prefill_tflops"], "^", 55, "prefill")):
            ax.scatter(intensity, tflops, color=color, marker=marker, s=size, zorder=3, edgecolor="black",
                       linewidth=0.5, label=f"{what} {r['dtype']} {decode_label(r)}")
            if above_roof(intensity, tflops, peak, ceilings.copy_gbps):
                over_x.append(intensity)
                over_y.append(tflops)
    _ring(ax, over_x, over_y, f"above its measured roof, impossible:\n{PEAK_HINT}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("achieved TFLOP/s")
    ax.set_title(f"Roofline: {device}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.set_size_inches(12, 5.5)
    return _save(fig, out, stem)


def precision_comparison(device: str, records: list[dict], out: Path, stem: str) -> str | None:
    """Decode tokens/s per precision for each point, with the speedup over fp32 (or the first
    precision), beside the bytes each decode step moves."""
    groups = defaultdict(dict)
    for r in records:
        groups[decode_label(r)][r["dtype"]] = r
    groups = {k: v for k, v in groups.items() if len(v) > 1}
    if not groups:
        return None
    dtypes = [d for d in ORDER if any(d in g for g in groups.values())]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    width = 0.8 / len(dtypes)
    xs = np.arange(len(groups))
    for i, dtype in enumerate(dtypes):
        rates = [g[dtype]["metrics"]["tokens_per_s"] if dtype in g else 0 for g in groups.values()]
        mb = [g[dtype]["cost"]["bytes_per_step"] / 1e6 if dtype in g else 0 for g in groups.values()]
        bars = ax1.bar(xs + i * width, rates, width, color=_color(dtype), label=dtype)
        ax2.bar(xs + i * width, mb, width, color=_color(dtype), label=dtype)
        for bar, g in zip(bars, groups.values()):
            base = g.get("fp32") or next(iter(g.values()))
            if dtype in g and g[dtype] is not base:
                ax1.annotate(f"{g[dtype]['metrics']['tokens_per_s'] / base['metrics']['tokens_per_s']:.2f}x",
                             (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                             fontsize=8)
    for ax, title, ylabel in ((ax1, "decode tokens/s", "tokens/s"), (ax2, "bytes per decode step", "MB / step")):
        ax.set_xticks(xs + width * (len(dtypes) - 1) / 2)
        ax.set_xticklabels(list(groups), rotation=20, ha="right", fontsize=8)
        ax.set_title(f"{title}: {device}", fontsize=10)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, out, stem)


def scaling(device: str, records: list[dict], field: str, xlabel: str, out: Path, stem: str) -> str | None:
    """Decode tokens/s against ``field`` (batch_size or prompt_len), one line per model and precision,
    drawn only where the records span at least two values."""
    others = {"batch_size": "prompt_len", "prompt_len": "batch_size"}[field]
    lines = defaultdict(list)
    for r in records:
        lines[(r["model"], r["dtype"], r[others])].append((r[field], r["metrics"]["tokens_per_s"]))
    lines = {k: sorted(v) for k, v in lines.items() if len({x for x, _ in v}) > 1}
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for (model, dtype, other), pts in sorted(lines.items()):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=_color(dtype),
                label=f"{model} {dtype} ({others.replace('_', ' ')} {other})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("decode tokens/s")
    ax.set_title(f"Decode tokens/s vs {xlabel}: {device}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out, stem)


def devices(records_by_device: dict[str, list[dict]], out: Path, stem: str) -> str | None:
    """Decode tokens/s of the same points on several devices, side by side per precision."""
    if len(records_by_device) < 2:
        return None
    per_device = [{(decode_label(r), r["dtype"]) for r in rs} for rs in records_by_device.values()]
    shared = {k for k in set().union(*per_device) if sum(k in keys for keys in per_device) > 1}
    keys = sorted(shared or set().union(*per_device))  # the points measured on several devices, when any
    fig, ax = plt.subplots(figsize=(max(7.5, 1.1 * len(keys)), 4.8))
    width = 0.8 / len(records_by_device)
    xs = np.arange(len(keys))
    for i, (device, rs) in enumerate(sorted(records_by_device.items())):
        rate = {(decode_label(r), r["dtype"]): r["metrics"]["tokens_per_s"] for r in rs}
        ax.bar(xs + i * width, [rate.get(k, 0) for k in keys], width, label=device)
    ax.set_xticks(xs + width * (len(records_by_device) - 1) / 2)
    ax.set_xticklabels([f"{p}\n{d}" for p, d in keys], fontsize=7, rotation=20, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("decode tokens/s (log)")
    ax.set_title("Decode tokens/s across devices", fontsize=10)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out, stem)


MODES = list(ATTENTION_MODES)
def _impl_order(impl: str) -> tuple[int, str]:
    """Implementations in IMPL_STYLE's order; one without a style of its own after them, by name."""
    styled = list(IMPL_STYLE)
    return (styled.index(impl) if impl in styled else len(styled), impl)


IMPL_STYLE = {"triton": ("#d62728", "o"), "sdpa-flash": ("#1f77b4", "s"), "sdpa-efficient": ("#17becf", "D"),
              "sdpa-cudnn": ("#9467bd", "v"), "sdpa-math": ("#8c564b", "x"), "eager": ("#7f7f7f", "^")}


def attention(device: str, records: list[dict], peak_tflops: float | None, out: Path, stem: str) -> str | None:
    """Attention TFLOP/s against sequence length for one precision: one panel per (mode, causal,
    head dim, heads), one line per implementation, the measured matmul ceiling dashed; a point above
    it gets a red ring and the panel a red note."""
    panels = defaultdict(lambda: defaultdict(list))
    for r in records:
        key = (r["mode"], r["causal"], r["head_dim"], r["heads"], r["kv_heads"])
        panels[key][r["attn"]].append((r["seq_len"], r["derived"]["achieved_tflops"]))
    if not panels:
        return None
    keys = sorted(panels, key=lambda k: (MODES.index(k[0]), not k[1], k[2], k[3], k[4]))
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        mode, causal, head_dim, heads, kv_heads = key
        for impl, pts in sorted(panels[key].items(), key=lambda item: _impl_order(item[0])):
            pts.sort()
            color, marker = IMPL_STYLE.get(impl, ("#333333", "."))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, marker=marker, label=impl)
        if peak_tflops:
            ax.axhline(peak_tflops, color="black", ls="--", lw=1, label="measured matmul peak")
        over = [p for pts in panels[key].values() for p in pts if peak_tflops and p[1] > peak_tflops * (1 + ROUNDOFF)]
        _ring(ax, [p[0] for p in over], [p[1] for p in over])
        gqa = "" if heads == kv_heads else f", {heads}/{kv_heads} heads"
        ax.set_title(f"{mode}, {'causal' if causal else 'non-causal'}, head dim {head_dim}{gqa}", fontsize=9)
        if over:  # said below the axis, where no point or legend can hide it
            ax.text(0.5, -0.3, "ringed: above the measured peak, impossible: re-run `llmbench peak`",
                    transform=ax.transAxes, fontsize=7, color=IMPOSSIBLE, ha="center", va="top")
        ax.set_xscale("log", base=2)
        ticks = sorted({p[0] for pts in panels[key].values() for p in pts})
        ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=8)
        ax.minorticks_off()
        ax.set_xlabel("sequence length")
        ax.set_ylabel("TFLOP/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle(f"Fused attention, {records[0]['dtype']}: {device}", fontsize=11)
    return _save(fig, out, stem)
