"""The suite behind ``llmbench suite``: which steps characterise a node, how each one runs, and which of
DESIGN.md's targets its records meet.

A step is a plain ``llmbench`` command line (or, on a GPU, ``pytest -m gpu``) run in a fresh process with
``--out DIR``, so the suite never imports another command and any step can be re-run by hand from the
line it prints. A step that fails is noted with its exit code (and gets a ``failed`` record when it left
none), and the suite goes on. Steps that need a GPU are skipped on a CPU with the reason. This module
imports neither torch nor transformers: the command resolves the device and hands its type in.

``targets`` reads the records of a suite's folder and gives one row per target of DESIGN.md's table:
what was measured, the goal, and ``met`` / ``not met`` / ``not measured here``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MET, NOT_MET, NOT_MEASURED = "met", "not met", "not measured here"
NEEDS_GPU = "needs a GPU"

# the target models of decode (DESIGN.md: batch 1 on a 1-8B model) and the full-size kernel shapes
DECODE_MODELS = ("llama-3.2-1b", "llama-3.1-8b")
PARAMS_1B_8B = (0.9e9, 8.5e9)  # a "1-8B model" by parameter count (Llama-3.1-8B has 8.03B)


@dataclass
class Step:
    """One command of the suite. ``argv`` follows ``llmbench`` (or is a whole command line when
    ``pytest``); ``skip`` says why the suite does not run it here; ``estimate_s`` feeds the progress."""

    name: str
    argv: list[str]
    estimate_s: float
    needs_gpu: bool = False
    pytest: bool = False
    skip: str | None = None
    workload: str = ""


@dataclass
class Outcome:
    step: Step
    status: str  # ok | failed | skipped
    returncode: int | None = None
    seconds: float = 0.0
    records: int = 0
    log: str | None = None
    notes: list[str] = field(default_factory=list)


def _quick_steps(device: str) -> list[Step]:
    d = ["--device", device]
    decode = ["--model", "qwen2.5-0.5b", "--batch-size", "1", "--prompt-len", "32", "--new-tokens", "16",
              "--repeats", "2", "--warmup", "1", "--no-progress", *d]
    return [
        Step("peak", ["peak", "--buffer-mb", "64", "--matmul-n", "512", *d], 5, workload="peak"),
        Step("decode-dtypes", ["decode", *decode, "--dtype", "bf16,fp32"], 45, workload="decode"),
        Step("decode-engines-sdpa", ["decode", *decode, "--dtype", "bf16", "--engine", "hf,hf-static,lean",
                                     "--attn", "sdpa"], 40, workload="decode"),
        Step("decode-engines-triton", ["decode", *decode, "--dtype", "bf16", "--engine", "hf,hf-static,lean",
                                       "--attn", "triton"], 40, needs_gpu=True, workload="decode"),
        Step("decode-int8", ["decode", *decode, "--dtype", "bf16", "--engine", "lean", "--attn", "triton",
                             "--weights", "auto,int8", "--kv-cache", "auto,int8"], 40, needs_gpu=True,
             workload="decode"),
        Step("kernel-attention", ["kernel", "attention", "--dtype", "bf16", "--mode", "fwd,bwd", "--seq-len", "128",
                                  "--head-dim", "64", "--causal", "yes", "--tokens", "512", "--no-progress", *d], 5,
             workload="attention"),
        Step("kernel-decode-attention", ["kernel", "decode-attention", "--dtype", "bf16", "--batch-size", "1,4",
                                         "--context", "256,1024", "--no-progress", *d], 5, workload="decode-attention"),
        Step("kernel-compile", ["kernel", "compile", "--arch", "sm_90", "--head-dim", "128", "--case", "causal,paged",
                                "--no-progress"], 60, workload="kernel-compile"),
        Step("finetune-bf16", ["finetune", "--model", "gpt2", "--dtype", "bf16", "--batch-size", "2", "--seq-len", "64",
                               "--steps", "3", "--warmup-steps", "1", *d], 18, workload="finetune"),
        Step("finetune-fp32", ["finetune", "--model", "gpt2", "--dtype", "fp32", "--batch-size", "2", "--seq-len", "64",
                               "--steps", "3", "--warmup-steps", "1", *d], 18, workload="finetune"),
    ]


def _full_steps(device: str) -> list[Step]:
    d = ["--device", device]
    steps = [Step("peak", ["peak", *d], 120, workload="peak")]
    for model in DECODE_MODELS:
        short = model.split("-")[-1]  # 1b, 8b
        point = ["--model", model, "--batch-size", "1", "--prompt-len", "512", "--new-tokens", "128",
                 "--max-time", "30", "--no-progress", *d]
        steps.append(Step(f"decode-dtypes-{short}", ["decode", *point, "--dtype", "bf16,fp32"], 240,
                          workload="decode"))
        for attn in ("sdpa", "triton"):
            steps.append(Step(f"decode-engines-{attn}-{short}",
                              ["decode", *point, "--dtype", "bf16", "--engine", "hf,hf-static,lean", "--attn", attn],
                              300, needs_gpu=attn == "triton", workload="decode"))
        lean = ["decode", *point, "--dtype", "bf16", "--engine", "lean", "--attn", "triton"]
        steps.append(Step(f"decode-int8-{short}", [*lean, "--weights", "auto,int8", "--kv-cache", "auto,int8"], 300,
                          needs_gpu=True, workload="decode"))
        steps.append(Step(f"decode-torchao-{short}", [*lean, "--weights", "auto,int8-torchao"], 200,
                          needs_gpu=True, workload="decode"))
    steps += [
        Step("kernel-attention", ["kernel", "attention", "--dtype", "bf16", "--mode", "fwd,bwd", "--head-dim", "128",
                                  "--seq-len", "4096,8192,16384", "--no-progress", *d], 300, workload="attention"),
        Step("kernel-decode-attention", ["kernel", "decode-attention", "--dtype", "bf16", "--no-progress", *d], 240,
             workload="decode-attention"),
        Step("kernel-decode-attention-int8", ["kernel", "decode-attention", "--dtype", "bf16", "--kv-dtype", "int8",
                                              "--impl", "triton,triton-paged", "--no-progress", *d], 120,
             workload="decode-attention"),
        Step("kernel-compile", ["kernel", "compile", "--no-progress"], 300, workload="kernel-compile"),
    ]
    for dtype in ("bf16", "fp32"):
        steps.append(Step(f"finetune-{dtype}", ["finetune", "--model", "llama-3.2-1b", "--dtype", dtype,
                                                "--batch-size", "4", "--seq-len", "512", "--steps", "20", *d], 180,
                          workload="finetune"))
    return steps


def steps(quick: bool, device_type: str, device: str = "auto", tests: Path | None = Path("tests")) -> list[Step]:
    """The suite's steps in order, for a device of type ``device_type`` (``cuda`` or ``cpu``); ``device`` is
    passed to every command. On a CPU the steps that need a GPU are kept with ``skip`` set, so the list
    (and ``--dry-run``) shows them. The GPU tests run when ``tests`` is a folder."""
    out = _quick_steps(device) if quick else _full_steps(device)
    gpu = device_type == "cuda"
    out.append(Step("gpu-tests", ["-m", "pytest", "-m", "gpu", "-q", str(tests or "tests")], 240 if not quick else 120,
                    needs_gpu=True, pytest=True, workload="gpu-tests"))
    for step in out:
        if step.needs_gpu and not gpu:
            step.skip = NEEDS_GPU
        elif step.pytest and (tests is None or not tests.is_dir()):
            step.skip = f"no {tests or 'tests'}/ folder here"
    return out


def command(step: Step, out: Path, python: str = sys.executable) -> list[str]:
    """The step's command line: ``python -m harness ... --out OUT`` (``python -m pytest ...`` for the tests)."""
    if step.pytest:
        return [python, *step.argv]
    return [python, "-m", "harness", *step.argv, "--out", str(out)]


def device_slug(name: str) -> str:
    """A folder-name form of a device name: ``NVIDIA H200`` -> ``h200``, ``AMD EPYC 7B13`` -> ``amd-epyc-7b13``."""
    text = re.sub(r"^nvidia\s+", "", name.strip(), flags=re.IGNORECASE)
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def progress_line(index: int, todo: list[Step], elapsed: float, spent_est: float, spent: float) -> str:
    """``[suite 3/9] decode-engines-sdpa: 1m20s so far, about 3m10s left``. What is left is the remaining
    steps' estimates, scaled (0.5x to 3x) by how the finished steps compared with theirs once a minute of
    estimates has run."""
    scale = min(max(spent / spent_est, 0.5), 3.0) if spent_est >= 60 and spent > 0 else 1.0
    left = sum(s.estimate_s for s in todo[index:] if not s.skip) * scale
    return f"[suite {index + 1}/{len(todo)}] {todo[index].name}: {_clock(elapsed)} so far, about {_clock(left)} left"


def run_process(cmd: list[str], log: Path) -> int:
    """Run one step, its output both to the terminal and to ``log``; its exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as sink:
        sink.write(("$ " + " ".join(cmd) + "\n").encode())
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            for line in proc.stdout:
                sink.write(line)
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
        finally:
            proc.stdout.close()
            code = proc.wait()
    return code


def count_records(out: Path) -> int:
    path = out / "records.jsonl"
    if not path.exists():
        return 0
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def failed_record(step: Step, code: int, log: Path, env: dict) -> dict:
    """The record of a step that ended with ``code`` without writing any record of its own."""
    from harness.records import make_record, new_run_id

    return make_record(run_id=new_run_id(), point={"workload": step.workload, "suite_step": step.name},
                       status="failed", error=f"suite step {step.name} exited {code} without a record; see {log}",
                       env=env)


def run(todo: list[Step], out: Path, *, python: str = sys.executable, env: dict | None = None,
        runner: Callable[[list[str], Path], int] | None = None, clock: Callable[[], float] | None = None,
        say: Callable[[str], None] = print) -> list[Outcome]:
    """Run the steps in order, each in its own process; a failing step is noted and the rest go on."""
    from time import monotonic

    from harness.records import append_record

    clock, runner = clock or monotonic, runner or run_process  # looked up now, so a test can replace it
    start, spent, spent_est, outcomes = clock(), 0.0, 0.0, []
    for i, step in enumerate(todo):
        if step.skip:
            say(f"[suite {i + 1}/{len(todo)}] {step.name}: skipped ({step.skip})")
            outcomes.append(Outcome(step, "skipped", notes=[step.skip]))
            continue
        say(progress_line(i, todo, clock() - start, spent_est, spent))
        cmd = command(step, out, python)
        say("$ " + " ".join(cmd))
        log = out / "logs" / f"{step.name}.log"
        before, began = count_records(out), clock()
        try:
            code = runner(cmd, log)
        except OSError as exc:
            code, note = 127, f"could not start: {exc}"
        else:
            note = None
        took = clock() - began
        spent, spent_est = spent + took, spent_est + step.estimate_s
        made = count_records(out) - before
        outcome = Outcome(step, "ok" if code == 0 else "failed", code, took, made, str(log))
        if note:
            outcome.notes.append(note)
        if code != 0:
            outcome.notes.append(f"exit code {code}; output in {log}")
            if made <= 0 and not step.pytest:
                append_record(out / "records.jsonl", failed_record(step, code, log, env or {}))
        say(f"[suite {i + 1}/{len(todo)}] {step.name}: {outcome.status} in {_clock(took)}"
            + (f" (exit code {code})" if code else ""))
        outcomes.append(outcome)
    return outcomes


# ---------------------------------------------------------------------------------------------- targets


@dataclass
class Target:
    what: str
    goal: str
    measured: str
    verdict: str


def _ok(records: list[dict], workload: str) -> list[dict]:
    return [r for r in records if r.get("workload") == workload and r.get("status") == "ok"]


def _on_gpu(r: dict) -> bool:
    return (r.get("env") or {}).get("device_type") == "cuda" or str(r.get("device", "")).startswith("cuda")


def _verdict(value: float | None, goal: float) -> str:
    return NOT_MEASURED if value is None else (MET if value >= goal else NOT_MET)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _gpu_only(rows: list[dict], what: str) -> tuple[list[dict], str | None]:
    """The GPU records among ``rows``; when there are none, why the target is not measured here."""
    gpu = [r for r in rows if _on_gpu(r)]
    if gpu:
        return gpu, None
    return [], (f"{what} on a CPU only (a GPU target)" if rows else f"no {what}")


def _decode_mbu(records: list[dict]) -> Target:
    goal = ">= 85% of measured copy bandwidth (weights + KV), bf16, batch 1, 1-8B model"
    rows = [r for r in _ok(records, "decode") if r.get("dtype") == "bf16" and r.get("batch_size") == 1
            and PARAMS_1B_8B[0] <= (r.get("cost") or {}).get("params", 0) <= PARAMS_1B_8B[1]
            and (r.get("derived") or {}).get("mbu") is not None]
    rows, why = _gpu_only(rows, "bf16 batch-1 decode records of a 1-8B model with MBU")
    if why:
        return Target("decode bandwidth (MBU)", goal, why, NOT_MEASURED)
    best: dict[str, dict] = {}
    for r in rows:
        if r["model"] not in best or r["derived"]["mbu"] > best[r["model"]]["derived"]["mbu"]:
            best[r["model"]] = r
    worst = min(r["derived"]["mbu"] for r in best.values())
    measured = "; ".join(f"{m}: {_pct(r['derived']['mbu'])} ({r.get('engine', 'hf')}, {r.get('attn')})"
                         for m, r in sorted(best.items()))
    return Target("decode bandwidth (MBU)", goal, measured + " (best engine per model)", _verdict(worst, 0.85))


def _key(r: dict, drop: tuple[str, ...]) -> tuple:
    """A record's point without ``drop`` and the bookkeeping fields, to pair variants of one point."""
    skip = {"run_id", "timestamp", "status", "error", "metrics", "cost", "derived", "env", "telemetry", "warnings",
            "quality", "fingerprint", "samples", *drop}
    return tuple(sorted((k, str(v)) for k, v in r.items() if k not in skip))


def _pairs(rows: list[dict], field_: str, a: str, b: str, drop: tuple[str, ...] = ()) -> list[tuple[dict, dict]]:
    """(record with field_=a, record with field_=b) at the same point; the latest of each."""
    left, right = {}, {}
    for r in rows:
        key = _key(r, (field_, *drop))
        if r.get(field_) == a:
            left[key] = r
        elif r.get(field_) == b:
            right[key] = r
    return [(left[k], right[k]) for k in left if k in right]


def _lean_speedup(records: list[dict]) -> Target:
    goal = ">= 4x HF generate() default (tokens/s), same GPU"
    rows = [r for r in _ok(records, "decode") if (r.get("metrics") or {}).get("tokens_per_s")]
    rows, why = _gpu_only(rows, "decode records")
    pairs = _pairs(rows, "engine", "lean", "hf", drop=("cache", "compile")) if not why else []
    if not pairs:
        return Target("lean engine vs generate()", goal, why or "no lean and hf records at the same point",
                      NOT_MEASURED)
    ratios = [(le["metrics"]["tokens_per_s"] / hf["metrics"]["tokens_per_s"], le) for le, hf in pairs]
    worst, r = min(ratios, key=lambda x: x[0])
    measured = f"{worst:.2f}x ({r.get('model')}, {r.get('attn')}, batch {r.get('batch_size')}; worst of {len(ratios)})"
    return Target("lean engine vs generate()", goal, measured, _verdict(worst, 4.0))


def _attention_rows(records: list[dict], mode: str) -> list[dict]:
    return [r for r in _ok(records, "attention") if r.get("mode") == mode and r.get("dtype") == "bf16"
            and r.get("causal") is True and r.get("head_dim") == 128 and (r.get("seq_len") or 0) >= 4096]


def _attention_vs_flash(records: list[dict], mode: str, goal_ratio: float) -> Target:
    what = f"fused attention {mode} vs SDPA flash"
    goal = f">= {goal_ratio:g}x SDPA flash backend (bf16, causal, head dim 128, seq >= 4k)"
    rows, why = _gpu_only(_attention_rows(records, mode), f"bf16 causal head-dim-128 seq>=4k {mode} records")
    pairs = _pairs(rows, "impl", "triton", "sdpa-flash", drop=("attn",)) if not why else []
    if not pairs:
        return Target(what, goal, why or "no triton and sdpa-flash records at the same point", NOT_MEASURED)
    ratios = [(fl["metrics"]["time_ms"] / tr["metrics"]["time_ms"], tr) for tr, fl in pairs]
    worst, r = min(ratios, key=lambda x: x[0])
    return Target(what, goal, f"{worst:.2f}x at seq {r.get('seq_len')} (worst of {len(ratios)})",
                  _verdict(worst, goal_ratio))


def _attention_tflops(records: list[dict]) -> Target:
    what, goal = "fused attention fwd TFLOP/s", ">= 450 TFLOP/s (bf16, causal, head dim 128, seq >= 4k)"
    rows = [r for r in _attention_rows(records, "fwd") if r.get("impl") == "triton"]
    rows, why = _gpu_only(rows, "triton fwd records at the target shape")
    if why:
        return Target(what, goal, why, NOT_MEASURED)
    worst = min(rows, key=lambda r: r["derived"]["achieved_tflops"])
    best = max(r["derived"]["achieved_tflops"] for r in rows)
    return Target(what, goal, f"{worst['derived']['achieved_tflops']:.0f} (seq {worst.get('seq_len')}) to {best:.0f}",
                  _verdict(worst["derived"]["achieved_tflops"], 450))


def _decode_attention(records: list[dict], ceilings: dict) -> list[Target]:
    rows, why = _gpu_only([r for r in _ok(records, "decode-attention") if not r.get("kv_dtype")],
                          "decode-attention records")
    goals = (("decode attention % of copy bandwidth", ">= 85% of measured copy bandwidth at large batch x context"),
             ("paged vs contiguous decode attention", "paged >= 90% of contiguous"),
             ("decode attention vs SDPA", ">= 2x SDPA at batch 1, long context (>= 16k)"))
    if why:
        return [Target(w, g, why, NOT_MEASURED) for w, g in goals]
    out = []
    ours = [r for r in rows if r.get("impl") == "triton"]
    if ours:
        big = max(ours, key=lambda r: (r["batch_size"] * r["context"], r["derived"].get("achieved_gbps", 0)))
        copy = _copy_gbps(big, ceilings)
        frac = big["derived"].get("mbu") or (big["derived"]["achieved_gbps"] / copy if copy else None)
        measured = (f"{_pct(frac)} ({big['derived']['achieved_gbps']:.0f} GB/s, batch {big['batch_size']} x "
                    f"context {big['context']})" if frac is not None else "no copy-bandwidth ceiling")
        out.append(Target(goals[0][0], goals[0][1], measured, _verdict(frac, 0.85)))
    else:
        out.append(Target(goals[0][0], goals[0][1], "no triton records", NOT_MEASURED))
    pairs = _pairs(rows, "impl", "triton-paged", "triton", drop=("attn",))
    if pairs:
        paged, contig = max(pairs, key=lambda p: p[0]["batch_size"] * p[0]["context"])
        ratio = contig["metrics"]["time_ms"] / paged["metrics"]["time_ms"]
        out.append(Target(goals[1][0], goals[1][1], f"{_pct(ratio)} at batch {paged['batch_size']} x context "
                          f"{paged['context']}", _verdict(ratio, 0.9)))
    else:
        out.append(Target(goals[1][0], goals[1][1], "no paged and contiguous records at the same point", NOT_MEASURED))
    pairs = [(t, s) for t, s in _pairs(rows, "impl", "triton", "sdpa", drop=("attn",))
             if t["batch_size"] == 1 and t["context"] >= 16384]
    if pairs:
        t, s = max(pairs, key=lambda p: p[0]["context"])
        ratio = s["metrics"]["time_ms"] / t["metrics"]["time_ms"]
        out.append(Target(goals[2][0], goals[2][1], f"{ratio:.2f}x at batch 1, context {t['context']}",
                          _verdict(ratio, 2.0)))
    else:
        out.append(Target(goals[2][0], goals[2][1], "no triton and sdpa records at batch 1, context >= 16k",
                          NOT_MEASURED))
    return out


def _copy_gbps(record: dict, ceilings: dict) -> float | None:
    from harness.ceilings import device_key

    c = ceilings.get(device_key(record))
    return c.copy_gbps if c else None


def _peak(records: list[dict], ceilings: dict) -> Target:
    what, goal = "peak memory bandwidth", "measure it (STREAM copy), report it beside the datasheet"
    measured = [c for c in ceilings.values() if c.copy_gbps]
    if not measured:
        return Target(what, goal, "no copy-bandwidth ceiling", NOT_MEASURED)
    parts = []
    for c in measured:
        spec = f" = {_pct(c.copy_gbps / c.spec.mem_gbps)} of spec {c.spec.mem_gbps:.0f} GB/s ({c.spec.name})" \
            if c.spec else " (no datasheet entry for this device)"
        parts.append(f"{c.device}: copy {c.copy_gbps:.1f} GB/s{spec}")
    return Target(what, goal, "; ".join(parts), MET)


def _int8_kv(records: list[dict], ceilings: dict) -> Target:
    what, goal = "int8 KV decode attention", ">= 85% of copy bandwidth on stored bytes"
    rows = [r for r in _ok(records, "decode-attention") if r.get("kv_dtype") == "int8" and r.get("attn") == "triton"]
    rows, why = _gpu_only(rows, "int8-cache decode-attention records (`kernel decode-attention --kv-dtype int8`)")
    if why:
        return Target(what, goal, why, NOT_MEASURED)
    big = max(rows, key=lambda r: (r["batch_size"] * r["context"], r["derived"].get("achieved_gbps", 0)))
    copy = _copy_gbps(big, ceilings)
    frac = big["derived"].get("mbu") or (big["derived"]["achieved_gbps"] / copy if copy else None)
    if frac is None:
        return Target(what, goal, "no copy-bandwidth ceiling", NOT_MEASURED)
    return Target(what, goal, f"{_pct(frac)} ({big['derived']['achieved_gbps']:.0f} GB/s stored, batch "
                              f"{big['batch_size']} x context {big['context']})", _verdict(frac, 0.85))


def _int8_weights(records: list[dict]) -> Target:
    what, goal = "int8 weights decode", ">= 1.6x bf16 lean at batch 1 (8B)"
    rows = [r for r in _ok(records, "decode") if r.get("engine") == "lean" and r.get("batch_size") == 1
            and r.get("dtype") == "bf16" and r.get("weight_impl") != "torchao"
            and PARAMS_1B_8B[0] <= (r.get("cost") or {}).get("params", 0) <= PARAMS_1B_8B[1]]
    rows, why = _gpu_only(rows, "lean bf16 batch-1 decode records of a 1-8B model (`decode --weights auto,int8`)")
    pairs = _pairs(rows, "weight_format", "int8", "bf16", drop=("weight_impl",)) if not why else []
    if not pairs:
        return Target(what, goal, why or "no int8-weight and bf16 lean records at the same point", NOT_MEASURED)
    ratios = [(q["metrics"]["tokens_per_s"] / b["metrics"]["tokens_per_s"], q) for q, b in pairs]
    big = max(ratios, key=lambda x: x[1]["cost"]["params"])  # the largest model measured: the 8B target
    ratio, r = big
    agree = (r.get("quality") or {}).get("token_agreement")
    measured = f"{ratio:.2f}x ({r.get('model')}, KV {r.get('kv_format')}" + \
        (f"; greedy tokens agree {_pct(agree)})" if agree is not None else ")")
    return Target(what, goal, measured, _verdict(ratio, 1.6))


def _ddp_scaling(records: list[dict]) -> Target:
    from harness.views import scaling_efficiency

    what, goal = "multi-GPU DDP fine-tune", "scaling >= 90% from 1 to 8 GPUs"
    rows, why = _gpu_only(_ok(records, "finetune"), "fine-tune records")
    scaled = [(eff, r) for eff, r in zip(scaling_efficiency(rows), rows) if eff is not None
              and r.get("parallel") == "ddp"] if not why else []
    if not scaled:
        return Target(what, goal, why or "no DDP fine-tune beside a one-process run of the same point "
                                         "(`finetune --nproc 8`, then `--nproc 1`; needs 8 GPUs)", NOT_MEASURED)
    eff, r = min(scaled, key=lambda x: (-x[1]["world_size"], x[0]))  # the most GPUs, its worst point
    measured = f"{_pct(eff)} at {r['world_size']} GPUs ({r.get('model')}, {r.get('dtype')})"
    return Target(what, goal, measured, _verdict(eff, 0.9) if r["world_size"] >= 8 else NOT_MEASURED)


def _tp_speedup(records: list[dict]) -> Target:
    what, goal = "multi-GPU TP decode", "TP=2 decode of 8B >= 1.7x TP=1"
    rows = [{**r, "tp": r.get("tp") or 1} for r in _ok(records, "decode") if r.get("batch_size") == 1]
    rows, why = _gpu_only([r for r in rows if r["tp"] in (1, 2)], "batch-1 decode records at tp 1 and 2")
    pairs = [(two, one) for two, one in _pairs(rows, "tp", 2, 1, drop=("world_size", "parallel"))
             if PARAMS_1B_8B[0] <= (one.get("cost") or {}).get("params", 0) <= PARAMS_1B_8B[1]] if not why else []
    if not pairs:
        return Target(what, goal, why or "no tp 2 and tp 1 decode records of a 1-8B model at the same point "
                                         "(`decode --tp 1` and `--tp 2`; needs 2 GPUs)", NOT_MEASURED)
    two, one = max(pairs, key=lambda p: p[1]["cost"]["params"])
    ratio = two["metrics"]["tokens_per_s"] / one["metrics"]["tokens_per_s"]
    return Target(what, goal, f"{ratio:.2f}x ({two.get('model')}, {two.get('engine')}, {two.get('dtype')})",
                  _verdict(ratio, 1.7))


def _kernel_resources(records: list[dict]) -> Target:
    from workloads.kernelcompile import WORKLOAD, without_clean

    what, goal = "kernel resources", "every autotune candidate spill-free and fitting, every kernel x arch x head dim"
    rows = [r for r in records if r.get("workload") == WORKLOAD]
    if not rows:
        return Target(what, goal, "no kernel-compile records (`llmbench kernel compile`)", NOT_MEASURED)
    bad = [r for r in rows if r.get("status") != "ok" or not (r.get("metrics") or {}).get("clean")]
    archs = ", ".join(sorted({r["arch"] for r in rows}))
    lacking = without_clean(rows)
    measured = f"{len(rows) - len(bad)} of {len(rows)} candidates clean ({archs})"
    if lacking:
        kernel, arch, dtype, head_dim, case = lacking[0]
        measured += f"; {len(lacking)} kernel x arch x head dim x case without any, e.g. {kernel} {arch} " \
                    f"{dtype} d{head_dim} {case}"
    return Target(what, goal, measured, MET if not bad else NOT_MET)


def targets(records: list[dict]) -> list[Target]:
    """One row per target of DESIGN.md's Targets table, from a suite folder's records."""
    from harness.ceilings import from_records

    ceilings = from_records(records)
    return [
        _decode_mbu(records),
        _lean_speedup(records),
        _attention_vs_flash(records, "fwd", 1.0),
        _attention_tflops(records),
        _attention_vs_flash(records, "bwd", 0.8),
        *_decode_attention(records, ceilings),
        _peak(records, ceilings),
        _int8_weights(records),
        _int8_kv(records, ceilings),
        _kernel_resources(records),
        _ddp_scaling(records),
        _tp_speedup(records),
    ]


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def targets_markdown(rows: list[Target], outcomes: list[Outcome] | None = None, title: str = "Targets") -> str:
    lines = [f"## {title}", "", "| target | measured | goal | verdict |", "|---|---|---|---|"]
    lines += [f"| {_cell(t.what)} | {_cell(t.measured)} | {_cell(t.goal)} | {t.verdict} |" for t in rows]
    if outcomes:
        lines += ["", "## Steps", "", "| step | status | exit code | time | records | command / note |",
                  "|---|---|---|---|---|---|"]
        for o in outcomes:
            note = "; ".join(o.notes) if o.notes else " ".join(o.step.argv)
            code = "" if o.returncode is None else str(o.returncode)
            lines.append(f"| {o.step.name} | {o.status} | {code} | {_clock(o.seconds) if o.status != 'skipped' else ''}"
                         f" | {o.records if o.status != 'skipped' else ''} | {_cell(note)} |")
    return "\n".join(lines) + "\n"
