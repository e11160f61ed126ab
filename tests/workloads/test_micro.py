"""The ceiling microbenchmarks as workloads: the work each call does, on random (never zero) buffers,
the cost the runner divides by (timed by the shortest call, with the spread's times as phases), and
the matmul shapes a model runs."""

import pytest
import torch

from workloads.micro import BEST_TIME, MicroPoint, MicroWorkload, model_matmul_shapes, projection_sizes
from workloads.precision import PRECISIONS
from workloads.presets import resolve_model
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
                               "matmul_precision": "highest", "device": "cpu", "elements": 1024,
                               "buffer_bytes": 4096}


def test_triad_computes_b_plus_three_c():
    point = MicroPoint(400)
    w = MicroWorkload("triad", CPU, [point])
    region = w.region(point)
    out = region.fn()
    b, c = [cell.cell_contents for cell in region.fn.__closure__ if cell.cell_contents is not out][:2]
    assert torch.allclose(out, b + 3.0 * c)
    assert w.cost(point).bytes == 3 * 400 and w.cost(point).flops == 2 * 100


def test_square_matmul_in_the_given_precision():
    point = MicroPoint(16)
    w = MicroWorkload("matmul", CPU, [point], PRECISIONS["bf16"])
    out = w.region(point).fn()
    assert out.shape == (16, 16) and out.dtype == torch.bfloat16
    cost = w.cost(point)
    assert cost.flops == 2 * 16**3 and cost.bytes == 3 * 16 * 16 * 2
    assert w.fields(point)["m"] == 16 and w.fields(point)["dtype"] == "bf16"


def test_matmul_at_a_model_shape_is_m_by_k_times_k_by_n():
    point = MicroPoint(3, 5, 7)
    w = MicroWorkload("matmul", CPU, [point], PRECISIONS["fp32"])
    a, b = [cell.cell_contents for cell in w.region(point).fn.__closure__]
    out = w.region(point).fn()
    assert a.shape == (3, 7) and b.shape == (5, 7) and out.shape == (3, 5)
    assert {k: w.fields(point)[k] for k in "mnk"} == {"m": 3, "n": 5, "k": 7}
    cost = w.cost(point)
    assert cost.flops == 2 * 3 * 5 * 7 and cost.bytes == (3 * 7 + 7 * 5 + 3 * 5) * 4


@pytest.mark.parametrize("kind, point", [("copy", MicroPoint(4096)), ("matmul", MicroPoint(8, 4, 2))])
def test_a_ceiling_is_timed_by_its_best_call_with_the_spread_as_phases(kind, point):
    cost = MicroWorkload(kind, CPU, [point]).cost(point)
    assert cost.timed_by == BEST_TIME == "time_ms_min"
    assert {name: phase.timed_by for name, phase in cost.phases.items()} == {
        "median": "time_ms", "p10": "time_ms_p90", "p90": "time_ms_p10"}  # slowest tenth of calls: p10 rate
    assert all((p.bytes, p.flops) == (cost.bytes, cost.flops) for p in cost.phases.values())


def test_the_fingerprint_goes_into_every_record():
    fp = {"device_name": "cpu", "torch": "2", "threads": 2}
    w = MicroWorkload("copy", CPU, [MicroPoint(64)], fingerprint=fp)
    assert w.fields(MicroPoint(64))["fingerprint"] == fp
    assert "fingerprint" not in MicroWorkload("copy", CPU, [MicroPoint(64)]).fields(MicroPoint(64))


def test_model_matmul_shapes_at_prefill_and_decode_token_counts():
    assert model_matmul_shapes(896, 4864, [512, 1]) == [(512, 896, 896), (512, 4864, 896), (1, 896, 896),
                                                        (1, 4864, 896)]
    assert model_matmul_shapes(64, 64, [1, 1]) == [(1, 64, 64)]  # duplicates dropped


@pytest.mark.parametrize("preset, sizes", [("qwen2.5-0.5b", (896, 4864)), ("opt-125m", (768, 3072)),
                                           ("gpt2", (768, 3072)), ("tiny-llama", (64, 128))])
def test_projection_sizes_read_each_family_config(preset, sizes):
    assert projection_sizes(resolve_model(preset).config) == sizes


@pytest.mark.parametrize("world, factor", [(2, 1.0), (4, 1.5), (8, 1.75)])
def test_allreduce_cost_is_the_bus_bytes_of_nccl_tests(world, factor):
    """nccl-tests: busbw = algbw x 2 (n-1)/n, so the bytes a call is charged are the message's times that."""
    from workloads.distributed import Dist
    from workloads.micro import AllReduceWorkload

    point = MicroPoint(64 << 20)
    w = AllReduceWorkload(CPU, [point], Dist(world_size=world, local_world_size=world))
    cost = w.cost(point)
    assert cost.bytes == (64 << 20) * factor and cost.flops == 0 and cost.timed_by == BEST_TIME
    assert cost.block() == {"message_bytes": 64 << 20, "bus_bytes": cost.bytes, "bus_factor": factor}
    assert cost.phases["median"].timed_by == "time_ms" and cost.phases["median"].bytes == cost.bytes
    fields = w.fields(point)
    assert (fields["workload"], fields["world_size"], fields["elements"], fields["calls"]) == \
        ("allreduce", world, 16 << 20, 20)


def test_allreduce_runs_the_same_calls_in_every_process_and_takes_the_slowest(clock_class):
    """In a group of one (gloo): every call marked, the summary over exactly ``calls`` calls."""
    from workloads.distributed import Dist
    from workloads.micro import AllReduceWorkload

    dist = Dist()
    dist.init(CPU, always=True)
    try:
        w = AllReduceWorkload(CPU, [MicroPoint(4096)], dist, calls=5)
        region = w.region(w.points[0])
        assert (region.warmup, region.repeats) == (1, 1)
        metrics = region.summarize([region.run(clock_class(), 0)])
        assert metrics["repeats"] == 5 and len(metrics["samples"]["time_ms"]) == 5
        assert metrics["time_ms_min"] == min(metrics["samples"]["time_ms"]) > 0
        assert w.fields(w.points[0])["backend"] == "gloo"
    finally:
        dist.close()
