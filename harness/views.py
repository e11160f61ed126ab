"""Records -> table rows and columns, per workload: the one place a record becomes something to read.

The terminal tables the commands print, the report's tables and the one-line
notes printed as each record completes all come from here, so a column means the
same thing and has the same header wherever it appears. Columns are
``(key, header, format spec)`` for ``harness.tables``; a missing value prints as
'-'. Nothing here measures or divides time by cost (``harness.roofline`` does).
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager

from harness.roofline import OVERHEAD_BELOW, PEAK_HINT, ROUNDOFF, WARNING_PREFIX
from harness.tables import render, si, sig3  # noqa: F401 (si, sig3: the report's sentences format with them)
from workloads.choices import ATTENTION_IMPLS, ATTENTION_MODES, PRECISIONS
from workloads.stats import ratio_ci


class Impossible(float):
    """A percentage above its measured ceiling: formats with a trailing '!' in every table."""

    def __format__(self, spec: str) -> str:
        return (float.__format__(self, spec) if spec else float.__repr__(self)) + "!"

    def __str__(self) -> str:
        return format(self, "")


def _pct(value):
    return None if value is None else 100 * value


def _util(value):
    """MBU or MFU as a percentage, marked when it lies above its measured ceiling (over 100%)."""
    if value is None:
        return None
    return Impossible(100 * value) if value > 1 + ROUNDOFF else 100 * value


IMPOSSIBLE_NOTE = f"! above its measured ceiling, which is impossible: {PEAK_HINT}."
BOUND_NOTE = (f"bound: memory or compute by the measured ridge point (matmul FLOP/s over copy bandwidth); overhead "
              f"when the point reaches under {100 * OVERHEAD_BELOW:.0f}% of the roof at its arithmetic intensity, "
              "min(matmul peak, intensity x copy bandwidth): launch, host and framework time dominate.")


MAX_WARNING_LINES = 10  # under a terminal table; the rest stay in the records


def roof_notes(rows: list[dict], records: list[dict] = (), explain_bound: bool = True) -> list[str]:
    """The lines under a table: what '!' means, when a value carries it or a record of the table has a
    rate above its ceiling (each such warning listed, up to ``MAX_WARNING_LINES``), and what the
    bound labels mean when one shows ``overhead`` (unless ``explain_bound`` is off: the report says
    it once)."""
    values = [v for row in rows for v in row.values()]
    warned = roofline_warnings(records, record_label)
    notes = []
    if warned or any(isinstance(v, Impossible) for v in values):
        notes.append(IMPOSSIBLE_NOTE)
        notes += [f"  {line}" for line in warned[:MAX_WARNING_LINES]]
        if len(warned) > MAX_WARNING_LINES:
            notes.append(f"  ... and {len(warned) - MAX_WARNING_LINES} more (each record's warnings)")
    if explain_bound and "overhead" in values:
        notes.append(BOUND_NOTE)
    return notes


def record_label(r: dict) -> str:
    """A record named in a few words: workload, implementation or engine, precision and point."""
    w, g = r.get("workload"), r.get
    if w == "decode":
        engine = f" {g('engine')}" if g("engine") else ""
        return f"decode {g('model')} {g('dtype')}{engine} b{g('batch_size')} p{g('prompt_len')} n{g('new_tokens')}"
    if w == "finetune":
        trainer = f" {g('trainer')}" if g("trainer") else ""
        return f"finetune {g('model')}{trainer} {g('dtype')} b{g('batch_size')} seq {g('seq_len')}"
    if w == "attention":
        causal = "causal" if g("causal") else "non-causal"
        return (f"attention {g('attn')} {g('dtype')} {g('mode')} {causal} head dim {g('head_dim')} "
                f"heads {g('heads')}/{g('kv_heads')} seq {g('seq_len')} b{g('batch_size')}")
    if w == "decode-attention":
        return (f"decode-attention {g('attn')} {g('dtype')} b{g('batch_size')} context {g('context')} "
                f"heads {g('heads')}/{g('kv_heads')} head dim {g('head_dim')}")
    return " ".join(str(x) for x in (w, g("model") or g("name"), g("dtype")) if x)


def roofline_warnings(records: list[dict], label=record_label) -> list[str]:
    """One line per distinct roofline warning (rate above a measured ceiling), naming the record by
    ``label(record)``; the hint to re-run ``llmbench peak`` is left to the caller, said once."""
    out = []
    for r in records:
        for w in r.get("warnings") or []:
            if w.startswith(WARNING_PREFIX):
                text = w.removeprefix(WARNING_PREFIX).removesuffix(f"; {PEAK_HINT}")
                line = f"{label(r)}: {text}"
                if line not in out:
                    out.append(line)
    return out


def other_warnings(records: list[dict], label=record_label) -> list[str]:
    """One line per distinct warning that is not the roofline's (noise, drift), naming the record."""
    out = []
    for r in records:
        for w in r.get("warnings") or []:
            line = f"{label(r)}: {w}"
            if not w.startswith(WARNING_PREFIX) and line not in out:
                out.append(line)
    return out


def _precision_order(dtype: str) -> int:
    return PRECISIONS.index(dtype) if dtype in PRECISIONS else len(PRECISIONS)


def _status(r: dict) -> str:
    return r["status"] if r["status"] == "ok" else f"{r['status']}: {(r['error'] or '')[:60]}"


def _skipped_notes(records: list[dict]) -> list[str]:
    """One line per (implementation, reason) skipped, with the number of points."""
    counts: dict[tuple[str, str], int] = {}
    for r in records:
        if r["status"] == "skipped":
            key = (r["attn"], r["error"] or "")
            counts[key] = counts.get(key, 0) + 1
    return [f"skipped {impl} at {n} point(s): {reason}" for (impl, reason), n in counts.items()]


# ---------------------------------------------------------------- decode


STORED_FLOAT = {"fp32": "fp32", "tf32": "fp32", "bf16": "bf16", "fp16": "fp16"}  # what a precision stores


def _own_format(r: dict, key: str) -> str | None:
    """A decode record's ``weight_format`` or ``kv_format`` when it is not its precision's own float, else None."""
    value = r.get(key)
    return None if value == STORED_FLOAT.get(r.get("dtype")) else value


def _formats(r: dict) -> str:
    """' weights int8 KV fp8' for what a decode record stores other than in its compute dtype, else ''."""
    parts = [f"{name} {_own_format(r, k)}" for k, name in (("weight_format", "weights"), ("kv_format", "KV"))
             if _own_format(r, k) is not None]
    if r.get("weight_impl") not in (None, "triton"):
        parts.append(f"({r['weight_impl']})")
    return "".join(f" {p}" for p in parts)


def decode_note(r: dict) -> str:
    """The line printed as a decode point completes."""
    where = f"{r['dtype']}{_formats(r)} {r['engine']} b={r['batch_size']} p={r['prompt_len']} n={r['new_tokens']}"
    if r["status"] != "ok":
        return f"{where}: {r['status']}: {r['error']}"
    m = r["metrics"]
    agree = (r.get("quality") or {}).get("token_agreement")
    return (f"{where}: {m['tokens_per_s']:.1f} tok/s, TTFT {m['ttft_ms']:.1f} ms, "
            f"{r['derived']['achieved_gbps']:.1f} GB/s" + (f", tokens agree {100 * agree:.0f}%" if agree is not None
                                                          else ""))


def speedup_ci(r: dict, base: dict) -> str | None:
    """The 95% CI of ``r``'s tokens/s over ``base``'s (bootstrap of the ratio of medians of their
    per-generation samples), or "no significant difference" when it contains 1."""
    a = r["metrics"].get("samples", {}).get("tokens_per_s")
    b = base["metrics"].get("samples", {}).get("tokens_per_s")
    if r is base or not a or not b:
        return None
    _, low, high = ratio_ci(a, b)
    return "no significant difference" if low <= 1.0 <= high else f"{low:.2f}-{high:.2f}"


def decode_table(records: list[dict]) -> str:
    """One row per record, grouped by point; speedup is tokens/s against the first precision (and
    engine) that completed at the same point, with its 95% CI."""
    keys = [(r["model"], r["batch_size"], r["prompt_len"], r["new_tokens"]) for r in records]
    baseline: dict[tuple, dict] = {}
    for key, r in zip(keys, records):
        if r["metrics"].get("tokens_per_s") is not None:
            baseline.setdefault(key, r)
    point_order = list(dict.fromkeys(keys))
    rows = []
    for key, r in sorted(zip(keys, records), key=lambda pair: point_order.index(pair[0])):
        m, d, c = r["metrics"], r["derived"], r["cost"]
        rate = m.get("tokens_per_s")
        base = baseline.get(key)
        rows.append({
            "model": r["model"], "dtype": r["dtype"], "engine": r.get("engine"), "batch": r["batch_size"],
            "prompt": r["prompt_len"],
            "new": r["new_tokens"], "status": r["status"], "tok_s": rate, "ttft": m.get("ttft_ms"),
            "tpot50": m.get("tpot_ms_p50"), "tpot90": m.get("tpot_ms_p90"), "gbps": d.get("achieved_gbps"),
            "speedup": rate / base["metrics"]["tokens_per_s"] if rate is not None else None,
            "speedup_ci": speedup_ci(r, base) if rate is not None else None,
            "mem": m["peak_mem_bytes"] / 1e9 if "peak_mem_bytes" in m else None,
            "mb_step": c["bytes_per_step"] / 1e6 if "bytes_per_step" in c else None,
            "mbu": _util(d.get("mbu")), "bound": d.get("bound"), "weights": _own_format(r, "weight_format"),
            "kv": _own_format(r, "kv_format"), "impl": r.get("weight_impl"),
            "agree": _pct((r.get("quality") or {}).get("token_agreement")),
        })
    varies = [k for k in ("engine", "weights", "impl", "kv") if len({row[k] for row in rows}) > 1]
    headers = {"engine": "engine", "weights": "weights", "impl": "weight kernel", "kv": "KV cache"}
    agree = [("agree", "tokens agree %", ".0f")] if any(row["agree"] is not None for row in rows) else []
    table = render(rows, [
        ("model", "model", ""), ("dtype", "dtype", ""), *[(k, headers[k], "") for k in varies],
        ("batch", "batch", "d"), ("prompt", "prompt", "d"),
        ("new", "new", "d"), ("tok_s", "tok/s", ".2f"), ("speedup", "speedup", ".2f"),
        ("speedup_ci", "speedup 95% CI", ""), *agree,
        ("ttft", "TTFT ms", ".1f"), ("tpot50", "TPOT p50 ms", ".2f"), ("tpot90", "TPOT p90 ms", ".2f"),
        ("mb_step", "MB/step", ".1f"), ("gbps", "GB/s", ".2f"), ("mbu", "% peak BW", ".1f"),
        ("bound", "bound", ""), ("mem", "peak mem GB", ".2f"), ("status", "status", ""),
    ])
    return "\n".join([table, *roof_notes(rows, records)])


DECODE_COLUMNS = [
    ("model", "model", ""), ("batch_size", "batch", "d"), ("prompt_len", "prompt", "d"), ("new_tokens", "new", "d"),
    ("tokens_per_s", "tok/s", ".2f"), ("ttft_ms", "TTFT ms", ".1f"), ("tpot_ms", "TPOT p50 ms", ".2f"),
    ("gbps", "GB/s", ".1f"), ("pct_bw", "% meas. BW", ".1f"), ("pct_bw_spec", "% spec BW", ".1f"),
    ("tflops", "TFLOP/s", ".3f"), ("mfu", "MFU %", ".2f"), ("roof", "% roof", ".1f"), ("bound", "bound", ""),
    ("prefill_mfu", "prefill MFU %", ".1f"), ("prefill_bound", "prefill bound", ""),
]


def decode_row(r: dict) -> dict:
    """A report row of one completed decode record."""
    m, d = r["metrics"], r["derived"]
    return {
        "model": r["model"], "batch_size": r["batch_size"], "prompt_len": r["prompt_len"],
        "new_tokens": r["new_tokens"], "tokens_per_s": m["tokens_per_s"], "ttft_ms": m["ttft_ms"],
        "tpot_ms": m["tpot_ms_p50"], "gbps": d["achieved_gbps"], "pct_bw": _util(d.get("mbu")),
        "pct_bw_spec": _pct(d.get("mbu_spec")), "tflops": d["achieved_tflops"], "mfu": _util(d.get("mfu")),
        "roof": _util(d.get("roof_fraction")), "bound": d.get("bound"), "prefill_mfu": _util(d.get("prefill_mfu")),
        "prefill_bound": d.get("prefill_bound"),
    }


def decode_label(r: dict) -> str:
    return f"{r['model']} b{r['batch_size']} p{r['prompt_len']} n{r['new_tokens']}"


# ---------------------------------------------------------------- fine-tune


FINETUNE_COLUMNS = [
    ("model", "model", ""), ("trainer", "trainer", ""), ("dtype", "dtype", ""), ("batch", "batch", "d"),
    ("seq", "seq", "d"), ("accum", "accum", "d"), ("world", "world", "d"), ("tok_s", "tok/s", ".1f"),
    ("samples_s", "samples/s", ".2f"), ("p50", "step p50 ms", ".1f"), ("p90", "step p90 ms", ".1f"),
    ("tflops", "TFLOP/s", ".4g"), ("mfu", "MFU %", ".1f"), ("mem", "peak mem GB", ".2f"),
    ("loss", "loss start -> end", ""), ("status", "status", ""),
]
FINETUNE_REPORT_COLUMNS = [c for c in FINETUNE_COLUMNS if c[0] not in ("p90", "status")]
FINETUNE_NOTE = ("Tokens/s counts every rank's tokens per optimizer step over the median step time. MFU: the cost "
                 "model's FLOPs (forward + backward, attention included, no recomputation) over the measured matmul "
                 "rate of the precision, times the GPUs of the run. bf16/fp16 are mixed precision over fp32 weights.")


def finetune_rows(records: list[dict]) -> list[dict]:
    rows = []
    for r in records:
        m, d = r["metrics"], r["derived"]
        loss = f"{m['loss_start']:.3f} -> {m['loss_end']:.3f}" if m.get("loss_start") is not None else None
        rows.append({
            "model": r["model"], "trainer": r.get("trainer"), "dtype": r["dtype"], "batch": r.get("batch_size"),
            "seq": r.get("seq_len"), "accum": r.get("grad_accum"), "world": r.get("world_size"),
            "tok_s": m.get("tokens_per_s"), "samples_s": m.get("samples_per_s"), "p50": m.get("step_ms_p50"),
            "p90": m.get("step_ms_p90"), "tflops": d.get("achieved_tflops"), "mfu": _util(d.get("mfu")),
            "mem": m["peak_mem_bytes"] / 1e9 if "peak_mem_bytes" in m else None, "loss": loss, "status": r["status"],
        })
    return rows


def finetune_table(records: list[dict]) -> str:
    rows = finetune_rows(records)
    return "\n".join([render(rows, FINETUNE_COLUMNS), *roof_notes(rows, records)])


def finetune_report_rows(records: list[dict]) -> list[dict]:
    keyed = sorted(records, key=lambda r: (r["model"], r.get("trainer") or "", _precision_order(r["dtype"]),
                                           r.get("batch_size") or 0, r.get("seq_len") or 0))
    return finetune_rows(keyed)


FINETUNE_MEASURED = [("tok_s", "tok/s", "si"), ("per_process", "tok/s per process", "si"),
                     ("scaling", "scaling efficiency (%)", "3g"), ("samples_s", "samples/s", "si"),
                     ("p50", "step p50 (s)", "si"), ("flops", "FLOP/s", "si"), ("mfu", "MFU (%)", "3g"),
                     ("mem", "peak mem (B)", "si"), ("loss", "loss start -> end", "")]
SCALING_SAME = ("model", "trainer", "dtype", "batch_size", "seq_len", "grad_accum", "device")


def scaling_efficiency(records: list[dict]) -> list[float | None]:
    """Per fine-tune record: its tokens/s per process over the tokens/s of the one-process record of the same
    model, trainer, precision, per-process batch, sequence length and accumulation, as a fraction (1.0 =
    linear scaling); None for one-process records and where no such baseline ran."""
    base = {}
    for r in records:
        if r["status"] == "ok" and (r.get("world_size") or 1) == 1 and r["metrics"].get("tokens_per_s"):
            base.setdefault(tuple(r.get(k) for k in SCALING_SAME), r["metrics"]["tokens_per_s"])
    out = []
    for r in records:
        one = base.get(tuple(r.get(k) for k in SCALING_SAME))
        per = r["metrics"].get("tokens_per_s_per_process")
        out.append(per / one if one and per and (r.get("world_size") or 1) > 1 and r["status"] == "ok" else None)
    return out


def finetune_report_table(records: list[dict]) -> tuple[list[dict], list[tuple], str]:
    """Rows, columns and 'same in every row' line of a device's fine-tune table: a column per varying
    point field (model, trainer, precision, sizes, world size), then the measurements in 3 significant
    figures; multi-process rows add tokens/s per process and the scaling efficiency against the
    one-process run (``scaling_efficiency``)."""
    varying, constant = varying_fields(records)
    rows = []
    for r, row, eff in zip(records, finetune_rows(records), scaling_efficiency(records)):
        p50 = row["p50"]
        multi = (r.get("world_size") or 1) > 1
        rows.append({**{k: _field_value(r.get(k)) for k in varying},
                     "tok_s": row["tok_s"], "per_process": r["metrics"].get("tokens_per_s_per_process") if multi
                     else None, "scaling": None if eff is None else 100 * eff,
                     "samples_s": row["samples_s"], "p50": None if p50 is None else p50 / 1e3,
                     "flops": _per_s(row["tflops"], 1e12), "mfu": row["mfu"],
                     "mem": None if row["mem"] is None else row["mem"] * 1e9, "loss": row["loss"]})
    order = sorted(range(len(rows)), key=lambda i: _sort_key(records[i], varying))
    rows = [rows[i] for i in order]
    columns = [field_column(k, records) for k in varying] + FINETUNE_MEASURED
    columns = [c for c in columns if any(row.get(c[0]) is not None for row in rows)]
    return rows, columns, constant_line(constant)


# ---------------------------------------------------------------- kernels


def attention_table(records: list[dict]) -> str:
    """One row per record that ran; speedup is SDPA-flash's time over this implementation's at the same
    point. Skipped implementations are summarised below the table, once per reason."""
    def key(r):
        return (r["dtype"], r["mode"], r["causal"], r["head_dim"], r["kv_heads"], r["seq_len"], r["batch_size"])

    flash = {key(r): r["metrics"]["time_ms"] for r in records if r["attn"] == "sdpa-flash" and r["status"] == "ok"}
    rows = []
    for r in records:
        if r["status"] == "skipped":
            continue
        m, d = r["metrics"], r["derived"]
        ms = m.get("time_ms")
        base = flash.get(key(r))
        rows.append({
            "impl": r["attn"], "dtype": r["dtype"], "mode": r["mode"], "causal": "yes" if r["causal"] else "no",
            "head_dim": r["head_dim"], "heads": f"{r['heads']}/{r['kv_heads']}", "seq": r["seq_len"],
            "batch": r["batch_size"], "ms": ms, "tflops": d.get("achieved_tflops"),
            "vs_flash": base / ms if base and ms else None, "mfu": _util(d.get("mfu")), "bound": d.get("bound"),
            "status": _status(r),
        })
    table = render(rows, [
        ("impl", "impl", ""), ("dtype", "dtype", ""), ("mode", "mode", ""), ("causal", "causal", ""),
        ("head_dim", "head dim", "d"), ("heads", "heads/kv", ""), ("seq", "seq", "d"), ("batch", "batch", "d"),
        ("ms", "median ms", ".3f"), ("tflops", "TFLOP/s", ".4g"), ("vs_flash", "x sdpa-flash", ".2f"),
        ("mfu", "% matmul peak", ".1f"), ("bound", "bound", ""), ("status", "status", ""),
    ])
    return "\n".join([table, *roof_notes(rows, records), *_skipped_notes(records)])


def decode_attention_table(records: list[dict]) -> str:
    """One row per record that ran: KV-read bandwidth (bytes as stored: int8/fp8 caches count values and
    scales), % of measured copy bandwidth, speed over SDPA at the same compute dtype."""
    def key(r):
        return (r["dtype"], r["head_dim"], r["kv_heads"], r["batch_size"], r["context"])

    sdpa = {key(r): r["metrics"]["time_ms"] for r in records if r["attn"] == "sdpa" and r["status"] == "ok"}
    rows = []
    for r in records:
        if r["status"] == "skipped":
            continue
        m, d = r["metrics"], r["derived"]
        ms, base = m.get("time_ms"), sdpa.get(key(r))
        rows.append({
            "impl": r["attn"], "dtype": r["dtype"], "kv": r.get("kv_dtype") or r["dtype"], "batch": r["batch_size"],
            "context": r["context"], "heads": f"{r['heads']}/{r['kv_heads']}", "head_dim": r["head_dim"],
            "us": ms * 1e3 if ms else None, "gbps": d.get("achieved_gbps"),
            "mbu": _util(d.get("mbu")), "vs_sdpa": base / ms if base and ms else None, "bound": d.get("bound"),
            "status": _status(r),
        })
    table = render(rows, [
        ("impl", "impl", ""), ("dtype", "dtype", ""), ("kv", "KV cache", ""), ("batch", "batch", "d"),
        ("context", "context", "d"), ("heads", "heads/kv", ""), ("head_dim", "head dim", "d"),
        ("us", "median us", ".1f"), ("gbps", "GB/s stored", ".1f"), ("mbu", "% peak BW", ".1f"),
        ("vs_sdpa", "x sdpa", ".2f"), ("bound", "bound", ""),
        ("status", "status", ""),
    ])
    return "\n".join([table, *roof_notes(rows, records), *_skipped_notes(records)])


def attention_report_blocks(records: list[dict]) -> list[tuple]:
    """Report blocks: per precision and mode, TFLOP/s of each implementation side by side per point,
    and ours over SDPA's flash backend."""
    blocks = []
    for dtype, mode in sorted({(r["dtype"], r["mode"]) for r in records},
                              key=lambda k: (_precision_order(k[0]), ATTENTION_MODES.index(k[1]))):
        group = [r for r in records if (r["dtype"], r["mode"]) == (dtype, mode)]
        impls = [i for i in ATTENTION_IMPLS if any(r["attn"] == i for r in group)]
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
        columns += [(impl, f"{impl} TFLOP/s", "3g") for impl in impls]
        if "triton" in impls and "sdpa-flash" in impls:
            columns.append(("ratio", "triton speed / sdpa-flash", ".2f"))
        blocks += [("h3", f"Attention, {dtype}, {mode}"), ("table", list(rows.values()), columns)]
    return blocks


# ---------------------------------------------------------------- ceilings


def ceiling_note(r: dict) -> str:
    """The line printed as a ceiling is measured."""
    if r["status"] != "ok":
        return f"peak: {r['workload']} {r['dtype']}: {r['status']}: {r['error']}"
    d = r["derived"]
    if r["workload"] == "matmul":
        return f"peak: matmul {r['dtype']} {d['achieved_tflops']:.2f} TFLOP/s"
    return f"peak: {r['workload']} {d['achieved_gbps']:.1f} GB/s"


def peak_table(records: list[dict], spec) -> str:
    """``llmbench peak``'s table: each measured ceiling against the datasheet (``spec``, may be None)."""
    rows = []
    for r in records:
        if r["status"] != "ok":
            rows.append({"what": r["workload"], "dtype": r["dtype"], "unit": r["status"]})
            continue
        bandwidth = r["workload"] != "matmul"
        value = r["derived"]["achieved_gbps" if bandwidth else "achieved_tflops"]
        peak = (spec.mem_gbps if bandwidth else spec.tflops.get(r["dtype"])) if spec else None
        if r["workload"] == "allreduce":
            peak = None  # an interconnect's bus bandwidth, not memory: the HBM datasheet value does not apply
        rows.append({"what": r["workload"], "dtype": r["dtype"], "value": value,
                     "unit": "GB/s" if bandwidth else "TFLOP/s", "spec": peak,
                     "pct": 100 * value / peak if peak else None, "ms": r["metrics"]["time_ms"]})
    return render(rows, [("what", "benchmark", ""), ("dtype", "dtype", ""), ("value", "measured", ".4g"),
                         ("unit", "unit", ""), ("spec", "spec", ".1f"), ("pct", "% of spec", ".1f"),
                         ("ms", "median ms", ".3f")])


CEILING_COLUMNS = [("what", "ceiling", ""), ("measured", "measured", "3g"), ("spec", "spec", "3g"),
                   ("pct", "% of spec", "3g")]


def ceiling_rows(c) -> list[dict]:
    """A device's ceilings (``harness.ceilings.Ceilings``) against its datasheet."""
    spec = c.spec
    rows = [{"what": "copy bandwidth (GB/s)", "measured": c.copy_gbps, "spec": spec.mem_gbps if spec else None},
            {"what": "triad bandwidth (GB/s)", "measured": c.triad_gbps, "spec": spec.mem_gbps if spec else None}]
    for dtype in sorted(c.matmul_tflops, key=_precision_order):
        rows.append({"what": f"{dtype} matmul (TFLOP/s)", "measured": c.matmul_tflops[dtype],
                     "spec": spec.tflops.get(dtype) if spec else None})
    for world in sorted(getattr(c, "allreduce_gbps", None) or {}):  # an interconnect: no HBM datasheet value
        rows.append({"what": f"all-reduce bus bandwidth, {world} processes (GB/s)",
                     "measured": c.allreduce_gbps[world], "spec": None})
    rows = [row for row in rows if row["measured"] is not None]  # a ceiling not measured is not listed
    for row in rows:
        row["pct"] = 100 * row["measured"] / row["spec"] if row["measured"] and row["spec"] else None
    return rows


# ---------------------------------------------------------------- pytest-benchmark


PYTEST_BENCHMARK_COLUMNS = [
    ("name", "benchmark", ""), ("group", "group", ""), ("median_ms", "median ms", ".4g"), ("iqr_ms", "IQR ms", ".3g"),
    ("mean_ms", "mean ms", ".4g"), ("stddev_ms", "stddev ms", ".3g"), ("rounds", "rounds", "d"),
    ("gbps", "GB/s", ".4g"), ("tflops", "TFLOP/s", ".4g"),
]


def pytest_benchmark_rows(records: list[dict]) -> list[dict]:
    return [{"name": r["name"], "group": r.get("group"), **r["metrics"], "gbps": r["derived"].get("achieved_gbps"),
             "tflops": r["derived"].get("achieved_tflops")} for r in records]


def pytest_benchmark_table(records: list[dict]) -> str:
    return render(pytest_benchmark_rows(records), PYTEST_BENCHMARK_COLUMNS)


def pytest_benchmark_report_blocks(records: list[dict]) -> list[tuple]:
    """The report's section for one device's pytest-benchmark records (empty when there are none)."""
    if not records:
        return []
    rows = sorted(pytest_benchmark_rows(records), key=lambda r: (r["group"] or "", r["name"]))
    return [("h3", "pytest-benchmark"), ("table", rows, PYTEST_BENCHMARK_COLUMNS)]


# ---------------------------------------------------------------- failures


NOT_COMPLETED_COLUMNS = [*((k, k, "") for k in ("workload", "attn", "model", "dtype", "status", "error")),
                         ("points", "points", "d")]


def not_completed_rows(failed: list[dict]) -> list[dict]:
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


# ---------------------------------------------------------------- report: columns for what varies


NOT_POINT_FIELDS = {
    "schema_version", "run_id", "timestamp", "status", "error", "metrics", "cost", "derived", "env", "telemetry",
    "warnings", "quality", "workload", "seed", "sweep", "sweep_point_id", "sweep_attempt", "model_path",
    "weights_dtype", "matmul_precision", "seq_len", "device", "fingerprint",
}
"""Record keys that are not a point field a reader compares (``seq_len`` is prompt + new tokens, the
weights dtype and matmul precision follow from ``dtype``, the device is the report's section)."""

FIELD_ORDER = ("model", "engine", "attn", "cache", "trainer", "dtype", "kv_format", "kv_dtype", "weight_format",
               "weights_quant", "batch_size", "prompt_len", "new_tokens", "context", "seq_len", "grad_accum",
               "parallel", "tp", "world_size")
FIELD_HEADERS = {"kv_format": "KV cache", "weight_format": "weights", "weight_impl": "weight kernel", "tp": "TP",
                 "batch_size": "batch", "prompt_len": "prompt", "new_tokens": "new", "attn": "attention",
                 "grad_accum": "accum", "world_size": "GPUs", "head_dim": "head dim", "kv_heads": "kv heads"}


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


_REMEMBERED: dict[int, tuple[list, int, dict]] | None = None


@contextmanager
def remembering():
    """Within: ``varying_fields`` and ``follows`` answer once per record list (by identity, with the list kept
    alive and its length checked), for callers that ask about the same unchanging lists again and again: the
    report's findings, tables and figures (whose forked processes inherit what was remembered before the
    fork)."""
    global _REMEMBERED
    outer = _REMEMBERED
    _REMEMBERED = {} if outer is None else outer
    try:
        yield
    finally:
        _REMEMBERED = outer


def _remembered(records: list[dict], key: tuple, compute):
    """``compute()``, remembered for ``records`` under ``key`` within ``remembering``."""
    if _REMEMBERED is None:
        return compute()
    hit = _REMEMBERED.get(id(records))
    if hit is None or hit[0] is not records or hit[1] != len(records):
        hit = _REMEMBERED[id(records)] = (records, len(records), {})
    if key not in hit[2]:
        hit[2][key] = compute()
    return hit[2][key]


def varying_fields(records: list[dict]) -> tuple[list[str], dict]:
    """Point fields that vary and those that do not (``_varying_fields``), remembered within ``remembering``."""
    varying, constant = _remembered(records, ("varying",), lambda: _varying_fields(records))
    return list(varying), dict(constant)


def _varying_fields(records: list[dict]) -> tuple[list[str], dict]:
    """The point fields whose value differs between ``records`` (in reading order: model, engine,
    attention, cache, precision, formats, sizes, then the rest by name) and the ones that do not, with
    their one value; ``seq_len`` counts only when prompt and new tokens do not say it. A key whose values
    are all dicts (a block such as ``quality``) is no point field."""
    names: set = set()
    for r in records:
        names.update(r.keys())
    keys, columns = [], {}
    for k in names:
        if k in NOT_POINT_FIELDS or k.startswith("_"):
            continue
        values = [r.get(k) for r in records]
        types = set(map(type, values))
        if dict in types and types <= {dict, type(None)}:
            continue
        keys.append(k)
        columns[k] = values
    if "prompt_len" not in columns and any(r.get("seq_len") is not None for r in records):
        keys.append("seq_len")
        columns["seq_len"] = [r.get("seq_len") for r in records]
    varying, constant = [], {}
    for k in keys:
        values = columns[k]
        first = values[0]
        if values.count(first) != len(values):
            varying.append(k)
        elif first is not None:
            constant[k] = _hashable(first)
    order = {k: i for i, k in enumerate(FIELD_ORDER)}
    varying.sort(key=lambda k: (order.get(k, len(order)), k))
    return varying, constant


def follows(records: list[dict], other: str, field: str) -> bool:
    """Whether ``other`` is set by ``field``: each value of ``field`` comes with one value of ``other`` (the
    lean engine always runs a static cache), so comparing ``field`` compares ``other`` too."""
    return _remembered(records, ("follows", other, field), lambda: _follows(records, other, field))


def _follows(records: list[dict], other: str, field: str) -> bool:
    seen: dict = {}
    for r in records:
        key, value = r.get(field), r.get(other)
        if seen.setdefault(_hashable(key), value) != value:
            return False
    return True


def independent(fields: list[str], records: list[dict]) -> list[str]:
    """``fields`` without those set by an earlier one (see ``follows``): what a figure's styles show."""
    out = []
    for k in fields:
        if not any(follows(records, k, earlier) for earlier in out):
            out.append(k)
    return out


def field_column(key: str, records: list[dict]) -> tuple[str, str, str]:
    """A point field as a table column: numbers right-aligned, everything else as text."""
    numeric = all(isinstance(r.get(key), int) and not isinstance(r.get(key), bool)
                  for r in records if r.get(key) is not None)
    return (key, FIELD_HEADERS.get(key, key.replace("_", " ")), "d" if numeric else "")


def constant_line(constant: dict, keep=FIELD_ORDER) -> str:
    """The sentence above a table naming what its rows share: 'Same in every row: model tiny-llama, ...'."""
    order = {k: i for i, k in enumerate(FIELD_ORDER)}
    shown = sorted((k for k in constant if k in keep or k not in NOT_POINT_FIELDS),
                   key=lambda k: (order.get(k, len(order)), k))
    parts = [f"{FIELD_HEADERS.get(k, k.replace('_', ' '))} {_text(constant[k])}" for k in shown]
    return f"Same in every row: {', '.join(parts)}." if parts else ""


def _field_value(value):
    """A point field as a table cell's value: integers stay numbers (sortable), None stays missing ('-')."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return _text(value)


def _text(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def point_label(r: dict, fields: list[str]) -> str:
    """A record named by the given point fields only: 'tiny-llama lean bf16 b4 p128'."""
    short = {"batch_size": "b", "prompt_len": "p", "new_tokens": "n", "context": "ctx ", "head_dim": "hd ",
             "weight_format": "weights ", "kv_format": "KV ", "tp": "TP"}
    parts = []
    for k in fields:
        v = r.get(k)
        if v is None:
            continue
        parts.append(f"{short[k]}{v}" if k in short else (f"{k.replace('_', ' ')} {_text(v)}"
                                                         if isinstance(v, (bool, int, float)) else _text(v)))
    return " ".join(parts)


def _sort_key(r: dict, fields: list[str]) -> tuple:
    out = []
    for k in fields:
        v = r.get(k)
        if k == "dtype":
            out.append((0, _precision_order(v or ""), ""))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append((0, v, ""))
        else:
            out.append((1, 0, _text(v)))
    return tuple(out)


def sort_records(records: list[dict], fields: list[str]) -> list[dict]:
    """Records ordered by the given fields: names alphabetically, precisions in report order, sizes by value."""
    return sorted(records, key=lambda r: _sort_key(r, fields))


# ---------------------------------------------------------------- report: decode


TP_FIELDS = ("tp", "world_size", "nodes", "nproc_per_node", "parallel")  # how a decode point is split over GPUs


def tp_pairs(records: list[dict]) -> list[tuple[dict, dict]]:
    """(tensor-parallel decode record, the one-process record of its point): ``tp`` 1 or absent, every other
    field the same (model, engine, attention, precision and formats, batch, lengths); records with no such
    baseline are left out."""
    if not any((r.get("tp") or 1) > 1 for r in records):
        return []
    varying, _ = varying_fields(records)
    same = [k for k in varying if k not in TP_FIELDS]
    base: dict[tuple, dict] = {}
    for r in records:
        if (r.get("tp") or 1) == 1 and r["metrics"].get("tokens_per_s"):
            base.setdefault(tuple(_hashable(r.get(k)) for k in same), r)
    pairs = [(r, base.get(tuple(_hashable(r.get(k)) for k in same))) for r in records
             if (r.get("tp") or 1) > 1 and r["metrics"].get("tokens_per_s")]
    return [(r, one) for r, one in pairs if one is not None]


def tp_speedups(records: list[dict]) -> dict[int, tuple[float, str | None]]:
    """Per tensor-parallel decode record with a one-process run of its point (``tp_pairs``), by ``id``: its
    tokens/s over that run's and the ratio's 95% CI (``speedup_ci``)."""
    return {id(r): (r["metrics"]["tokens_per_s"] / one["metrics"]["tokens_per_s"], speedup_ci(r, one))
            for r, one in tp_pairs(records)}


def decode_report_table(records: list[dict]) -> tuple[list[dict], list[tuple], str]:
    """Rows, columns and the 'same in every row' line of a device's decode table: a column per point
    field that varies, then the measurements in 3 significant figures (SI prefixes, unit in the header);
    a tensor-parallel row whose point also ran on one GPU gets its speedup over it (``tp_speedups``), a
    quantized row its quality against the unquantized model (``quality_values``)."""
    varying, constant = varying_fields(records)
    speedups = tp_speedups(records)
    rows = []
    for r in sort_records(records, varying):
        m, d, c = r["metrics"], r["derived"], r["cost"]
        tp = speedups.get(id(r), (None, None))
        rows.append({**{k: _field_value(r.get(k)) for k in varying},
                     "tok_s": m.get("tokens_per_s"), "ci": _ci(m, "tokens_per_s"),
                     "tp_speedup": tp[0], "tp_ci": tp[1],
                     "ttft": _seconds(m.get("ttft_ms")), "tpot": _seconds(m.get("tpot_ms_p50")),
                     "bytes": c.get("bytes_per_step"), "bw": _per_s(d.get("achieved_gbps"), 1e9),
                     "flops": _per_s(d.get("achieved_tflops"), 1e12), "mbu": _util(d.get("mbu")),
                     "roof": _util(d.get("roof_fraction")), "bound": d.get("bound"),
                     "prefill_mfu": _util(d.get("prefill_mfu")), "mem": m.get("peak_mem_bytes"),
                     **quality_values(r)})
    columns = [field_column(k, records) for k in varying] + [
        ("tok_s", "tok/s", "si"), ("ci", "tok/s 95% CI", ""), ("tp_speedup", "speedup over TP=1 (x)", "3g"),
        ("tp_ci", "TP speedup 95% CI", ""), *QUALITY_COLUMNS, ("ttft", "TTFT (s)", "si"),
        ("tpot", "TPOT p50 (s)", "si"), ("bytes", "bytes/step (B)", "si"), ("bw", "bandwidth (B/s)", "si"),
        ("flops", "FLOP/s", "si"), ("mbu", "MBU (%)", "3g"), ("roof", "% roof", "3g"), ("bound", "bound", ""),
        ("prefill_mfu", "prefill MFU (%)", "3g"), ("mem", "peak mem (B)", "si")]
    columns = [c for c in columns if any(row.get(c[0]) is not None for row in rows)]
    return rows, columns, constant_line(constant)


def _ci(metrics: dict, key: str) -> str | None:
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    return f"{si(low)}-{si(high)}" if low is not None and high is not None else None


def _seconds(ms):
    return None if ms is None else ms / 1e3


def _per_s(value, scale):
    return None if value is None else value * scale


# ---------------------------------------------------------------- report: precisions and stored formats


QUANTIZED_FORMATS = ("int8", "fp8")
VARIANT_FIELDS = ("dtype", "weights_dtype", "matmul_precision", "weight_format", "weight_impl", "kv_format")
"""What makes a decode record's precision variant: the compute precision and the formats weights and KV cache
are stored in (``weight_format``, ``kv_format``; absent in older records, meaning the precision's own)."""
MAX_COMPARED = 40  # points in the report's precision comparison table; every point is in the decode tables


def stored_format(dtype) -> str:
    """The float format a precision stores weights and cache in (tf32 stores fp32)."""
    return "fp32" if dtype == "tf32" else str(dtype)


def precision_variant(r: dict) -> str:
    """A decode record's precision and stored formats in a few words: 'bf16', 'bf16 + int8 weights + int8 KV',
    'fp32 + bf16 KV' (a weight implementation other than ours in parentheses: 'int8 weights (torchao)')."""
    own = stored_format(r.get("dtype"))
    parts = [str(r.get("dtype"))]
    weights, kv = r.get("weight_format") or own, r.get("kv_format") or own
    if weights != own:
        impl = r.get("weight_impl")
        parts.append(f"{weights} weights" + (f" ({impl})" if impl and impl != "triton" else ""))
    if kv != own:
        parts.append(f"{kv} KV")
    return " + ".join(parts)


def plain(r: dict) -> bool:
    """Whether weights and KV cache are stored in the record's own precision (nothing quantized)."""
    return precision_variant(r) == str(r.get("dtype"))


def variant_order(r: dict) -> tuple:
    """Precisions in report order, each one's plain variant first, then its formats by name."""
    return _precision_order(r.get("dtype") or ""), not plain(r), precision_variant(r)


def precision_points(records: list[dict]) -> tuple[list[str], list[dict[str, dict]]]:
    """The fields that name a point (those that vary, less the precision and formats) and, per point where
    two or more variants ran, variant -> record in ``variant_order`` (the first record of a variant at a
    point), the points sorted by those fields. Remembered within ``remembering``."""
    return _remembered(records, ("precision_points",), lambda: _precision_points(records))


def _precision_points(records: list[dict]) -> tuple[list[str], list[dict[str, dict]]]:
    varying, _ = varying_fields(records)
    fields = [k for k in varying if k not in VARIANT_FIELDS]
    groups: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in records:
        groups[tuple(_hashable(r.get(k)) for k in fields)].setdefault(precision_variant(r), r)
    points = []
    for group in groups.values():
        if len(group) > 1:
            order = sorted(group, key=lambda v: (_precision_order(group[v].get("dtype") or ""),
                                                 v != str(group[v].get("dtype")), v))
            points.append({v: group[v] for v in order})
    first = {id(next(iter(g.values()))): g for g in points}
    return fields, [first[id(r)] for r in sort_records([next(iter(g.values())) for g in points], fields)]


def precision_baseline(group: dict[str, dict]) -> dict | None:
    """A point's baseline: its fp32 plain record, else its first plain one; None when every variant stores
    formats of its own."""
    plains = [r for r in group.values() if plain(r)]
    return next((r for r in plains if r.get("dtype") == "fp32"), plains[0] if plains else None)


def quality_values(r: dict) -> dict:
    """A quantized record's accuracy against its unquantized reference (``quality``): greedy token agreement
    in %, the largest logit error, the perplexity change (None where not measured)."""
    q = r.get("quality") or {}
    return {"agree": _pct(q.get("token_agreement")), "logit_err": q.get("logit_max_abs_err"),
            "ppl_delta": q.get("ppl_delta")}


QUALITY_COLUMNS = [("agree", "tokens agree (%)", "3g"), ("logit_err", "max logit error", "3g"),
                   ("ppl_delta", "perplexity change", "3g")]


def precision_comparison_table(records: list[dict]) -> tuple[list[dict], list[tuple], str]:
    """Rows, columns and the line above the report's precision comparison: per point where several precision
    variants ran (``precision_points``, the first ``MAX_COMPARED``), each variant's tokens/s with its 95% CI,
    bytes per step, both over the point's baseline (``precision_baseline``) with the speedup's 95% CI, and the
    quality of a quantized variant beside them. Empty rows when no point ran two variants."""
    fields, points = precision_points(records)
    rows = []
    for group in points[:MAX_COMPARED]:
        base = precision_baseline(group)
        for variant, r in group.items():
            m, c = r["metrics"], r["cost"]
            rate, size = m.get("tokens_per_s"), c.get("bytes_per_step")
            compared = base is not None and r is not base
            base_size = base["cost"].get("bytes_per_step") if base is not None else None
            rows.append({**{k: _field_value(r.get(k)) for k in fields}, "variant": variant,
                         "baseline": "baseline" if r is base else None, "tok_s": rate, "ci": _ci(m, "tokens_per_s"),
                         "bytes": size, "speedup": rate / base["metrics"]["tokens_per_s"] if compared else None,
                         "speedup_ci": speedup_ci(r, base) if compared else None,
                         "bytes_ratio": size / base_size if compared and size and base_size else None,
                         **quality_values(r)})
    columns = [field_column(k, records) for k in fields] + [
        ("variant", "precision + stored formats", ""), ("baseline", "baseline", ""), ("tok_s", "tok/s", "si"),
        ("ci", "tok/s 95% CI", ""), ("speedup", "speedup (x)", "3g"), ("speedup_ci", "speedup 95% CI", ""),
        *QUALITY_COLUMNS, ("bytes", "bytes/step (B)", "si"), ("bytes_ratio", "bytes/step over baseline (x)", "3g")]
    columns = [c for c in columns if any(row.get(c[0]) is not None for row in rows)]
    shown = (f" The first {MAX_COMPARED} of {len(points)} points; every point is in the decode tables and in the "
             "headline findings." if len(points) > MAX_COMPARED else "")
    text = ("Each point's precision variants side by side: speedup and bytes per step over the point's baseline "
            "(the fp32 unquantized run, else the first unquantized one), the speedup's 95% CI (bootstrap of the "
            "ratio of medians; 'no significant difference' when it holds 1) and, for quantized formats, greedy "
            "token agreement, the largest logit error and the perplexity change against the same model "
            "unquantized." + shown)
    return rows, columns, text


# ---------------------------------------------------------------- report: energy


def has_energy(r: dict) -> bool:
    return bool((r.get("telemetry") or {}).get("energy_j") or (r.get("telemetry") or {}).get("power_w_mean"))


def energy_report_table(records: list[dict]) -> tuple[list[dict], list[tuple], str]:
    """Rows, columns and 'same in every row' line of the energy table: joules per token, power, clocks,
    temperature and throttle reasons of every record that carries telemetry."""
    records = [r for r in records if has_energy(r)]
    varying, constant = varying_fields(records)
    rows = []
    for r in sort_records(records, varying):
        t = r["telemetry"]
        rows.append({**{k: _field_value(r.get(k)) for k in varying},
                     "j_token": t.get("joules_per_token"), "tok_j": t.get("tokens_per_joule"),
                     "power": t.get("power_w_mean"), "power_max": t.get("power_w_max"),
                     "sm": _hz(t.get("sm_clock_mhz")), "sm_min": _hz(t.get("sm_clock_mhz_min")),
                     "mem_clock": _hz(t.get("mem_clock_mhz")), "temp": t.get("temp_c_max"),
                     "throttle": ", ".join(t.get("throttle_reasons") or []) or "none"
                     if "throttle_reasons" in t else None})
    columns = [field_column(k, records) for k in varying] + [
        ("j_token", "energy (J/token)", "si"), ("tok_j", "tokens/J", "si"), ("power", "power mean (W)", "si"),
        ("power_max", "power max (W)", "si"), ("sm", "SM clock (Hz)", "si"), ("sm_min", "SM clock min (Hz)", "si"),
        ("mem_clock", "mem clock (Hz)", "si"), ("temp", "temp max (C)", "3g"), ("throttle", "throttle reasons", "")]
    columns = [c for c in columns if any(row.get(c[0]) is not None for row in rows)]
    return rows, columns, constant_line(constant)


def _hz(mhz):
    return None if mhz is None else mhz * 1e6


# ---------------------------------------------------------------- report: environment


ENV_FIELDS = (("torch", "torch"), ("transformers", "transformers"), ("triton", "triton"), ("cuda", "CUDA"),
              ("driver", "driver"), ("python", "Python"), ("llmbench", "llmbench"), ("git_sha", "git sha"),
              ("host", "host"), ("device_count", "devices per host"), ("slurm_job_id", "SLURM job"),
              ("slurm_array_job_id", "SLURM array job"), ("slurm_array_task_id", "SLURM array tasks"),
              ("slurm_job_partition", "SLURM partition"))
ENV_COLUMNS = [("what", "what", ""), ("value", "value", "")]
MAX_VALUES = 6


def environment_rows(records: list[dict]) -> list[dict]:
    """A device's software and where it ran: each field's distinct values across its records (a git sha
    ending in -dirty was run with uncommitted changes), the runs merged and the time span."""
    seen: dict[str, set] = {key: set() for key, _ in ENV_FIELDS}
    for r in records:  # one pass: each record's env read once
        env = r.get("env") or {}
        for key, distinct in seen.items():
            v = env.get(key)
            if v is not None:
                distinct.add(v if type(v) is str else str(v))
    rows = []
    for key, what in ENV_FIELDS:
        values = sorted(seen[key],
                        key=lambda v: (len(v), v) if key.startswith("slurm_array_task") else v)
        if not values:
            continue
        if key == "git_sha":
            values = [v.removesuffix("-dirty")[:12] + (" (dirty: uncommitted changes)" if v.endswith("-dirty")
                                                        else "") for v in values]
        shown = ", ".join(values[:MAX_VALUES]) + (f" (+{len(values) - MAX_VALUES} more)"
                                                   if len(values) > MAX_VALUES else "")
        rows.append({"what": what, "value": shown})
    runs = {r.get("run_id") for r in records}
    stamps = [r["timestamp"] for r in records if r.get("timestamp")]
    rows.append({"what": "runs merged", "value": f"{len(runs)} ({len(records)} records)"})
    if stamps:
        first, last = min(stamps), max(stamps)
        rows.append({"what": "measured", "value": f"{first} to {last}" if first != last else first})
    return rows


# ---------------------------------------------------------------- kernel resources (static compile)

COMPILE_WORKLOAD = "kernel-compile"

COMPILE_COLUMNS = [
    ("kernel", "kernel", ""), ("arch", "arch", ""), ("dtype", "dtype", ""), ("head_dim", "head dim", "d"),
    ("case", "case", ""), ("candidate", "candidate", ""), ("registers", "registers", "d"),
    ("spill_stores", "spill stores (B)", "d"), ("spill_loads", "spill loads (B)", "d"),
    ("shared_kb", "shared KB", ".1f"), ("programs", "programs/SM", "d"), ("occupancy", "occupancy %", ".0f"),
    ("status", "status", ""),
]


def _arch_order(arch) -> tuple:
    digits = "".join(ch for ch in str(arch) if ch.isdigit())
    return (int(digits) if digits else 0, str(arch))


def compile_key(r: dict) -> tuple:
    """Kernel, arch, dtype, head dim, case, candidate: the order of the compile table."""
    return (str(r.get("kernel")), _arch_order(r.get("arch")), _precision_order(r.get("dtype") or ""),
            r.get("head_dim") or 0, str(r.get("case")), str(r.get("candidate")))


def compile_status(r: dict) -> str:
    """ok (clean), spills, does not fit, or the compile's failure."""
    if r.get("status") != "ok":
        return _status(r)
    m = r.get("metrics") or {}
    if m.get("fits") is False:
        return "does not fit"
    if m.get("spill_stores_bytes") or m.get("spill_loads_bytes"):
        return "spills"
    return "ok" if m.get("clean", True) else "not clean"


def compile_rows(records: list[dict]) -> list[dict]:
    """One row per kernel-compile record: registers, spills, shared memory and occupancy of a candidate."""
    rows = []
    for r in sorted(records, key=compile_key):
        m = r.get("metrics") or {}
        shared = m.get("shared_bytes")
        rows.append({"kernel": r.get("kernel"), "arch": r.get("arch"), "dtype": r.get("dtype"),
                     "head_dim": r.get("head_dim"), "case": r.get("case"), "candidate": r.get("candidate"),
                     "registers": m.get("registers"), "spill_stores": m.get("spill_stores_bytes"),
                     "spill_loads": m.get("spill_loads_bytes"), "shared_kb": shared / 1024 if shared is not None
                     else None, "programs": m.get("programs_per_sm"),
                     "occupancy": _pct(m.get("occupancy")), "status": compile_status(r)})
    return rows


def compile_table(records: list[dict]) -> str:
    """The terminal table of ``llmbench kernel compile``, then one line per kernel x arch x head dim
    saying whether a spill-free candidate exists."""
    return "\n".join([render(compile_rows(records), COMPILE_COLUMNS), "", *compile_summary(records)])


def is_clean(r: dict) -> bool:
    """A compile that fits on the chip and spills nothing."""
    m = r.get("metrics") or {}
    if r.get("status") != "ok":
        return False
    if "clean" in m:
        return bool(m["clean"])
    return m.get("fits") is not False and not m.get("spill_stores_bytes") and not m.get("spill_loads_bytes")


def spill_bytes(r: dict) -> int:
    m = r.get("metrics") or {}
    return (m.get("spill_stores_bytes") or 0) + (m.get("spill_loads_bytes") or 0)


def compile_summary(records: list[dict]) -> list[str]:
    """One line per kernel x arch x head dim (and precision when several): a spill-free candidate that
    fits exists for every case, or which cases have none and the least-spilling candidate there."""
    groups: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    several = len({r.get("dtype") for r in records}) > 1
    lines = []
    for r in records:
        if r.get("status") == "skipped":  # a case the architecture cannot run (fp8 before sm_89)
            lines.append(f"{r.get('kernel')} {r.get('arch')} head dim {r.get('head_dim')}: {r.get('case')} skipped: "
                         f"{r.get('error')}")
            continue
        groups[(r.get("kernel"), r.get("arch"), r.get("dtype"), r.get("head_dim"))][str(r.get("case"))].append(r)
    lines = list(dict.fromkeys(lines))
    for (kernel, arch, dtype, head_dim), cases in sorted(groups.items(), key=lambda kv: (
            str(kv[0][0]), _arch_order(kv[0][1]), _precision_order(kv[0][2] or ""), kv[0][3] or 0)):
        where = f"{kernel} {arch} head dim {head_dim}" + (f" {dtype}" if several else "")
        counts = {case: (sum(map(is_clean, rs)), len(rs)) for case, rs in sorted(cases.items())}
        missing = [case for case, (clean, _) in counts.items() if not clean]
        tally = ", ".join(f"{case} {clean}/{n}" for case, (clean, n) in counts.items())
        if not missing:
            lines.append(f"{where}: spill-free candidate in every case ({tally} clean)")
            continue
        worst = []
        for case in missing:
            compiled = [r for r in cases[case] if r.get("status") == "ok"]
            if compiled:
                best = min(compiled, key=spill_bytes)
                why = "does not fit" if (best.get("metrics") or {}).get("fits") is False and not spill_bytes(best) \
                    else f"{spill_bytes(best)} B spilled"
                worst.append(f"{case} (least: {best.get('candidate')}, {why})")
            else:
                worst.append(f"{case} (no candidate compiled)")
        lines.append(f"{where}: NO spill-free candidate for {'; '.join(worst)} ({tally} clean)")
    return lines
