"""Report figures (matplotlib, headless): roofline, precisions, scaling, pareto, energy, devices, all-reduce,
attention, kernel resources.

Every figure is saved as PNG (and SVG with ``SVG``); functions return the file stem they wrote,
or None when the records hold nothing for that figure. Figures stay readable at
hundreds of points: a series is every point field that varies but the x axis
(never two engines or models joined in one line); colour shows one varying
field, marker a second and line style a third, and the legend lists those
values (at most ``MAX_COLORS`` + ``MAX_MARKERS`` + ``MAX_STYLES`` entries, the
rest drawn grey as "other"), not one entry per point. Decode points are filled,
prefill points hollow. An axis whose values span more than a decade is
logarithmic. A point above its measured roof (an impossible value: re-run
``llmbench peak``) gets a red ring.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import LogFormatter  # noqa: E402

from harness.roofline import OVERHEAD_BELOW, PEAK_HINT, ROUNDOFF, above_roof  # noqa: E402
from harness.tables import si  # noqa: E402
from harness.views import (  # noqa: E402
    FIELD_HEADERS, VARIANT_FIELDS, decode_label, independent, is_clean, plain, point_label, precision_baseline,
    precision_points, precision_variant, sort_records, spill_bytes, variant_order, varying_fields,
)
from workloads.choices import ATTENTION_MODES, PRECISIONS  # noqa: E402

COLORS = {"fp32": "#1f77b4", "tf32": "#9467bd", "bf16": "#2ca02c", "fp16": "#ff7f0e"}
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
MARKERS = ["o", "s", "^", "D"]
STYLES = ["-", "--"]
MAX_COLORS, MAX_MARKERS, MAX_STYLES = len(PALETTE), len(MARKERS), len(STYLES)
OTHER = "#9a9a9a"
ORDER = list(PRECISIONS)
IMPOSSIBLE = "#d62728"  # the ring around a point above its measured roof
DTYPE_FIELDS = ("dtype", "weights_dtype", "matmul_precision")


def _ring(ax, xs, ys, label=None) -> None:
    """Red rings around points that lie above their measured roof."""
    if xs:
        ax.scatter(xs, ys, s=190, facecolors="none", edgecolors=IMPOSSIBLE, linewidths=1.8, zorder=4, label=label)


def _color(dtype: str) -> str:
    return COLORS.get(dtype, "#7f7f7f")


SVG = False
"""Also write each figure as SVG (``llmbench report --svg``): vector figures for papers, at about twice the
time of the PNG alone (the PNG is what the reports show)."""


def _save(fig, out: Path, stem: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.set_layout_engine(None)  # laid out: else savefig draws the whole figure once more before drawing it
    fig.savefig(out / f"{stem}.png", dpi=100)
    if SVG:
        fig.savefig(out / f"{stem}.svg")
    plt.close(fig)
    return stem


class _SILogFormatter(LogFormatter):
    """Log-axis tick labels as the tables write numbers: SI prefixes, no exponents (1k, 10M, 500m; on a
    base-2 axis plain integers: 1024, not 1.02k). Matplotlib's default writes 10^3 through mathtext, whose
    parser costs each figure process a good part of a second to build."""

    def _num_to_string(self, x, vmin, vmax):
        return _tick(x, self._base)


def _tick(value: float, base: float = 10) -> str:
    """A tick label: an integer on a base-2 axis, else 3 significant figures with an SI prefix, trailing
    zeros dropped (1.00k -> 1k, 2.50 -> 2.5)."""
    if base == 2 and value >= 1 and float(value).is_integer():
        return str(int(value))
    text = si(value)
    match = re.fullmatch(r"(-?\d+\.\d*)(\D?)", text)
    return match[1].rstrip("0").rstrip(".") + match[2] if match else text


def _log(ax, axis: str = "y", base: float = 10) -> None:
    """A log scale on ``axis`` with SI tick labels (``_SILogFormatter``)."""
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log", base=base)
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(_SILogFormatter(base))
    target.set_minor_formatter(_SILogFormatter(base, labelOnlyBase=False))


def _log_if_wide(ax, values, axis: str = "y") -> None:
    """A log scale on ``axis`` when its positive values span more than a decade."""
    values = [v for v in values if v and v > 0]
    if values and max(values) / min(values) > 10:
        _log(ax, axis)


def _name(field: str) -> str:
    return FIELD_HEADERS.get(field, field.replace("_", " "))


class Styles:
    """Colour, marker and line style for the series of a figure, each from one varying field (in
    ``fields`` order; a fourth field and beyond join the colour's, as pairs of values), with a legend of
    the values rather than of the series."""

    def __init__(self, records: list[dict], fields: list[str], colors: dict | None = None):
        self.channels = [[fields[0], *fields[3:]]] + [[f] for f in fields[1:3]] if fields else []
        self.values = []
        self._indexes: list[dict] = [{} for _ in self.channels]  # per channel: raw values -> index (or None)
        for channel, cap in zip(self.channels, (MAX_COLORS, MAX_MARKERS, MAX_STYLES)):
            distinct = {self._raw(channel, r): r for r in records}
            seen = [self._key(channel, r) for r in sort_records(list(distinct.values()), channel)]
            self.values.append(seen if len(seen) <= cap else seen[:cap - 1])
        self.colors = colors if fields[:1] == ["dtype"] and len(self.channels[0]) == 1 else None

    @staticmethod
    def _key(channel: list[str], r: dict) -> str:
        return ", ".join(str(r.get(f)) for f in channel)

    @staticmethod
    def _raw(channel: list[str], r: dict) -> tuple:
        """The channel's values of ``r`` as a dict key (``_key`` is their text, made once per value)."""
        raw = tuple(map(r.get, channel))
        try:
            hash(raw)
        except TypeError:  # a list-valued field
            raw = tuple(tuple(v) if isinstance(v, list) else v for v in raw)
        return raw

    def _index(self, channel: int, r: dict) -> int | None:
        if channel >= len(self.channels):
            return 0
        indexes, raw = self._indexes[channel], self._raw(self.channels[channel], r)
        if raw not in indexes:
            value, values = self._key(self.channels[channel], r), self.values[channel]
            indexes[raw] = values.index(value) if value in values else None
        return indexes[raw]

    def color(self, r: dict) -> str:
        if self.colors is not None:
            return self.colors.get(r.get("dtype"), OTHER)
        i = self._index(0, r)
        return PALETTE[i] if i is not None else OTHER

    def marker(self, r: dict) -> str:
        i = self._index(1, r)
        return MARKERS[i] if i is not None else "X"

    def style(self, r: dict) -> str:
        i = self._index(2, r)
        return STYLES[i] if i is not None else ":"

    def legend(self, filled: bool = True) -> list:
        """Proxy artists: one per colour value, marker value and line style value."""
        handles = []
        for channel, fields in enumerate(self.channels):
            name = ", ".join(_name(f) for f in fields)
            for i, value in enumerate(self.values[channel]):
                label = f"{name}: {value}"
                if channel == 0:
                    color = self.colors.get(value, OTHER) if self.colors is not None else PALETTE[i]
                    handles.append(Line2D([], [], color=color, marker="o", lw=2, label=label))
                elif channel == 1:
                    handles.append(Line2D([], [], color="#333333", marker=MARKERS[i], ls="none",
                                          markerfacecolor="#333333" if filled else "none", label=label))
                else:
                    handles.append(Line2D([], [], color="#333333", ls=STYLES[i], label=label))
        return handles

    def others(self, records: list[dict]) -> bool:
        """Whether some records fall outside the values the legend names (drawn grey, X or dotted)."""
        for c, channel in enumerate(self.channels):
            distinct = {self._raw(channel, r): r for r in records}
            if any(self._index(c, r) is None for r in distinct.values()):
                return True
        return False


def _series_fields(records: list[dict], exclude: tuple = ()) -> list[str]:
    """The varying fields that tell series apart, less those another one sets (cache follows engine)."""
    varying, _ = varying_fields(records)
    return independent([k for k in varying if k not in exclude], records)


def _legend(ax, handles: list, records_styles: Styles | None = None, records: list[dict] = (), **kwargs) -> None:
    if records_styles is not None and records_styles.others(records):
        handles = handles + [Line2D([], [], color=OTHER, marker="X", ls=":", label="other (grey, X or dotted)")]
    if handles:
        ax.legend(handles=handles, fontsize=7, **kwargs)


def roofline(device: str, ceilings, records: list[dict], out: Path, stem: str) -> str | None:
    """Log-log roofline: measured ceiling per precision (solid), spec (dashed), the records' decode steps
    (filled) and prefills (hollow), coloured by precision, marker by the next varying field (model,
    engine, ...). A dotted line per precision that has points marks ``OVERHEAD_BELOW`` of the measured
    roof (points under it are overhead-bound); a red ring marks a point above its measured roof."""
    if not records or not ceilings or not ceilings.copy_gbps:
        return None
    d = [r["derived"] for r in records]
    points = [x for r in d for x in (r.get("arithmetic_intensity"), r.get("prefill_arithmetic_intensity")) if x]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(12, 5.5))
    ridges = [t * 1e3 / ceilings.copy_gbps for t in ceilings.matmul_tflops.values()]
    x = np.logspace(np.log10(min(points + ridges) / 4), np.log10(max(points + ridges) * 4), 300)
    for dtype in sorted(ceilings.matmul_tflops, key=lambda k: ORDER.index(k) if k in ORDER else 9):
        peak = ceilings.matmul_tflops[dtype]
        ax.plot(x, np.minimum(peak, ceilings.copy_gbps * x / 1e3), color=_color(dtype), lw=2,
                label=f"measured {dtype}: {ceilings.copy_gbps:.4g} GB/s, {peak:.4g} TFLOP/s")
    spec = ceilings.spec
    if spec:
        for dtype, peak in spec.tflops.items():
            if dtype in ceilings.matmul_tflops:
                ax.plot(x, np.minimum(peak, spec.mem_gbps * x / 1e3), color=_color(dtype), lw=1, ls="--",
                        label=f"spec {dtype}: {spec.mem_gbps:.0f} GB/s, {peak:.0f} TFLOP/s")
    shown = [dt for dt in ORDER if dt in ceilings.matmul_tflops and any(r["dtype"] == dt for r in records)]
    for i, dtype in enumerate(shown):
        roof = np.minimum(ceilings.matmul_tflops[dtype], ceilings.copy_gbps * x / 1e3)
        ax.plot(x, OVERHEAD_BELOW * roof, color=_color(dtype), lw=0.8, ls=":", alpha=0.8,
                label=f"{100 * OVERHEAD_BELOW:.0f}% of the measured roof: overhead-bound below" if i == 0 else None)
    fields = ["dtype", *_series_fields(records, ("dtype", *DTYPE_FIELDS, "batch_size", "prompt_len", "new_tokens"))]
    styles = Styles(records, fields[:2], COLORS)
    groups = defaultdict(lambda: ([], [], [], []))
    over_x, over_y = [], []
    for r in records:
        dr = r["derived"]
        peak = ceilings.matmul_tflops.get(r["dtype"], float("inf"))
        g = groups[(styles.color(r), styles.marker(r))]
        for intensity, tflops, phase in ((dr.get("arithmetic_intensity"), dr.get("achieved_tflops"), 0),
                                         (dr.get("prefill_arithmetic_intensity"), dr.get("prefill_tflops"), 2)):
            if not intensity or not tflops:
                continue
            g[phase].append(intensity)
            g[phase + 1].append(tflops)
            if above_roof(intensity, tflops, peak, ceilings.copy_gbps):
                over_x.append(intensity)
                over_y.append(tflops)
    for (color, marker), (dx, dy, px, py) in groups.items():  # markers of a line: much faster than scatter
        ax.plot(dx, dy, ls="none", marker=marker, ms=6.5, color=color, mec="black", mew=0.4, zorder=3)
        ax.plot(px, py, ls="none", marker=marker, ms=7, mfc="none", mec=color, mew=1.2, zorder=3)
    _ring(ax, over_x, over_y, f"above its measured roof, impossible:\n{PEAK_HINT}")
    handles, _ = ax.get_legend_handles_labels()
    roofs = {f"dtype: {dt}" for dt in ceilings.matmul_tflops}  # their roof line already shows the colour
    handles += [h for h in styles.legend() if h.get_label() not in roofs]
    handles += [Line2D([], [], color="#333333", marker="o", ls="none", label="decode steps (filled)"),
                Line2D([], [], color="#333333", marker="o", ls="none", markerfacecolor="none",
                       label="prefill (hollow)")]
    _log(ax, "x")
    _log(ax, "y")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("achieved TFLOP/s")
    ax.set_title(f"Roofline: {device} (colour: precision; marker: {_name(fields[1]) if len(fields) > 1 else '-'})")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, handles, styles, records, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(fig, out, stem)


MAX_GROUPS = 12  # bars of a comparison; with more points (and batch sizes) the speedup is drawn against batch


def precision_comparison(device: str, records: list[dict], out: Path, stem: str) -> str | None:
    """Decode tokens/s of every precision and stored-format variant (bf16, bf16 + int8 weights + int8 KV, ...)
    at each point where several ran, with the speedup over the point's baseline (its fp32 unquantized run,
    else its first unquantized one), beside the bytes each decode step moves (log scale: a small model stays
    visible). A point is every varying field but the precision and formats (engines are never merged)."""
    fields, points = precision_points(records)
    if not points:
        return None
    if len(points) > MAX_GROUPS and "batch_size" in fields:
        return _speedup_vs_batch(device, points, out, stem)
    total = len(points)
    points = points[:MAX_GROUPS]
    names = [point_label(next(iter(g.values())), fields) or "all" for g in points]
    firsts: dict[str, dict] = {}
    for g in points:
        for v, r in g.items():
            firsts.setdefault(v, r)
    variants = sorted(firsts, key=lambda v: variant_order(firsts[v]))
    colors = _variant_colors(firsts, variants)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    width = 0.8 / len(variants)
    xs = np.arange(len(points))
    for i, v in enumerate(variants):
        rates = [g[v]["metrics"]["tokens_per_s"] if v in g else 0 for g in points]
        size = [g[v]["cost"].get("bytes_per_step", 0) if v in g else 0 for g in points]
        bars = ax1.bar(xs + i * width, rates, width, color=colors[v], label=v)
        ax2.bar(xs + i * width, size, width, color=colors[v], label=v)
        for bar, g in zip(bars, points):
            base = precision_baseline(g)
            if v in g and base is not None and g[v] is not base:
                ax1.annotate(f"{g[v]['metrics']['tokens_per_s'] / base['metrics']['tokens_per_s']:.2f}x",
                             (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                             fontsize=7)
    shown = f" (first {MAX_GROUPS} of {total} points)" if total > MAX_GROUPS else ""
    for ax, title, ylabel in ((ax1, "decode tokens/s", "tokens/s"), (ax2, "bytes per decode step", "bytes / step")):
        ax.set_xticks(xs + width * (len(variants) - 1) / 2)
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{title}: {device}{shown}", fontsize=9)
        ax.set_ylabel(ylabel + (" (log)" if ax is ax2 else ""))
        ax.legend(fontsize=7)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    _log(ax2)
    _log_if_wide(ax1, [r["metrics"]["tokens_per_s"] for g in points for r in g.values()])
    return _save(fig, out, stem)


def _variant_colors(firsts: dict[str, dict], variants: list[str]) -> dict[str, str]:
    """A plain precision in its own colour (``COLORS``); the stored-format variants in the palette's others."""
    colors = {v: _color(firsts[v]["dtype"]) for v in variants if plain(firsts[v])}
    free = [c for c in PALETTE if c not in colors.values()] or PALETTE
    for i, v in enumerate(v for v in variants if v not in colors):
        colors[v] = free[i % len(free)]
    return colors


def _speedup_vs_batch(device: str, points: list[dict[str, dict]], out: Path, stem: str) -> str:
    """Many points: each variant's tokens/s over its point's baseline against batch size, one line per series
    (the variant among its fields), with the baseline's bytes per step over the variant's (the speedup a
    memory-bound decode would reach) dashed."""
    ratios = []
    for g in points:
        base = precision_baseline(g)
        if base is None:
            continue
        for v, r in g.items():
            if r is base:
                continue
            bytes_ratio = (base["cost"].get("bytes_per_step") or 0) / (r["cost"].get("bytes_per_step") or 1)
            ratios.append({**r, "variant": v, "_base": precision_variant(base),
                           "_speedup": r["metrics"]["tokens_per_s"] / base["metrics"]["tokens_per_s"],
                           "_bytes": bytes_ratio})
    bases = sorted({r["_base"] for r in ratios})
    base_name = bases[0] if len(bases) == 1 else "the baseline (fp32, else the first unquantized)"
    series_fields = _series_fields(ratios, ("batch_size", *VARIANT_FIELDS))
    lines = defaultdict(list)
    for r in ratios:
        lines[tuple(map(str, map(r.get, series_fields)))].append(r)
    styles = Styles(ratios, series_fields)
    fig, ax = plt.subplots(figsize=(9, 4.8))
    _draw_series(ax, styles, lines, lambda r: r["batch_size"], lambda r: r["_speedup"])
    by_batch = defaultdict(list)
    for r in ratios:
        by_batch[r["batch_size"]].append(r["_bytes"])
    xs = sorted(by_batch)
    ax.plot(xs, [float(np.median(by_batch[x])) for x in xs], color="black", ls="--", lw=1.2)
    ax.axhline(1.0, color="#888888", lw=0.8)
    _log(ax, "x", 2)
    ax.set_xlabel("batch size")
    ax.set_ylabel(f"tokens/s over {bases[0] if len(bases) == 1 else 'the baseline'}")
    ax.set_title(f"Speedup over {base_name}, {len(ratios)} points: {device}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    handles = styles.legend() + [Line2D([], [], color="black", ls="--", label="baseline bytes/step over the "
                                        "variant's (memory-bound expectation)")]
    _legend(ax, handles, styles, ratios, loc="best")
    return _save(fig, out, stem)


def _series(records: list[dict], x_field: str) -> tuple[list[str], dict[tuple, list[dict]]]:
    """Records in series: every varying field but ``x_field`` (and the precision's derived fields)."""
    fields = _series_fields(records, (x_field, "weights_dtype", "matmul_precision"))
    lines = defaultdict(list)
    for r in records:
        lines[tuple(map(str, map(r.get, fields)))].append(r)
    return fields, lines


def _kept(records: list[dict], keep) -> list[dict]:
    """The records ``keep`` keeps: the list itself when it keeps them all (``views.remembering`` knows it)."""
    kept = [r for r in records if keep(r)]
    return records if len(kept) == len(records) else kept


def _draw_series(ax, styles: Styles, lines: dict, x, y, annotate=None, order=None) -> list:
    """One line per series, through its points sorted along x (or by ``order``); the series of one style
    are drawn as one line broken by NaNs (fast at thousands of series). Returns the y values drawn."""
    joined = defaultdict(lambda: ([], []))
    ys = []
    for rs in lines.values():
        pts = sorted(((order or x)(r), x(r), y(r), i) for i, r in enumerate(rs)
                     if x(r) is not None and y(r) is not None)
        pts = [p[1:] for p in pts]
        if not pts:
            continue
        r0 = rs[pts[0][2]]
        xs_, ys_ = joined[(styles.color(r0), styles.marker(r0), styles.style(r0))]
        xs_ += [p[0] for p in pts] + [np.nan]
        ys_ += [p[1] for p in pts] + [np.nan]
        if annotate:
            for px, py, i in pts:
                ax.annotate(annotate(rs[i]), (px, py), textcoords="offset points", xytext=(4, 3), fontsize=6,
                            color="#444444")
        ys += [p[1] for p in pts]
    for (color, marker, style), (xs_, ys_) in joined.items():
        ax.plot(xs_, ys_, color=color, marker=marker, ls=style, lw=1.3, ms=5)
    return ys


def scaling(device: str, records: list[dict], field: str, xlabel: str, out: Path, stem: str) -> str | None:
    """Decode tokens/s against ``field`` (batch_size or prompt_len), one line per series (every other
    varying field), drawn only where the records span at least two values."""
    fields, lines = _series(_kept(records, lambda r: r.get(field) is not None), field)
    lines = {k: v for k, v in lines.items() if len({r[field] for r in v}) > 1}
    if not lines:
        return None
    shown = [r for rs in lines.values() for r in rs]
    styles = Styles(shown, fields)
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    ys = _draw_series(ax, styles, lines, lambda r: r[field], lambda r: r["metrics"]["tokens_per_s"])
    _log(ax, "x", 2)
    _log_if_wide(ax, ys)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("decode tokens/s")
    ax.set_title(f"Decode tokens/s vs {xlabel}: {device}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, styles.legend(), styles, shown, loc="best")
    return _save(fig, out, stem)


def _pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (higher is better on both), by x."""
    front, best_y = [], -np.inf
    for px, py in sorted(points, key=lambda p: (-p[0], -p[1])):
        if py > best_y:
            front.append((px, py))
            best_y = py
    return sorted(front)


def pareto(device: str, records: list[dict], out: Path, stem: str) -> str | None:
    """Throughput against per-sequence speed across batch sizes: total tokens/s (y) against tokens/s per
    sequence (x), one line per series through its batch sizes, and the pareto front of every point
    (what a batch size buys in throughput and costs in per-user latency)."""
    fields, lines = _series(_kept(records, lambda r: r.get("batch_size")), "batch_size")
    lines = {k: v for k, v in lines.items() if len({r["batch_size"] for r in v}) > 1}
    if not lines:
        return None
    shown = [r for rs in lines.values() for r in rs]
    styles = Styles(shown, fields)
    fig, ax = plt.subplots(figsize=(8.5, 5.2))

    def per_seq(r):
        return r["metrics"]["tokens_per_s"] / r["batch_size"]

    few = len(shown) <= 40
    ys = _draw_series(ax, styles, lines, per_seq, lambda r: r["metrics"]["tokens_per_s"],
                      (lambda r: f"b{r['batch_size']}") if few else None, order=lambda r: r["batch_size"])
    front = _pareto_front([(per_seq(r), r["metrics"]["tokens_per_s"]) for r in shown])
    ax.plot([p[0] for p in front], [p[1] for p in front], color="black", lw=5, alpha=0.15, zorder=0)
    _log_if_wide(ax, ys)
    _log_if_wide(ax, [per_seq(r) for r in shown], "x")
    ax.set_xlabel("tokens/s per sequence (per-user speed)")
    ax.set_ylabel("total tokens/s (throughput)")
    ax.set_title(f"Throughput vs per-sequence speed across batch sizes: {device}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, [*styles.legend(), Line2D([], [], color="black", lw=5, alpha=0.15, label="pareto front")],
            styles, shown, loc="best")
    return _save(fig, out, stem)


def energy(device: str, records: list[dict], out: Path, stem: str) -> str | None:
    """Joules per token against total tokens/s, one line per series through its batch sizes (or points
    when no batch varies): where the GPU does the most work per joule."""
    rated = _kept(records, lambda r: (r.get("telemetry") or {}).get("joules_per_token")
                  and r["metrics"].get("tokens_per_s"))
    if not rated:
        return None
    fields, lines = _series(rated, "batch_size")
    styles = Styles(rated, fields)
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    ys = _draw_series(ax, styles, lines, lambda r: r["metrics"]["tokens_per_s"],
                      lambda r: r["telemetry"]["joules_per_token"], order=lambda r: r.get("batch_size") or 0)
    _log_if_wide(ax, ys)
    _log_if_wide(ax, [r["metrics"]["tokens_per_s"] for r in rated], "x")
    ax.set_xlabel("total tokens/s")
    ax.set_ylabel("energy per token (J)")
    ax.set_title(f"Energy per token vs throughput: {device}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, styles.legend(), styles, rated, loc="best")
    return _save(fig, out, stem)


def devices(records_by_device: dict[str, list[dict]], out: Path, stem: str) -> str | None:
    """Decode tokens/s of the same points on several devices, side by side per precision."""
    if len(records_by_device) < 2:
        return None
    per_device = [{(decode_label(r), r["dtype"]) for r in rs} for rs in records_by_device.values()]
    shared = {k for k in set().union(*per_device) if sum(k in keys for keys in per_device) > 1}
    keys = sorted(shared or set().union(*per_device))[:MAX_GROUPS]  # the points measured on several devices
    fig, ax = plt.subplots(figsize=(max(7.5, 0.6 * len(keys) * len(records_by_device)), 4.8))
    width = 0.8 / len(records_by_device)
    xs = np.arange(len(keys))
    for i, (device, rs) in enumerate(sorted(records_by_device.items())):
        rate = {(decode_label(r), r["dtype"]): r["metrics"]["tokens_per_s"] for r in rs}
        ax.bar(xs + i * width, [rate.get(k, 0) for k in keys], width, label=device)
    ax.set_xticks(xs + width * (len(records_by_device) - 1) / 2)
    ax.set_xticklabels([f"{p}\n{d}" for p, d in keys], fontsize=7, rotation=20, ha="right")
    _log(ax)
    ax.set_ylabel("decode tokens/s (log)")
    ax.set_title("Decode tokens/s across devices", fontsize=10)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out, stem)


def allreduce(device: str, records: list[dict], out: Path, stem: str) -> str | None:
    """All-reduce bus GB/s against message size (log x, the sizes measured as ticks), one line per world size
    (and node count or backend where those vary), the best record at each size; None without ok
    ``allreduce`` records that say their message size."""
    best: dict[tuple, dict[int, float]] = defaultdict(dict)
    rows = [r for r in records if r.get("workload") == "allreduce" and r.get("status") == "ok"
            and r.get("message_bytes") and (r.get("derived") or {}).get("achieved_gbps")]
    if not rows:
        return None
    several = [k for k in ("nodes", "backend") if len({r.get(k) for r in rows}) > 1]
    for r in rows:
        line = best[(r.get("world_size") or 1, *(str(r.get(k)) for k in several))]
        size = r["message_bytes"]
        line[size] = max(line.get(size, 0.0), r["derived"]["achieved_gbps"])
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    for i, (key, line) in enumerate(sorted(best.items())):
        sizes = sorted(line)
        extra = "".join(f", {k} {v}" for k, v in zip(several, key[1:]))
        ax.plot(sizes, [line[b] for b in sizes], marker=MARKERS[i % len(MARKERS)], color=PALETTE[i % len(PALETTE)],
                label=f"{key[0]} processes{extra}")
    sizes = sorted({b for line in best.values() for b in line})
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [_bytes(b) for b in sizes], fontsize=8)
    ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.set_xlabel("message size")
    ax.set_ylabel("bus bandwidth (GB/s)")
    ax.set_title(f"All-reduce bus bandwidth (best per size): {device}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, out, stem)


def _bytes(n: float) -> str:
    """A message size in binary units, as ``llmbench peak`` names them: 4 MiB, 512 KiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n:g} B"


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
        _log(ax, "x", 2)
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


CLEAN = "#7fc97f"  # a kernel-compile cell that fits and spills nothing
NO_FIT = "#555555"
FAILED = "#222222"


def kernel_resources(records: list[dict], out: Path, stem: str) -> str | None:
    """Heat map of static compiles (one precision): a row per kernel x case x candidate, a column per arch x
    head dim; green where the candidate fits and spills nothing, red by spill bytes (log, darker is
    more), dark grey where it does not fit, black where it did not compile. The text is the estimated
    occupancy (warps per SM over the arch's maximum)."""
    if not records:
        return None
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm

    rows = sorted({(str(r.get("kernel")), str(r.get("case")), str(r.get("candidate"))) for r in records})
    cols = sorted({(str(r.get("arch")), r.get("head_dim") or 0) for r in records},
                  key=lambda c: ("".join(ch for ch in c[0] if ch.isdigit()).zfill(4), c[1]))
    cells = {((str(r.get("kernel")), str(r.get("case")), str(r.get("candidate"))),
              (str(r.get("arch")), r.get("head_dim") or 0)): r for r in records}
    spills = [spill_bytes(r) for r in records if r.get("status") == "ok" and spill_bytes(r)]
    norm = LogNorm(vmin=max(1, min(spills, default=1)), vmax=max(max(spills, default=2), 2))
    cmap = colormaps["Reds"]
    image = np.ones((len(rows), len(cols), 4))
    labels = [f"{k} {c}  {cand}" for k, c, cand in rows]
    width = 0.065 * max(map(len, labels)) + 1.1 * len(cols) + 3.2  # row labels, cells, legend (inches)
    fig, ax = plt.subplots(figsize=(width, 1.6 + 0.24 * len(rows)))
    for (i, row), (j, col) in ((a, b) for a in enumerate(rows) for b in enumerate(cols)):
        r = cells.get((row, col))
        if r is None:
            continue
        m = r.get("metrics") or {}
        if r.get("status") != "ok":
            color, text = FAILED, "failed"
        elif is_clean(r):
            color, text = CLEAN, _occupancy(m)
        elif m.get("fits") is False and not spill_bytes(r):
            color, text = NO_FIT, "no fit"
        else:
            color, text = cmap(0.35 + 0.65 * float(norm(spill_bytes(r)))), _occupancy(m)
        image[i, j] = matplotlib.colors.to_rgba(color)
        dark = color in (FAILED, NO_FIT) or (color not in (CLEAN,) and norm(spill_bytes(r)) > 0.5)
        ax.text(j, i, text, ha="center", va="center", fontsize=6.5, color="white" if dark else "black")
    ax.imshow(image, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(cols)), [f"{arch}\nhd {hd}" for arch, hd in cols], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(rows)), labels, fontsize=6.5)
    ax.set_xticks(np.arange(-0.5, len(cols)), minor=True)
    ax.set_yticks(np.arange(-0.5, len(rows)), minor=True)
    ax.grid(which="minor", color="white", lw=1)
    ax.tick_params(which="minor", length=0)
    dtype = records[0].get("dtype")
    handles = [plt.Rectangle((0, 0), 1, 1, color=CLEAN, label="clean: fits, no spills"),
               plt.Rectangle((0, 0), 1, 1, color=cmap(0.7), label="spills (darker: more bytes, log)"),
               plt.Rectangle((0, 0), 1, 1, color=NO_FIT, label="does not fit"),
               plt.Rectangle((0, 0), 1, 1, color=FAILED, label="compile failed")]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
              title="cell text: occupancy", title_fontsize=7)
    ax.set_title(f"Kernel resources, {dtype}: static compile per candidate", fontsize=10, pad=28)
    return _save(fig, out, stem)


def _occupancy(metrics: dict) -> str:
    occ = metrics.get("occupancy")
    return "-" if occ is None else f"{100 * occ:.0f}%"
