"""kernels.common: the launch-time choices both kernels make, and the ``dot`` jit helper.

``dot`` runs inside a tiny Triton kernel (in the interpreter on a CPU, compiled on a
GPU) on odd, masked shapes against a float64 matmul of the same inputs, with the
output buffer poisoned with NaN.
"""

import ast
import math
import pathlib
import sys

import pytest
import torch
import triton
import triton.language as tl

import kernels.common as common
from kernels.common import (LOG2E, SUPPORTED_DTYPES, block_d, dot, gpu_generation, interpreting, triton_precision,
                            upcast_dots)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
KERNELS = pathlib.Path(common.__file__).parent


def test_constants():
    assert LOG2E == pytest.approx(1 / math.log(2), rel=1e-15)
    assert 2 ** (3.0 * LOG2E) == pytest.approx(math.exp(3.0), rel=1e-14)
    assert set(SUPPORTED_DTYPES) == {F16, BF16, F32}


@pytest.fixture
def matmul_precision():
    before = torch.get_float32_matmul_precision()
    yield torch.set_float32_matmul_precision
    torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("setting, expected", [
    ("highest", {F32: "ieee", F16: "tf32", BF16: "tf32"}),
    ("high", {F32: "tf32", F16: "tf32", BF16: "tf32"}),
    ("medium", {F32: "tf32", F16: "tf32", BF16: "tf32"}),
])
def test_triton_precision_per_dtype_follows_torch_fp32_setting(matmul_precision, setting, expected):
    matmul_precision(setting)
    assert {dtype: triton_precision(dtype) for dtype in SUPPORTED_DTYPES} == expected


@pytest.mark.parametrize("dtype", [torch.float64, torch.int8, torch.int32])
def test_triton_precision_refuses_unsupported_dtypes(dtype):
    with pytest.raises(ValueError, match="no Triton dot precision"):
        triton_precision(dtype)


@pytest.mark.parametrize("head_dim, expected", [
    (1, 16), (8, 16), (15, 16), (16, 16), (17, 32), (32, 32), (33, 64), (64, 64), (80, 128), (96, 128),
    (128, 128), (129, 256), (192, 256), (256, 256),
])
def test_block_d_pads_to_a_power_of_two_of_at_least_16(head_dim, expected):
    assert block_d(head_dim) == expected


def test_block_d_is_the_smallest_fitting_tile():
    for head_dim in range(1, 300):
        width = block_d(head_dim)
        assert width >= max(head_dim, common.MIN_BLOCK_D) and width & (width - 1) == 0
        assert width == common.MIN_BLOCK_D or width // 2 < head_dim


@pytest.mark.parametrize("value, expected", [("1", True), ("0", False), ("", False), (None, False)])
def test_interpreting_reads_triton_interpret(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    else:
        monkeypatch.setenv("TRITON_INTERPRET", value)
    assert interpreting() is expected


def test_gpu_generation_under_the_interpreter_or_without_cuda(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    assert gpu_generation() == "interpreter"  # the interpreter wins even with a GPU present
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_generation() == "interpreter"


@pytest.mark.parametrize("capability, expected", [
    ((10, 0), "hopper"), ((9, 0), "hopper"), ((8, 9), "ampere"), ((8, 6), "ampere"), ((8, 0), "ampere"),
    ((12, 0), "ampere"), ((7, 5), "older"), ((7, 0), "older"),
])
def test_gpu_generation_from_compute_capability(monkeypatch, capability, expected):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    assert gpu_generation() == expected


def test_upcast_dots_only_for_bf16_under_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert {dtype: upcast_dots(dtype) for dtype in SUPPORTED_DTYPES} == {F32: False, F16: False, BF16: True}
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not any(upcast_dots(dtype) for dtype in SUPPORTED_DTYPES)


@triton.jit
def _dot_kernel(A, B, C, M, N, K, stride_am, stride_bn, stride_cm,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                TRANS_B: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """C = A @ B (B given as (K, N)) or A @ B^T (B given as (N, K)), one tile, zero-padded past the shapes."""
    rm = tl.arange(0, BLOCK_M)
    rn = tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    a = tl.load(A + rm[:, None] * stride_am + rk[None, :], mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)
    if TRANS_B:
        b = tl.load(B + rn[:, None] * stride_bn + rk[None, :], mask=(rn[:, None] < N) & (rk[None, :] < K), other=0.0)
        c = dot(a, tl.trans(b), UPCAST, PRECISION)
    else:
        b = tl.load(B + rk[:, None] * stride_bn + rn[None, :], mask=(rk[:, None] < K) & (rn[None, :] < N), other=0.0)
        c = dot(a, b, UPCAST, PRECISION)
    tl.store(C + rm[:, None] * stride_cm + rn[None, :], c, mask=(rm[:, None] < M) & (rn[None, :] < N))


def run_dot(a: torch.Tensor, b: torch.Tensor, trans_b: bool) -> torch.Tensor:
    m, k = a.shape
    n = b.shape[0] if trans_b else b.shape[1]
    c = torch.full((m, n), float("nan"), dtype=torch.float32, device=a.device)
    _dot_kernel[(1,)](a, b, c, m, n, k, a.stride(0), b.stride(0), c.stride(0),
                      BLOCK_M=triton.next_power_of_2(m), BLOCK_N=triton.next_power_of_2(n),
                      BLOCK_K=triton.next_power_of_2(k), TRANS_B=trans_b,
                      UPCAST=upcast_dots(a.dtype), PRECISION=triton_precision(a.dtype))
    return c


def test_dot_is_a_jit_function():
    assert isinstance(dot, triton.runtime.jit.KernelInterface)  # JITFunction, or InterpretedFunction in the interpreter


@pytest.mark.parametrize("dtype", [F32, F16, BF16])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m, n, k", [(13, 11, 27), (16, 16, 16), (5, 19, 33)])
def test_dot_matches_float64_matmul(matmul_precision, dtype, trans_b, m, n, k):
    """Products of fp16/bf16 inputs are exact in fp32 and accumulate in fp32, so the only error left
    is fp32 rounding of the sums: every dtype is held to fp32's tolerance against the same inputs."""
    matmul_precision("highest")
    gen = torch.Generator().manual_seed(m * 1000 + n * 10 + k)
    a = torch.randn(m, k, generator=gen).to(DEVICE, dtype)
    b = torch.randn(n, k, generator=gen).to(DEVICE, dtype)
    c = run_dot(a, b if trans_b else b.t().contiguous(), trans_b)
    exact = a.double() @ b.double().t()
    assert not c.isnan().any(), "dot left output elements unwritten"
    err = (c.double() - exact).abs().max() / exact.abs().max()
    assert err < 2e-5, f"{dtype} dot: relative error {err:.2e}"


def test_kernels_share_one_set_of_helpers():
    import kernels.attention as attention
    import kernels.decode_attention as decode

    for module in (attention, decode):
        assert module.dot is common.dot and module.block_d is common.block_d
        assert module.gpu_generation is common.gpu_generation and module.triton_precision is common.triton_precision
        assert module.SUPPORTED_DTYPES is common.SUPPORTED_DTYPES and module.LOG2E == common.LOG2E
    assert attention.interpreting is common.interpreting  # workloads/attention.py imports it from here


def test_kernel_files_import_only_torch_triton_stdlib_and_no_private_name_across_files():
    for path in KERNELS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = ["kernels" if node.level else node.module]
                if modules[0].split(".")[0] == "kernels":
                    private = [alias.name for alias in node.names if alias.name.startswith("_")]
                    assert not private, f"{path.name} imports private {private} from {node.module}"
            else:
                continue
            for module in modules:
                root = module.split(".")[0]
                assert root in {"torch", "triton", "kernels"} or root in sys.stdlib_module_names, \
                    f"{path.name} imports {module}"


# ----------------------------------------------------------------------------- launches and their capture


class _Kernel:
    """Stands in for a jit function: records what ``kernel[grid](...)`` was called with."""

    __name__ = "_fake"

    def __init__(self):
        self.calls = []
        self.fn = lambda: None  # what Triton's Autotuner unwraps to find the Python function

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append((grid, args, kwargs))


def test_launch_outside_a_capture_launches_the_kernel():
    kernel = _Kernel()
    common.launch(kernel, (3, 1), 1, 2, BLOCK=16, num_warps=8)
    assert kernel.calls == [((3, 1), (1, 2), {"BLOCK": 16, "num_warps": 8})]
    assert not common.capturing()


def test_capture_records_launches_instead_of_running_them_and_answers_for_its_capability(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the capture wins over the interpreter, as over a local GPU
    plain, tuned_fn = _Kernel(), _Kernel()
    configs = [triton.Config({"BLOCK": 32}, num_warps=4, num_stages=2), triton.Config({"BLOCK": 64}, num_warps=8)]
    tuned = triton.runtime.autotuner.Autotuner(tuned_fn, ["A"], configs, key=[], reset_to_zero=None,
                                               restore_value=None)
    with common.capture_launches(90) as launches:
        assert common.capturing() and gpu_generation() == "hopper"
        common.launch(plain, (1,), "a", HEAD=8, num_warps=2)
        common.launch(tuned, (1,), "b", HEAD=8)
    assert gpu_generation() == "interpreter" and not common.capturing()
    assert plain.calls == [] and tuned_fn.calls == []
    first, second = launches
    assert (first.kernel, first.args, first.kwargs) == (plain, ("a",), {"HEAD": 8})
    assert [(c.num_warps, c.num_stages) for c in first.configs] == [(2, 3)]  # Triton's default stages
    assert (second.kernel, second.args, second.kwargs, second.configs) == (tuned_fn, ("b",), {"HEAD": 8}, configs)


def test_capture_keeps_the_candidates_the_kernel_prunes_to():
    configs = [triton.Config({"BLOCK": b}) for b in (16, 32, 64)]
    tuned = triton.runtime.autotuner.Autotuner(
        _Kernel(), ["A", "N"], configs, key=[], reset_to_zero=None, restore_value=None,
        prune_configs_by={"early_config_prune": lambda cs, named, **kw: [c for c in cs if c.kwargs["BLOCK"] <= named["N"]
                                                                          and not (kw["SMALL"] and c.kwargs["BLOCK"] > 16)]})
    with common.capture_launches(90) as launches:
        common.launch(tuned, (1,), "a", 32, SMALL=False)
        common.launch(tuned, (1,), "a", 64, SMALL=True)
    assert [c.kwargs["BLOCK"] for c in launches[0].configs] == [16, 32]
    assert [c.kwargs["BLOCK"] for c in launches[1].configs] == [16]


def test_captures_do_not_nest():
    with common.capture_launches(80):
        with pytest.raises(RuntimeError, match="nest"):
            with common.capture_launches(90):
                pass
    assert not common.capturing()


@pytest.mark.parametrize("capability, expected", [(80, "ampere"), (86, "ampere"), (89, "ampere"), (90, "hopper"),
                                                  (100, "hopper"), (103, "hopper"), (120, "ampere"), (75, "older")])
def test_generation_of(capability, expected):
    assert common.generation_of(capability) == expected
