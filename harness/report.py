"""Roofline report: records + ceilings -> Markdown, one self-contained HTML file, and plots.

All records under the given folders are read (several machines and runs may be
mixed), grouped by device, and each decode, fine-tune and kernel record's MBU,
MFU, roof fraction, bound and roofline warnings are recomputed against its
device's measured ceilings, so ceilings measured after a benchmark still explain
it. The report opens with headline findings per device (``report_findings``:
bf16 vs fp32 and each quantized format against its precision, with their CIs and
quality, the best engine and attention, the best MBU, the overhead-bound points,
what to distrust), then per device its environment (versions, git sha, hosts,
SLURM ids, runs merged), ceilings (with all-reduce bus bandwidth against message
size when ``allreduce`` records exist), warnings, a decode table per precision
with a column for every point field that varies in it (what is constant is said
once above it; a tensor-parallel row gets its speedup over TP=1, a quantized one
its quality), the precision comparison (every precision and stored format side by
side per point, against the fp32 or first unquantized run), the figures (roofline,
precisions, batch and context scaling, throughput-latency pareto), energy when
telemetry exists, fine-tune and kernels; then static kernel resources
(``kernel-compile`` records: a heat map per precision and one line per kernel x
arch x head dim), devices side by side and the points that did not complete.

Both formats come from one list of blocks: the Markdown report (for git hosting)
and report.html, rendered with a jinja2 template, its prose through
markdown-it-py (so no raw Markdown shows), figures as base64 PNG (no network),
tables sortable by a click on a header, sections collapsible.

At scale (10,000 records in under 10 s on two cores) the figures are drawn in
forked processes from the moment the records are grouped, while this process
computes the findings and tables; what many of them ask about the same record
lists (``views.remembering``) is answered once. A table longer than
``TABLE_ROWS`` shows its first rows; all of them go to ``tables/table-N.csv``.
"""

from __future__ import annotations

import base64
import gc
import itertools
import multiprocessing
import os
import re
import threading
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from harness import plots, pytest_bench, report_findings, roofline, tables, views
from harness.ceilings import device_key, from_records
from harness.records import read_records
from workloads.errors import UserError

TITLE = "llmbench report"
MAX_LISTED = 10  # warning lines listed per kind and device; the rest are counted
KERNELS = ("attention", "decode-attention")
PARALLEL_FROM = 200  # records from which the figures are drawn in parallel processes (the 274-record sample:
#   2.9 s serial, 1.7 s on two cores; a smaller report draws in this process, as tests do)


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


def build(inputs: list[Path], out: Path, title: str = TITLE, svg: bool = False,
          first: Path | None = None) -> tuple[Path, Path]:
    """Write ``out/report.md``, ``out/report.html`` and ``out/plots/`` (PNG, and SVG when ``svg``); returns
    the two report paths. ``first``: a Markdown file shown before everything else (``llmbench suite``'s
    targets), rendered like the rest.

    The figures start drawing as soon as the records are grouped (in forked processes for a large report);
    the findings and tables are computed and formatted meanwhile, from blocks left for later."""
    preface = _preface(first) if first else []
    records = _read(inputs)
    try:
        if not records:
            raise UserError(f"no records found under {', '.join(map(str, inputs))}; run `llmbench decode` or "
                            "`llmbench finetune` first")
        with views.remembering():
            return _build(records, inputs, out, title, svg, preface)
    finally:
        gc.unfreeze()


def _build(records: list[dict], inputs: list[Path], out: Path, title: str, svg: bool,
           preface: list[tuple]) -> tuple[Path, Path]:
    ceilings = from_records(records)
    decode, finetune = defaultdict(list), defaultdict(list)
    attention, kernels, pytest_benchmarks = defaultdict(list), defaultdict(list), defaultdict(list)
    by_device, allreduce, compiles, measured_records = defaultdict(list), defaultdict(list), [], []
    for r in records:
        workload = r.get("workload")
        if workload == views.COMPILE_WORKLOAD:
            compiles.append(r)
            continue
        measured_records.append(r)
        device = device_key(r)
        by_device[device].append(r)
        if r.get("status") != "ok":
            continue
        if workload in ("decode", "finetune", *KERNELS):
            r = roofline.with_ceilings(r, ceilings.get(device))
        if workload == "decode" and r["metrics"].get("tokens_per_s"):
            decode[device].append(r)
        elif workload == "finetune":
            finetune[device].append(r)
        elif workload in KERNELS:
            kernels[device].append(r)
            if workload == "attention":
                attention[device].append(r)
        elif workload == pytest_bench.WORKLOAD:
            pytest_benchmarks[device].append(r)
        elif workload == "allreduce":
            allreduce[device].append(r)
    failed, retried = final_failures(measured_records)
    failed_by_device = defaultdict(list)
    for r in failed:
        failed_by_device[device_key(r)].append(r)
    measured = {k for k, c in ceilings.items() if c.copy_gbps or c.matmul_tflops or c.allreduce_gbps}
    devices = sorted(measured | set(decode) | set(finetune) | set(kernels) | set(pytest_benchmarks))
    figures = out / "plots"
    runs = len({r.get("run_id") for r in records})
    intro = (f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} from {len(records)} records "
             f"of {runs} run(s) in {', '.join(f'`{p}`' for p in inputs)}. Numbers in 3 significant figures with SI "
             "prefixes (k = 1e3, M = 1e6, G = 1e9, T = 1e12, m = 1e-3, \u00b5 = 1e-6), decimal units, the unit in "
             "each column's header. MBU and MFU divide by the measured ceilings (`llmbench peak`); % spec by the "
             f"datasheet. Bytes per decode step = weights + KV read + KV written. {BOUND_SENTENCE} A value marked "
             f"'!' lies above its measured ceiling, which is impossible: {roofline.PEAK_HINT}.")

    # each section a list of blocks: ("h2"|"h3", title), ("md", text), ("table", rows, columns),
    # ("later", function, args) until computed (a list of blocks, never a plot), ("plot", function, args)
    # until drawn, then ("img", stem)
    sections = [preface] if preface else []
    sections.append([("later", findings_blocks, (devices, decode, finetune, kernels, failed_by_device, ceilings,
                                                 compiles))])
    for n, device in enumerate(devices):
        c, rs = ceilings.get(device), decode.get(device, [])
        blocks = [("h2", device), ("later", _environment_blocks, (by_device.get(device, []),))]
        if c and (c.copy_gbps or c.matmul_tflops or c.allreduce_gbps):
            blocks += [("h3", "Ceilings" + (f" (spec: {c.spec.name})" if c.spec else " (no spec entry)")),
                       ("table", views.ceiling_rows(c), views.CEILING_COLUMNS)]
            if not c.copy_gbps:
                blocks.append(("md", "No copy bandwidth measured for this device: run `llmbench peak` on it for "
                                     "MBU/MFU."))
            if allreduce.get(device):
                blocks += [("md", ALLREDUCE_NOTE),
                           ("plot", plots.allreduce, (device, allreduce[device], figures, f"allreduce-{n}"))]
        else:
            blocks += [("h3", "Ceilings"), ("md", "No ceilings measured for this device: run `llmbench peak` on it "
                                                  "for MBU/MFU.")]
        blocks.append(("later", warning_blocks, ([*rs, *finetune.get(device, []), *kernels.get(device, [])],)))
        if rs:
            blocks += [("later", decode_blocks, (rs,)),
                       ("plot", plots.roofline, (device, c, rs, figures, f"roofline-{n}")),
                       ("plot", plots.precision_comparison, (device, rs, figures, f"precisions-{n}")),
                       ("plot", plots.scaling, (device, rs, "batch_size", "batch size", figures, f"batch-{n}")),
                       ("plot", plots.scaling, (device, rs, "prompt_len", "context (prompt tokens)", figures,
                                                f"context-{n}")),
                       ("plot", plots.pareto, (device, rs, figures, f"pareto-{n}"))]
        energetic = [r for r in [*rs, *finetune.get(device, []), *kernels.get(device, [])] if views.has_energy(r)]
        if energetic:
            decoded = [r for r in energetic if r["workload"] == "decode"]
            blocks.append(("later", energy_blocks, (energetic,)))
            blocks.append(("plot", plots.energy, (device, rs if len(decoded) == len(rs) else decoded, figures,
                                                  f"energy-{n}")))
        if finetune.get(device):
            blocks.append(("later", finetune_blocks, (finetune[device],)))
        att = attention.get(device, [])
        blocks.append(("later", views.attention_report_blocks, (att,)))
        for dtype in sorted({r["dtype"] for r in att}):
            peak = c.matmul_tflops.get(dtype) if c else None
            blocks.append(("plot", plots.attention, (device, [r for r in att if r["dtype"] == dtype], peak,
                                                     figures, f"attention-{n}-{dtype}")))
        blocks += views.pytest_benchmark_report_blocks(pytest_benchmarks.get(device, []))
        sections.append(blocks)
    if compiles:
        sections.append(compile_blocks(compiles, figures))
    if len(decode) > 1:
        sections.append([("h2", "Across devices"), ("plot", plots.devices, (dict(decode), figures, "devices"))])
    if failed:
        sections.append([("h2", "Points that did not complete"),
                         ("table", views.not_completed_rows(failed), views.NOT_COMPLETED_COLUMNS)])
    if retried:
        sections.append([("h2", "Sweep points that needed more than one attempt"),
                         ("md", f"{retried} point(s) failed at first and completed on a later attempt "
                                "(`llmbench sweep submit --resume`); only their final outcome counts above.")])
    plots.SVG = svg
    for rs in decode.values():  # what every decode figure asks first, answered once for all the processes
        views.varying_fields(rs)
    jobs = [b[1:] for blocks in sections for b in blocks if b[0] == "plot"]
    wait = drawing(jobs, (os.cpu_count() or 1) if len(records) >= PARALLEL_FROM else 1)
    try:  # the findings and tables are computed and formatted while the figures are drawn
        sections = [[x for b in blocks for x in (b[1](*b[2]) if b[0] == "later" else [b])] for blocks in sections]
        inline = _inline_renderer()
        for stale in (out / "tables").glob("table-*.csv"):  # an earlier report's, into the same folder
            stale.unlink()
        numbered = itertools.count(1)
        sections = [[_table(b, inline, out / "tables" / f"table-{next(numbered)}.csv") if b[0] == "table" else b
                     for b in blocks] for blocks in sections]
    finally:
        stems = iter(wait())
    sections = [[_figure(b, stems) if b[0] == "plot" else b for b in blocks] for blocks in sections]
    sections = [kept for blocks in sections if len(kept := [b for b in blocks if b is not None]) > 1]
    out.mkdir(parents=True, exist_ok=True)
    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text(markdown(title, intro, sections))
    html_path.write_text(html(title, intro, sections, figures))
    return md_path, html_path


def _read(inputs: list[Path]) -> list[dict]:
    """The records, read with the cyclic garbage collector paused (records hold no cycles; a collection
    every few thousand new dicts would walk all the records read so far), then frozen out of its reach: a
    forked figure process then neither walks them again nor copies their pages."""
    paused = gc.isenabled()
    gc.disable()
    try:
        records = read_records(inputs)
    finally:
        if paused:
            gc.enable()
    gc.freeze()
    return records


def findings_blocks(devices: list[str], decode: dict, finetune: dict, kernels: dict, failed: dict, ceilings: dict,
                    compiles: list[dict]) -> list[tuple]:
    """The headline findings section (``report_findings``), per device when there are several."""
    findings = []
    for device in devices:
        lines = report_findings.device(decode.get(device, []), finetune.get(device, []), kernels.get(device, []),
                                       failed.get(device, []), ceilings.get(device))
        if lines:
            findings += ([("h3", f"On {device}")] if len(devices) > 1 else []) + [("md", _bullets(lines))]
    compile_lines = report_findings.compile_findings(compiles)
    if compile_lines:
        findings.append(("md", _bullets(compile_lines)))
    if not findings:
        return []
    if len(devices) == 1:
        findings.insert(0, ("md", f"On **{devices[0]}**:"))
    return [("h2", "Headline findings"), *findings]


def _environment_blocks(records: list[dict]) -> list[tuple]:
    return [("h3", "Environment"), ("table", views.environment_rows(records), views.ENV_COLUMNS)]


def decode_blocks(records: list[dict]) -> list[tuple]:
    """A device's decode tables, one per precision, then its precision comparison (every precision and stored
    format side by side per point) where a point ran several."""
    blocks = []
    for dtype in sorted({r["dtype"] for r in records}, key=views._precision_order):
        rows, columns, same = views.decode_report_table([r for r in records if r["dtype"] == dtype])
        blocks += [("h3", f"Decode, {dtype}"), ("md", same), ("table", rows, columns), *notes(rows)]
    rows, columns, text = views.precision_comparison_table(records)
    if rows:
        blocks += [("h3", "Precision comparison"), ("md", text), ("table", rows, columns)]
    return blocks


def energy_blocks(records: list[dict]) -> list[tuple]:
    rows, columns, same = views.energy_report_table(records)
    return [("h3", "Energy"), ("md", "GPU telemetry (NVML) sampled during the timed runs. " + same),
            ("table", rows, columns)]


def finetune_blocks(records: list[dict]) -> list[tuple]:
    rows, columns, same = views.finetune_report_table(records)
    return [("h3", "Fine-tune"), ("md", f"{views.FINETUNE_NOTE} {same}"), ("table", rows, columns), *notes(rows)]


def _preface(path: Path) -> list[tuple]:
    """A Markdown file as the report's first section: its first heading is the section's title."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    lines = text.strip().splitlines()
    if lines and lines[0].startswith("#"):
        return [("h2", lines[0].lstrip("#").strip() or path.name), ("md", "\n".join(lines[1:]).strip())]
    return [("h2", path.stem), ("md", text.strip())]


def _figure(block: tuple, stems) -> tuple | None:
    """A drawn figure's block: ("img", stem), or None when it had nothing to draw."""
    stem = next(stems)
    return ("img", stem) if stem else None


TABLE_ROWS = 500  # a report stays readable (and fast to build and open) at sweep scale
"""Rows a table shows in the report; a longer one (a sweep of thousands of points) shows its first rows
and says so, and every row goes to ``tables/table-N.csv`` beside the report, where pandas and
spreadsheets read it (raw values, not the rounded ones)."""


def _table(block: tuple, inline, csv_path: Path | None = None) -> tuple:
    """A table's block rendered once in both formats: ("table", Markdown, HTML); past ``TABLE_ROWS`` rows,
    the first of them, with every row written to ``csv_path``."""
    rows, columns = block[1], block[2]
    note = ""
    if len(rows) > TABLE_ROWS and csv_path is not None:
        _write_csv(rows, columns, csv_path)
        link = f"{csv_path.parent.name}/{csv_path.name}"
        note = f"The first {TABLE_ROWS} of {len(rows)} rows; every row: [{link}]({link})."
        rows = rows[:TABLE_ROWS]
    formatted = tables.cells(rows, columns)
    md, page = tables.markdown(rows, columns, formatted), tables.html(rows, columns, inline, formatted)
    if note:
        md, page = f"{md}\n\n{note}", f'{page}<p class="note">{inline(note)}</p>'
    return "table", md, f'<div class="scroll">{page}</div>'


def _write_csv(rows: list[dict], columns: list[tuple], path: Path) -> None:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([header for _, header, _ in columns])
        for row in rows:
            writer.writerow(["" if row.get(key) is None else (float(row[key]) if isinstance(row[key], float)
                                                              else row[key]) for key, _, _ in columns])


_JOBS: list[tuple] = []


def _draw_one(index: int):
    function, args = _JOBS[index]
    return function(*args)


def drawing(jobs: list[tuple], workers: int = 1):
    """Start the figure functions ``jobs`` ((function, args) each); returns a function that waits for
    their stems. With ``workers`` over 1 they run in forked processes while this one goes on (matplotlib
    draws on one core; a 10,000-record report draws seven figures), each worker reading the jobs from
    this process's memory, not from a pickle; otherwise they run when waited for, one after another
    (also where fork is missing or other threads run: a lock held by another thread at the fork would
    hang the worker)."""
    global _JOBS
    workers = min(workers, len(jobs))
    if not (workers > 1 and "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1):
        return lambda: [function(*args) for function, args in jobs]
    _JOBS = jobs
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    futures = [pool.submit(_draw_one, i) for i in range(len(jobs))]

    def wait() -> list[str | None]:
        global _JOBS
        try:
            return [future.result() for future in futures]
        finally:
            pool.shutdown(cancel_futures=True)
            _JOBS = []

    return wait


def draw(jobs: list[tuple], workers: int = 1) -> list[str | None]:
    """The stems of the figure functions ``jobs``, drawn as ``drawing`` says."""
    return drawing(jobs, workers)()


ALLREDUCE_NOTE = ("All-reduce bus bandwidth (nccl-tests' definition: the bytes each process moves over the links "
                  "per call, 2(n-1)/n of the message, over the shortest call) against the message size, the best "
                  "measurement at each size (`llmbench peak --nproc N`): an interconnect's rate, never compared "
                  "with the memory datasheet.")


BOUND_SENTENCE = (
    f"Bound: a point reaching under {100 * roofline.OVERHEAD_BELOW:.0f}% of the roof at its arithmetic intensity, "
    "min(matmul peak, intensity x copy bandwidth), is overhead-bound (launch, host and framework time); otherwise "
    "it is memory-bound below the ridge point (matmul FLOP/s over copy bandwidth) and compute-bound above it; "
    "% roof is the fraction reached.")


def _bullets(lines: list[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


def notes(rows: list[dict]) -> list[tuple]:
    """The line under a report table that explains its '!' marks, when it has any (the bound labels are
    explained once, in the introduction)."""
    return [("md", line) for line in views.roof_notes(rows, explain_bound=False)]


def _capped(lines: list[str]) -> str:
    shown = _bullets(lines[:MAX_LISTED])
    more = f"\n- ... and {len(lines) - MAX_LISTED} more (each record's `warnings`)" if len(lines) > MAX_LISTED else ""
    return shown + more


def warning_blocks(records: list[dict]) -> list[tuple]:
    """A device's warnings: rates above a measured ceiling (with the hint, once), then the rest (noise,
    drift), one line per record and warning, at most ``MAX_LISTED`` of each kind."""
    impossible, other = views.roofline_warnings(records), views.other_warnings(records)
    if not impossible and not other:
        return []
    blocks = [("h3", "Warnings")]
    if impossible:
        blocks.append(("md", f"Rates above a measured ceiling, impossible: {roofline.PEAK_HINT}.\n\n"
                             + _capped(impossible)))
    if other:
        blocks.append(("md", ("Other warnings (noise, drift):\n\n" if impossible else "") + _capped(other)))
    return blocks


def compile_blocks(records: list[dict], figures: Path) -> list[tuple]:
    """The static kernel-resource section: a line per kernel x arch x head dim, a heat map per precision
    and the table of every compile."""
    blocks = [("h2", "Kernel resources (static compile)"),
              ("md", "Each kernel compiled with Triton for GPU architectures without a GPU (`kernel-compile` "
                     "records); registers, spills and shared memory from ptxas, occupancy estimated from them "
                     "against the architecture's limits. A candidate is clean when it fits and spills nothing."),
              ("md", _bullets(views.compile_summary(records)))]
    for dtype in sorted({r.get("dtype") for r in records}, key=lambda d: views._precision_order(d or "")):
        blocks.append(("plot", plots.kernel_resources, ([r for r in records if r.get("dtype") == dtype], figures,
                                                        f"kernel-resources-{dtype}")))
    blocks += [("h3", "Every compile"), ("table", views.compile_rows(records), views.COMPILE_COLUMNS)]
    return blocks


# ---------------------------------------------------------------- rendering


def markdown(title: str, intro: str, sections: list[list[tuple]]) -> str:
    md = [f"# {title}", "", intro, ""]
    for blocks in sections:
        for block in blocks:
            kind = block[0]
            if kind in ("h2", "h3"):
                md += [("## " if kind == "h2" else "### ") + block[1], ""]
            elif kind == "md":
                if block[1]:
                    md += [block[1], ""]
            elif kind == "table":
                md += [block[1], ""]
            else:
                md += [f"![{block[1]}](plots/{block[1]}.png)", ""]
    return "\n".join(md)


def _markdown_renderer():
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False, "typographer": False}).enable("table")


def _inline_renderer():
    """Text to HTML for table cells: inline Markdown (`code` in an error message) rendered, the rest escaped."""
    from markupsafe import escape

    md = _markdown_renderer()
    cache: dict[str, str] = {}

    def inline(text: str) -> str:
        if text not in cache:
            cache[text] = md.renderInline(text) if any(ch in text for ch in "`*_[") else str(escape(text))
        return cache[text]

    return inline


def _slug(text: str, used: set) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    while slug in used:
        slug += "-x"
    used.add(slug)
    return slug


def html(title: str, intro: str, sections: list[list[tuple]], figures: Path) -> str:
    """The page: the template filled with each section's HTML (prose through markdown-it-py, tables as
    ``_table`` rendered them, figures inline as base64 PNG)."""
    import jinja2
    from markupsafe import Markup

    md = _markdown_renderer()

    def render(block) -> str:
        kind = block[0]
        if kind == "md":
            return md.render(block[1]) if block[1] else ""
        if kind == "table":
            return block[2]
        data = base64.b64encode((figures / f"{block[1]}.png").read_bytes()).decode()
        return f'<img alt="{block[1]}" src="data:image/png;base64,{data}">'

    used: set = set()
    page = []
    for blocks in sections:
        section = {"title": blocks[0][1], "id": _slug(blocks[0][1], used), "body": [], "subs": []}
        for block in blocks[1:]:
            if block[0] == "h3":
                section["subs"].append({"title": block[1], "body": []})
            else:
                (section["subs"][-1] if section["subs"] else section)["body"].append(render(block))
        if section["title"] == "Headline findings":
            section["body"] = ['<div class="findings">'] + section["body"]
            for sub in section["subs"]:
                sub["body"] = ['<div class="findings">'] + sub["body"] + ["</div>"]
            section["body"].append("</div>")
        section["body"] = Markup("\n".join(section["body"]))
        for sub in section["subs"]:
            sub["body"] = Markup("\n".join(sub["body"]))
        page.append(section)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=True)
    return env.get_template("report.html.j2").render(title=title, intro=Markup(md.renderInline(intro)),
                                                     sections=page)
