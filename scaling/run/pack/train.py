"""Training a pack: K runs of one shape, data stream and step count trained together, each in its own run directory
(scaling.run.lifecycle.RunDir) and driven by the one loop (scaling.run.loop.run_loop) through a K-row Stepper."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import DictConfig, OmegaConf

from model import LLaMA
from scaling.base.lock import RunLocked
from scaling.run.checkpoint import CKPT_NAME, drop_checkpoint, has_checkpoint, load_checkpoint, save_checkpoint
from scaling.run.distributed import Dist
from scaling.run.lifecycle import RunDir
from scaling.run.loop import LoopState, Member, checkpoint_state, evaluate, restore_state, run_loop
from scaling.run.pack.model import PackedParams, rope_of
from scaling.run.pack.optim import PackedAdamW, PackedStep
from scaling.run.setup import RunSetup, differing_keys, loop_spec, setup_run, shared_key
from scaling.run.step import Batch, StepOutput, build_optimizer

log = logging.getLogger(__name__)

# Config keys that may differ between the runs of one pack (optimizer scalars and the run's identity); everything
# else (model, data, seed, train.*, the other optim.* keys) must be equal.
PER_RUN_KEYS = {
    ("optim", "lr"),
    ("optim", "weight_decay"),
    ("optim", "grad_clip"),
    ("run", "id"),
    ("run", "sweep"),
    ("run", "budget"),
}


def pack_key(resolved: dict) -> str:
    """What runs must share to be packed: the resolved config without its per-run keys (a canonical string)."""
    return shared_key(resolved, PER_RUN_KEYS)


def check_packable(runs: Sequence[RunSetup]) -> None:
    """One-line ValueError unless the runs share everything but their per-run keys (and run single-process)."""
    first = runs[0]
    for r in runs[1:]:
        if pack_key(r.resolved) != pack_key(first.resolved):
            diff = differing_keys(first.resolved, r.resolved, PER_RUN_KEYS)
            raise ValueError(
                f"runs {first.record['run_id']} and {r.record['run_id']} cannot be packed: they differ in "
                f"{', '.join(diff) or 'their config'}; a pack shares all but "
                f"{', '.join(sorted(f'{g}.{k}' for g, k in PER_RUN_KEYS))}"
            )
    if first.dist_env.enabled or first.parallel != "single":
        raise ValueError("packed training runs in one process on one device; launch packs without torchrun/DDP/FSDP")


def train_pack(cfgs: Sequence[DictConfig], run_dirs: Sequence[Path]) -> list[dict]:
    """Train (or resume, or skip) the runs described by cfgs in run_dirs as one pack; returns their records in order.

    Runs already finished are skipped (their record is returned, marked skipped); runs another live process owns
    are left alone (marked skipped, with the reason). Runs whose checkpoints stand at different steps (a kill
    between two runs' checkpoint writes) are trained as separate packs, one per step, in turn.
    """
    setups: dict[int, RunSetup] = {}
    results: dict[int, dict] = {}
    for i, (cfg, run_dir) in enumerate(zip(cfgs, run_dirs, strict=True)):
        s = setup_run(cfg, Path(run_dir))
        if isinstance(s, dict):
            results[i] = s
        else:
            setups[i] = s
    if setups:
        check_packable(list(setups.values()))
    ids = {i: str(s.record["run_id"]) for i, s in setups.items()}
    dirs: dict[int, RunDir] = {}
    try:
        for i, s in setups.items():
            rd = RunDir(s)
            try:
                done = rd.claim()
            except RunLocked as e:
                results[i] = {"run_id": ids[i], "skipped": True, "error": str(e)}
                continue
            if done is not None:
                results[i] = done
                continue
            dirs[i] = rd
        if dirs:
            _train_claimed(dirs, results, ids)
    finally:
        for rd in dirs.values():
            rd.release()
    return [results[i] for i in range(len(cfgs))]


@dataclass
class Start:
    """Where a row of a pack starts: its loop state, weights and AdamW moments (none before the first step)."""

    state: LoopState
    row: dict[str, torch.Tensor]
    moments: dict[str, tuple[torch.Tensor, torch.Tensor]]


def pack_template(first: RunSetup) -> tuple[LLaMA, torch.optim.Optimizer, dict[str, torch.Tensor]]:
    """The single-run model and optimizer a pack evaluates and checkpoints its rows through, and the init every run
    of the pack starts from (the runs share their seed)."""
    torch.manual_seed(first.seed)
    template = LLaMA(first.model_cfg).to(first.device)
    init = {n: t.detach().clone() for n, t in template.named_parameters()}
    optim = first.optim
    opt = build_optimizer(template, optim.lr, optim.betas, optim.eps, optim.weight_decay, first.device)
    return template, opt, init


def fresh(init: dict[str, torch.Tensor]) -> Start:
    """A row that starts at step 0 from the pack's init (a state of its own: the loop updates it in place)."""
    return Start(LoopState(), init, {})


def read_start(
    template: LLaMA, opt: torch.optim.Optimizer, run_dir: Path, config_hash: str, name: str = CKPT_NAME
) -> Start | None:
    """A single-run checkpoint (a run's own, or a trunk's branch point) as a pack row; None without a usable one."""
    ckpt = load_checkpoint(run_dir, config_hash, name)
    if not ckpt:
        return None
    state = restore_state(template, opt, ckpt)
    row = {n: t.detach().clone() for n, t in template.named_parameters()}
    moments = {
        n: (opt.state[p]["exp_avg"].clone(), opt.state[p]["exp_avg_sq"].clone())
        for n, p in template.named_parameters()
        if p in opt.state
    }
    opt.state.clear()
    return Start(state, row, moments)


def _train_claimed(dirs: dict[int, RunDir], results: dict[int, dict], ids: dict[int, str]) -> None:
    """Restore each run from its checkpoint (or the pack's shared init), then train the runs in groups that stand at
    the same step; a failure is recorded in every run of its group that has no record yet."""
    first = next(iter(dirs.values())).run
    template, opt, init = pack_template(first)
    starts = {i: read_start(template, opt, rd.path, rd.run.config_hash) or fresh(init) for i, rd in dirs.items()}
    for group in by_step(starts):
        for i in group:
            dirs[i].extra["packed_with"] = [ids[j] for j in group if j != i]
        members = [Member(dir=dirs[i], spec=loop_spec(dirs[i].run), state=starts[i].state) for i in group]
        try:
            stepper = PackStepper(members, [starts[i] for i in group], template, opt)
            for m in members:
                m.dir.open(m.state)
            run_loop(members, stepper, stepper.micro_batch, Dist(), first.device, progress=first.train.progress)
        except Exception as e:
            for i in group:
                if dirs[i].result is None:
                    dirs[i].fail(e)
            raise
        finally:
            for i in group:
                record = dirs[i].result
                if record is not None:
                    results[i] = record
                dirs[i].close()


def by_step(starts: dict[int, Start]) -> list[list[int]]:
    """The rows that stand at one step (they share their batches from there), earliest step first: rows whose
    checkpoints a kill left at different steps train as separate packs."""
    groups: dict[int, list[int]] = {}
    for i, start in starts.items():
        groups.setdefault(start.state.step, []).append(i)
    return [groups[s] for s in sorted(groups)]


class PackStepper:
    """The Stepper of a pack: one PackedStep over K rows; a row is put into the single-run template model and
    optimizer to evaluate it with the trainer's own `evaluate` and to checkpoint it in the single-run format."""

    def __init__(self, members: Sequence[Member], starts: Sequence[Start], template: LLaMA, opt: torch.optim.Optimizer):
        first = members[0].dir.run
        self.first, self.template, self.opt = first, template, opt
        self.device, self.amp = first.device, first.amp
        cfg = first.model_cfg
        self.runs = [m.dir.run for m in members]
        self.params = PackedParams(template, [s.row for s in starts], self.device)
        self.adam = PackedAdamW(
            len(members),
            self.params.flat.shape[1],
            self.params.n_decay,
            first.optim.betas,
            first.optim.eps,
            self.device,
        )
        self.adam.steps = members[0].state.step
        for k, start in enumerate(starts):
            self._put_moments(k, start.moments)
        self.step = PackedStep(
            self.params,
            self.adam,
            cfg,
            rope_of(template),
            [float(r.optim.weight_decay) for r in self.runs],
            [float(r.optim.grad_clip) for r in self.runs],
            self.device,
            self.amp,
            compile=first.train.compile,
        )
        self.micro_seqs = first.batch_size // first.accum // cfg.seq_len
        self.val_set = first.data.val_set(
            seq_len=cfg.seq_len, eval_tokens=first.train.eval_tokens, batch_seqs=self.micro_seqs
        )

    def _put_moments(self, k: int, moments: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        for n, (m1, m2) in moments.items():
            a, b = self.params.offsets[n]
            self.adam.m[k, a:b], self.adam.v[k, a:b] = m1.reshape(-1), m2.reshape(-1)

    def micro_batch(self, step: int, micro: int) -> Batch:
        f = self.first
        return f.data.train_batch(
            step=step, micro=micro, accum=f.accum, micro_seqs=self.micro_seqs, seq_len=f.model_cfg.seq_len, seed=f.seed
        )

    def __call__(self, micro_batches: Sequence[Batch], lrs: Sequence[float]) -> list[StepOutput]:
        losses, norms = self.step(micro_batches, lrs)  # (K, accum), (K,)
        return [StepOutput(losses=losses[k], grad_norm=norms[k]) for k in range(len(lrs))]

    def keep(self, rows: list[int]) -> None:
        self.step.keep(rows)
        self.runs = [self.runs[k] for k in rows]

    def snapshot(self) -> tuple:
        st, adam = self.step, self.adam
        return (self.params.flat.clone(), adam.m.clone(), adam.v.clone(), adam.steps, list(self.runs), st.wds, st.clips)

    def restore(self, snap: tuple) -> None:
        flat, m, v, steps, runs, wds, clips = snap
        self.params.flat = flat.clone()
        self.params._make_views()
        self.adam.m, self.adam.v, self.adam.steps = m.clone(), v.clone(), steps
        self.runs, self.step.wds, self.step.clips = list(runs), list(wds), list(clips)

    def load_row(self, k: int) -> None:
        """Put row k into the template model and optimizer: the single-run format for evaluation and checkpoints."""
        row, adam, opt = self.params.row(k), self.adam, self.opt
        with torch.no_grad():
            for n, p in self.template.named_parameters():
                p.copy_(row[n])
        opt.state.clear()
        if adam.steps:
            for n, p in self.template.named_parameters():
                a, b = self.params.offsets[n]
                opt.state[p] = {
                    "step": torch.tensor(float(adam.steps), dtype=torch.float32, device=self.device),
                    "exp_avg": adam.m[k, a:b].view_as(p).clone(),
                    "exp_avg_sq": adam.v[k, a:b].view_as(p).clone(),
                }
        run = self.runs[k]
        for g in opt.param_groups:
            g["lr"] = float(run.optim.lr)
            g["weight_decay"] = float(run.optim.weight_decay) if g["weight_decay"] else 0.0

    def evaluate(self, k: int) -> tuple[float, int]:
        self.load_row(k)
        return evaluate(self.template, self.val_set.batches(), self.device, self.amp, Dist())

    def save(self, k: int, member: Member, name: str = CKPT_NAME) -> None:
        """Checkpoint row k as `member`'s, in the single-run format (into its dir, under its config hash)."""
        member.state.wall_time_s = member.dir.wall_time()
        self.load_row(k)
        save_checkpoint(member.dir.path, checkpoint_state(self.template, self.opt, member.spec, member.state), name)

    def load(self, k: int, run_dir: Path, config_hash: str, name: str = CKPT_NAME) -> LoopState:
        """Row k from a single-run checkpoint (a branch's own, or its trunk's at the branch point): its loop state;
        step 0 and the row unchanged without a usable one. The pack's rows stand at one step: the loaded one."""
        start = read_start(self.template, self.opt, run_dir, config_hash, name)
        if start is None:
            return LoopState()
        self.params.set_row(k, start.row)
        self.adam.m[k].zero_()
        self.adam.v[k].zero_()
        self._put_moments(k, start.moments)
        self.adam.steps = start.state.step
        return start.state

    def has(self, run_dir: Path, config_hash: str, name: str = CKPT_NAME) -> bool:
        return has_checkpoint(run_dir, config_hash, name)

    def drop(self, run_dir: Path, name: str) -> None:
        drop_checkpoint(run_dir, name)


def pack_job(cfg: DictConfig, sweep_dir: Path) -> list[dict]:
    """The sweep's task for a pack: cfg is the pack's job config with `pack.run_ids` and `pack.lrs` (one per run);
    each run is cfg with its own run.id and optim.lr, trained in sweep_dir/<run id>."""
    run_ids, lrs = list(cfg.pack.run_ids), [float(x) for x in cfg.pack.lrs]
    if len(run_ids) != len(lrs) or not run_ids:
        raise ValueError(f"pack.run_ids ({len(run_ids)}) and pack.lrs ({len(lrs)}) must be non-empty and of one length")
    base: dict[str, Any] = cast(dict, OmegaConf.to_container(cfg, resolve=False))
    base.pop("pack", None)
    cfgs = []
    for rid, lr in zip(run_ids, lrs, strict=True):
        c = OmegaConf.create(base)
        c.run.id, c.optim.lr = rid, lr
        cfgs.append(c)
    return train_pack(cfgs, [sweep_dir / rid for rid in run_ids])
