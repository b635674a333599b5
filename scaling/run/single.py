"""One run trained alone (on one device, or one run over DDP/FSDP2 ranks): `train_run` is the unit every sweep point
calls. It trains exactly D = steps·B tokens, evaluates on a fixed validation set and leaves a complete record in the
run directory (config.yaml, metrics.jsonl, ckpt.pt, result.json). It is idempotent: a finished run with the same
config is returned as is, an interrupted one resumes from its checkpoint, a failed one is trained again.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from model import LLaMA
from scaling.run.checkpoint import CKPT_NAME, load_checkpoint, save_checkpoint
from scaling.run.lifecycle import RunDir
from scaling.run.loop import (
    LoopSpec,
    LoopState,
    Member,
    checkpoint_state,
    evaluate,
    loop_meta,
    loop_state_from,
    restore_state,
    run_loop,
)
from scaling.run.parallel import (
    checkpoint_blocks,
    compile_blocks,
    grad_sync,
    load_sharded,
    save_sharded,
    shard,
    wrap_ddp,
)
from scaling.run.setup import RunSetup, loop_spec, setup_run
from scaling.run.step import Batch, StepOutput, TrainStep, build_optimizer

log = logging.getLogger(__name__)


def train_run(cfg: DictConfig, out_dir: Path) -> dict:
    """Train (or resume, or skip) the run described by cfg in out_dir; returns its result record."""
    run = setup_run(cfg, out_dir)
    if isinstance(run, dict):  # already finished with this config
        return run
    rd = RunDir(run)
    done = rd.claim()  # RunLocked if another live process owns it
    if done is not None:
        return done
    try:
        return train_claimed(run, rd)
    except Exception as e:
        rd.fail(e)
        raise
    finally:
        rd.release()


class SingleStepper:
    """The Stepper of one run: its model, optimizer and TrainStep (DDP/FSDP2 wrapped where the run is parallel)."""

    def __init__(self, run: RunSetup, spec: LoopSpec):
        self.run, self.spec = run, spec
        device, amp = run.device, run.amp
        torch.manual_seed(run.seed)
        model = LLaMA(run.model_cfg).to(device)
        if run.train.activation_checkpointing:
            checkpoint_blocks(model)
        if run.train.compile:
            compile_blocks(model)
        if run.parallel == "fsdp":
            shard(model, amp)  # before the optimizer: it must hold the sharded parameters
        optim = run.optim
        self.model: nn.Module = model
        self.optimizer = build_optimizer(model, optim.lr, optim.betas, optim.eps, optim.weight_decay, device)
        self.wrapped = wrap_ddp(model, device) if run.parallel == "ddp" else model
        self.step = TrainStep(
            self.wrapped,
            self.optimizer,
            device=device,
            amp=amp,
            grad_clip=float(optim.grad_clip),
            grad_sync=grad_sync(self.wrapped, run.parallel),
        )
        seq_len, world = run.model_cfg.seq_len, run.dist_env.world_size
        self.micro_seqs = run.batch_size // (run.accum * world) // seq_len
        # Fixed, evenly spaced validation windows; ValSet knows their exact byte count for bits per byte.
        self.val_set = run.data.val_set(seq_len=seq_len, eval_tokens=run.train.eval_tokens, batch_seqs=self.micro_seqs)

    def resume(self, run_dir: Path | None = None, config_hash: str | None = None, name: str = CKPT_NAME) -> LoopState:
        """Load a checkpoint (by default the run's own) and return its loop state; step 0 when there is none."""
        run = self.run
        run_dir, config_hash = run_dir or run.run_dir, config_hash or run.config_hash
        if run.parallel == "fsdp":
            meta = load_sharded(run_dir, self.model, self.optimizer, config_hash)
            return loop_state_from(meta) if meta else LoopState()
        ckpt = load_checkpoint(run_dir, config_hash, name)
        return restore_state(self.model, self.optimizer, ckpt) if ckpt else LoopState()

    def snapshot(self) -> tuple[dict, dict]:
        return copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.optimizer.state_dict())

    def restore(self, snap: tuple[dict, dict]) -> None:
        self.model.load_state_dict(snap[0])
        self.optimizer.load_state_dict(snap[1])

    def micro_batch(self, step: int, micro: int) -> Batch:
        run = self.run
        return run.data.train_batch(
            step=step,
            micro=micro,
            accum=run.accum,
            micro_seqs=self.micro_seqs,
            seq_len=run.model_cfg.seq_len,
            seed=run.seed,
            rank=run.dist_env.rank,
            world_size=run.dist_env.world_size,
        )

    def __call__(self, micro_batches: Sequence[Batch], lrs: Sequence[float]) -> list[StepOutput]:
        return [self.step(micro_batches, lrs[0])]

    def keep(self, rows: list[int]) -> None:
        """A single run that diverged has left: nothing stays to train."""

    def evaluate(self, k: int) -> tuple[float, int]:
        run = self.run
        batches = self.val_set.batches(rank=run.dist_env.rank, world_size=run.dist_env.world_size)
        return evaluate(self.model, batches, run.device, run.amp, run.dist_env)

    def save(self, k: int, member: Member, name: str = CKPT_NAME) -> None:
        """Checkpoint the model as `member`'s (into its run dir, under its config hash)."""
        member.state.wall_time_s = member.dir.wall_time()
        run, path = self.run, member.dir.path
        if run.parallel == "fsdp":  # collective: every rank writes its shards
            save_sharded(path, self.model, self.optimizer, loop_meta(member.spec, member.state), run.dist_env)
        elif run.dist_env.is_main:
            save_checkpoint(path, checkpoint_state(self.model, self.optimizer, member.spec, member.state), name)


def train_claimed(
    run: RunSetup, rd: RunDir, stepper: SingleStepper | None = None, state: LoopState | None = None
) -> dict:
    """Train a run whose directory this process owns, from its own checkpoint (or the given state and stepper, which
    a branch takes over from its trunk) to its final record."""
    spec = loop_spec(run)
    if stepper is None:
        stepper = SingleStepper(run, spec)
    if state is None:
        state = stepper.resume()
    rd.open(state)
    if state.step and run.dist_env.is_main:
        how = "sharded" if run.parallel == "fsdp" else "single-file"
        log.info("%s: resuming from step %d of %d (%s checkpoint)", run.run_dir.name, state.step, run.steps, how)
    member = Member(dir=rd, spec=spec, state=state)
    run_loop([member], stepper, stepper.micro_batch, run.dist_env, run.device, progress=run.train.progress)
    assert rd.result is not None  # run_loop finishes every member it does not stop at stop_at
    return rd.result
