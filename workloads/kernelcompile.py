"""Compile our Triton kernels for GPUs that are not here: the cases that matter, in parallel.

``llmbench kernel compile`` answers "what will each kernel cost on an A100, an H100, a
B200?" on a machine with no GPU. A **case** is one way the wrappers launch the kernels
(``kernels.attention.attention`` forward and backward, causal or not, with a padding
mask or GQA; ``kernels.decode_attention.decode_attention`` over a contiguous or paged
cache, with a mask, on int8 or fp8 caches; ``kernels.int8_linear.int8_linear`` for decode
and prefill) at one dtype and head dim. Each case runs its wrapper on ``meta``
tensors under ``kernels.common.capture_launches``, so the launches compiled are the
ones the wrapper really makes (same arguments, same specialisation), and every
autotune candidate of the arch's table is compiled by ``kernels.resources``. A new
kernel launched by these wrappers is covered without a change here.

Compiles run in worker processes (spawned, one per core by default) because the
Triton interpreter, which the tests turn on for the whole process, cannot also
compile: each worker imports the kernels with ``TRITON_INTERPRET=0``. Shapes are
typical (4096 keys; 16 query heads for attention, 32 for decode), and sizes that are
multiples of 16 specialise as they do in real runs.

Each compiled candidate becomes one row (``rows``) that the command turns into a
record (workload ``kernel-compile``): the point (kernel, arch, dtype, head dim, case,
candidate) and the metrics (registers, spill bytes, stack, shared memory, programs and
warps per SM, occupancy, fits, clean, compile seconds).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass

WORKLOAD = "kernel-compile"
DEFAULT_ARCHS = ("sm_80", "sm_90", "sm_100")
DEFAULT_HEAD_DIMS = (64, 128)
DTYPES = ("bf16", "fp16", "fp32", "tf32")
# family -> its cases: (case name, what it launches)
CASES = {
    "attention": {
        "causal": "fused attention forward + backward, causal, multi-head",
        "noncausal": "fused attention forward + backward, no mask",
        "mask": "fused attention forward + backward with a boolean padding mask, causal",
        "gqa4": "fused attention forward + backward, causal, 4 query heads per KV head",
    },
    "decode_attention": {
        "contiguous": "decode attention, 1 new token, contiguous cache, 4 query heads per KV head",
        "paged": "decode attention, 1 new token, paged cache (16-token pages), 4 query heads per KV head",
        "mask": "decode attention, 1 new token, contiguous cache with a padding mask",
        "spec4": "decode attention, 4 new tokens (speculative decoding), contiguous cache, 8 query heads per KV head",
        "int8": "decode attention, 1 new token, contiguous int8 cache with a scale per token and KV head",
        "fp8": "decode attention, 1 new token, paged float8_e4m3fn cache with a scale per token and KV head "
               "(sm_89 and newer)",
    },
    "int8_linear": {
        "decode": "int8-weight linear layer, 1 row, 4096 -> 14336 (Llama-3.1-8B's MLP up-projection)",
        "prefill": "int8-weight linear layer, 512 rows, 4096 -> 14336",
    },
}
HEADLESS = ("int8_linear",)  # families without a head dim (one case per dtype; head_dim is None)
SEQ = 4096  # keys per sequence in every case
FP8_CAPABILITY = 89  # the first architecture with fp8 (e4m3) conversions
ATTENTION_HEADS = 16
DECODE_HEADS, DECODE_BATCH, PAGE_SIZE = 32, 8, 16


@dataclass(frozen=True)
class Case:
    family: str  # a key of CASES
    case: str  # a key of CASES[family]
    dtype: str  # a name from DTYPES
    head_dim: int | None  # None for the families in HEADLESS


def cases(families: list[str], dtypes: list[str], head_dims: list[int]) -> list[Case]:
    """Every case of the chosen families, in each dtype and head dim (once per dtype where there is none)."""
    return [Case(family, case, dtype, head_dim)
            for family in families for case in CASES[family] for dtype in dtypes
            for head_dim in ([None] if family in HEADLESS else head_dims)]


def _capture(case: Case, capability: int) -> list:
    """The launches ``case`` makes on a GPU of ``capability``, captured on meta tensors."""
    import torch

    from kernels.attention import attention
    from kernels.common import capture_launches
    from kernels.decode_attention import decode_attention
    from kernels.int8_linear import int8_linear
    from workloads.precision import parse_precision

    precision = parse_precision(case.dtype)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision.matmul_precision)

    def empty(*shape, dtype=precision.dtype, grad=False):
        return torch.empty(shape, dtype=dtype, device="meta", requires_grad=grad)

    d = case.head_dim
    try:
        with capture_launches(capability) as launches:
            if case.family == "int8_linear":
                rows = 1 if case.case == "decode" else 512
                int8_linear(empty(rows, 4096), empty(14336, 4096, dtype=torch.int8),
                            empty(14336, dtype=torch.float32))
            elif case.family == "attention":
                kv_heads = ATTENTION_HEADS // 4 if case.case == "gqa4" else ATTENTION_HEADS
                q = empty(2, ATTENTION_HEADS, SEQ, d, grad=True)
                k, v = empty(2, kv_heads, SEQ, d, grad=True), empty(2, kv_heads, SEQ, d, grad=True)
                mask = empty(2, 1, SEQ, SEQ, dtype=torch.bool) if case.case == "mask" else None
                out = attention(q, k, v, causal=case.case != "noncausal", mask=mask)
                out.backward(torch.empty_like(out))
            else:
                group, q_len = (8, 4) if case.case == "spec4" else (4, 1)
                kv_heads = DECODE_HEADS // group
                q = empty(DECODE_BATCH, DECODE_HEADS, q_len, d)
                lengths = empty(DECODE_BATCH, dtype=torch.int32)
                if case.case in ("paged", "fp8"):
                    pages = DECODE_BATCH * SEQ // PAGE_SIZE
                    table = empty(DECODE_BATCH, SEQ // PAGE_SIZE, dtype=torch.int32)
                    if case.case == "fp8":
                        cache = empty(pages, PAGE_SIZE, kv_heads, d, dtype=torch.float8_e4m3fn)
                        scale = empty(pages, PAGE_SIZE, kv_heads, dtype=torch.float32)
                        decode_attention(q, cache, cache, lengths, block_table=table, k_scale=scale, v_scale=scale)
                    else:
                        decode_attention(q, empty(pages, PAGE_SIZE, kv_heads, d), empty(pages, PAGE_SIZE, kv_heads, d),
                                         lengths, block_table=table)
                elif case.case == "int8":
                    cache = empty(DECODE_BATCH, kv_heads, SEQ, d, dtype=torch.int8)
                    scale = empty(DECODE_BATCH, kv_heads, SEQ, dtype=torch.float32)
                    decode_attention(q, cache, cache, lengths, k_scale=scale, v_scale=scale)
                else:
                    cache = empty(DECODE_BATCH, kv_heads, SEQ, d)
                    mask = empty(DECODE_BATCH, q_len, SEQ, dtype=torch.bool) if case.case == "mask" else None
                    decode_attention(q, cache, cache, lengths, mask=mask)
    finally:
        torch.set_float32_matmul_precision(before)
    return launches


def _start_worker() -> None:
    """Worker set-up: compile, do not interpret (the kernels are imported after this)."""
    os.environ["TRITON_INTERPRET"] = "0"
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, stated to silence its warning


def compile_case(case: Case, arch: str, first_only: bool = False) -> list[dict]:
    """Compile every candidate of every launch of ``case`` for ``arch`` (``sm_90``); one row per candidate:
    ``point`` fields, ``metrics``, ``status`` and ``error``. ``first_only`` compiles each launch's first
    candidate only."""
    from kernels import resources

    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("kernels cannot be compiled while TRITON_INTERPRET=1; run compile_case in a worker")
    capability = resources.parse_arch(arch)
    if case.case == "fp8" and capability < FP8_CAPABILITY:
        point = {"workload": WORKLOAD, "kernel": f"{case.family}.*", "arch": arch, "dtype": case.dtype,
                 "head_dim": case.head_dim, "case": case.case, "candidate": None, "device": None}
        return [{"point": point, "status": "skipped", "error": f"float8_e4m3fn needs sm_{FP8_CAPABILITY} or newer",
                 "metrics": {}}]
    rows = []
    for launch in _capture(case, capability):
        for config in launch.configs[:1] if first_only else launch.configs:
            point = {"workload": WORKLOAD, "kernel": resources.kernel_name(launch), "arch": arch,
                     "dtype": case.dtype, "head_dim": case.head_dim, "case": case.case,
                     "candidate": resources.candidate_name(config), "device": None,
                     "config": {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}}
            try:
                found = resources.compile_candidate(launch, config, capability)
            except Exception as exc:  # a candidate Triton or ptxas refuses is a finding, not a crash
                rows.append({"point": point, "status": "failed", "error": _first_line(exc), "metrics": {}})
                continue
            metrics = {k: v for k, v in asdict(found).items() if k != "warps"}
            metrics["clean"] = found.clean
            rows.append({"point": point, "status": "ok", "error": None, "metrics": metrics})
    return rows


def _first_line(exc: Exception) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:500]


def run(tasks: list[tuple], workers: int | None = None,
        done: Callable[[Case, str, list[dict]], None] | None = None) -> Iterator[list[dict]]:
    """Compile ``(case, arch)`` or ``(case, arch, first_only)`` tasks in ``workers`` spawned processes (default:
    one per core); yields each task's rows as it finishes (``done`` is called first, e.g. for progress)."""
    import multiprocessing

    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker) as pool:
        futures = {pool.submit(compile_case, *task): task[:2] for task in tasks}
        try:
            for future in as_completed(futures):
                rows = future.result()
                if done is not None:
                    done(*futures[future], rows)
                yield rows
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def without_clean(records: list[dict]) -> list[tuple[str, str, str, int, str]]:
    """(kernel, arch, dtype, head dim, case) combinations among ``records`` where no candidate both fits and
    spills nothing (so the autotuner there can only pick a spilling one), in first-seen order."""
    seen: dict[tuple, bool] = {}
    for r in records:
        if r["status"] == "skipped":  # a case the architecture cannot run (fp8 before sm_89)
            continue
        key = (r["kernel"], r["arch"], r["dtype"], r["head_dim"], r["case"])
        seen[key] = seen.get(key, False) or (r["status"] == "ok" and bool(r["metrics"].get("clean")))
    return [key for key, clean in seen.items() if not clean]
