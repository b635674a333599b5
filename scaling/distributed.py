"""torchrun support: one process per device, gloo on CPU, NCCL on CUDA."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_kind: str) -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return Dist(rank=dist.get_rank(), world_size=world_size, local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def mean_across(value: float, d: Dist, device: torch.device) -> float:
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item() / d.world_size


def any_across(flag: bool, d: Dist, device: torch.device) -> bool:
    """True on every rank when it is true on one: ranks must agree to stop a diverged run together."""
    if not d.enabled:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t)
    return t.item() > 0


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()
