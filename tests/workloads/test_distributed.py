"""A process's place in a torchrun job, read from torchrun's environment; the strategy names records carry;
a group of one formed without torchrun."""

import torch

from workloads.distributed import Dist


def test_dist_reads_torchrun_environment(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_WORLD_SIZE", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    assert Dist.from_env() == Dist() and not Dist.under_launcher()
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    dist = Dist.from_env()
    assert (dist.rank, dist.local_rank, dist.world_size, dist.local_world_size, dist.nodes) == (5, 1, 8, 4, 2)
    assert Dist.under_launcher() and not dist.main
    assert dist.device(torch.device("cuda")) == torch.device("cuda", 1)
    monkeypatch.setenv("GROUP_WORLD_SIZE", "3")  # torchrun's count of agents (nodes) wins when it is there
    assert Dist.from_env().nodes == 3


def test_parallel_strategy_names():
    assert Dist().parallel(fsdp=False) is None and Dist().parallel(fsdp=True) == "fsdp"
    assert Dist(world_size=2, local_world_size=2).parallel(fsdp=False) == "ddp"


def test_a_group_of_one_without_torchrun(monkeypatch):
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    dist = Dist()
    dist.init(torch.device("cpu"))  # one process: nothing to join
    assert not torch.distributed.is_initialized() and dist.backend is None
    dist.init(torch.device("cpu"), always=True)
    try:
        assert torch.distributed.get_world_size() == 1 and dist.backend == "gloo"
    finally:
        dist.close()
    assert not torch.distributed.is_initialized()
