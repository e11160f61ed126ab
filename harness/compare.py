"""``llmbench compare``: regression checks between runs, and one table across environments.

``compare BASELINE NEW`` matches the records of two results folders (or records
files) by their point, the fields that say what ran (workload, model, dtype,
sizes, attention, cache, ...), not when or where it ran, and gives each
(point, metric) one of three verdicts: regression, improvement or no
significant change. Where one side holds a point several times (runs appended
to one folder), its latest completed record counts.

The rule: a change is a regression (or an improvement) only when it is
statistically significant AND larger than ``--threshold`` in the worse (better)
direction. Significant means both tests agree: the Mann-Whitney U test of the
two sides' samples gives p < 0.05, and the 95% bootstrap interval of the ratio
of their medians excludes 1. The size of the change is the ratio of the
medians (tokens/s down, times up is worse). Anything else is no significant
change. The samples are the per-repeat values a record keeps in
``metrics["samples"]`` (``tokens_per_s``, ``ttft_ms``, ``tpot_ms``,
``step_ms``, ``time_ms``, ...; a ``*_p50`` metric uses the samples of its
base name). Records without samples (older records, pytest-benchmark imports),
or with too few for the test ever to reach p < 0.05, are compared on their
values alone: beyond the threshold counts, and the row says "no samples:
threshold only". Any regression, or a point that completed in BASELINE and
failed in NEW, makes the command exit 1, so CI and cluster job scripts can gate
on it.

BASELINE may instead be a TOML reference file, as HPC regression suites keep
them (ReFrame's ``reference``): per point, expected values with lower/upper
tolerances as fractions; a value outside its range, on either side, fails, and
so does a reference point that NEW lacks::

    [[point]]
    workload = "decode"
    model = "llama-3.2-1b"
    dtype = "bf16"
    batch_size = 1
    [point.expect]
    tokens_per_s = { value = 150.0, lower = -0.05, upper = 0.10 }
    ttft_ms = { value = 20.0, upper = 0.10 }     # no lower bound

A reference point lists only the fields it pins; every record of NEW that
agrees on them is checked. ``--side-by-side`` prints the same points across
several environments (devices, hosts) as columns instead.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from workloads.choices import CEILING_WORKLOADS
from workloads.errors import UserError

# Fields that say when, where or how well something ran, not what ran.
NOT_POINT = {"schema_version", "run_id", "timestamp", "status", "error", "metrics", "cost", "derived", "env",
             "telemetry", "warnings", "quality", "fingerprint", "device", "model_path"}
HIGHER_IS_BETTER = {"tokens_per_s", "e2e_tokens_per_s", "samples_per_s", "achieved_gbps", "achieved_tflops",
                    "prefill_gbps", "prefill_tflops", "mbu", "mfu", "tokens_per_joule", "ops"}
LOWER_IS_BETTER = {"peak_mem_bytes", "energy_j", "joules_per_token", "power_w_mean"}
DEFAULT_METRICS = ("tokens_per_s", "ttft_ms", "tpot_ms_p50", "step_ms_p50", "time_ms", "median_ms")
BLOCKS = ("metrics", "derived", "telemetry")
ALPHA = 0.05  # significance level of the Mann-Whitney test; the ratio's bootstrap interval is 1 - ALPHA
REGRESSION, IMPROVEMENT, NO_CHANGE = "regression", "improvement", "no significant change"
THRESHOLD_ONLY = "no samples: threshold only"


def parse_threshold(text: str) -> float:
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        raise UserError(f"--threshold must be a percentage such as 5% or 2.5, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise UserError(f"--threshold must be a finite percentage, 0 or more (such as 5%), got {text!r}")
    return value / 100


def direction(name: str) -> str:
    """'higher' or 'lower': which way is better for a metric llmbench knows."""
    if name in HIGHER_IS_BETTER or name.endswith("_per_s") or name.startswith("tokens_per_s_"):
        return "higher"
    if name in LOWER_IS_BETTER or re.search(r"_ms(_p\d+)?$", name):
        return "lower"
    raise UserError(f"do not know whether more or less {name!r} is better; write --metric {name}:higher "
                    f"or {name}:lower")


def parse_metrics(values: list[str] | None) -> dict[str, str] | None:
    """{metric: 'higher'|'lower'} from --metric arguments; None means the defaults."""
    if not values:
        return None
    out = {}
    for item in (v.strip() for value in values for v in value.split(",")):
        if not item:
            continue
        name, _, way = item.partition(":")
        if way and way not in ("higher", "lower"):
            raise UserError(f"--metric {item}: the direction must be higher or lower")
        out[name] = way or direction(name)
    return out or None


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _block(record: dict, name: str) -> dict:
    block = record.get(name)
    return block if isinstance(block, dict) else {}


def samples(record: dict, metric: str) -> list[float] | None:
    """The per-repeat values behind ``metric`` in ``metrics["samples"]``: its own list, or for a
    ``*_p50`` metric its base name's (``tpot_ms_p50`` -> ``tpot_ms``); None when the record has none."""
    kept = _block(_block(record, "metrics"), "samples")
    for key in (metric, metric[:-4] if metric.endswith("_p50") else None):
        values = kept.get(key) if key else None
        if isinstance(values, list):
            numbers = [float(v) for v in values if _number(v)]
            return numbers or None
    return None


def value(record: dict, metric: str):
    """A metric's value from ``metrics``, ``derived`` or ``telemetry``; else the median of its samples."""
    for block in BLOCKS:
        v = _block(record, block).get(metric)
        if _number(v):
            return v
    kept = samples(record, metric)
    if kept:
        import numpy as np

        return float(np.median(kept))
    return None


def point_of(record: dict) -> tuple:
    """The hashable identity of what a record measured."""
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in record.items() if k not in NOT_POINT))


def label(key: tuple, varying: list[str]) -> str:
    fields = dict(key)
    return " ".join(f"{k}={json.loads(fields[k])}" for k in varying if k in fields) or "(all)"


def varying_fields(keys) -> list[str]:
    """Point fields whose value differs between the given points (what tells rows apart), in record order."""
    values: dict[str, set] = {}
    for key in keys:
        for k, v in key:
            values.setdefault(k, set()).add(v)
    names = [k for k, vs in values.items() if len(vs) > 1 or any(k not in dict(key) for key in keys)]
    preferred = ["workload", "name", "model", "attn", "dtype", "batch_size", "prompt_len", "new_tokens", "seq_len"]
    return sorted(names, key=lambda k: (preferred.index(k) if k in preferred else len(preferred), k))


def latest(records: list[dict]) -> dict[tuple, dict]:
    """Per point, the latest completed record, else the latest record of any status."""
    out: dict[tuple, dict] = {}
    for r in sorted(records, key=lambda r: (r.get("status") == "ok", str(r.get("timestamp") or ""))):
        out[point_of(r)] = r
    return out


def read(path: Path) -> list[dict]:
    """The benchmark records under ``path`` (ceilings left out: they are not points to compare)."""
    from harness.records import read_records

    records = [r for r in read_records([path]) if r.get("workload") not in CEILING_WORKLOADS]
    if not records:
        raise UserError(f"no benchmark records under {path}")
    for r in records:
        for block in (*BLOCKS, "env"):
            if r.get(block) is not None and not isinstance(r[block], dict):
                raise UserError(f"a record under {path} (run {r.get('run_id')!r}) has a {block} that is not an "
                                "object; fix or remove that line")
    return records


def _metrics_for(pairs, chosen: dict[str, str] | None) -> dict[str, str]:
    if chosen:
        return chosen
    present = {m for base, new in pairs for m in DEFAULT_METRICS if value(base, m) is not None}
    return {m: direction(m) for m in DEFAULT_METRICS if m in present}


def verdict(change: float, way: str, threshold: float, significant: bool) -> str:
    """The rule: regression (improvement) when the change is significant AND beyond the threshold in the
    worse (better) direction; ``change`` is new/base - 1, ``way`` which direction is better."""
    worse = change < -threshold if way == "higher" else change > threshold
    better = change > threshold if way == "higher" else change < -threshold
    if significant and worse:
        return REGRESSION
    if significant and better:
        return IMPROVEMENT
    return NO_CHANGE


def can_be_significant(n_base: int, n_new: int) -> bool:
    """Whether samples this small can reach p < ALPHA at all (complete separation, no ties)."""
    from workloads.stats import mann_whitney_p

    return mann_whitney_p(range(n_base), range(n_base, n_base + n_new)) < ALPHA


def significance(base: list[float], new: list[float]) -> dict:
    """Mann-Whitney p and the bootstrap ratio of medians new/base with its 95% interval, and whether
    both call the difference significant."""
    from workloads.stats import mann_whitney_p, ratio_ci

    ratio, low, high = ratio_ci(new, base, level=1 - ALPHA)
    p = mann_whitney_p(base, new)
    return {"ratio": ratio, "ci_low": low, "ci_high": high, "p": p,
            "significant": p < ALPHA and (high < 1 or low > 1)}


def check(base_record: dict, new_record: dict, metric: str, way: str, threshold: float) -> dict | None:
    """One row of the regression check, or None when either side lacks the metric."""
    import numpy as np

    bs, ns = samples(base_record, metric), samples(new_record, metric)
    if bs and ns and all(v > 0 for v in bs + ns) and can_be_significant(len(bs), len(ns)):
        test = significance(bs, ns)
        change = test["ratio"] - 1
        return {"base": float(np.median(bs)), "new": float(np.median(ns)), "change": 100 * change,
                "ratio": test["ratio"], "ci": f"[{test['ci_low']:.3f}, {test['ci_high']:.3f}]", "p": test["p"],
                "n": f"{len(bs)}/{len(ns)}", "status": verdict(change, way, threshold, test["significant"]),
                "note": ""}
    bv, nv = value(base_record, metric), value(new_record, metric)
    if bv is None or nv is None:
        return None
    if not (bs and ns):
        note = THRESHOLD_ONLY
    elif all(v > 0 for v in bs + ns):
        note = f"{len(bs)}/{len(ns)} samples, too few for the test: threshold only"
    else:
        note = "samples not all positive: threshold only"
    if not bv:  # no relative change: any move counts
        worse, better = (nv < bv, nv > bv) if way == "higher" else (nv > bv, nv < bv)
        return {"base": bv, "new": nv, "status": REGRESSION if worse else IMPROVEMENT if better else NO_CHANGE,
                "note": "baseline is 0: threshold not applicable"}
    change = (nv - bv) / bv
    return {"base": bv, "new": nv, "change": 100 * change, "ratio": nv / bv,
            "status": verdict(change, way, threshold, True), "note": note}


def _require_present(chosen: dict[str, str], records: list[dict], where: str) -> None:
    """A metric named with --metric that no record has is a mistake (a misspelling), not an empty table."""
    missing = [m for m in chosen if not any(value(r, m) is not None for r in records)]
    if missing:
        raise UserError(f"--metric {', '.join(missing)}: no record {where} has it (looked in metrics, derived, "
                        "telemetry and metrics.samples); check the spelling")


def compare_runs(baseline: list[dict], new: list[dict], metrics: dict[str, str] | None, threshold: float):
    base_points, new_points = latest(baseline), latest(new)
    common = [k for k in base_points if k in new_points]
    if not common:
        raise UserError("BASELINE and NEW have no point in common (same workload, model, dtype and sizes)")
    chosen = _metrics_for([(base_points[k], new_points[k]) for k in common], metrics)
    if not chosen:
        raise UserError("the records have none of the default metrics; name one with --metric")
    if metrics:
        _require_present(chosen, [r for k in common for r in (base_points[k], new_points[k])],
                         "of the points BASELINE and NEW have in common")
    varying = varying_fields(common)
    rows, failed = [], 0
    for key in common:
        b, n = base_points[key], new_points[key]
        if n.get("status") != "ok" and b.get("status") == "ok":
            rows.append({"point": label(key, varying), "status": f"NEW {n.get('status')}"})
            failed += 1
            continue
        for metric, way in chosen.items():
            result = check(b, n, metric, way, threshold)
            if result is None:
                continue
            row = {"point": label(key, varying), "metric": metric, "better": way, **result}
            failed += row["status"] == REGRESSION
            rows.append(row)
    notes = []
    only_base = [k for k in base_points if k not in new_points]
    only_new = [k for k in new_points if k not in base_points]
    if only_base:
        notes.append(f"{len(only_base)} point(s) only in BASELINE (not compared)")
    if only_new:
        notes.append(f"{len(only_new)} point(s) only in NEW (not compared)")
    plain = sum(1 for row in rows if row.get("note"))
    if plain:
        notes.append(f"{plain} row(s) compared without the significance test (see note)")
    return rows, failed, notes


def load_reference(path: Path) -> list[tuple[dict, dict]]:
    """[(point fields, {metric: (value, lower, upper)})] from a TOML reference file."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read reference {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"reference {path} is not valid TOML: {exc}") from None
    points = data.get("point")
    if not isinstance(points, list) or not points:
        raise UserError(f"reference {path} has no [[point]] tables")
    out = []
    for i, entry in enumerate(points, 1):
        expect = entry.get("expect") if isinstance(entry, dict) else None
        if not isinstance(expect, dict) or not expect:
            raise UserError(f"reference {path}: point {i} has no [point.expect] values")
        checks = {}
        for metric, spec in expect.items():
            spec = spec if isinstance(spec, dict) else {"value": spec}
            ref, lower, upper = spec.get("value"), spec.get("lower"), spec.get("upper")
            if not all(_number(v) for v in (ref, 0 if lower is None else lower, 0 if upper is None else upper)) \
                    or ref == 0 or (lower or 0) > 0 or (upper or 0) < 0:
                raise UserError(f"reference {path}: point {i}, {metric}: expected value = a finite non-zero number, "
                                "lower <= 0, upper >= 0 (finite fractions of value; leave one out for no bound)")
            checks[metric] = (ref, lower, upper)
        out.append(({k: v for k, v in entry.items() if k != "expect"}, checks))
    return out


def compare_reference(reference: list[tuple[dict, dict]], new: list[dict]):
    """Rows for each reference value against every NEW record of its point; out of range or missing fails."""
    records = list(latest(new).values())
    rows, failed = [], 0
    for fields, checks in reference:
        name = " ".join(f"{k}={v}" for k, v in fields.items()) or "(all)"
        matching = [r for r in records if all(r.get(k) == v for k, v in fields.items())]
        if not matching:
            rows.append({"point": name, "status": "MISSING"})
            failed += 1
            continue
        varying = varying_fields([point_of(r) for r in matching]) if len(matching) > 1 else []
        for r in matching:
            point = name + (" " + label(point_of(r), [k for k in varying if k not in fields]) if varying else "")
            if r.get("status") != "ok":
                rows.append({"point": point, "status": f"NEW {r.get('status')}"})
                failed += 1
                continue
            for metric, (ref, lower, upper) in checks.items():
                v = value(r, metric)
                row = {"point": point, "metric": metric, "base": ref, "new": v,
                       "range": f"[{'-inf' if lower is None else f'{100 * lower:+g}%'}, "
                                f"{'+inf' if upper is None else f'{100 * upper:+g}%'}]"}
                if v is None:
                    row["status"] = "MISSING"
                else:
                    change = (v - ref) / ref if ref else 0.0
                    low = lower is not None and change < lower
                    high = upper is not None and change > upper
                    row.update(change=100 * change, status="BELOW RANGE" if low else "ABOVE RANGE" if high else "ok")
                failed += row["status"] != "ok"
                rows.append(row)
    return rows, failed


def side_by_side(paths: list[Path], metrics: dict[str, str] | None) -> str:
    """One table per metric: a row per point, a column per environment (device and host), and each
    environment's speed relative to the first."""
    from harness.ceilings import device_key
    from harness.tables import render

    by_env: dict[str, list[dict]] = {}
    for path in paths:
        for r in read(path):
            by_env.setdefault(device_key(r), []).append(r)
    envs = list(by_env)
    latest_by_env = {env: latest(rs) for env, rs in by_env.items()}
    keys = list(dict.fromkeys(k for env in envs for k in latest_by_env[env]))
    chosen = metrics or _metrics_for([(r, r) for env in envs for r in latest_by_env[env].values()], None)
    if not chosen:
        raise UserError("the records have none of the default metrics; name one with --metric")
    if metrics:
        _require_present(chosen, [r for rs in by_env.values() for r in rs], "in the inputs")
    varying = varying_fields(keys)
    parts = [f"environments: {', '.join(f'[{i}] {e}' for i, e in enumerate(envs))}"]
    for metric, way in chosen.items():
        rows = []
        for key in keys:
            row = {"point": label(key, varying)}
            for i, env in enumerate(envs):
                r = latest_by_env[env].get(key)
                row[i] = value(r, metric) if r and r.get("status") == "ok" else None
            if all(row[i] is None for i in range(len(envs))):
                continue
            for i in range(1, len(envs)):
                if row[0] and row[i]:
                    row[f"x{i}"] = row[i] / row[0] if way == "higher" else row[0] / row[i]
            rows.append(row)
        if not rows:
            continue
        columns = [("point", "point", "")] + [(i, f"[{i}]", ".4g") for i in range(len(envs))]
        columns += [(f"x{i}", f"[{i}] speed vs [0]", ".2f") for i in range(1, len(envs))]
        parts += ["", f"{metric} ({way} is better)", render(rows, columns)]
    return "\n".join(parts)


COLUMNS = [("point", "point", ""), ("metric", "metric", ""), ("base", "baseline", ".4g"), ("new", "new", ".4g"),
           ("change", "change %", "+.1f"), ("ratio", "new/base", ".3f"), ("ci", "95% CI", ""), ("p", "p", ".2g"),
           ("n", "n", ""), ("status", "verdict", ""), ("note", "note", "")]


def check_table(rows: list[dict], reference: bool = False) -> str:
    """The regression check's table: one row per (point, metric); ``reference`` adds the allowed range."""
    from harness.tables import render

    if reference:
        return render(rows, [*COLUMNS[:2], ("base", "reference", ".4g"), ("new", "new", ".4g"),
                             ("change", "change %", "+.1f"), ("range", "allowed", ""), ("status", "status", "")])
    return render(rows, COLUMNS)


def rule(threshold: float) -> str:
    """The decision rule in words, printed under the table."""
    return (f"verdict: regression/improvement = significant (Mann-Whitney p < {ALPHA:g} and the "
            f"{100 * (1 - ALPHA):g}% CI of the median ratio excludes 1) and beyond the {100 * threshold:g}% "
            "threshold in the worse/better direction; else no significant change")
