"""The training loop: exactly D tokens in steps of B tokens, warmup + decay, divergence detection, periodic
checkpoints and a deterministic final evaluation. No Hydra here: train.py hands it a RunContext.

The loop calls the one train step (scaling.step) and never waits for the device between logging steps: each
step's losses and gradient norm stay on the device until the next logging step (every `train.log_every` steps,
the last step, an evaluation step), where they are read in one transfer. Divergence (a non-finite or exploding
loss) is therefore noticed within `log_every` steps; the record names the first step that went bad.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn
from tqdm import tqdm

from scaling.distributed import Dist, any_across, sum_across
from scaling.schedule import lr_at
from scaling.step import Batch, StepOutput, TrainStep, autocast_ctx


@dataclass(frozen=True)
class LoopSpec:
    steps: int  # optimizer steps; D = steps * batch_size
    batch_size: int  # tokens per optimizer step (global, all ranks)
    accum: int  # micro-batches per step on each rank
    peak_lr: float
    schedule: str
    warmup: int
    min_lr_frac: float
    diverge_factor: float
    log_every: int
    eval_every: int
    ckpt_every_s: float
    config_hash: str

    def lr(self, step: int) -> float:
        """The learning rate of optimizer step `step` (0-based) under this run's schedule."""
        return lr_at(
            step, self.steps, self.peak_lr, schedule=self.schedule, warmup=self.warmup, min_lr_frac=self.min_lr_frac
        )


@dataclass
class LoopState:
    step: int = 0  # optimizer steps done
    train_time_s: float = 0.0  # seconds spent in training steps (excludes evaluation and checkpoints)
    loss_ema: float | None = None
    initial_loss: float | None = None
    last_val_loss: float | None = None
    status: str = "running"  # running | completed | diverged
    reason: str | None = None
    diverged_at_step: int | None = None  # the first optimizer step (1-based) whose loss or gradient norm went bad
    wall_time_s: float = 0.0  # wall time of all segments so far, as of the last checkpoint (a resume counts them all)


@dataclass(frozen=True)
class RunContext:
    """What the loop runs with, besides its state: one object instead of a dozen positional arguments."""

    model: nn.Module  # the plain module: evaluation and checkpoints (under FSDP2, the sharded module itself)
    step: TrainStep  # the one train step, holding the wrapped model and the optimizer
    spec: LoopSpec
    micro_batch: Callable[[int, int], Batch]  # (step, micro) -> this rank's micro-batch
    val_batches: Callable[[], Iterable[Batch]]  # this rank's share of the fixed validation windows
    save_checkpoint: Callable[[LoopState], None]  # called on every rank (a collective under FSDP2)
    run_dir: Path
    dist_env: Dist
    device: torch.device
    amp: torch.dtype | None
    progress: bool
    trackers: Any = None  # scaling.trackers.Trackers on rank 0: each metrics row is also sent there


@dataclass
class LogWindow:
    """Steps whose outputs are still on the device (since the last logging step)."""

    steps: list[int] = field(default_factory=list)
    outputs: list[StepOutput] = field(default_factory=list)


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Iterable[Batch], device: torch.device, amp: torch.dtype | None, dist_env: Dist
) -> tuple[float, int]:
    """Mean validation loss (nats/token) over all ranks' windows, and the number of tokens it covers."""
    model.eval()
    # Summed on the device in float64, in order: the same arithmetic as adding loss.item() * tokens on the host,
    # without a host-device sync per batch.
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast_ctx(device, amp):
            _, loss = model(x, y)
        total += loss.detach().double() * y.numel()
        count += y.numel()
    model.train()
    sums = sum_across(torch.stack([total, torch.tensor(float(count), dtype=torch.float64, device=device)]), dist_env)
    total_loss, tokens = sums.tolist()
    return total_loss / tokens, int(tokens)


def run_loop(ctx: RunContext, state: LoopState) -> LoopState:
    """Train from state.step to spec.steps. Returns the final state (status completed or diverged)."""
    spec, dist_env = ctx.spec, ctx.dist_env
    metrics = (ctx.run_dir / "metrics.jsonl").open("a") if dist_env.is_main else None
    # A live bar on a terminal; in logs (sweeps, SLURM) a line every 30 s instead of a stream of redraws.
    bar = tqdm(
        total=spec.steps * spec.batch_size,
        initial=state.step * spec.batch_size,
        unit="tok",
        unit_scale=True,
        dynamic_ncols=True,
        disable=not (ctx.progress and dist_env.is_main),
        leave=False,
        mininterval=0.5 if sys.stderr.isatty() else 30.0,
    )
    last_ckpt = time.monotonic()
    window = LogWindow()
    started = time.perf_counter()  # start of the current stretch of training steps
    try:
        while state.step < spec.steps:
            lr = spec.lr(state.step)
            out = ctx.step([ctx.micro_batch(state.step, micro) for micro in range(spec.accum)], lr)
            state.step += 1
            window.steps.append(state.step)
            window.outputs.append(out)
            bar.update(spec.batch_size)
            log_due = state.step % spec.log_every == 0 or state.step == spec.steps
            eval_due = bool(spec.eval_every) and state.step % spec.eval_every == 0 and state.step < spec.steps
            if not (log_due or eval_due):
                continue
            last = read_window(ctx, state, window)  # the one host-device sync of the window
            window = LogWindow()
            state.train_time_s += time.perf_counter() - started
            if state.status == "diverged":
                break
            tok_s = state.step * spec.batch_size / max(state.train_time_s, 1e-9)
            bar.set_postfix(loss=f"{state.loss_ema:.3f}", lr=f"{lr:.2e}", tok_s=f"{tok_s:,.0f}", refresh=False)
            row = None
            if log_due:
                row = {
                    "step": state.step,
                    "tokens": state.step * spec.batch_size,
                    "loss": last[0],
                    "loss_ema": state.loss_ema,
                    "lr": lr,
                    "grad_norm": last[1],
                    "tokens_per_s": tok_s,
                }
            if eval_due:
                state.last_val_loss, _ = evaluate(ctx.model, ctx.val_batches(), ctx.device, ctx.amp, dist_env)
                row = (row or {"step": state.step, "tokens": state.step * spec.batch_size}) | {
                    "val_loss": state.last_val_loss
                }
            if row is not None and metrics is not None:
                write_row(metrics, row)
                if ctx.trackers:
                    ctx.trackers.log(row)
            due = dist_env.is_main and time.monotonic() - last_ckpt > spec.ckpt_every_s and state.step < spec.steps
            if any_across(due, dist_env, ctx.device):  # every rank takes part under FSDP2
                ctx.save_checkpoint(state)
                last_ckpt = time.monotonic()
            started = time.perf_counter()
        else:
            state.status = "completed"
    finally:
        bar.close()
        if metrics is not None:
            metrics.close()
    return state


def read_window(ctx: RunContext, state: LoopState, window: LogWindow) -> tuple[float, float]:
    """Bring a window's losses and gradient norms to the host; update the EMA and check for divergence.

    Returns the last step's (loss, grad norm). The arithmetic is the per-step loop's: each step's loss is the mean
    of its micro-batch losses summed in order in float64, averaged over ranks.
    """
    spec = ctx.spec
    losses = torch.stack([o.losses for o in window.outputs]).tolist()  # (steps, accum)
    norms = torch.stack([o.grad_norm for o in window.outputs]).tolist()  # (steps,)
    step_losses = []
    for micro_losses in losses:
        total = 0.0
        for value in micro_losses:
            total += value / spec.accum
        step_losses.append(total)
    if ctx.dist_env.enabled:
        summed = sum_across(torch.tensor(step_losses, dtype=torch.float64, device=ctx.device), ctx.dist_env)
        step_losses = [v / ctx.dist_env.world_size for v in summed.tolist()]
    bad_step = None
    for step, loss, norm in zip(window.steps, step_losses, norms, strict=True):
        if state.initial_loss is None:
            state.initial_loss = loss
        if not math.isfinite(loss) or not math.isfinite(norm) or loss > spec.diverge_factor * state.initial_loss:
            bad_step = (step, loss, norm)
            break
        # EMA over ~10 steps: the "final smoothed" training loss of the record.
        state.loss_ema = loss if state.loss_ema is None else 0.9 * state.loss_ema + 0.1 * loss
    if any_across(bad_step is not None, ctx.dist_env, ctx.device):
        step, loss, norm = bad_step or (window.steps[-1], math.nan, math.nan)
        state.status, state.diverged_at_step = "diverged", step
        state.reason = (
            f"loss {loss:.4g} (grad norm {norm:.4g}) at step {step} exceeds {spec.diverge_factor}x "
            f"the initial loss {state.initial_loss:.4g} or is not finite"
        )
    return step_losses[-1], norms[-1]


def write_row(metrics: IO[str], row: dict) -> None:
    """One metrics.jsonl line, flushed: the one place a metrics row leaves the loop."""
    metrics.write(json.dumps(row) + "\n")
    metrics.flush()


def checkpoint_state(model: nn.Module, optimizer: torch.optim.Optimizer, spec: LoopSpec, state: LoopState) -> dict:
    return {
        "config_hash": spec.config_hash,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        **loop_meta(spec, state),
    }


def loop_meta(spec: LoopSpec, state: LoopState) -> dict:
    """The loop state a checkpoint carries besides the tensors (plain values: JSON for sharded checkpoints)."""
    return {
        "config_hash": spec.config_hash,
        "step": state.step,
        "train_time_s": state.train_time_s,
        "loss_ema": state.loss_ema,
        "initial_loss": state.initial_loss,
        "last_val_loss": state.last_val_loss,
        "wall_time_s": state.wall_time_s,
    }


def loop_state_from(meta: dict) -> LoopState:
    return LoopState(
        step=meta["step"],
        train_time_s=meta["train_time_s"],
        loss_ema=meta["loss_ema"],
        initial_loss=meta["initial_loss"],
        last_val_loss=meta["last_val_loss"],
        wall_time_s=meta.get("wall_time_s", 0.0),
    )


def restore_state(model: nn.Module, optimizer: torch.optim.Optimizer, ckpt: dict) -> LoopState:
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    return loop_state_from(ckpt)
