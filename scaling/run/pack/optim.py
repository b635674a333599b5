"""One optimizer step of a pack: AdamW with per-run learning rate, weight decay and gradient clipping over the flat
(K, P) buffer, and the K-run train step built on it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from model import ModelConfig
from scaling.run.pack.model import PackedParams, packed_losses
from scaling.run.step import Batch, autocast_ctx


class PackedAdamW:
    """AdamW over the flat (K, P) buffer, one learning rate / weight decay per run (PyTorch's AdamW formula:
    decoupled decay p *= 1 - lr*wd, bias-corrected moments, eps outside the square root)."""

    def __init__(self, K: int, P: int, n_decay: int, betas: tuple[float, float], eps: float, device: torch.device):
        self.m = torch.zeros(K, P, device=device)
        self.v = torch.zeros(K, P, device=device)
        self.steps = 0
        self.betas, self.eps, self.n_decay = betas, eps, n_decay

    @torch.no_grad()
    def step(self, flat: torch.Tensor, grad: torch.Tensor, lrs: Sequence[float], wds: Sequence[float]) -> None:
        self.steps += 1
        b1, b2 = self.betas
        dev = flat.device
        decay = torch.tensor([1 - lr * wd for lr, wd in zip(lrs, wds)], device=dev).view(-1, 1)
        flat[:, : self.n_decay].mul_(decay)
        self.m.lerp_(grad, 1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        bc1, bc2_sqrt = 1 - b1**self.steps, math.sqrt(1 - b2**self.steps)
        step_size = torch.tensor([-lr / bc1 for lr in lrs], device=dev).view(-1, 1)
        denom = (self.v.sqrt() / bc2_sqrt).add_(self.eps)
        flat.addcmul_(self.m / denom, step_size)

    def keep(self, rows: list[int]) -> None:
        self.m, self.v = self.m[rows].contiguous(), self.v[rows].contiguous()


def clip_per_run(grad: torch.Tensor, max_norms: torch.Tensor) -> torch.Tensor:
    """Clip each run's gradient (a row of grad) to its own max norm, as clip_grad_norm_; returns the norms."""
    norms = torch.linalg.vector_norm(grad, dim=1)
    grad.mul_((max_norms / (norms + 1e-6)).clamp(max=1.0).view(-1, 1))
    return norms


class PackedStep:
    """`step(micro_batches, lrs)`: one optimizer step of K runs on the same micro-batches.
    Returns (losses (K, accum), grad norms (K,)) on the device, like scaling.run.step.TrainStep per run."""

    def __init__(
        self,
        params: PackedParams,
        adam: PackedAdamW,
        cfg: ModelConfig,
        rope: tuple[torch.Tensor, torch.Tensor],
        wds: list[float],
        clips: list[float],
        device: torch.device,
        amp: torch.dtype | None,
        compile: bool = False,
    ):
        self.params, self.adam, self.cfg, self.rope = params, adam, cfg, rope
        self.wds, self.clips, self.device, self.amp = wds, clips, device, amp
        self.loss_fn = torch.compile(packed_losses, dynamic=False) if compile else packed_losses

    def keep(self, rows: list[int]) -> None:
        self.params.keep(rows)
        self.adam.keep(rows)
        self.wds = [self.wds[i] for i in rows]
        self.clips = [self.clips[i] for i in rows]

    def __call__(self, micro_batches: Sequence[Batch], lrs: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
        accum, losses = len(micro_batches), []
        for x, y in micro_batches:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with autocast_ctx(self.device, self.amp):
                loss = self.loss_fn(self.params.views, self.cfg, *self.rope, x, y)  # (K,)
                # Summing the runs' losses leaves each run's gradient its own: no weight is shared.
                (loss.sum() / accum).backward()
            losses.append(loss.detach().float())
        grad = self.params.grads()
        norms = clip_per_run(grad, torch.tensor(self.clips, device=self.device))
        self.adam.step(self.params.flat, grad, lrs, self.wds)
        return torch.stack(losses, dim=1), norms.float()
