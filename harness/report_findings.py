"""Headline findings: the plain sentences at the top of the report, computed from the records.

A reader opens a report to learn a few things: is bf16 faster than fp32 here and
why, what a quantized format (int8 weights, an int8 or fp8 KV cache) buys and costs
in accuracy, which engine or attention implementation wins and by how much, how close
the best point comes to the hardware's limit, which points are overhead-bound,
and what to distrust (rates above a ceiling, noise, failures). Each function
here answers one of those for one device, from records whose ``derived`` block
already holds the report's ceilings; each returns Markdown lines (an empty list
when the records cannot answer). Rates here are read, never computed from time
and cost (``harness.roofline`` does that).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from harness import views
from harness.roofline import OVERHEAD_BELOW, ROUNDOFF, WARNING_PREFIX
from workloads.stats import ratio_ci

MAX_EXAMPLES = 3
BOOTSTRAP = 2000
SEED = 0
DTYPE_FIELDS = ("dtype", "weights_dtype", "matmul_precision")


def _rate(r: dict) -> float | None:
    """Tokens/s of a decode record; calls/s (1 / median time) of a kernel record."""
    m = r.get("metrics") or {}
    if m.get("tokens_per_s"):
        return m["tokens_per_s"]
    return 1e3 / m["time_ms"] if m.get("time_ms") else None


def _unit(r: dict) -> str:
    return "tok/s" if (r.get("metrics") or {}).get("tokens_per_s") else "calls/s"


def _pairs(records: list[dict], field: str, drop: tuple = ()) -> dict[tuple, dict[str, dict]]:
    """Records grouped by every point field but ``field`` (and ``drop``): value of ``field`` -> record."""
    varying, _ = views.varying_fields(records)
    rest = [k for k in varying if k != field and k not in drop and not views.follows(records, k, field)]
    groups: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in records:
        if _rate(r):
            key = tuple(map(r.get, rest))
            try:
                group = groups[key]
            except TypeError:  # a list-valued field
                group = groups[tuple(map(views._hashable, key))]
            group[str(r.get(field))] = r
    return groups


def _subset(records: list[dict], keep) -> list[dict]:
    """The records ``keep`` keeps: the list itself when it keeps them all (what ``views.remembering`` knows
    about it stays known)."""
    kept = [r for r in records if keep(r)]
    return records if len(kept) == len(records) else kept


def _label(r: dict, fields: list[str], without: tuple = ()) -> str:
    """``r`` named by the fields that vary across its records (``fields``), less ``without``."""
    return views.point_label(r, [k for k in fields if k not in without]) or "the one point measured"


def _fields(records: list[dict]) -> list[str]:
    """The fields that name a point: those that vary, less those another sets (cache follows engine)."""
    return views.independent(views.varying_fields(records)[0], records)


def _geomean_ci(ratios: list[float]) -> tuple[float, float, float]:
    """Geometric mean of ``ratios`` and its 95% percentile-bootstrap interval over the points."""
    logs = np.log(np.asarray(ratios))
    mean = float(np.exp(logs.mean()))
    if len(logs) < 2:
        return mean, mean, mean
    rng = np.random.default_rng(SEED)
    means = np.exp(logs[rng.integers(0, len(logs), (BOOTSTRAP, len(logs)))].mean(axis=1))
    low, high = np.percentile(means, [2.5, 97.5])
    return mean, float(low), float(high)


def precision(records: list[dict], base: str = "fp32") -> list[str]:
    """Each lower precision against ``base`` at the points where both ran, weights and KV cache stored in the
    precision itself (``formats`` compares the others): speedup with its 95% CI and the bytes per step
    behind it."""
    records = _subset(records, views.plain)
    groups = _pairs(records, "dtype", views.VARIANT_FIELDS)
    fields = _fields(records)
    lines = []
    for dtype in ("bf16", "fp16", "tf32"):
        matched = [(g[dtype], g[base]) for g in groups.values() if dtype in g and base in g]
        if not matched:
            continue
        speed = [_rate(a) / _rate(b) for a, b in matched]
        size = [b["cost"]["bytes_per_step"] / a["cost"]["bytes_per_step"] for a, b in matched
                if a["cost"].get("bytes_per_step") and b["cost"].get("bytes_per_step")]
        if len(matched) == 1:
            a, b = matched[0]
            sa, sb = (r["metrics"].get("samples", {}).get("tokens_per_s") for r in (a, b))
            ci = ""
            if sa and sb:
                _, low, high = ratio_ci(sa, sb)
                ci = f" (95% CI {low:.2f}-{high:.2f}x{', no significant difference' if low <= 1 <= high else ''})"
            line = (f"**{dtype} vs {base}**: {dtype} decodes **{speed[0]:.2f}x** as fast as {base}{ci} at "
                    f"{_label(a, fields, DTYPE_FIELDS)}")
            if size:
                line += (f"; each step moves {size[0]:.2f}x fewer bytes ({views.si(a['cost']['bytes_per_step'])}B "
                         f"vs {views.si(b['cost']['bytes_per_step'])}B)")
        else:
            mean, low, high = _geomean_ci(speed)
            lo, hi = min(range(len(speed)), key=speed.__getitem__), max(range(len(speed)), key=speed.__getitem__)
            spread = (f"{speed[lo]:.2f}x at every point" if f"{speed[lo]:.2f}" == f"{speed[hi]:.2f}" else
                      f"{speed[lo]:.2f}x at {_label(matched[lo][0], fields, DTYPE_FIELDS)} to {speed[hi]:.2f}x at "
                      f"{_label(matched[hi][0], fields, DTYPE_FIELDS)}")
            line = (f"**{dtype} vs {base}**: over {len(matched)} matched points {dtype} decodes **{mean:.2f}x** as "
                    f"fast as {base} (geometric mean, 95% CI {low:.2f}-{high:.2f}x over points; {spread})")
            if size:
                line += (f"; each step moves {min(size):.2f}-{max(size):.2f}x fewer bytes" if max(size) - min(size)
                         > 0.005 else f"; each step moves {size[0]:.2f}x fewer bytes")
        lines.append(line + ".")
    return lines


def formats(records: list[dict]) -> list[str]:
    """Each variant that stores weights or KV cache in a format of its own (int8 weights, an fp8 cache, ...)
    against the plain run of its precision (else fp32's) at the points where both ran: the speedup, said only
    when significant (one point: the bootstrap CI of the ratio of medians, else the two rates' CIs; several:
    the geometric mean's CI over points), the bytes per step, and the quality measured against the same model
    unquantized."""
    fields, points = views.precision_points(records)
    firsts: dict[str, dict] = {}
    for group in points:
        for variant, r in group.items():
            if not views.plain(r):
                firsts.setdefault(variant, r)
    lines = []
    for variant, first in sorted(firsts.items(), key=lambda kv: views.variant_order(kv[1])):
        for base in dict.fromkeys((str(first.get("dtype")), "fp32")):
            matched = [(g[variant], g[base]) for g in points if variant in g and base in g and views.plain(g[base])]
            if matched:
                lines.append(_format_line(variant, base, matched, fields))
                break
    return lines


def _matched_speedup(matched: list[tuple[dict, dict]], label) -> tuple[float, bool, str, str]:
    """The first record's tokens/s over the second's across ``matched`` pairs of one point each: for one
    pair the ratio with the bootstrap CI of the ratio of medians (without samples, whether the two rates'
    CIs are apart), for several the geometric mean with its CI. Returns (ratio, significant, the CI in
    words, ' at <point>' for one pair, by ``label(record)``)."""
    speed = [_rate(a) / _rate(b) for a, b in matched]
    if len(matched) > 1:
        ratio, low, high = _geomean_ci(speed)
        return ratio, not low <= 1 <= high, (f"geometric mean over {len(matched)} matched points, 95% CI "
                                             f"{low:.2f}-{high:.2f}x"), ""
    a, b = matched[0]
    where = f" at {label(a)}"
    sa, sb = (r["metrics"].get("samples", {}).get("tokens_per_s") for r in (a, b))
    if sa and sb:
        _, low, high = ratio_ci(sa, sb)
        return speed[0], not low <= 1 <= high, f"95% CI {low:.2f}-{high:.2f}x", where
    significant = _beats(a, b) or _beats(b, a)
    ci = ("the two tok/s 95% CIs " + ("apart" if significant else "overlap")
          if a["metrics"].get("tokens_per_s_ci_low") is not None else "no CI measured")
    return speed[0], significant, ci, where


def _format_line(variant: str, base: str, matched: list[tuple[dict, dict]], fields: list[str]) -> str:
    ratio, significant, ci, where = _matched_speedup(matched, lambda r: _label(r, fields, views.VARIANT_FIELDS))
    line = (f"**{variant}**: **{ratio:.2f}x** {base}'s tokens/s ({ci}){where}" if significant else
            f"**{variant}**: no significant difference in tokens/s from {base} ({ratio:.2f}x, {ci}){where}")
    size = [a["cost"]["bytes_per_step"] / b["cost"]["bytes_per_step"] for a, b in matched
            if a["cost"].get("bytes_per_step") and b["cost"].get("bytes_per_step")]
    if size:
        line += f", {_span(size, '{:.2f}')}x the bytes per step"
    quality = [views.quality_values(a) for a, _ in matched]
    agree = [q["agree"] for q in quality if q["agree"] is not None]
    if agree:
        line += f"; greedy tokens agree {_span(agree, '{:.0f}')}%"
        errors = [q["logit_err"] for q in quality if q["logit_err"] is not None]
        ppl = [q["ppl_delta"] for q in quality if q["ppl_delta"] is not None]
        extra = ([f"max logit error {views.sig3(max(errors))}"] if errors else []) + \
            ([f"perplexity {_span(ppl, '{:+.3g}')}"] if ppl else [])
        line += f" ({', '.join(extra)})" if extra else ""
    return line + "."


def tensor_parallel(records: list[dict]) -> list[str]:
    """Each tensor-parallel width against one GPU at the points where both ran (``views.tp_pairs``): the
    speedup, said only when significant (one point: the bootstrap CI of the ratio of medians, else the two
    rates' CIs; several: the geometric mean's CI over points), and the efficiency per GPU."""
    by_tp: dict[int, list[tuple[dict, dict]]] = defaultdict(list)
    for r, one in views.tp_pairs(records):
        by_tp[r["tp"]].append((r, one))
    fields = [k for k in _fields(records) if k not in views.TP_FIELDS]
    lines = []
    for tp, matched in sorted(by_tp.items()):
        ratio, significant, ci, where = _matched_speedup(matched, lambda r: _label(r, fields))
        lines.append(f"**Tensor parallel**: TP={tp} decodes **{ratio:.2f}x** as fast as one GPU ({ci}){where}, "
                     f"{100 * ratio / tp:.0f}% per GPU." if significant else
                     f"**Tensor parallel**: TP={tp} shows no significant difference in tokens/s from one GPU "
                     f"({ratio:.2f}x, {ci}){where}.")
    return lines


def _span(values: list[float], spec: str) -> str:
    """'0.52' or '0.50-0.55': the values' range in ``spec``, one number when it rounds to one."""
    low, high = spec.format(min(values)), spec.format(max(values))
    return low if low == high else f"{low} to {high}" if low.startswith(("-", "+")) else f"{low}-{high}"


def _beats(a: dict, b: dict) -> bool:
    """Whether ``a``'s tokens/s 95% CI lies wholly above ``b``'s (no CI: the medians decide)."""
    low, high = a["metrics"].get("tokens_per_s_ci_low"), b["metrics"].get("tokens_per_s_ci_high")
    return low > high if low is not None and high is not None else _rate(a) > _rate(b)


def best_of(records: list[dict], field: str, what: str) -> list[str]:
    """The fastest value of ``field`` (engine, attention, cache) at each point where several ran, and by how
    much over the next one; ties within each other's 95% CI are said to be ties."""
    groups = [g for g in _pairs(records, field).values() if len(g) > 1]
    if not groups:
        return []
    wins: dict[str, list[float]] = defaultdict(list)
    ties, examples = 0, {}
    for g in groups:
        first, second = sorted(g.values(), key=_rate, reverse=True)[:2]
        if not _beats(first, second):
            ties += 1
            continue
        name = str(first.get(field))
        wins[name].append(_rate(first) / _rate(second))
        examples.setdefault(name, (first, second))
    n = len(groups)
    if n == 1:
        first, second = sorted(groups[0].values(), key=_rate, reverse=True)[:2]
        where = _label(first, _fields(records), (field,))
        if ties:
            return [f"**{what}**: at {where}, {first.get(field)} and {second.get(field)} are within each other's "
                    f"95% CI ({views.si(_rate(first))} vs {views.si(_rate(second))} {_unit(first)}): no significant "
                    "winner."]
        return [f"**{what}**: at {where}, **{first.get(field)}** is fastest, **{_rate(first) / _rate(second):.2f}x** "
                f"{second.get(field)} ({views.si(_rate(first))} vs {views.si(_rate(second))} {_unit(first)})."]
    parts = []
    for name, ratios in sorted(wins.items(), key=lambda kv: -len(kv[1])):
        low, high = f"{min(ratios):.2f}", f"{max(ratios):.2f}"
        spread = f"{low}x" if low == high else f"{low}-{high}x"
        parts.append(f"**{name}** is fastest at {len(ratios)} of {n} points ({spread} the next)")
    tie = f"no significant winner at {ties} point(s) (the top two within each other's 95% CI)"
    if not parts:
        return [f"**{what}**: {tie.replace(f'{ties} point(s)', f'any of the {n} points')}."]
    return [f"**{what}**: " + "; ".join(parts) + (f"; {tie}" if ties else "") + "."]


def best_mbu(records: list[dict], ceilings) -> list[str]:
    """The highest decode memory-bandwidth utilisation and where; or why there is none."""
    with_mbu = [r for r in records if r["derived"].get("mbu") is not None]
    if not with_mbu:
        if records and not (ceilings and ceilings.copy_gbps):
            return ["**Bandwidth**: no ceilings measured on this device, so no MBU: run `llmbench peak` on it."]
        return []
    possible = [r for r in with_mbu if r["derived"]["mbu"] <= 1 + ROUNDOFF]
    above = len(with_mbu) - len(possible)
    tail = (f" ({above} point(s) above the ceiling are left out: impossible, re-run `llmbench peak`)"
            if above else "")
    if not possible:
        return [f"**Bandwidth**: every decode point lies above the measured copy bandwidth, which is impossible: "
                "re-run `llmbench peak`."]
    best = max(possible, key=lambda r: r["derived"]["mbu"])
    d = best["derived"]
    return [f"**Bandwidth**: the best decode point reaches **{100 * d['mbu']:.1f}%** of the measured copy bandwidth "
            f"({views.si(d['achieved_gbps'] * 1e9)}B/s of {views.si(ceilings.copy_gbps * 1e9)}B/s) at "
            f"{_label(best, _fields(records))}{tail}."]


def overhead(records: list[dict], what: str = "decode") -> list[str]:
    """How many points are overhead-bound (under ``OVERHEAD_BELOW`` of their roof), with examples."""
    bound = _subset(records, lambda r: r["derived"].get("bound"))
    over = [r for r in bound if r["derived"]["bound"] == "overhead"]
    if not bound:
        return []
    if not over:
        return [f"**Overhead**: no {what} point is overhead-bound (each reaches {100 * OVERHEAD_BELOW:.0f}% of its "
                "roof or more)."]
    fields = _fields(bound)
    where = _where(bound, over, fields)
    if not where:
        names = ", ".join(_label(r, fields) for r in over[:MAX_EXAMPLES])
        where = names + (f" and {len(over) - MAX_EXAMPLES} more" if len(over) > MAX_EXAMPLES else "")
    return [f"**Overhead**: {len(over)} of {len(bound)} {what} points are overhead-bound (under "
            f"{100 * OVERHEAD_BELOW:.0f}% of the roof: launch, host and framework time dominate); {where}."]


def _where(records: list[dict], chosen: list[dict], fields: list[str]) -> str:
    """The field whose values best tell ``chosen`` from the other ``records``, as 'by engine: hf 52 of
    55, lean 0 of 55' (empty when no field has two or more values or nothing tells them apart)."""
    picked = {id(r) for r in chosen}
    best, spread = "", 0.0
    for field in fields:
        counts: dict = defaultdict(lambda: [0, 0])
        for r in records:
            counts[str(r.get(field))][0] += id(r) in picked
            counts[str(r.get(field))][1] += 1
        if not 1 < len(counts) <= 8:
            continue
        shares = [a / b for a, b in counts.values()]
        if max(shares) - min(shares) > spread:
            spread = max(shares) - min(shares)
            ordered = sorted(counts.items(), key=lambda kv: -kv[1][0] / kv[1][1])
            name = views.FIELD_HEADERS.get(field, field.replace("_", " "))
            best = "by " + name + ": " + ", ".join(f"{name} {v}: {a} of {b}" for v, (a, b) in ordered)
    return best


def energy(records: list[dict]) -> list[str]:
    """The lowest joules per token and where, with the power drawn there."""
    rated = [r for r in records if (r.get("telemetry") or {}).get("joules_per_token")]
    if not rated:
        return []
    best = min(rated, key=lambda r: r["telemetry"]["joules_per_token"])
    t = best["telemetry"]
    throttled = [r for r in rated if set(r["telemetry"].get("throttle_reasons") or []) - {"gpu_idle"}]
    line = (f"**Energy**: lowest {views.si(t['joules_per_token'])}J per token at {_label(best, _fields(records))}"
            + (f", drawing {t['power_w_mean']:.0f} W" if t.get("power_w_mean") else ""))
    if throttled:
        line += f"; clocks were throttled at {len(throttled)} of {len(rated)} points (see the energy table)"
    return [line + "."]


def warnings(records: list[dict], failed: list[dict]) -> list[str]:
    """What to distrust: rates above a measured ceiling, noisy or drifting points, points that failed."""
    impossible = sum(any(w.startswith(WARNING_PREFIX) for w in r.get("warnings") or []) for r in records)
    noisy = sum(any(w.startswith("noisy") for w in r.get("warnings") or []) for r in records)
    other = sum(any(not w.startswith((WARNING_PREFIX, "noisy")) for w in r.get("warnings") or []) for r in records)
    parts = []
    if impossible:
        parts.append(f"{impossible} point(s) above a measured ceiling (impossible: re-run `llmbench peak`)")
    if noisy:
        parts.append(f"{noisy} noisy point(s) (CV over 5%)")
    if other:
        parts.append(f"{other} point(s) with other warnings (drift, quality)")
    if failed:
        statuses = defaultdict(int)
        for r in failed:
            statuses[r.get("status")] += 1
        parts.append(f"{len(failed)} point(s) did not complete ("
                     + ", ".join(f"{n} {status}" for status, n in sorted(statuses.items())) + ")")
    if not parts:
        return ["**Warnings**: none: every rate within its ceilings, no noisy point, nothing failed."] \
            if records else []
    return ["**Warnings**: " + "; ".join(parts) + " (listed under Warnings below)."]


def device(decode: list[dict], finetune: list[dict], kernels: list[dict], failed: list[dict], ceilings) -> list[str]:
    """A device's findings, in the order a reader asks (the same record lists looked at again and again:
    ``views.remembering``)."""
    with views.remembering():
        return [*precision(decode), *formats(decode), *tensor_parallel(decode), *best_of(decode, "engine", "Engine"),
                *best_of(decode, "attn", "Attention"),
                *(best_of(decode, "cache", "KV cache") if len({r.get("engine") for r in decode}) < 2 else []),
                *best_mbu(decode, ceilings), *overhead(decode), *energy(decode),
                *best_of([r for r in kernels if r["workload"] == "attention"], "attn", "Fused attention kernel"),
                *best_of([r for r in kernels if r["workload"] == "decode-attention"], "attn",
                         "Decode attention kernel"),
                *warnings([*decode, *finetune, *kernels], failed)]


def compile_findings(records: list[dict]) -> list[str]:
    """The static kernel check in one sentence: how many kernel x arch x head dim groups have a spill-free
    candidate in every case, and which do not."""
    if not records:
        return []
    summary = views.compile_summary(records)
    bad = [line.split(":")[0] for line in summary if "NO spill-free" in line]
    line = (f"**Kernel resources**: {len(summary) - len(bad)} of {len(summary)} kernel x arch x head dim "
            "combinations have a spill-free candidate that fits in every case")
    if bad:
        line += f"; none for {', '.join(bad[:6])}" + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
    return [line + "."]

