"""Precisions are checked against the device before anything runs."""

import pytest
import torch

from workloads.errors import UserError
from workloads.precision import check_supported, matmul_mode, parse_precision, resolve_device

CPU = torch.device("cpu")


def test_parse_and_aliases():
    assert parse_precision("bf16").dtype == torch.bfloat16
    assert parse_precision("BFloat16").name == "bf16"
    assert parse_precision("half").dtype == torch.float16
    tf32 = parse_precision("tf32")
    assert tf32.dtype == torch.float32 and tf32.matmul_precision == "high"
    assert parse_precision("fp32").matmul_precision == "highest"
    assert parse_precision("fp16").bytes_per_element == 2 and tf32.bytes_per_element == 4
    with pytest.raises(UserError, match="unknown dtype 'int3'"):
        parse_precision("int3")


def test_cpu_refuses_tf32_only():
    with pytest.raises(UserError, match="tf32"):
        check_supported(parse_precision("tf32"), CPU)
    for name in ("fp32", "bf16", "fp16"):
        check_supported(parse_precision(name), CPU)


def test_old_gpu_refuses_bf16_and_tf32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-32GB")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    gpu = torch.device("cuda")
    with pytest.raises(UserError, match="bf16 is not supported natively on Tesla V100"):
        check_supported(parse_precision("bf16"), gpu)
    with pytest.raises(UserError, match="compute capability 8.0"):
        check_supported(parse_precision("tf32"), gpu)
    check_supported(parse_precision("fp16"), gpu)


def test_matmul_mode_sets_and_restores():
    before = torch.get_float32_matmul_precision()
    with matmul_mode(parse_precision("tf32")):
        assert torch.get_float32_matmul_precision() == "high"
    assert torch.get_float32_matmul_precision() == before
    with matmul_mode(parse_precision("fp32")):
        assert torch.get_float32_matmul_precision() == "highest"


def test_devices():
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            resolve_device("cuda")
