"""Training a pack: K runs of one shape, data stream and step count trained together, each in its own run directory
(scaling.run.lifecycle.RunDir) and driven by the one loop (scaling.run.loop.run_loop) through a K-row Stepper."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import DictConfig, OmegaConf

from model import LLaMA
from scaling.base.lock import RunLocked
from scaling.run.checkpoint import load_checkpoint, save_checkpoint
from scaling.run.distributed import Dist
from scaling.run.lifecycle import RunDir
from scaling.run.loop import LoopState, Member, checkpoint_state, evaluate, restore_state, run_loop
from scaling.run.pack.model import PackedParams, rope_of
from scaling.run.pack.optim import PackedAdamW, PackedStep
from scaling.run.setup import RunSetup, loop_spec, setup_run
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
    shared = {
        group: (
            {k: v for k, v in values.items() if (group, k) not in PER_RUN_KEYS} if isinstance(values, dict) else values
        )
        for group, values in resolved.items()
        if group != "pack"
    }
    return repr(sorted(shared.items(), key=lambda kv: kv[0]))


def check_packable(runs: Sequence[RunSetup]) -> None:
    """One-line ValueError unless the runs share everything but their per-run keys (and run single-process)."""
    first = runs[0]
    for r in runs[1:]:
        if pack_key(r.resolved) != pack_key(first.resolved):
            diff = sorted(
                f"{g}.{k}"
                for g in r.resolved
                if isinstance(r.resolved[g], dict)
                for k in r.resolved[g]
                if (g, k) not in PER_RUN_KEYS and r.resolved[g].get(k) != (first.resolved.get(g) or {}).get(k)
            )
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


def _train_claimed(dirs: dict[int, RunDir], results: dict[int, dict], ids: dict[int, str]) -> None:
    """Restore each run from its checkpoint (or the pack's shared init), then train the runs in groups that stand at
    the same step; a failure is recorded in every run of its group that has no record yet."""
    first = next(iter(dirs.values())).run
    torch.manual_seed(first.seed)
    template = LLaMA(first.model_cfg).to(first.device)  # the init every run of the pack starts from (same seed)
    init = {n: t.detach().clone() for n, t in template.state_dict().items()}
    opt = build_optimizer(
        template, first.optim.lr, first.optim.betas, first.optim.eps, first.optim.weight_decay, first.device
    )
    starts: dict[int, tuple[LoopState, dict, dict]] = {}
    for i, rd in dirs.items():
        ckpt = load_checkpoint(rd.path, rd.run.config_hash)
        if ckpt:
            state = restore_state(template, opt, ckpt)
            row = {n: t.detach().clone() for n, t in template.named_parameters()}
            moments = {
                n: (opt.state[p]["exp_avg"].clone(), opt.state[p]["exp_avg_sq"].clone())
                for n, p in template.named_parameters()
                if p in opt.state
            }
            opt.state.clear()
            starts[i] = (state, row, moments)
        else:
            starts[i] = (LoopState(), init, {})
    by_step: dict[int, list[int]] = {}
    for i, (state, _, _) in starts.items():
        by_step.setdefault(state.step, []).append(i)
    for step in sorted(by_step):
        group = by_step[step]
        for i in group:
            dirs[i].extra["packed_with"] = [ids[j] for j in group if j != i]
        members = [Member(dir=dirs[i], spec=loop_spec(dirs[i].run), state=starts[i][0]) for i in group]
        try:
            stepper = PackStepper(members, [starts[i][1] for i in group], [starts[i][2] for i in group], template, opt)
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


class PackStepper:
    """The Stepper of a pack: one PackedStep over K rows; a row is put into the single-run template model and
    optimizer to evaluate it with the trainer's own `evaluate` and to checkpoint it in the single-run format."""

    def __init__(
        self,
        members: Sequence[Member],
        rows: Sequence[dict],
        moments: Sequence[dict],
        template: LLaMA,
        opt: torch.optim.Optimizer,
    ):
        first = members[0].dir.run
        self.first, self.template, self.opt = first, template, opt
        self.device, self.amp = first.device, first.amp
        cfg = first.model_cfg
        self.runs = [m.dir.run for m in members]
        self.params = PackedParams(template, rows, self.device)
        self.adam = PackedAdamW(
            len(members),
            self.params.flat.shape[1],
            self.params.n_decay,
            first.optim.betas,
            first.optim.eps,
            self.device,
        )
        self.adam.steps = members[0].state.step
        for k, mom in enumerate(moments):
            for n, (m1, m2) in mom.items():
                a, b = self.params.offsets[n]
                self.adam.m[k, a:b], self.adam.v[k, a:b] = m1.reshape(-1), m2.reshape(-1)
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

    def save(self, k: int, member: Member) -> None:
        member.state.wall_time_s = member.dir.wall_time()
        self.load_row(k)
        save_checkpoint(member.dir.path, checkpoint_state(self.template, self.opt, member.spec, member.state))


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
