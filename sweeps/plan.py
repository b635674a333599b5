"""Sweep plans: the (shape, D, batch, lr) points of an IsoFLOP profile or a batch x lr grid at a budget C.

IsoFLOP: n_shapes targets log-spaced over `span` decades of M, centred on M_opt(C); each point trains
D = C/M tokens in whole steps of one batch size B (B_opt(C) rounded to a multiple of seq_len, lowered so the
largest model still gets min_steps steps), lr = eta_opt(C). Hparams: the shape nearest M_opt(C), D = C/M, a log grid
of batch sizes (multiples of seq_len) x peak learning rates centred on B_opt(C), eta_opt(C).

Small budgets: DeepSeek's laws put M_opt(1e10) at ~3e4 FLOPs/token, below any transformer with a useful context;
when the centred grid leaves the shape rule's range it is slid to the range's end (and the plan says so), and a
budget too small even then is an error naming the smallest feasible budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from model import ModelConfig
from model.shapes import Shape, ShapeRule, largest_shape, shape_for_M, smallest_shape

from .laws import Laws

C_TOLERANCE = 0.01  # every point's M*D is within 1% of its budget


class BudgetTooSmall(ValueError):
    pass


@dataclass(frozen=True)
class SweepSettings:
    n_shapes: int = 9  # IsoFLOP grid points
    span: float = 1.2  # decades of M covered by an IsoFLOP grid (>= 1)
    lr_points: int = 5
    batch_points: int = 5
    lr_span: float = 8.0  # largest / smallest lr of the hparams grid
    batch_span: float = 8.0  # largest / smallest batch of the hparams grid
    min_steps: int = 50  # >= 50 steps also keeps whole-step rounding of D within 1% of C/M
    # sweep.reuse: hparams grids on one lattice of lr and batch values (the grid's own spacing, anchored at 1 and at
    # seq_len) so the same (batch, lr) recurs across budgets and their runs can share a trunk (sweeps.reuse).
    lattice: bool = False

    def __post_init__(self) -> None:
        for name in ("n_shapes", "lr_points", "batch_points"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 3:
                raise ValueError(f"sweep.{name}={v!r}: a grid needs at least 3 points (default 9 shapes, 5x5 hparams)")
        if not self.span >= 1:
            raise ValueError(f"sweep.span={self.span}: an IsoFLOP grid must cover at least 1 decade of M (default 1.2)")
        for name in ("lr_span", "batch_span"):
            if not getattr(self, name) > 1:
                raise ValueError(
                    f"sweep.{name}={getattr(self, name)} must be > 1 (largest / smallest value of the grid)"
                )
        if isinstance(self.min_steps, bool) or not isinstance(self.min_steps, int) or self.min_steps < 1:
            raise ValueError(f"sweep.min_steps={self.min_steps!r} must be a positive integer")

    @classmethod
    def from_cfg(cls, node: Mapping[str, Any]) -> SweepSettings:
        return cls(**{k: node[k] for k in cls.__dataclass_fields__ if k in node})


@dataclass(frozen=True)
class Point:
    run_id: str
    sweep: str  # isoflop | hparams
    budget: float  # nominal C of the sweep point
    shape: Shape
    D: int  # tokens, a whole number of batches
    batch_size: int  # tokens per step
    lr: float
    M_opt: float  # the prediction the grid was built around (for the table)
    notes: tuple[str, ...] = field(default=())
    warmup: int | None = None  # optim.warmup_steps when fixed (the runs of a trunk warm up alike: sweeps.reuse)
    seed: int | None = None  # set when the sweep trains several seeds per point (sweep.seeds; sweeps.seeds)
    added: str = ""  # why sweep.extend added this point beyond a grid's edge (sweeps.extend); "" for planned points

    @property
    def steps(self) -> int:
        return self.D // self.batch_size

    @property
    def C(self) -> float:
        return self.shape.M * self.D

    def overrides(self) -> list[str]:
        """Hydra overrides that turn the sweep config into this point's training config."""
        s = self.shape
        return [
            f"model.n_layer={s.n_layer}",
            f"model.d_model={s.d_model}",
            f"model.n_head={s.n_head}",
            f"model.n_kv_head={s.n_kv_head}",
            "model.ffn_hidden=null",
            f"train.tokens={self.D}",
            f"train.batch_size={self.batch_size}",
            f"optim.lr={self.lr!r}",
            f"run.id={self.run_id}",
            f"run.sweep={self.sweep}",
            f"run.budget={self.budget!r}",
            *([f"optim.warmup_steps={self.warmup}"] if self.warmup is not None else []),
        ] + ([f"seed={self.seed}"] if self.seed is not None else [])

    def row(self) -> dict[str, Any]:
        s = self.shape
        return {
            "run_id": self.run_id,
            "sweep": self.sweep,
            "budget": self.budget,
            "n_layer": s.n_layer,
            "d_model": s.d_model,
            "n_head": s.n_head,
            "n_kv_head": s.n_kv_head,
            "ffn_hidden": s.cfg.ffn_hidden,
            "N2": s.flops.N2,
            "params": s.flops.params,
            "M": s.M,
            "D": self.D,
            "C": self.C,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "steps": self.steps,
            "seed": "" if self.seed is None else self.seed,
            "added": self.added,
        }


def group_overrides(
    passthrough: Sequence[str],
    rep: Point,
    job_id: str,
    lists: Mapping[str, Sequence[Any]],
    extra: Sequence[str] = (),
) -> list[str]:
    """Hydra overrides of one launcher job that trains several points (a pack: sweeps.packing; a trunk and its
    branches: sweeps.reuse): `rep`'s point under the job's id, then `extra`, then one `+<key>=[...]` list per value
    that differs between its runs (the job's task gives each run its own)."""
    own = [o for o in rep.overrides() if not o.startswith("run.id=")]
    listed = [f"+{key}={_override_value(list(values))}" for key, values in lists.items()]
    return [*passthrough, *own, f"run.id={job_id}", *extra, *listed]


def _override_value(v: Any) -> str:
    """A value as Hydra's override grammar reads it: lists (nested too) bracketed without spaces, the rest repr."""
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_override_value(x) for x in v) + "]"
    return repr(v)


def sig(x: float, digits: int = 3) -> float:
    """x rounded to `digits` significant digits: the value trained is the value printed in the run id."""
    return float(f"{x:.{digits - 1}e}")


def fmt_sig(x: float) -> str:
    """1.2e-03 style, trailing zeros dropped (the hparams run ids before sort_ids: legacy_run_ids)."""
    mant, exp = f"{x:.2e}".split("e")
    return f"{mant.rstrip('0').rstrip('.')}e{exp}"


def fmt_lr(lr: float) -> str:
    """A learning rate in plain decimals (0.00139, 0.0005, 0.00001): for rates below 1, ordering these strings
    character by character orders the rates, so `ls` lists a batch size's runs from the smallest lr up."""
    return format(Decimal(repr(lr)), "f")


def hparams_run_id(C: float, batch: int, lr: float, batch_digits: int) -> str:
    """hp_C<budget>_B<batch, zero-padded to the grid's widest>_lr<fmt_lr>: a budget's runs sort by batch, then lr."""
    return f"hp_C{C:.3g}_B{batch:0{batch_digits}d}_lr{fmt_lr(lr)}"


def legacy_run_ids(p: Point) -> list[str]:
    """The ids an hparams point may have had: before run ids sorted by lr (B unpadded, lr as 1.39e-03), and as an
    extension point before extensions kept their grid's batch padding (B unpadded); none for others."""
    if p.sweep != "hparams":
        return []
    return [f"hp_C{p.budget:.3g}_B{p.batch_size}_lr{fmt_sig(p.lr)}", hparams_run_id(p.budget, p.batch_size, p.lr, 0)]


def adopt_legacy_ids(points: list[Point], sweep_dir: Path) -> list[Point]:
    """Points whose run already lives under a legacy id (a sweep dir made before the id change) keep that id, so
    a rerun skips or resumes those runs instead of training them again under the new name."""
    out = []
    for p in points:
        if not (sweep_dir / p.run_id).exists():
            old = [i for i in legacy_run_ids(p) if i != p.run_id and (sweep_dir / i).is_dir()]
            p = replace(p, run_id=old[0]) if old else p
        out.append(p)
    return out


def whole_steps(tokens: float, batch: int, seq_len: int) -> tuple[int, int]:
    """(batch, steps) with steps*batch within 1% of tokens: batch itself when it can, else the nearest multiple of
    seq_len that can (fine when steps are few and one step is > 1% of the run)."""
    for k in range(batch // seq_len + 1):
        for b in sorted({batch - k * seq_len, batch + k * seq_len} - {0}):  # 0: no batch (and no division)
            steps = round(tokens / b)
            if b >= seq_len and steps >= 1 and abs(steps * b / tokens - 1) <= C_TOLERANCE:
                return b, steps
    raise BudgetTooSmall(
        f"cannot split {tokens:.4g} tokens into whole steps of about {batch} tokens within {C_TOLERANCE:.0%}"
    )


def iso_id(C: float, shape: Shape) -> str:
    """The run id of an IsoFLOP point (its run dir's name)."""
    return f"iso_C{C:.3g}_L{shape.n_layer}_D{shape.d_model}"


def hp_id(C: float, batch: int, lr: float, batch_digits: int = 0) -> str:
    """The run id of an hparams point (its run dir's name): hparams_run_id, the batch padded to batch_digits."""
    return hparams_run_id(C, batch, lr, batch_digits)


def round_batch(B: float, seq_len: int) -> int:
    return max(seq_len, round(B / seq_len) * seq_len)


def _grid(centre: float, span: float, n: int) -> list[float]:
    """n values log-spaced over a factor `span`, centred (geometrically) on `centre`."""
    return [centre * span ** (i / (n - 1) - 0.5) for i in range(n)]


def _lattice(centre: float, span: float, n: int, unit: float = 1.0) -> list[float]:
    """n consecutive points of the lattice unit * r^k (r: the grid's own ratio span^(1/(n-1))) centred nearest
    `centre`: grids centred anywhere share their values where they overlap."""
    r = span ** (1 / (n - 1))
    k0 = round(math.log(centre / unit, r) - (n - 1) / 2)
    return [unit * r ** (k0 + i) for i in range(n)]


def _slide(targets: list[float], lo: float, hi: float) -> tuple[list[float], str | None]:
    """Slide a log grid into [lo, hi] when it pokes out (the range is wider than the grid: checked by the caller)."""
    if targets[0] < lo:
        f = lo / targets[0]
        return [t * f for t in targets], "below"
    if targets[-1] > hi:
        f = hi / targets[-1]
        return [t * f for t in targets], "above"
    return targets, None


@dataclass(frozen=True)
class ShapeHparams:
    """sweep.reuse for IsoFLOP profiles (sweeps.reuse.isoflop_hparams): the lr and batch one shape trains with at
    every budget of its group, so that its runs differ only in D and share a trunk."""

    lr: float
    batch: int
    notes: tuple[str, ...] = ()  # said in the plan (how they were chosen, a batch lowered to leave min_steps steps)


def isoflop_points(
    C: float,
    laws: Laws,
    rule: ShapeRule,
    base: ModelConfig,
    s: SweepSettings,
    shared: Mapping[tuple[int, int], ShapeHparams] | None = None,
) -> list[Point]:
    """The profile at C: one batch B_opt(C) and lr eta_opt(C) for every shape (DeepSeek), or with `shared` (by
    (n_layer, d_model)) each shape's own lr and batch across the budgets it serves (sweep.reuse)."""
    shapes, notes = isoflop_shapes(C, laws, rule, base, s)
    if shared is None:
        B, lowered = _isoflop_batch(C, laws, shapes, base.seq_len, s)
        one = ShapeHparams(sig(laws.eta_opt(C)), B, (lowered,) if lowered else ())
        shared = {(sh.n_layer, sh.d_model): one for sh in shapes}
    hp = [shared[(sh.n_layer, sh.d_model)] for sh in shapes]
    notes += tuple(dict.fromkeys(n for h in hp for n in h.notes))
    points = []
    for sh, h in zip(shapes, hp, strict=True):
        b, steps = whole_steps(C / sh.M, h.batch, base.seq_len)
        points.append(Point(iso_id(C, sh), "isoflop", C, sh, steps * b, b, h.lr, laws.M_opt(C), notes))
    return points


def isoflop_shapes(
    C: float, laws: Laws, rule: ShapeRule, base: ModelConfig, s: SweepSettings
) -> tuple[list[Shape], tuple[str, ...]]:
    """The profile's distinct shapes, log-spaced over `span` decades of M around M_opt(C) (slid into the rule's
    range, said in the notes), each able to train min_steps sequences."""
    seq_len, M_opt = base.seq_len, laws.M_opt(C)
    lo, hi = smallest_shape(rule, base).M, largest_shape(rule, base).M
    if hi / lo < 10**s.span:
        raise ValueError(
            f"sweep.shape_rule={rule.name} spans only {math.log10(hi / lo):.2f} decades of M, less than "
            f"sweep.span={s.span}; allow more layers or a wider d_model range"
        )
    targets, slid = _slide(_grid(M_opt, 10**s.span, s.n_shapes), lo, hi)
    notes: tuple[str, ...] = (
        ()
        if slid is None
        else (
            f"M_opt(C)={M_opt:.3g} puts the grid {slid} shape rule {rule.name}'s range "
            f"[{lo:.3g}, {hi:.3g}]: grid slid to its end, not centred on M_opt",
        )
    )
    shapes = list({(sh.n_layer, sh.d_model): sh for sh in (shape_for_M(t, rule, base) for t in targets)}.values())
    if len(shapes) < 3:
        raise ValueError(
            f"isoflop grid at C={C:.3g} has only {len(shapes)} distinct shapes under shape rule "
            f"{rule.name}; raise sweep.span or use a finer rule"
        )
    D_least = C / max(sh.M for sh in shapes)
    if D_least < s.min_steps * seq_len:
        raise BudgetTooSmall(
            f"the largest model of the grid (M={max(sh.M for sh in shapes):.3g}) would train "
            f"{D_least:.3g} tokens, fewer than sweep.min_steps={s.min_steps} sequences of {seq_len}"
        )
    return shapes, notes


def _isoflop_batch(C: float, laws: Laws, shapes: list[Shape], seq_len: int, s: SweepSettings) -> tuple[int, str]:
    """One batch size per budget, as DeepSeek: B_opt(C), but small enough for min_steps steps of the largest model;
    and the note that says so when it is lowered (never silent: the batch is not the law's)."""
    B_opt, most = laws.B_opt(C), most_batch(C / max(sh.M for sh in shapes), seq_len, s.min_steps)
    B = min(round_batch(B_opt, seq_len), most)
    if B == round_batch(B_opt, seq_len):
        return B, ""
    return B, (
        f"B_opt(C={C:.3g})={B_opt:.3g} leaves the largest model fewer than {s.min_steps} steps: batch lowered to {B}"
    )


def most_batch(tokens: float, seq_len: int, min_steps: int) -> int:
    """The largest batch (a multiple of seq_len, at least one sequence) that leaves min_steps steps of `tokens`."""
    return max(seq_len, int(tokens / min_steps) // seq_len * seq_len)


def hparams_points(
    C: float, laws: Laws, rule: ShapeRule, base: ModelConfig, s: SweepSettings, shape_budget: float | None = None
) -> list[Point]:
    """The batch x lr grid at C; its model is the one nearest M_opt(shape_budget or C), and the grid is centred on
    B_opt and eta_opt there. sweep.reuse gives the budgets of a group one shape_budget, so that they share one model
    and one grid (each budget's own optimum lies inside it: the group spans at most sweep.reuse_span decades)."""
    centre = shape_budget or C
    seq_len, M_opt = base.seq_len, laws.M_opt(centre)
    lo, hi = smallest_shape(rule, base), largest_shape(rule, base)
    shape = lo if M_opt < lo.M else hi if M_opt > hi.M else shape_for_M(M_opt, rule, base)
    notes = (
        []
        if lo.M <= M_opt <= hi.M
        else [
            f"M_opt(C)={M_opt:.3g} is outside shape rule {rule.name}'s range "
            f"[{lo.M:.3g}, {hi.M:.3g}]: using its {'smallest' if M_opt < lo.M else 'largest'} model"
        ]
    )
    D = C / shape.M
    B_opt = laws.B_opt(centre)
    # The largest batch must still leave min_steps steps: slide the grid down when B_opt(C) is too big for D.
    B_centre = min(B_opt, D / s.min_steps / math.sqrt(s.batch_span))
    if B_centre < B_opt:
        notes.append(
            f"B_opt(C)={B_opt:.3g} leaves fewer than {s.min_steps} steps: batch grid slid down to {B_centre:.3g}"
        )
    raw = (
        _lattice(B_centre, s.batch_span, s.batch_points, seq_len)
        if s.lattice
        else _grid(B_centre, s.batch_span, s.batch_points)
    )
    batches = sorted({round_batch(b, seq_len) for b in raw})
    batches = [b for b in batches if D / b >= s.min_steps]
    if len(batches) < 3:
        raise BudgetTooSmall(
            f"hparams grid at C={C:.3g} keeps only {len(batches)} distinct batch sizes (multiples of "
            f"seq_len={seq_len} with >= sweep.min_steps={s.min_steps} steps of D={D:.3g} tokens)"
        )
    lr_grid = _lattice if s.lattice else _grid
    lrs = sorted({sig(lr) for lr in lr_grid(laws.eta_opt(centre), s.lr_span, s.lr_points)})
    points = []
    grid = [whole_steps(D, B, seq_len) for B in batches]
    digits = len(str(max(b for b, _ in grid)))
    for b, steps in grid:
        for lr in lrs:
            run_id = hparams_run_id(C, b, lr, digits)
            points.append(Point(run_id, "hparams", C, shape, steps * b, b, lr, M_opt, tuple(notes)))
    return points


Planner = Callable[[float, Laws, ShapeRule, ModelConfig, SweepSettings], list[Point]]
PLANNERS: dict[str, Planner] = {"isoflop": isoflop_points, "hparams": hparams_points}


def smallest_feasible_budget(kind: str, laws: Laws, rule: ShapeRule, base: ModelConfig, s: SweepSettings) -> float:
    """Bisection in log C on 'plans without BudgetTooSmall' (feasibility grows with C: D does)."""
    lo, hi = 0.0, 30.0
    for _ in range(40):
        mid = (lo + hi) / 2
        try:
            PLANNERS[kind](10**mid, laws, rule, base, s)
            hi = mid
        except BudgetTooSmall:
            lo = mid
    return 10**hi


def plan(
    kind: str,
    C: float,
    laws: Laws,
    rule: ShapeRule,
    base: ModelConfig,
    s: SweepSettings,
    shape_budget: float | None = None,
    shared: Mapping[tuple[int, int], ShapeHparams] | None = None,
) -> list[Point]:
    """One budget's points, or a one-line error naming the smallest feasible budget. sweep.reuse: an hparams grid's
    model is chosen at `shape_budget`; an IsoFLOP profile's shapes train with the `shared` lr and batch."""
    try:
        points = (
            hparams_points(C, laws, rule, base, s, shape_budget)
            if kind == "hparams"
            else isoflop_points(C, laws, rule, base, s, shared)
        )
    except BudgetTooSmall as e:
        least = smallest_feasible_budget(kind, laws, rule, base, s)
        raise ValueError(
            f"{kind} budget C={C:.3g} is too small for shape rule {rule.name} with seq_len={base.seq_len}: "
            f"{e}; the smallest feasible budget is {least:.2g}"
        ) from None
    for p in points:  # the contract of a plan, checked where it is made
        assert abs(p.C / C - 1) <= C_TOLERANCE + 1e-12, (p.run_id, p.C, C)
    return points


def needed_M(C: float, laws: Laws, s: SweepSettings) -> float:
    """Largest M an IsoFLOP grid at C would like; it picks the auto rule for both kinds of sweep at C, so a
    study's hparams and IsoFLOP stages at one budget use the same kind of shapes."""
    return laws.M_opt(C) * 10 ** (s.span / 2)


def choose_rule(
    name: str,
    rules: Mapping[str, ShapeRule],
    wants: list[tuple[str, float]],
    laws: Laws,
    base: ModelConfig,
    s: SweepSettings,
) -> ShapeRule:
    """sweep.shape_rule: a named rule, or `auto`: cpu when IsoFLOP grids at every budget fit it, gpu otherwise."""
    if name != "auto":
        if name not in rules:
            raise ValueError(f"sweep.shape_rule={name!r} is unknown; use auto or one of {', '.join(rules)}")
        return rules[name]
    top = max(needed_M(C, laws, s) for _, C in wants)
    return rules["cpu"] if top <= largest_shape(rules["cpu"], base).M else rules["gpu"]
