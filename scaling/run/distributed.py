"""Multi-process runs: one process per device, gloo on CPU, NCCL on CUDA.

A run joins a process group when its environment says it is one of several processes: torchrun sets RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT; a submitit job (Hydra's submitit launchers, SLURM or local) with
`tasks_per_node` x `nodes` > 1 tasks gets them exported here from submitit's job environment, so one sweep point
launched as N tasks is ONE N-process run (all tasks train the same run directory; rank 0 writes it).
"""

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


def export_submitit_env() -> bool:
    """Inside a multi-task submitit job (and not under torchrun): export RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR
    (the job's first node) and MASTER_PORT (derived from the job id, the same in every task). True when exported."""
    if "WORLD_SIZE" in os.environ:
        return False
    try:
        from submitit import JobEnvironment
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError:
        return False
    try:
        tasks = JobEnvironment().num_tasks
    except RuntimeError:  # not inside a submitit job
        return False
    if tasks <= 1:
        return False
    # Every task sees all the node's GPUs and picks cuda:LOCAL_RANK (resolve_device), so CUDA_VISIBLE_DEVICES stays.
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return True


def init_distributed(device_kind: str) -> Dist:
    """Join the process group when launched as one of several processes (torchrun or submitit), else one process."""
    export_submitit_env()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return Dist(rank=dist.get_rank(), world_size=world_size, local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def sum_across(values: torch.Tensor, dist_env: Dist) -> torch.Tensor:
    """Elementwise sum over ranks (a copy; the input is untouched). One collective for a whole logging window."""
    if not dist_env.enabled:
        return values
    out = values.clone()
    dist.all_reduce(out)
    return out


def any_across(flag: bool, dist_env: Dist, device: torch.device) -> bool:
    """True on every rank when it is true on one: ranks must agree to stop a diverged run, or to checkpoint."""
    if not dist_env.enabled:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t)
    return t.item() > 0


def barrier(dist_env: Dist) -> None:
    if dist_env.enabled:
        dist.barrier()
