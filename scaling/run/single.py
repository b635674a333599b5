"""One run trained alone (on one device, or one run over DDP/FSDP2 ranks): `train_run` is the unit every sweep point
calls. It trains exactly D = steps·B tokens, evaluates on a fixed validation set and leaves a complete record in the
run directory (config.yaml, metrics.jsonl, ckpt.pt, result.json). It is idempotent: a finished run with the same
config is returned as is, an interrupted one resumes from its checkpoint, a failed one is trained again.
"""

from __future__ import annotations

import copy
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from model import LLaMA
from scaling.run.checkpoint import CKPT_NAME, drop_checkpoint, has_checkpoint, load_checkpoint, save_checkpoint
from scaling.run.distributed import barrier
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
    sharded_meta,
    wrap_ddp,
)
from scaling.run.setup import RunSetup, loop_spec, setup_run
from scaling.run.step import Batch, StepOutput, TrainStep, build_optimizer

log = logging.getLogger(__name__)

SNAPSHOT_NAME = "snapshot"  # a sharded run's copy of its state while a branch borrows the model (scaling.run.trunk)


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

    def resume(self) -> LoopState:
        """The run's own checkpoint, if any: its loop state; step 0 when there is none."""
        return self.load(0, self.run.run_dir, self.run.config_hash)

    def load(self, k: int, run_dir: Path, config_hash: str, name: str = CKPT_NAME) -> LoopState:
        """Load checkpoint `name` of run_dir (a run's own, or its trunk's at a branch point) into the model and
        optimizer; its loop state, step 0 (and nothing loaded) when there is none. One row: k is 0."""
        if self.run.parallel == "fsdp":
            meta = load_sharded(sharded_place(run_dir, name), self.model, self.optimizer, config_hash)
            return loop_state_from(meta) if meta else LoopState()
        ckpt = load_checkpoint(run_dir, config_hash, name)
        return restore_state(self.model, self.optimizer, ckpt) if ckpt else LoopState()

    def has(self, run_dir: Path, config_hash: str, name: str = CKPT_NAME) -> bool:
        """Whether run_dir holds checkpoint `name` of this config, in this run's format (single file or sharded)."""
        if self.run.parallel == "fsdp":
            return sharded_meta(sharded_place(run_dir, name), config_hash) is not None
        return has_checkpoint(run_dir, config_hash, name)

    def drop(self, run_dir: Path, name: str) -> None:
        """Remove checkpoint `name` (rank 0, once every rank is past using it)."""
        barrier(self.run.dist_env)
        if not self.run.dist_env.is_main:
            return
        if self.run.parallel == "fsdp":
            shutil.rmtree(sharded_place(run_dir, name), ignore_errors=True)
        else:
            drop_checkpoint(run_dir, name)

    def snapshot(self) -> Any:
        """The weights and optimizer state to come back to after a branch: a copy in memory, or for a sharded run
        a sharded checkpoint in the run dir (each rank writes its shards; nothing is gathered, nothing doubles in
        device memory)."""
        if self.run.parallel == "fsdp":
            place = self.run.run_dir / SNAPSHOT_NAME
            meta = {"config_hash": self.run.config_hash, "step": 0}
            save_sharded(place, self.model, self.optimizer, meta, self.run.dist_env)
            return place
        return copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.optimizer.state_dict())

    def restore(self, snap: Any) -> None:
        if self.run.parallel == "fsdp":
            if load_sharded(snap, self.model, self.optimizer, self.run.config_hash) is None:
                raise RuntimeError(f"the snapshot {snap} could not be read back")
            self.drop(snap.parent, snap.name)
            return
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
            meta = loop_meta(member.spec, member.state)
            save_sharded(sharded_place(path, name), self.model, self.optimizer, meta, run.dist_env)
        elif run.dist_env.is_main:
            save_checkpoint(path, checkpoint_state(self.model, self.optimizer, member.spec, member.state), name)


def sharded_place(run_dir: Path, name: str) -> Path:
    """Where a sharded checkpoint named like a single-file one lives: the run's own (ckpt.pt) in the run dir, any
    other (a trunk's branch_<step>.pt) in a directory of its stem, each with its ckpt_dcp/ and ckpt_dcp.json."""
    return run_dir if name == CKPT_NAME else run_dir / Path(name).stem


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
