"""The ceiling microbenchmarks as workloads: the work each call does, on random (never zero) buffers,
and the cost the runner divides by."""

import torch

from workloads.micro import MicroPoint, MicroWorkload
from workloads.precision import PRECISIONS
from workloads.workload import Calls

CPU = torch.device("cpu")


def test_copy_copies_every_element():
    point = MicroPoint(4096)
    w = MicroWorkload("copy", CPU, [point])
    region = w.region(point)
    assert isinstance(region, Calls)
    out = region.fn()
    assert out.numel() == 1024 and out.dtype == torch.float32 and out.abs().sum() > 0
    assert w.cost(point).bytes == 2 * 4096 and w.cost(point).flops == 0
    assert w.fields(point) == {"workload": "copy", "dtype": "fp32", "weights_dtype": "float32",
                               "matmul_precision": "highest", "device": "cpu", "elements": 1024}


def test_triad_computes_b_plus_three_c():
    point = MicroPoint(400)
    w = MicroWorkload("triad", CPU, [point])
    region = w.region(point)
    out = region.fn()
    b, c = [cell.cell_contents for cell in region.fn.__closure__ if cell.cell_contents is not out][:2]
    assert torch.allclose(out, b + 3.0 * c)
    assert w.cost(point).bytes == 3 * 400 and w.cost(point).flops == 2 * 100


def test_matmul_in_the_given_precision():
    point = MicroPoint(16)
    w = MicroWorkload("matmul", CPU, [point], PRECISIONS["bf16"])
    out = w.region(point).fn()
    assert out.shape == (16, 16) and out.dtype == torch.bfloat16
    cost = w.cost(point)
    assert cost.flops == 2 * 16**3 and cost.bytes == 3 * 16 * 16 * 2
    assert w.fields(point)["m"] == 16 and w.fields(point)["dtype"] == "bf16"
