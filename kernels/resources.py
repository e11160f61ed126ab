"""What a kernel costs on the chip, read without the chip.

The Triton interpreter checks what a kernel computes, not what the GPU compiler makes
of it. But Triton compiles for any target with no device present: a ``GPUTarget``
("cuda", 90, 32) and the ``ptxas`` bundled in Triton's wheel turn a kernel into the
cubin a real launch would load, and ``ptxas -v`` says what that costs: registers per
thread, bytes of spill stores and loads (registers that did not fit and go to local
memory on every pass through the loop), and the stack frame. Triton adds the shared
memory the launch will request. From those and the architecture's limits (``ARCHS``)
follows how many programs of the kernel an SM can hold at once.

``compile_launch(launch, capability)`` compiles one launch captured by
``kernels.common.capture_launches`` in every autotune candidate it chooses among,
exactly as the JIT would specialise it for those arguments (alignment, divisibility
by 16, constexprs), and returns one ``Resources`` per candidate. Compiled kernels land
in Triton's cache with the ptxas report beside them, so a second run is fast.

``chosen(kernel)`` answers the same question after a real GPU run: the registers,
spills and shared memory of the candidate the autotuner picked, from the compiled
kernel's own metadata.

Like the rest of kernels/, this imports only torch, triton and the standard library.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import triton
from triton.runtime.autotuner import Autotuner

from kernels.common import Launch

WARP_SIZE = 32
REG_ALLOC_UNIT = 256  # registers are allocated per warp in units of 256
RESERVED_SHARED = 1024  # shared memory the driver reserves per block (sm_80 and newer)
LOG_FILE = "llmbench-ptxas.log"


@dataclass(frozen=True)
class Arch:
    """Per-SM limits of one compute capability (CUDA programming guide, table of technical
    specifications per compute capability)."""

    name: str
    registers: int  # 32-bit registers per SM
    shared_per_sm: int  # bytes of shared memory per SM (the L1/shared carve-out at its largest)
    shared_per_block: int  # bytes one block may request (the opt-in maximum)
    max_warps: int  # resident warps per SM
    max_blocks: int  # resident blocks per SM


ARCHS = {
    80: Arch("sm_80", 65536, 164 * 1024, 163 * 1024, 64, 32),  # A100
    86: Arch("sm_86", 65536, 100 * 1024, 99 * 1024, 48, 16),  # A40, RTX 30xx
    89: Arch("sm_89", 65536, 100 * 1024, 99 * 1024, 48, 24),  # L40S, RTX 40xx
    90: Arch("sm_90", 65536, 228 * 1024, 227 * 1024, 64, 32),  # H100, H200
    100: Arch("sm_100", 65536, 228 * 1024, 227 * 1024, 64, 32),  # B200
    120: Arch("sm_120", 65536, 100 * 1024, 99 * 1024, 48, 32),  # RTX 50xx
}


def parse_arch(text: str) -> int:
    """``sm_90``, ``sm90``, ``90`` or ``9.0`` -> 90; ValueError naming the known ones otherwise."""
    cleaned = text.strip().lower().removeprefix("sm_").removeprefix("sm").removesuffix("a")
    if re.fullmatch(r"\d+\.\d", cleaned):
        cleaned = cleaned.replace(".", "")
    if not cleaned.isdigit() or int(cleaned) not in ARCHS:
        raise ValueError(f"unknown GPU architecture {text!r}; known: {', '.join(a.name for a in ARCHS.values())}")
    return int(cleaned)


@dataclass(frozen=True)
class Resources:
    """One compiled candidate: what ptxas reported, what Triton will request, what follows."""

    registers: int
    spill_stores_bytes: int
    spill_loads_bytes: int
    stack_bytes: int
    shared_bytes: int
    warps: int
    programs_per_sm: int  # resident programs (blocks) per SM; 0 when the kernel does not fit
    warps_per_sm: int
    occupancy: float  # resident warps / the SM's maximum
    fits: bool  # shared memory within the per-block maximum
    compile_s: float
    cached: bool  # found in Triton's cache, not compiled now

    @property
    def clean(self) -> bool:
        """Fits and spills nothing."""
        return self.fits and self.spill_stores_bytes == 0 and self.spill_loads_bytes == 0


def occupancy(capability: int, registers: int, shared_bytes: int, warps: int) -> tuple[int, int]:
    """(programs, warps) resident per SM, from registers, shared memory and warps against ``ARCHS``;
    (0, 0) when one program does not fit."""
    arch = ARCHS[capability]
    regs_per_warp = math.ceil(max(registers, 1) * WARP_SIZE / REG_ALLOC_UNIT) * REG_ALLOC_UNIT
    if shared_bytes > arch.shared_per_block or warps * regs_per_warp > arch.registers:
        return 0, 0
    programs = min(arch.registers // regs_per_warp // warps,
                   arch.shared_per_sm // (shared_bytes + RESERVED_SHARED),
                   arch.max_warps // warps,
                   arch.max_blocks)
    return programs, programs * warps


_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGISTERS = re.compile(r"Used (\d+) registers")


def parse_ptxas_log(log: str) -> tuple[int, int, int, int]:
    """(registers, spill stores, spill loads, stack frame) from ``ptxas -v`` output of one kernel."""
    frame, regs = _FRAME.search(log), _REGISTERS.search(log)
    if frame is None or regs is None:
        raise ValueError(f"no resource usage in the ptxas report:\n{log}")
    stack, stores, loads = map(int, frame.groups())
    return int(regs.group(1)), stores, loads, stack


def ptxas_missing() -> str | None:
    """Why kernels cannot be compiled for a GPU here (Triton's bundled ptxas absent), or None."""
    from triton import knobs

    for tool in ("ptxas", "ptxas_blackwell"):
        try:
            getattr(knobs.nvidia, tool).path
        except RuntimeError as exc:
            return f"Triton's bundled {tool.replace('_', '-')} is missing ({exc}); reinstall triton"
    return None


def _ptxas_report(compiled, capability: int) -> str:
    """``ptxas -v`` of an already compiled kernel's PTX (for kernels found in Triton's cache)."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        ptx = Path(tmp) / "kernel.ptx"
        ptx.write_text(compiled.asm["ptx"])
        done = subprocess.run([get_ptxas(capability).path, "-v", f"--gpu-name={sm_arch_from_capability(capability)}",
                               str(ptx), "-o", str(Path(tmp) / "kernel.cubin")], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"ptxas failed on a cached kernel: {done.stderr.strip()}")
    return done.stderr


def _compile(launch: Launch, config: triton.Config, capability: int) -> tuple[object, str, float]:
    """Compile one candidate of a launch as the JIT would for these arguments; (kernel, ptxas log or '',
    seconds). The binder, ``_pack_args`` and ``ASTSource`` are what ``JITFunction.run`` uses in Triton 3.9
    (not public API): a Triton that changes them fails the ``compile`` tests, not silently."""
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = launch.kernel
    target = GPUTarget("cuda", capability, WARP_SIZE)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    kwargs = {**launch.kwargs, **config.all_kwargs()}
    bound, specialization, leftover = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, leftover)
    log = io.StringIO()
    started = time.perf_counter()
    with knobs.nvidia.scope(), contextlib.redirect_stdout(log):
        knobs.nvidia.dump_ptxas_log = True  # Triton prints ptxas -v to stdout when it runs ptxas
        compiled = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target,
                                  options=options.__dict__)
    return compiled, log.getvalue(), time.perf_counter() - started


def compile_candidate(launch: Launch, config: triton.Config, capability: int) -> Resources:
    """Compile one candidate for ``capability`` (e.g. 90) and read its resources; Triton's compile errors
    (out of resources at compile time, unsupported ops) propagate."""
    from triton.runtime.cache import get_cache_manager

    compiled, log, seconds = _compile(launch, config, capability)
    cache = get_cache_manager(compiled.hash)
    cached = "Used" not in log
    if not cached:
        cache.put(log, LOG_FILE, binary=False)
    else:
        stored = cache.get_file(LOG_FILE)
        log = Path(stored).read_text() if stored else _ptxas_report(compiled, capability)
        if not stored:
            cache.put(log, LOG_FILE, binary=False)
    registers, stores, loads, stack = parse_ptxas_log(log)
    shared = compiled.metadata.shared
    warps = compiled.metadata.num_warps
    programs, resident = occupancy(capability, registers, shared, warps)
    return Resources(registers, stores, loads, stack, shared, warps, programs, resident,
                     resident / ARCHS[capability].max_warps, shared <= ARCHS[capability].shared_per_block,
                     round(seconds, 3), cached)


def candidate_name(config: triton.Config) -> str:
    """``BLOCK_M=128 BLOCK_N=64 w8 s3``: a candidate's block sizes, warps and stages."""
    blocks = " ".join(f"{k}={v}" for k, v in config.kwargs.items())
    return f"{blocks} w{config.num_warps} s{config.num_stages}".strip()


def kernel_name(launch: Launch) -> str:
    """``attention.fwd``, ``decode_attention.split``: module and jit function, without the prefixes."""
    module = getattr(launch.kernel, "fn", launch.kernel).__module__.rsplit(".", 1)[-1]  # the Python function's
    name = launch.name.lstrip("_").removeprefix("attn_").removeprefix("decode_")
    return f"{module}.{name}"


def chosen(kernel) -> list[dict]:
    """After real launches: for each tuning key an autotuned kernel has settled, the candidate it chose
    and that candidate's registers, spills (bytes, both directions as the driver counts them) and shared
    memory, from the compiled kernel's metadata. Empty before any launch or for a plain jit function
    never launched."""
    if not isinstance(kernel, Autotuner) or not hasattr(kernel.fn, "device_caches"):  # not tuned, or interpreted
        return []
    compiled = [c for cache in kernel.fn.device_caches.values() for c in cache[0].values()]
    out = []
    for key, config in kernel.cache.items():
        for c in compiled:
            constants = {kernel.fn.arg_names[path[0]]: value for path, value in c.src.constants.items()}
            if (c.metadata.num_warps == config.num_warps and c.metadata.num_stages == config.num_stages
                    and all(constants.get(k) == v for k, v in config.kwargs.items())):
                out.append({"kernel": kernel.fn.__name__, "key": list(key), "candidate": candidate_name(config),
                            "registers": c.n_regs, "spills": c.n_spills, "shared_bytes": c.metadata.shared})
                break
    return out
