"""GPU sizing of a sweep plan: how many GPUs each run needs, how long it takes, and whether the launcher lets it finish.

GPUs come from memory: a run's training state (fp32 weights, gradients and two AdamW moments, 16 bytes per
parameter) must take at most `FSDP_STATE_FRACTION` of each GPU's `sweep.gpu_memory_gb` once FSDP2 shards it, the rest
being for activations (scaling.run.parallel's rule). Hours come from FLOPs: the plan's single-device estimate (measured,
or at `sweep.assumed_flops_per_s` per GPU) divided by the GPUs of the run's job, assuming linear scaling (an
optimistic bound: data-parallel efficiency below 1 only lengthens runs).

A launcher with a time limit (submitit: `timeout_min` per attempt, `max_num_timeout` requeues that resume from the
checkpoint) and GPUs per job (`gpus_per_node` x `nodes`) bounds every run: a point that needs more GPUs than a job
has, or more hours than timeout x (1 + requeues), `cannot finish`, and the plan says so, and why, before submitting.
Local launchers (basic, joblib, submitit_local without GPUs) have no such bounds: there is nothing to check.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scaling.run.parallel import BYTES_PER_PARAM, FSDP_STATE_FRACTION

from .plan import Point


@dataclass(frozen=True)
class JobLimits:
    """What one job of the launcher gets: GPUs and hours (None: unbounded or not a GPU launcher)."""

    gpus: int | None
    hours: float | None
    describe: str

    @classmethod
    def from_launcher(cls, node: Mapping[str, Any] | None) -> JobLimits:
        node = node or {}
        gpus_per_node = node.get("gpus_per_node")
        gpus = int(gpus_per_node) * int(node.get("nodes") or 1) if gpus_per_node else None
        timeout_min = node.get("timeout_min") if gpus else None
        requeues = int(node.get("max_num_timeout") or 0)
        hours = float(timeout_min) / 60 * (1 + requeues) if timeout_min else None
        target = str(node.get("_target_", "launcher")).rsplit(".", 1)[-1]
        if gpus is None:
            return cls(None, None, f"{target}: no GPU limits")
        limit = f"{hours / (1 + requeues):.3g} h x (1 + {requeues} requeues) = {hours:.3g} h" if hours else "no limit"
        return cls(gpus, hours, f"{target}: {gpus} GPU(s) per job, {limit}")


@dataclass(frozen=True)
class Sizing:
    run_id: str
    budget: float
    gpus_needed: int  # by memory
    gpus: int  # the job's (or, without a GPU launcher, the memory minimum)
    gpu_hours: float
    hours: float  # wall hours on `gpus` GPUs
    problem: str | None  # why it cannot finish, None when it can


def gpus_needed(params: float, gpu_memory_bytes: float) -> int:
    """GPUs whose memory holds the sharded training state with room for activations: 1, 2, 4, 8, then whole nodes."""
    need = math.ceil(params * BYTES_PER_PARAM / (FSDP_STATE_FRACTION * gpu_memory_bytes))
    if need <= 1:
        return 1
    return 2 ** math.ceil(math.log2(need)) if need <= 8 else 8 * math.ceil(need / 8)


def size_points(points: list[Point], est_seconds: list[float], limits: JobLimits, gpu_memory_gb: float) -> list[Sizing]:
    out = []
    for p, seconds in zip(points, est_seconds, strict=True):
        need = gpus_needed(p.shape.flops.params, gpu_memory_gb * 2**30)
        gpus = limits.gpus or need
        hours = seconds / 3600 / gpus
        problem = None
        if limits.gpus is not None and need > limits.gpus:
            problem = (
                f"its training state ({p.shape.flops.params * BYTES_PER_PARAM / 2**30:.0f} GiB for "
                f"{p.shape.flops.params:.3g} parameters) needs >= {need} GPUs of {gpu_memory_gb:g} GB, "
                f"a job has {limits.gpus}"
            )
        elif limits.hours is not None and hours > limits.hours:
            problem = f"it needs ~{hours:.3g} h on {gpus} GPU(s), a job may run {limits.hours:.3g} h"
        out.append(Sizing(p.run_id, p.budget, need, gpus, seconds / 3600, hours, problem))
    return out


def report(sizings: list[Sizing], limits: JobLimits, assumed_flops_per_s: float, gpu_memory_gb: float) -> list[str]:
    """The sizing block of the plan: per budget GPUs x hours, the total, and one `cannot finish` line per problem."""
    lines = [
        f"GPU sizing ({limits.describe}; {gpu_memory_gb:g} GB per GPU; times at the plan's estimates, "
        f"{assumed_flops_per_s:.3g} FLOP/s per GPU where not measured):"
    ]
    for budget in sorted({s.budget for s in sizings}):
        group = [s for s in sizings if s.budget == budget]
        gpus = sorted({s.gpus for s in group})
        lines.append(
            f"  C={budget:.3g}: {len(group)} runs x {'/'.join(map(str, gpus))} GPU(s), longest "
            f"{max(s.hours for s in group):.3g} h, {sum(s.gpu_hours for s in group):,.1f} GPU-hours"
        )
    bad = [s for s in sizings if s.problem]
    lines.append(
        f"total {sum(s.gpu_hours for s in sizings):,.0f} GPU-hours; "
        + (
            f"{len(bad)} of {len(sizings)} runs cannot finish as configured"
            if bad
            else "every run can finish as configured"
        )
    )
    lines += [
        f"warning: {s.run_id} cannot finish: {s.problem}; use a bigger launcher preset "
        f"(hydra/launcher=slurm_8gpu or slurm_multinode) or raise hydra.launcher.timeout_min"
        for s in bad
    ]
    return lines
