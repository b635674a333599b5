"""The one training step: forward, loss, backward with gradient accumulation, clipping and AdamW.

The trainer, the benchmark and the sweep's throughput probe all call `TrainStep`, so a speed measured by the
latter two is the speed of the step the runs take. The step never waits for the device: the micro-batch losses and
the gradient norm it returns are tensors on the device, read by the caller at its logging cadence (one sync per
`train.log_every` steps instead of three per step). On a CPU the arithmetic is exactly that of a loop that syncs
every step, so reading on the cadence changes speed, never numbers.

Parallelism enters through one argument: `grad_sync(last)` returns the context that lets the wrapped model (DDP or
FSDP2, see scaling.run.parallel) skip the gradient all-reduce on every micro-batch but the last.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor]
GradSync = Callable[[bool], contextlib.AbstractContextManager]


def build_optimizer(
    model: nn.Module, lr: float, betas: tuple[float, float], eps: float, weight_decay: float, device: torch.device
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only. Fused: one kernel per parameter instead of a dozen elementwise
    ops (5x faster on CPU too, and fewer thread barriers to stall on when other processes share the cores)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=device.type in ("cpu", "cuda"))


def autocast_ctx(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision when dtype is given (bf16), plain fp32 otherwise."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def always_sync(last: bool) -> contextlib.AbstractContextManager:
    """The GradSync of an unwrapped model: there is no all-reduce to skip."""
    return contextlib.nullcontext()


@dataclass(frozen=True)
class StepOutput:
    """What one step leaves on the device: read it at the logging cadence, not every step."""

    losses: torch.Tensor  # (accum,) float32: the mean loss of each micro-batch, nats/token, this rank
    grad_norm: torch.Tensor  # () float32: total gradient norm before clipping, all ranks


class TrainStep:
    """Callable: `step(micro_batches, lr)` trains one optimizer step on this rank's micro-batches."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        device: torch.device,
        amp: torch.dtype | None,
        grad_clip: float,
        grad_sync: GradSync = always_sync,
    ):
        # `model` is what is called (a DDP wrapper, an FSDP2 module or the plain model); its parameters are the
        # optimizer's either way (DDP's parameters() are the wrapped module's).
        self.model, self.optimizer = model, optimizer
        self.device, self.amp, self.grad_clip, self.grad_sync = device, amp, grad_clip, grad_sync
        self.params = [p for p in model.parameters() if p.requires_grad]

    def __call__(self, micro_batches: Sequence[Batch], lr: float) -> StepOutput:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        accum = len(micro_batches)
        losses = []
        for i, (x, y) in enumerate(micro_batches):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with self.grad_sync(i == accum - 1), autocast_ctx(self.device, self.amp):
                _, loss = self.model(x, y)
                (loss / accum).backward()
            losses.append(loss.detach().float())
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor of partial norms; the total is a collective
            grad_norm = grad_norm.full_tensor()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepOutput(losses=torch.stack(losses), grad_norm=grad_norm.detach().float())
