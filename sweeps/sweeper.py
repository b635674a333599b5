"""The Hydra Sweeper behind `python -m scaling.sweep +isoflop=C` / `+hparams=C`.

It turns budgets into a plan (sweeps.plan), prints it and writes plan.csv, then hands the points to whatever
launcher is configured (basic, joblib, submitit_local, submitit_slurm) as ordinary override lists, so every Hydra
launcher works unchanged. Points whose result.json is already finished for the same config are skipped before
launch (train_run checks again); the sweep reports progress with an ETA and a summary at the end.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from model import ModelConfig
from model.shapes import ShapeRule
from scaling.base.cli import fmt_seconds
from scaling.base.configs import node_dict
from scaling.base.lock import describe, live_holder, mark_sweep_process
from scaling.base.record import FINISHED, config_hash, read_result
from scaling.data import prepare_data, resolve_vocab
from scaling.data.corpora import open_corpus
from scaling.data.settings import DataSettings
from scaling.run.config import TrainConfig
from scaling.run.setup import check_config

from . import feasible, trunk_packs
from .config import SweepConfig
from .console import quiet_jobs, short_job_lines
from .extend import Extension, extend, unbracketed
from .laws import Laws
from .packing import Unit, pack_id, pack_overrides, plan_units, unit_seconds
from .plan import Point, ShapeHparams, adopt_legacy_ids, choose_rule, plan
from .reuse import Trunk, budget_groups, isoflop_hparams, parse_reuse, plan_trunks, reuse_cost
from .seeds import point_losses, with_seeds
from .sizing import JobLimits, Sizing, size_points
from .sizing import report as sizing_report
from .table import format_table, rows, write_csv
from .throughput import SEQS_LO, Throughput, cached, resolve_device, shape_key

KINDS = ("hparams", "isoflop")  # hparams first: DeepSeek's order when both are given
# Above any training run ever published (~5e25 FLOPs) by 100x: a larger budget is a typo, and planning it would
# give absurd step counts (1e40 planned 1e21 steps).
MAX_BUDGET = 1e28


class SweepFailed(RuntimeError):
    """Some runs failed (recorded in their result.json); rerunning the same command retries exactly those."""


def parse_budget(key: str, value: Any) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        C = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"+{key}={value!r} is not a number; give a compute budget in FLOPs, e.g. +{key}=1e17"
        ) from None
    if not (C > 0 and math.isfinite(C)):
        raise ValueError(f"+{key}={value!r} must be a positive, finite number of FLOPs, e.g. +{key}=1e17")
    if C > MAX_BUDGET:
        raise ValueError(
            f"+{key}={value!r} is above the largest budget a sweep plans ({MAX_BUDGET:.0e} FLOPs, 100x "
            f"any published training run); check the exponent"
        )
    return C


def split_arguments(arguments: list[str]) -> tuple[list[tuple[str, float]], list[str]]:
    """(kind, budget) pairs from +isoflop=/+hparams= (scalar, [list] or Hydra sweep a,b), and the other overrides."""
    wants: list[tuple[str, float]] = []
    rest: list[str] = []
    for o in OverridesParser.create().parse_overrides(arguments):
        if o.key_or_group in KINDS:
            values = list(o.sweep_iterator()) if o.is_sweep_override() else o.value()
            for v in values if isinstance(values, list) else [values]:
                wants.append((o.key_or_group, parse_budget(o.key_or_group, v)))
        elif o.is_sweep_override():
            raise ValueError(
                f"'{o.input_line}': scaling.sweep only sweeps +isoflop/+hparams budgets; "
                f"run one sweep per value of {o.key_or_group}"
            )
        else:
            rest.append(str(o.input_line))
    if not wants:
        raise ValueError("nothing to sweep: give +isoflop=C and/or +hparams=C (C in FLOPs, e.g. +isoflop=1e17)")
    order = {k: i for i, k in enumerate(KINDS)}
    return sorted(dict.fromkeys(wants), key=lambda w: (order[w[0]], w[1])), rest


def check_overrides(passthrough: list[str], points: list[Point]) -> None:
    """A user override of a key the plan sets for every run (optim.lr, train.batch_size, ...) would be replaced
    silently: refuse it, naming it."""
    # `seed=` is the sweep's first seed (sweep.seeds numbers the others from it), never replaced
    planned = {o.split("=", 1)[0] for p in points[:1] for o in p.overrides()} - {"seed"}
    for o in OverridesParser.create().parse_overrides(passthrough):
        if o.key_or_group in planned:
            raise ValueError(
                f"'{o.input_line}': the sweep plan sets {o.key_or_group} for every run, so this override "
                f"would be ignored; remove it (the grid is shaped by sweep.* keys)"
            )


def check_job(job: DictConfig, data: bool) -> TrainConfig:
    """What a run validates before writing anything, checked before anything is launched: bad input stops the
    sweep with one line (exit 2) instead of failing every run. `data` also opens the corpus (once per sweep).
    Returns the run's typed train config (the sweep's devices, threads and precision are the runs')."""
    c, _, train, _ = check_config(
        OmegaConf.masked_copy(job, [str(k) for k in job if k != "hydra"])
    )  # hydra.* resolves at launch
    if data:
        open_corpus(DataSettings.from_cfg(c["data"]))
    return train


def check_writable(sweep_dir: Path) -> None:
    """A read-only sweep.dir is bad input, found before measuring, tokenizing or launching anything."""
    existing = sweep_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK):
        raise ValueError(
            f"cannot write to sweep.dir={sweep_dir} ({existing} is not writable); give a writable sweep.dir=..."
        )


def training_hash(cfg: DictConfig) -> str:
    """The config hash train_run will compute for this job config (scaling.base.record.config_hash)."""
    return config_hash(
        {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "data", "optim", "train")}
        | {"seed": cfg.seed}
    )


class ScalingSweeper(Sweeper):
    # Set by setup() before any other method runs (Hydra's base class types them Optional for its own sweepers).
    config: DictConfig
    hydra_context: HydraContext
    launcher: Launcher
    sc: SweepConfig  # the sweep.* keys, typed and validated once (sweeps.config), set first thing in sweep()
    train: TrainConfig  # the first job's validated train.* (check_config): device, threads, dtype, eval_tokens
    base: ModelConfig  # the model every planned shape is built from, with the runs' vocabulary

    def __init__(self, max_batch_size: int | None = None) -> None:
        self.max_batch_size = max_batch_size  # jobs per launch call; null -> 1 (basic), all (joblib, cluster)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # ---- planning (nothing runs until everything below has been validated) ----

    def make_plan(
        self, wants: list[tuple[str, float]], reuse: frozenset[str] = frozenset()
    ) -> tuple[list[Point], ShapeRule, Laws]:
        """Every budget's points at the sweep's first seed; `reuse` (sweeps.reuse.parse_reuse) adds its rules."""
        sc = self.sc
        settings = dataclasses.replace(sc.settings, lattice=True) if "hparams" in reuse else sc.settings
        laws = Laws.load(sc.laws)
        for warning in laws.check([C for _, C in wants]):  # implausible laws: refused above, named here
            print(f"warning: {warning}")
        # The vocabulary the runs will use: a pretrained data.tokenizer sets data.vocab_size (resolve_vocab), and
        # with it N2, the throughput cache key, every time estimate and the GPU sizing of the plan.
        self.base = base = ModelConfig.from_dict(node_dict(resolve_vocab(self.config).model))
        rule = choose_rule(sc.shape_rule, sc.rules, wants, laws, base, settings)
        # sweep.reuse: the budgets of a group share one model (sweeps.reuse), so their grids can share trunks
        hp_budgets = [C for kind, C in wants if kind == "hparams"]
        model_C = budget_groups(hp_budgets, sc.reuse_span) if "hparams" in reuse else {}

        def planned(shared: dict[float, dict[tuple[int, int], ShapeHparams]]) -> list[Point]:
            return [
                p for kind, C in wants for p in plan(kind, C, laws, rule, base, settings, model_C.get(C), shared.get(C))
            ]

        points = planned({})
        if "isoflop" in reuse:  # a shape's lr and batch across the budgets whose profiles hold it (sweeps.reuse)
            points = planned(isoflop_hparams(points, laws, base.seq_len, settings.min_steps, sc.reuse_span))
        return points, rule, laws

    def job_state(self, overrides: list[str], first: bool = False) -> tuple[Path, str]:
        """Compose the job's config (as the launcher will: errors surface now), validate it and classify its run
        dir: todo, done, busy (a live process owns it: scaling.base.lock) or conflict."""
        job = resolve_vocab(self.hydra_context.config_loader.load_sweep_config(self.config, overrides))
        train = check_job(job, data=first)
        if first:
            self.train = train
        run_dir = Path(str(job.hydra.sweep.dir)) / str(job.hydra.sweep.subdir)
        prev = read_result(run_dir)
        if live_holder(run_dir) is not None and (prev is None or prev.get("status") not in FINISHED):
            return run_dir, "busy"
        if prev is None:
            return run_dir, "todo"
        if prev.get("config_hash") != training_hash(job):
            return run_dir, "conflict"
        return run_dir, "done" if prev.get("status") in FINISHED else "todo"

    def sweep(self, arguments: list[str]) -> dict[str, Any]:
        """Plan (everything validated before anything is written), write plan.csv and print the plan; then, unless
        sweep.dry_run, launch it and extend the grids whose best run sits at an edge (sweeps.extend)."""
        wants, passthrough = split_arguments(arguments)
        self.sc = SweepConfig.from_cfg(node_dict(self.config.sweep))  # every sweep.* key, before anything is written
        sw = self._plan(wants, passthrough)
        self._replay_rounds(sw)
        self._check_runs(sw)
        self._tabulate(sw)
        self._report(sw)
        units = self._units(sw)
        if self.sc.dry_run:
            if self.sc.extend:
                print(
                    f"sweep.extend={self.sc.extend}: after training, a grid whose best run sits at an edge gets "
                    f"points beyond it, up to {self.sc.extend - sw.rounds} more round(s) (not in this plan)"
                )
            print("dry run: nothing trained (sweep.dry_run=false to launch)")
            return {"planned": len(sw.points)}
        return self._run(sw, units)

    def _plan(self, wants: list[tuple[str, float]], passthrough: list[str]) -> _Sweep:
        """Every run of the plan: the grids (with sweep.reuse's rules), legacy ids kept, seeds, trunks; each job's
        config composed and validated, its run dir classified."""
        cfg, sc = self.config, self.sc
        reuse = parse_reuse(sc.reuse, str(cfg.optim.schedule))
        base, rule, laws = self.make_plan(wants, reuse)
        base = adopt_legacy_ids(base, Path(str(cfg.hydra.sweep.dir)))  # runs made before ids sorted by lr
        check_overrides(passthrough, base)
        points = with_seeds(base, sc.seeds, int(cfg.seed))
        trunks: list[Trunk] = []
        if reuse:
            warmup = (float(cfg.optim.warmup_frac), int(cfg.optim.max_warmup_steps), cfg.optim.get("warmup_steps"))
            points, trunks = plan_trunks(points, *warmup, kinds=reuse)
        jobs = [passthrough + p.overrides() for p in points]
        states = [self.job_state(j, first=i == 0) for i, j in enumerate(jobs)]
        sweep_dir = Path(str(cfg.hydra.sweep.dir))
        return _Sweep(wants, passthrough, rule, laws, sweep_dir, base, list(base), points, trunks, jobs, states)

    def _replay_rounds(self, sw: _Sweep) -> None:
        """Extension rounds an earlier run of this command trained are replayed from their records (sweeps.extend is
        deterministic given them), so the plan, plan.csv and a rerun's skips include them."""
        while sw.rounds < self.sc.extend and all(st == "done" for _, st in sw.states):
            ext = self._extension(sw.base, sw.points, sw.run_dirs, sw.rule, sw.rounds + 1)
            if not ext.points:
                break
            sw.rounds += 1
            sw.base += ext.points
            new = with_seeds(ext.points, self.sc.seeds, int(self.config.seed))
            sw.points += new
            sw.jobs += [sw.passthrough + p.overrides() for p in new]
            sw.states += [self.job_state(j) for j in sw.jobs[-len(new) :]]

    @staticmethod
    def _check_runs(sw: _Sweep) -> None:
        """Bad input before anything is measured or written: a run dir holding another config, a read-only dir."""
        conflicts = [str(d) for d, s in sw.states if s == "conflict"]
        if conflicts:
            raise ValueError(
                f"{len(conflicts)} planned run(s) already hold a run of another config "
                f"(e.g. {conflicts[0]}); use another sweep.dir or remove them"
            )
        check_writable(sw.sweep_dir)

    def _tabulate(self, sw: _Sweep) -> None:
        """plan.csv's rows: each run's time estimate (measured throughput), its trunk, and its GPUs and hours."""
        sc = self.sc
        if self.train.threads:  # measure throughput with the thread count the runs will use
            torch.set_num_threads(self.train.threads)
        sw.thr = Throughput(
            [p.shape for p in sw.points],
            resolve_device(self.train.device),
            Path(os.path.expanduser(sc.throughput_cache)),
            sc.measure_max_params,
            sc.assumed_flops_per_s,
            self.train.dtype,
            sc.throughput_recheck,
        )
        sw.est = [sw.thr.seconds(p.shape, p.D, self.train.eval_tokens, p.batch_size) for p in sw.points]
        sw.table = rows(sw.points, sw.est, [s for _, s in sw.states])
        _reuse_columns(sw.table, sw.points, sw.trunks)
        # GPUs and hours per point against the launcher's job size and time limit (sweeps.sizing), in plan.csv too.
        sw.limits = JobLimits.from_launcher(node_dict(self.config.hydra.launcher, resolve=False))
        sw.sizings = size_points(sw.points, sw.seconds, sw.limits, sc.gpu_memory_gb)
        for r, z in zip(sw.table, sw.sizings, strict=True):
            r |= {"gpus": z.gpus, "gpu_hours": round(z.gpu_hours, 4), "cannot_finish": z.problem or ""}

    def _report(self, sw: _Sweep) -> None:
        """Tokenize, write plan.csv, print the plan and what it can find (sizing, repeated data, feasibility)."""
        sc = self.sc
        # Tokenize once, here, so the launched runs (64 array jobs or one) only read the cache; it also gives each
        # point's epochs over the training split, shown in the plan and warned about before anything trains.
        job0 = resolve_vocab(self.hydra_context.config_loader.load_sweep_config(self.config, sw.jobs[0]))
        data = prepare_data(job0.data, progress=True)
        sw.train_tokens = tokens = data.train_tokens_count
        for r in sw.table:
            r["epochs"] = round(r["D"] / tokens, 4)
        self._write_plan(sw.sweep_dir, sw.table)
        self._print_plan(sw.wants, sw.points, sw.rule, sw.laws, sw.table, sw.thr, sw.sweep_dir)
        if sw.limits.gpus is not None or sw.thr.device.type == "cuda" or not sw.thr.measured:  # a GPU plan/launcher
            print("\n".join(sizing_report(sw.sizings, sw.limits, sc.assumed_flops_per_s, sc.gpu_memory_gb)))
        repeats = [r["epochs"] for r in sw.table if r["epochs"] > 1]
        if repeats:
            print(
                f"warning: {len(repeats)} of {len(sw.table)} runs repeat their training data (up to "
                f"{max(repeats):.2f} epochs over {tokens:,} tokens of {data.dataset_fingerprint}), "
                "so they are not clean scaling points; use a larger corpus (data=files data.path=...) or smaller "
                "budgets"
            )
        # Feasible before it spends (sweeps.feasible): budgets whose grids cannot bracket, and the data's limit.
        lines = feasible.report(
            sw.wants, sw.planned, sw.laws, sw.rule, self.base, sc.settings, tokens, data.dataset_fingerprint
        )
        print("\n".join(lines))
        if sc.seeds > 1:
            seed = int(self.config.seed)
            print(f"seeds: every point trained with {sc.seeds} seeds ({seed}..{seed + sc.seeds - 1})")

    def _units(self, sw: _Sweep) -> list[Unit]:
        """The launcher jobs for the runs still to do, in plan order: a trunk with its branches, a pack, or a run;
        and what sharing and packing save."""
        todo = [i for i, (_, s) in enumerate(sw.states) if s == "todo"]
        in_trunk = {i for t in sw.trunks for i in t.members}
        alone = [i for i in todo if i not in in_trunk]
        probe = self._pack_probe()
        units = trunk_packs.trunk_units(sw.points, sw.trunks, todo, self.sc.pack, probe, sw.seconds)  # sweep.pack
        units += plan_units(sw.points, alone, self.sc.pack, probe)
        units.sort(key=lambda u: min(u.members))
        self._print_reuse(sw.table, len(sw.trunks))
        self._print_packs(sw.points, units, sw.seconds)
        for line in trunk_packs.report(sw.points, units, sw.seconds):
            print(line)
        return units

    def _run(self, sw: _Sweep, units: list[Unit]) -> dict[str, Any]:
        """Launch every unit, then the extension rounds; the sweep's summary."""
        for (run_dir, s), p in zip(sw.states, sw.points):
            if s == "busy":
                print(f"skip {p.run_id}: {run_dir} is being trained by {describe(live_holder(run_dir) or {})}")
        mark_sweep_process()  # local workers (joblib) watch this pid and stop with the sweep (scaling.base.lock)
        by_id = {t.id: t for t in sw.trunks}
        unit_jobs = [
            trunk_packs.trunk_job_overrides(sw.passthrough, sw.points, by_id, u)
            if u.trunk
            else pack_overrides(sw.passthrough, sw.points, u)
            if u.packed
            else sw.jobs[u.members[0]]
            for u in units
        ]
        summary = self._launch(sw.points, units, unit_jobs, sw.seconds, sw.run_dirs, sw.sweep_dir)
        return self._extend_rounds(sw, summary)

    # ---- extension (sweeps.extend): bracketed before it reports ----

    def _losses(self, points: list[Point], run_dirs: list[Path]) -> dict[str, float | None]:
        """val_loss of every finished run by run id (None for a diverged one)."""
        out: dict[str, float | None] = {}
        for p, d in zip(points, run_dirs):
            rec = read_result(d) or {}
            if rec.get("status") in FINISHED:
                out[p.run_id] = rec.get("val_loss") if rec.get("status") == "completed" else None
        return out

    def _extension(
        self, base: list[Point], points: list[Point], run_dirs: list[Path], rule: ShapeRule, round_no: int
    ) -> Extension:
        loss = point_losses(base, self.sc.seeds, int(self.config.seed), self._losses(points, run_dirs))
        ext = extend(base, loss, rule, self.base, self.sc.settings, round_no)
        return dataclasses.replace(ext, points=adopt_legacy_ids(ext.points, Path(str(self.config.hydra.sweep.dir))))

    def _extend_rounds(self, sw: _Sweep, summary: dict[str, Any]) -> dict[str, Any]:
        """Up to sweep.extend rounds: points beyond every edge that holds a grid's best run, planned, added to
        plan.csv (column `added` says why) and trained; then every grid still unbracketed is named."""
        sc, seed0 = self.sc, int(self.config.seed)
        added = 0
        while sw.rounds < sc.extend:
            ext = self._extension(sw.base, sw.points, sw.run_dirs, sw.rule, sw.rounds + 1)
            for line in ext.stuck:
                print(f"warning: {line}")
            if not ext.points:
                break
            sw.rounds += 1
            new = with_seeds(ext.points, sc.seeds, seed0)
            print(f"extend: round {sw.rounds} of sweep.extend={sc.extend}: {len(new)} run(s)")
            for line in ext.added:
                print(f"  {line}")
            more = self._launch_round(sw, ext.points, new)
            added += len(new)
            for k in ("completed", "diverged", "failed"):
                summary[k] = summary.get(k, 0) + more.get(k, 0)
        loss = point_losses(sw.base, sc.seeds, seed0, self._losses(sw.points, sw.run_dirs))
        for g in unbracketed(sw.base, loss):
            print(
                f"warning: {g.label} still does not bracket its optimum after {sw.rounds} extension round(s) "
                f"(sweep.extend={sc.extend}): {g.why}"
            )
        if sw.rounds:
            print(f"extended: {sw.rounds} round(s), {added} run(s) added this time (plan.csv column `added` says why)")
        return summary | {"extension_rounds": sw.rounds}

    def _launch_round(self, sw: _Sweep, base: list[Point], new: list[Point]) -> dict[str, Any]:
        """One extension round's runs (`new`: `base`'s points at every seed): validated, added to plan.csv and
        trained alone or packed (never in a trunk)."""
        sc = self.sc
        jobs = [sw.passthrough + p.overrides() for p in new]
        states = [self.job_state(j) for j in jobs]
        conflicts = [str(d) for d, st in states if st == "conflict"]
        if conflicts:
            raise ValueError(
                f"{len(conflicts)} extension run(s) already hold a run of another config (e.g. {conflicts[0]}); "
                f"use another sweep.dir or remove them"
            )
        est = [sw.thr.seconds(p.shape, p.D, self.train.eval_tokens, p.batch_size) for p in new]
        table = rows(new, est, [st for _, st in states])
        sizings = size_points(new, [e[0] for e in est], sw.limits, sc.gpu_memory_gb)
        for r, z in zip(table, sizings, strict=True):
            r |= {"gpus": z.gpus, "gpu_hours": round(z.gpu_hours, 4), "cannot_finish": z.problem or ""}
            r["epochs"] = round(r["D"] / sw.train_tokens, 4)
        _reuse_columns(table, new, [])
        sw.table += table
        self._write_plan(sw.sweep_dir, sw.table)
        print(format_table(table))
        sw.base += base
        sw.points += new
        sw.states += states
        todo = [i for i, (_, st) in enumerate(states) if st == "todo"]
        units = plan_units(new, todo, sc.pack, self._pack_probe())
        unit_jobs = [pack_overrides(sw.passthrough, new, u) if u.packed else jobs[u.members[0]] for u in units]
        return self._launch(new, units, unit_jobs, [e[0] for e in est], [d for d, _ in states], sw.sweep_dir)

    def _write_plan(self, sweep_dir: Path, table: list[dict[str, Any]]) -> None:
        try:
            write_csv(sweep_dir / "plan.csv", table)
        except OSError as e:  # a read-only or full disk: say so before launching anything
            raise ValueError(
                f"cannot write to sweep.dir={sweep_dir} ({e.strerror or e}); give a writable sweep.dir=..."
            ) from None

    def _pack_probe(self):
        """speedup(point, K) for sweeps.packing: packed vs run-after-run step time of the point's shape and batch on
        the runs' device, measured once per shape, batch and K on this machine and kept in the throughput cache
        (sweep.throughput_cache), so that a fresh sweep here packs as the last one did; None for models too big to
        measure here."""
        from scaling.run.pack.speed import measure_speedup
        from scaling.run.parallel import resolve_amp

        device = resolve_device(self.train.device)
        amp = resolve_amp(self.train.dtype, device)
        path = Path(os.path.expanduser(self.sc.throughput_cache))

        def speedup(p: Point, K: int) -> float | None:
            if p.shape.flops.params > self.sc.measure_max_params:
                return None
            seqs = p.batch_size // p.shape.cfg.seq_len
            key = f"pack {K}|{shape_key(device, amp, p.shape)} seqs {seqs}"
            return cached(path, key, lambda: measure_speedup(p.shape.cfg, K, seqs, device, amp))

        return speedup

    @staticmethod
    def _print_reuse(table: list[dict[str, Any]], trunks: int) -> None:
        """What sharing the first stage saves (sweeps.reuse): trunks, branches, tokens, time and GPU-hours with and
        without (plan.csv's rows; sweeps.reuse.reuse_cost)."""
        if not trunks:
            return
        branches = sum(1 for r in table if r["trunk"])
        tokens, without = reuse_cost(table, "D"), sum(float(r["D"]) for r in table)
        print(
            f"reuse (sweep.reuse; scaling.run.trunk): {trunks} trunks serve {branches} runs as branches, "
            f"{len(table) - branches} runs alone; tokens {tokens:.3g} with reuse vs {without:.3g} without "
            f"({without / tokens:.2f}x fewer); est. {fmt_seconds(reuse_cost(table, 'est_seconds'))} vs "
            f"{fmt_seconds(sum(r['est_seconds'] for r in table))} run after run; "
            f"{reuse_cost(table, 'gpu_hours'):,.0f} vs {sum(r['gpu_hours'] for r in table):,.0f} GPU-hours"
        )

    @staticmethod
    def _print_packs(points: list[Point], units: list[Unit], est: list[float]) -> None:
        packs = [u for u in units if u.packed]
        if not packs:
            return
        alone = sum(est[i] for u in units for i in u.members)
        print(
            f"packs (sweep.pack; scaling.run.pack): {len(packs)} packs of {sum(len(u.members) for u in packs)} runs, "
            f"{len(units) - len(packs)} runs alone"
        )
        for u in packs:
            print(
                f"  {pack_id(points, u)}: {len(u.members)} runs, lr {points[u.members[0]].lr:.3g}.."
                f"{points[u.members[-1]].lr:.3g}, est. {fmt_seconds(unit_seconds(u, est))} "
                f"(measured {u.speedup:.2f}x faster than run after run)"
            )
        print(
            f"est. total {fmt_seconds(sum(unit_seconds(u, est) for u in units))} with packs "
            f"({fmt_seconds(alone)} run after run)"
        )

    def _print_plan(self, wants, points, rule, laws, table, thr, sweep_dir) -> None:
        budgets = ", ".join(f"{k} C={C:.3g}" for k, C in wants)
        print(
            f"sweep: {budgets}: {len(points)} runs; laws {laws.source}; shape rule {rule.name}; "
            f"seq_len {points[0].shape.cfg.seq_len}; launcher {type(self.launcher).__name__}"
        )
        for note in dict.fromkeys(n for p in points for n in p.notes):
            print(f"note: {note}")
        print(format_table(table))
        total = sum(r["est_seconds"] for r in table if r["state"] != "done")
        if thr.measured:
            how = (
                f"on {thr.device}, measured "
                + "; ".join(f"{lo:.3g}-{hi:.3g} FLOP/s at M={m:.3g}" for m, lo, hi in thr.speeds)
                + f" (batches of {SEQS_LO}-{thr.hi} sequences; each run at its own batch size)"
            )
        else:
            how = (
                f"* = assumed {thr.assumed:.3g} FLOP/s (sweep.assumed_flops_per_s): models above "
                f"sweep.measure_max_params parameters are not measured here"
            )
        print(f"est. total {fmt_seconds(total)} run after run ({how})")
        if thr.recheck_note:
            print(thr.recheck_note)
        print(f"plan: {sweep_dir / 'plan.csv'}")

    # ---- launching ----

    def _batch_size(self, n: int) -> int:
        if self.max_batch_size:
            return int(self.max_batch_size)
        name = type(self.launcher).__name__
        if name == "BasicLauncher":
            return 1  # sequential anyway: one job per call gives progress after every run
        # joblib and cluster launchers: everything in one call. joblib then hands each worker the next job as soon as
        # it is free; in batches of n_jobs every batch waited for its slowest job (measured on the CPU demo: 19% of
        # stage 2's wall time idle). Progress comes from the run dirs meanwhile (_Watcher).
        return max(n, 1)

    def _launch(
        self,
        points: list[Point],
        units: list[Unit],
        jobs: list[list[str]],
        est: list[float],
        run_dirs: list[Path],
        sweep_dir: Path,
    ) -> dict[str, Any]:
        """Launch one job per unit (a run, a pack of runs: sweeps.packing, or a trunk: sweeps.reuse); report every
        run."""
        todo = sum(len(u.members) for u in units)
        prog = _Progress(len(points) - todo, todo, est_left=sum(unit_seconds(u, est) for u in units))
        size, idx = self._batch_size(len(units)), 0
        jobs = quiet_jobs(jobs, parallel=size > 1)  # side-by-side runs draw no progress bars (sweeps.console)
        # Unit indices: in plan order for one job at a time; longest first when workers take the next job as they
        # free up (joblib, clusters), so that no long job starts last while the other workers have run dry.
        pending = list(range(len(units)))
        if size > 1:
            pending.sort(key=lambda u: -unit_seconds(units[u], est))
        while pending:
            batch_ix, pending = pending[:size], pending[size:]
            batch_ix, returns, again = self._call(units, batch_ix, jobs, idx, run_dirs, est, prog)
            pending = again + pending
            idx += len(batch_ix)
            for u, jr in zip(batch_ix, returns):
                for i in units[u].members:
                    status, line = self._outcome(run_dirs[i], jr)
                    prog.say(status, f"{points[i].run_id}: {line}{_how(units[u])}")
            prog.advance([units[u] for u in batch_ix], est)
        summary = {k: prog.counts[k] for k in ("completed", "diverged", "failed", "skipped")}
        print(
            f"sweep summary: {len(points)} runs: "
            + ", ".join(f"{v} {k}" for k, v in summary.items())
            + f" in {fmt_seconds(time.time() - prog.t0)}; results under {sweep_dir}"
        )
        if summary["failed"]:
            raise SweepFailed(
                f"{summary['failed']} of {len(points)} runs failed (see their result.json); "
                f"rerun the same command to retry them"
            )
        return summary

    def _call(
        self,
        units: list[Unit],
        batch_ix: list[int],
        jobs: list[list[str]],
        idx: int,
        run_dirs: list[Path],
        est: list[float],
        prog: _Progress,
    ) -> tuple[list[int], list[JobReturn | None], list[int]]:
        """One launcher call for these units: (the units it answered for, their returns, units to launch again)."""
        batch = [units[u] for u in batch_ix]
        watcher = _Watcher(batch, run_dirs, est, prog.t0, prog.est_done, prog.est_left) if len(batch) > 1 else None
        try:
            with short_job_lines(jobs):  # the launcher's line per job: run id and what varies, not ~600 chars
                called = self.launcher.launch([jobs[u] for u in batch_ix], initial_job_idx=idx)
                returns: list[JobReturn | None] = list(called)
            return batch_ix, returns, []
        except Exception as e:  # a launcher-level failure (e.g. a killed cluster job): the records decide
            why = str(e).splitlines()[0] if str(e) else ""
            print(f"launch failed for {len(batch)} run(s): {type(e).__name__}: {why}")
            again = self._unfinished(units, batch_ix, run_dirs)
            kept = [u for u in batch_ix if u not in again]
            return kept, [None] * len(kept), again
        finally:
            if watcher is not None:
                watcher.stop()

    def _unfinished(self, units: list[Unit], batch_ix: list[int], run_dirs: list[Path]) -> list[int]:
        """A worker that dies (killed, out of memory) aborts a whole joblib call, with the jobs it had not started.
        When the call still finished some runs, the units it left without a record go again in a new call (each
        such call makes progress, so this ends); a unit's own failure is never retried."""
        finished = [self._recorded(units[u], run_dirs) for u in batch_ix]
        if len(batch_ix) < 2 or "finished" not in finished:
            return []
        again = [u for u, f in zip(batch_ix, finished) if f == "none"]
        if again:
            print(f"relaunching {len(again)} job(s) the failed call never finished")
        return again

    @staticmethod
    def _recorded(unit: Unit, run_dirs: list[Path]) -> str:
        """ "finished" when every run of the unit has a finished record, "none" when none has any record (or only
        an unfinished one: interrupted), else "some" (e.g. a failure its task recorded)."""
        st = [(read_result(run_dirs[i]) or {}).get("status") for i in unit.members]
        if all(x in FINISHED for x in st):
            return "finished"
        return "none" if all(x in (None, "running") for x in st) else "some"

    @staticmethod
    def _outcome(run_dir: Path, jr: JobReturn | None) -> tuple[str, str]:
        """(status, one line) of a launched run: its result.json is the truth, the JobReturn explains failures."""
        said = jr._return_value if jr is not None and jr.status == JobStatus.COMPLETED else None
        # A live process owns the run dir (scaling.base.lock): it trains it, not us. A pack job (sweeps.packing) leaves
        # such a member alone and reports for the whole pack, so its members are checked here one by one.
        packed_busy = str(said).startswith(("packed", "trunk")) and live_holder(run_dir) is not None
        if said == "busy" or packed_busy:
            return "skipped", f"skipped: being trained by {describe(live_holder(run_dir) or {})}"
        rec = read_result(run_dir) or {}
        status = rec.get("status")
        if said == "skipped" and status in FINISHED:
            return "skipped", f"skipped: already {status} (finished by another process)"
        if status in FINISHED:
            loss = rec.get("val_loss")
            return status, (
                f"{status}, val_loss {loss:.4f}" if loss is not None else status
            ) + f", {fmt_seconds(rec.get('wall_time_s') or 0)}"
        err = rec.get("error")
        if not err and jr is not None and jr.status == JobStatus.FAILED:
            err = f"{type(jr._return_value).__name__}: {jr._return_value}"
        return "failed", "failed: " + (err.splitlines()[0] if err else "no result.json")


@dataclass
class _Sweep:
    """A sweep as its steps build it (ScalingSweeper.sweep): planned, then tabulated, launched and extended."""

    wants: list[tuple[str, float]]
    passthrough: list[str]
    rule: ShapeRule
    laws: Laws
    sweep_dir: Path
    base: list[Point]  # every point at its first seed: planned, then added by extension rounds
    planned: list[Point]  # the points as planned, before any extension
    points: list[Point]  # every run (all seeds), in plan.csv order
    trunks: list[Trunk]
    jobs: list[list[str]]  # each run's overrides (a run trained alone)
    states: list[tuple[Path, str]]  # each run's dir and state (ScalingSweeper.job_state)
    rounds: int = 0  # extension rounds so far (replayed ones included)
    # set by ScalingSweeper._tabulate and _report
    thr: Throughput = field(init=False)
    est: list[tuple[float, bool]] = field(init=False)  # each run's estimated seconds, and whether measured
    table: list[dict[str, Any]] = field(init=False)  # plan.csv's rows
    limits: JobLimits = field(init=False)
    sizings: list[Sizing] = field(init=False)
    train_tokens: int = field(init=False)

    @property
    def run_dirs(self) -> list[Path]:
        return [d for d, _ in self.states]

    @property
    def seconds(self) -> list[float]:
        return [e[0] for e in self.est]


def _reuse_columns(table: list[dict[str, Any]], points: list[Point], trunks: list[Trunk]) -> None:
    """plan.csv: which trunk trains the first stage of each run, how many of its tokens, and the compute the run
    spends itself (its trunk's compute is spent once, for all its branches: `trunk_C` on every branch)."""
    for r in table:
        r |= {"trunk": "", "shared_tokens": 0, "C_spent": r["C"], "trunk_C": 0.0}
    for t in trunks:
        shared = t.shared_tokens(points)
        trunk_C = max(shared.values()) * points[t.members[0]].shape.M
        for i, tokens in shared.items():
            table[i] |= {
                "trunk": t.id,
                "shared_tokens": tokens,
                "C_spent": points[i].shape.M * (points[i].D - tokens),
                "trunk_C": trunk_C,
            }


def _how(unit: Unit) -> str:
    """How a run was trained, for its line: as a branch of a trunk, in a pack, or alone (nothing said)."""
    if unit.trunk:
        return f" (branch of {unit.trunk})"
    return f" (packed x{len(unit.members)})" if unit.packed else ""


@dataclass
class _Progress:
    """A launch's counts and its ETA: the estimated seconds of the units finished against the time they took."""

    skipped: int  # runs not launched (finished, or owned by another live process)
    todo: int  # runs launched
    est_left: float
    est_done: float = 0.0
    runs_done: int = 0
    t0: float = field(default_factory=time.time)
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.counts["skipped"] += self.skipped

    def say(self, status: str, line: str) -> None:
        self.counts[status] += 1
        print(f"[{sum(self.counts.values()) - self.skipped}/{self.todo}] {line}")

    def advance(self, units: list[Unit], est: list[float]) -> None:
        self.runs_done += sum(len(u.members) for u in units)
        seconds = sum(unit_seconds(u, est) for u in units)
        self.est_done, self.est_left = self.est_done + seconds, self.est_left - seconds
        elapsed = time.time() - self.t0
        eta = max(self.est_left, 0.0) * elapsed / self.est_done if self.est_done > 0 else math.nan
        print(
            f"progress: {self.runs_done}/{self.todo} runs, elapsed {fmt_seconds(elapsed)}, "
            f"ETA {fmt_seconds(eta) if math.isfinite(eta) else '?'}"
        )


class _Watcher:
    """While one launcher call runs many jobs, print a progress line (runs finished, ETA) whenever more of their
    run dirs hold a finished record. Read-only: it never decides an outcome; the per-run lines after the call do
    (a run finished by another sweep on the same dir counts as progress here, and as skipped there)."""

    def __init__(
        self,
        units: list[Unit],
        run_dirs: list[Path],
        est: list[float],
        t0: float,
        est_done: float,
        est_left: float,
        poll_s: float = 2.0,
    ):
        self.est = {i: unit_seconds(u, est) / len(u.members) for u in units for i in u.members}
        self.run_dirs, self.t0, self.est_done, self.est_left = run_dirs, t0, est_done, est_left
        self.total, self.poll_s = len(self.est), poll_s
        self.waiting = set(self.est)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweep-progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            done = {i for i in self.waiting if (read_result(self.run_dirs[i]) or {}).get("status") in FINISHED}
            if not done:
                continue
            self.waiting -= done
            got = sum(self.est[i] for i in done)
            self.est_done, self.est_left = self.est_done + got, self.est_left - got
            elapsed = time.time() - self.t0
            eta = max(self.est_left, 0.0) * elapsed / self.est_done if self.est_done > 0 else math.nan
            print(
                f"progress: {self.total - len(self.waiting)}/{self.total} runs of this launch finished, elapsed "
                f"{fmt_seconds(elapsed)}, ETA {fmt_seconds(eta) if math.isfinite(eta) else '?'}",
                flush=True,
            )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
