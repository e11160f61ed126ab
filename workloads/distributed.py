"""A process's place in a multi-process job started by ``torchrun`` (or ``llmbench ... --nproc N``).

torchrun (its elastic agent) starts the processes and tells each who it is in
environment variables: ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``LOCAL_WORLD_SIZE`` (processes on this node) and ``GROUP_WORLD_SIZE`` (agents:
one per node). ``Dist`` reads them once, picks this process's GPU (its local
rank), and joins the process group: nccl on GPUs, gloo on CPUs (which is how
every multi-process path is tested without a GPU). Without torchrun it is rank 0
of 1 and joins nothing, unless asked to form a group of one (FSDP needs a group
even alone).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist


@dataclass(frozen=True)
class Dist:
    """This process's place in a ``torchrun`` job (rank 0 of 1 without one): its rank, local rank,
    the processes in all and on this node, and the nodes (torchrun's agents, one per node)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    nodes: int = 1

    @classmethod
    def from_env(cls) -> Dist:
        world = int(os.environ.get("WORLD_SIZE", 1))
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        nodes = int(os.environ.get("GROUP_WORLD_SIZE", 0)) or max(1, -(-world // max(local, 1)))
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), world, local, nodes)

    @staticmethod
    def under_launcher() -> bool:
        """Whether this process was started by torchrun (or its elastic agent)."""
        return "LOCAL_WORLD_SIZE" in os.environ or "TORCHELASTIC_RUN_ID" in os.environ

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, requested: torch.device) -> torch.device:
        """The GPU of this local rank under torchrun; the requested device otherwise."""
        if requested.type == "cuda" and self.world_size > 1:
            return torch.device("cuda", self.local_rank)
        return requested

    def init(self, device: torch.device, always: bool = False) -> None:
        """Join the process group (nccl on GPU, gloo on CPU) when there is more than one process; with
        ``always``, a group of one too (FSDP shards over a group even when it is alone)."""
        if torch_dist.is_initialized() or (self.world_size == 1 and not always):
            return
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if self.world_size == 1 and "MASTER_ADDR" not in os.environ:
            torch_dist.init_process_group(backend, store=torch_dist.HashStore(), rank=0, world_size=1)
        else:
            torch_dist.init_process_group(backend)

    def parallel(self, fsdp: bool) -> str | None:
        """The strategy a fine-tune record names: fsdp, ddp (more than one process), or None (one plain
        process)."""
        return "fsdp" if fsdp else ("ddp" if self.world_size > 1 else None)

    @property
    def backend(self) -> str | None:
        """The process group's backend (nccl, gloo), or None outside one."""
        return str(torch_dist.get_backend()) if torch_dist.is_initialized() else None

    def close(self) -> None:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()
