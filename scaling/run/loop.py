"""The training loop: exactly D tokens in steps of B tokens, warmup + decay, divergence detection, periodic
checkpoints and a deterministic final evaluation, for one run or a pack of runs that share their batches. No
Hydra here: scaling.run.single and scaling.run.pack hand it members (run dirs) and a Stepper.

The loop calls the one train step (scaling.run.step) and never waits for the device between logging steps: each
step's losses and gradient norm stay on the device until the next logging step (every `train.log_every` steps,
the last step, an evaluation step), where they are read in one transfer. Divergence (a non-finite or exploding
loss) is therefore noticed within `log_every` steps; the record names the first step that went bad.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

import torch
from torch import nn
from tqdm import tqdm

from scaling.run.distributed import Dist, any_across, sum_across
from scaling.run.schedule import lr_at
from scaling.run.step import Batch, StepOutput, autocast_ctx


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


class Stepper(Protocol):
    """One optimizer step of the loop's active runs, and what the loop needs of each run's row k (its index among the
    active runs): single runs (scaling.run.single) and packs (scaling.run.pack) implement it."""

    val_set: Any  # scaling.data's ValSet: the fixed validation windows (and their byte count, for bits per byte)

    def __call__(self, micro_batches: Sequence[Batch], lrs: Sequence[float]) -> list[StepOutput]: ...

    def keep(self, rows: list[int]) -> None: ...  # the runs at these rows go on; the others left (diverged)

    def evaluate(self, k: int) -> tuple[float, int]: ...  # (val loss, tokens) of row k; a collective under DDP

    def save(self, k: int, member: Member) -> None: ...  # checkpoint row k (every rank calls it: FSDP2 collective)

    def snapshot(self) -> Any: ...  # the rows' weights and optimizer state, to come back to (a trunk's branch point)

    def restore(self, snap: Any) -> None: ...


@dataclass
class Member:
    """A run the loop drives: its directory (scaling.run.lifecycle.RunDir), plain values and state."""

    dir: Any  # RunDir (typed loosely: the lifecycle module imports this one)
    spec: LoopSpec
    state: LoopState
    window: LogWindow = field(default_factory=LogWindow)


def run_loop(
    members: Sequence[Member],
    stepper: Stepper,
    micro_batch: Callable[[int, int], Batch],
    dist_env: Dist,
    device: torch.device,
    *,
    progress: bool = False,
    stop_at: int | None = None,
) -> list[Member]:
    """Train members (all at one step, sharing steps, batches and logging cadence) to their last step, or to
    `stop_at` (a trunk's branch point). A run that diverges is recorded and leaves; the others go on. Runs that reach
    their last step are evaluated, checkpointed and recorded here. Returns the members still running (stopped at
    stop_at), in row order."""
    active = list(members)
    spec0 = active[0].spec
    end = spec0.steps if stop_at is None else min(stop_at, spec0.steps)
    s = active[0].state.step
    if s >= spec0.steps:  # killed after the final checkpoint, before the record: evaluate and record again
        _complete(stepper, active, list(range(len(active))))
        return []
    bar = _progress_bar(spec0, s, progress and dist_env.is_main)
    last_ckpt = time.monotonic()
    started = time.perf_counter()  # start of the current stretch of training steps
    try:
        while active and s < end:
            lrs = [m.spec.lr(s) for m in active]  # the runs share their schedule's shape, not their peak lr
            s = _train_step(active, stepper, micro_batch, s, lrs)
            bar.update(spec0.batch_size)
            log_due = s % spec0.log_every == 0 or s == spec0.steps
            eval_due = bool(spec0.eval_every) and s % spec0.eval_every == 0 and s < spec0.steps
            # A trunk stopping at a branch point reads its window there (a divergence must be known before it
            # branches) but logs only on the cadence a run trained alone would: a branch's curve is that run's.
            if not (log_due or eval_due or s == end):
                continue
            keep = _close_window(active, stepper, s, lrs, time.perf_counter() - started, log_due, eval_due, bar)
            if s == spec0.steps:
                _complete(stepper, active, keep)
                return []
            active = _keep_rows(stepper, active, keep)
            due = dist_env.is_main and time.monotonic() - last_ckpt > spec0.ckpt_every_s and s < end
            if active and any_across(due, dist_env, device):  # every rank takes part under FSDP2
                _save_all(stepper, active)
                last_ckpt = time.monotonic()
            started = time.perf_counter()
    finally:
        bar.close()
    return active


def _progress_bar(spec: LoopSpec, step: int, wanted: bool) -> Any:
    """A live bar on a terminal only: a log file (SLURM, a redirected sweep) gets no redraws; metrics.jsonl and
    `python -m scaling.status` say how far a run is."""
    return tqdm(
        total=spec.steps * spec.batch_size,
        initial=step * spec.batch_size,
        unit="tok",
        unit_scale=True,
        dynamic_ncols=True,
        disable=not (wanted and sys.stderr.isatty()),
        leave=False,
        mininterval=0.5,
    )


def _train_step(
    active: list[Member], stepper: Stepper, micro_batch: Callable[[int, int], Batch], s: int, lrs: list[float]
) -> int:
    """Optimizer step s of every active run; each run's outputs join its logging window. Returns the steps done."""
    outs = stepper([micro_batch(s, micro) for micro in range(active[0].spec.accum)], lrs)
    s += 1
    for m, out in zip(active, outs, strict=True):
        m.state.step = s
        m.window.steps.append(s)
        m.window.outputs.append(out)
    return s


def _complete(stepper: Stepper, active: list[Member], rows: list[int]) -> None:
    """The runs at these rows reached their last step: evaluate, checkpoint and record each."""
    for k in rows:
        active[k].state.status = "completed"
        finish(stepper, k, active[k])


def _keep_rows(stepper: Stepper, active: list[Member], keep: list[int]) -> list[Member]:
    """The active runs after a window closed: the stepper drops the rows that left (diverged)."""
    if len(keep) == len(active):
        return active
    stepper.keep(keep)
    return [active[k] for k in keep]


def _save_all(stepper: Stepper, active: list[Member]) -> None:
    for k, m in enumerate(active):
        stepper.save(k, m)


def _close_window(
    active: list[Member],
    stepper: Stepper,
    s: int,
    lrs: list[float],
    elapsed: float,
    log_due: bool,
    eval_due: bool,
    bar: Any,
) -> list[int]:
    """End of a logging window at step s: read every run's window, record the runs that diverged, log and evaluate
    the others. Returns the rows (indices into active) that go on."""
    keep = []
    for k, m in enumerate(active):
        dist_env, device = m.dir.run.dist_env, m.dir.run.device
        last = read_window(m.spec, m.state, m.window, dist_env, device)  # the window's one host-device sync
        m.window = LogWindow()
        m.state.train_time_s += elapsed
        if m.state.status == "diverged":
            finish(stepper, k, m)
            continue
        keep.append(k)
        tok_s = s * m.spec.batch_size / max(m.state.train_time_s, 1e-9)
        if k == 0:
            bar.set_postfix(loss=f"{m.state.loss_ema:.3f}", lr=f"{lrs[0]:.2e}", tok_s=f"{tok_s:,.0f}", refresh=False)
        row = None
        if log_due:
            row = {
                "step": s,
                "tokens": s * m.spec.batch_size,
                "loss": last[0],
                "loss_ema": m.state.loss_ema,
                "lr": lrs[k],
                "grad_norm": last[1],
                "tokens_per_s": tok_s,
            }
        if eval_due:
            m.state.last_val_loss, _ = stepper.evaluate(k)
            row = (row or {"step": s, "tokens": s * m.spec.batch_size}) | {"val_loss": m.state.last_val_loss}
        if row is not None:
            m.dir.log(row)
    return keep


def finish(stepper: Stepper, k: int, m: Member) -> dict:
    """A run at its end (completed: evaluate, checkpoint; diverged: as it stands) gets its final record."""
    val_loss = val_tokens = None
    if m.state.status == "completed":
        val_loss, val_tokens = stepper.evaluate(k)
        stepper.save(k, m)
    return m.dir.finish(m.state, val_loss, val_tokens, stepper.val_set.bpb)


def read_window(
    spec: LoopSpec, state: LoopState, window: LogWindow, dist_env: Dist, device: torch.device
) -> tuple[float, float]:
    """Bring a window's losses and gradient norms to the host; update the EMA and check for divergence.

    Returns the last step's (loss, grad norm). The arithmetic is the per-step loop's: each step's loss is the mean
    of its micro-batch losses summed in order in float64, averaged over ranks.
    """
    losses = torch.stack([o.losses for o in window.outputs]).tolist()  # (steps, accum)
    norms = torch.stack([o.grad_norm for o in window.outputs]).tolist()  # (steps,)
    step_losses = []
    for micro_losses in losses:
        total = 0.0
        for value in micro_losses:
            total += value / spec.accum
        step_losses.append(total)
    if dist_env.enabled:
        summed = sum_across(torch.tensor(step_losses, dtype=torch.float64, device=device), dist_env)
        step_losses = [v / dist_env.world_size for v in summed.tolist()]
    bad_step = None
    for step, loss, norm in zip(window.steps, step_losses, norms, strict=True):
        if state.initial_loss is None:
            state.initial_loss = loss
        if not math.isfinite(loss) or not math.isfinite(norm) or loss > spec.diverge_factor * state.initial_loss:
            bad_step = (step, loss, norm)
            break
        # EMA over ~10 steps: the "final smoothed" training loss of the record.
        state.loss_ema = loss if state.loss_ema is None else 0.9 * state.loss_ema + 0.1 * loss
    if any_across(bad_step is not None, dist_env, device):
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
