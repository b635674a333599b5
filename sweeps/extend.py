"""`sweep.extend=N`: a grid whose best run sits at an edge is extended beyond that edge and trained, up to N rounds.

A researcher looks at each grid and widens it where the optimum is at the edge; this does the same after a sweep's
runs have finished, from their records:

- an hparams grid (one model at one budget) whose best run has the grid's largest or smallest learning rate gets
  one more learning rate beyond it (the grid's own log spacing) at every batch size of the grid; the same for the
  batch-size axis (at every learning rate), as long as a batch stays >= one sequence and leaves sweep.min_steps;
- an IsoFLOP profile whose best run is its smallest or largest model, or whose parabola (loss in log10 M) has its
  vertex in the outer sixth of the sizes' range -- where analysis.fit calls the profile off-centre and leaves it
  out of the M_opt law (FitOptions.off_centre = 2/3) -- gets one more model beyond that side (the grid's spacing in
  M, the nearest shape the rule allows), trained at the batch size and learning rate of the profile's model on that
  side (the profile's own: one per budget; with sweep.reuse=all each shape has its own, sweeps.reuse).

A grid that cannot grow (the shape rule's smallest model is already in it, a batch of one sequence) is named with
what would bracket it. Losses are per point, averaged over seeds (sweeps.seeds); a diverged run counts as +inf.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from model import ModelConfig
from model.shapes import Shape, ShapeRule, largest_shape, shape_for_M, smallest_shape

from .plan import BudgetTooSmall, Point, SweepSettings, hp_id, iso_id, round_batch, sig, whole_steps

EDGE_FRACTION = 2 / 3  # analysis.fit's default off_centre: a vertex beyond it leaves the profile out of the law


@dataclass
class Grid:
    """One grid of a sweep (an hparams grid of one model at one budget, or one IsoFLOP profile) and where its best
    run sits: `edges` are (axis, side) pairs, axis lr | batch | size, side low | high."""

    kind: str
    budget: float
    points: list[Point]
    loss: dict[str, float]  # run id (first seed) -> mean loss over seeds
    edges: list[tuple[str, str]] = field(default_factory=list)
    why: str = ""

    @property
    def label(self) -> str:
        if self.kind == "hparams":
            s = self.points[0].shape
            return f"hparams grid C={self.budget:.3g} (L{s.n_layer} d{s.d_model})"
        return f"IsoFLOP profile C={self.budget:.3g}"


@dataclass
class Extension:
    points: list[Point]  # new points (first seed only; sweeps.seeds multiplies them)
    added: list[str]  # per grid extended: what was added and why
    stuck: list[str]  # per grid at an edge that cannot be extended: why, and what would bracket it


def grids(points: list[Point], loss: dict[str, float]) -> list[Grid]:
    """The sweep's grids whose every point has a loss, each assessed (edges empty when it brackets its optimum)."""
    groups: dict[tuple, list[Point]] = defaultdict(list)
    for p in points:
        key = (p.sweep, p.budget) + ((p.shape.n_layer, p.shape.d_model) if p.sweep == "hparams" else ())
        groups[key].append(p)
    out = []
    for (kind, budget, *_), pts in groups.items():
        if all(p.run_id in loss for p in pts):
            g = Grid(kind, budget, pts, {p.run_id: loss[p.run_id] for p in pts})
            (_assess_hparams if kind == "hparams" else _assess_isoflop)(g)
            out.append(g)
    return out


def _best(g: Grid) -> Point | None:
    finite = [p for p in g.points if math.isfinite(g.loss[p.run_id])]
    return min(finite, key=lambda p: g.loss[p.run_id]) if finite else None


def _assess_hparams(g: Grid) -> None:
    best = _best(g)
    if best is None:
        g.edges, g.why = [("lr", "low")], "every run diverged"
        return
    for axis, value, values in (
        ("lr", best.lr, sorted({p.lr for p in g.points})),
        ("batch", best.batch_size, sorted({p.batch_size for p in g.points})),
    ):
        if len(values) > 1 and value in (values[0], values[-1]):
            g.edges.append((axis, "high" if value == values[-1] else "low"))
    if g.edges:
        name = {"lr": "lr", "batch": "batch size"}
        sides = ", ".join(f"its {'largest' if side == 'high' else 'smallest'} {name[axis]}" for axis, side in g.edges)
        g.why = f"best run {best.run_id} (loss {g.loss[best.run_id]:.4f}) has {sides}"


def _assess_isoflop(g: Grid) -> None:
    pts = sorted(g.points, key=lambda p: p.shape.M)
    best = _best(g)
    if best is None or len(pts) < 3:
        return
    i = pts.index(best)
    if i in (0, len(pts) - 1):
        g.edges = [("size", "low" if i == 0 else "high")]
        end = "smallest" if i == 0 else "largest"
        g.why = f"best run {best.run_id} (loss {g.loss[best.run_id]:.4f}) is its {end} model"
        return
    ok = [p for p in pts if math.isfinite(g.loss[p.run_id])]
    x = np.log10([p.shape.M for p in ok])
    c2, c1, _ = np.polyfit(x, [g.loss[p.run_id] for p in ok], 2)
    if not c2 > 0:
        return  # no minimum to place: a flat profile is for the analysis to judge
    centre, half = (x[0] + x[-1]) / 2, (x[-1] - x[0]) / 2
    u = (-c1 / (2 * c2) - centre) / half
    if abs(u) > EDGE_FRACTION:
        g.edges = [("size", "low" if u < 0 else "high")]
        g.why = (
            f"its parabola's vertex (M~{10 ** (centre + u * half):.3g}) lies in the outer sixth of its sizes "
            f"({10 ** x[0]:.3g}..{10 ** x[-1]:.3g}), where analysis.fit leaves a profile out as off-centre"
        )


def extend(
    points: list[Point],
    loss: dict[str, float],
    rule: ShapeRule,
    base: ModelConfig,
    s: SweepSettings,
    round_no: int,
) -> Extension:
    """One round: the points beyond every edge holding a grid's best run (`points` and `loss` of the first seed)."""
    ext = Extension([], [], [])
    have = {p.run_id for p in points}
    for g in grids(points, loss):
        if not g.edges:
            continue
        reason = f"round {round_no}: {g.label}: {g.why}"
        if g.kind == "isoflop":
            new, why_not = _beyond_size(g, g.edges[0][1], rule, base, s)
            what = _describe_size(new)
        else:
            new, what, why_not = _beyond_hparams(g, base, s)
        new = [p for p in new if p.run_id not in have]
        if why_not:
            ext.stuck.append(f"{g.label}: {g.why}; cannot extend it {why_not}")
        if new:
            ext.points += [dataclasses.replace(p, added=f"{reason}; added {what}") for p in new]
            ext.added.append(f"{reason}: added {what}")
            have |= {p.run_id for p in new}
    return ext


def unbracketed(points: list[Point], loss: dict[str, float]) -> list[Grid]:
    return [g for g in grids(points, loss) if g.edges]


def _describe_size(new: list[Point]) -> str:
    if not new:
        return ""
    sh = new[0].shape
    return f"L{sh.n_layer} d{sh.d_model} (M={sh.M:.3g}, D={new[0].D:.3g})"


def _step(values: list[float]) -> float:
    """The grid's geometric spacing: (largest / smallest)^(1 / (n - 1))."""
    return (values[-1] / values[0]) ** (1 / (len(values) - 1))


def _beyond_hparams(g: Grid, base: ModelConfig, s: SweepSettings) -> tuple[list[Point], str, str]:
    """(new points, what they add, why an edge cannot be extended): one learning rate and/or one batch size beyond
    the edges holding the best run, and every cell of the widened lr x batch grid that has no run yet (so a grid
    extended on both axes stays rectangular)."""
    seq_len, C, t = base.seq_len, g.budget, g.points[0]
    lrs = sorted({p.lr for p in g.points})
    rows = {p.batch_size: p.D for p in g.points}  # batch -> D (whole steps of that batch)
    what, why_not = [], []
    for axis, side in g.edges:
        if axis == "lr":
            step = _step(lrs)
            lr = sig(lrs[-1] * step if side == "high" else lrs[0] / step)
            lrs = sorted({*lrs, lr})
            what.append(f"lr {lr:.3g}")
            continue
        Bs = sorted(rows)
        step = _step([float(b) for b in Bs])
        want = round_batch(Bs[-1] * step if side == "high" else Bs[0] / step, seq_len)
        if side == "high" and want <= Bs[-1]:
            want = Bs[-1] + seq_len
        if side == "low" and want >= Bs[0]:
            why_not.append(f"below batch {Bs[0]}: that is one sequence (seq_len={seq_len})")
            continue
        try:
            b, steps = whole_steps(C / t.shape.M, want, seq_len)
        except BudgetTooSmall as e:
            why_not.append(f"to batch {want}: {e}")
            continue
        if steps < s.min_steps:
            why_not.append(
                f"to batch {b}: it leaves {steps} steps, fewer than sweep.min_steps={s.min_steps} (a larger budget or "
                f"a smaller sweep.min_steps would)"
            )
        elif b not in rows:
            rows[b] = steps * b
            what.append(f"batch {b}")
    have = {(p.batch_size, p.lr) for p in g.points}
    # the grid's own id padding, so that its run dirs keep sorting by batch (sweeps.plan.hparams_run_id)
    digits = len(str(max(p.batch_size for p in g.points)))
    new = [
        dataclasses.replace(t, run_id=hp_id(C, b, lr, digits), lr=lr, batch_size=b, D=D, notes=())
        for b, D in sorted(rows.items())
        for lr in lrs
        if (b, lr) not in have
    ]
    return new, " and ".join(what) + f" ({len(new)} runs)", "; ".join(why_not)


def _beyond_size(g: Grid, side: str, rule: ShapeRule, base: ModelConfig, s: SweepSettings) -> tuple[list[Point], str]:
    pts = sorted(g.points, key=lambda p: p.shape.M)
    Ms = [p.shape.M for p in pts]
    have = {(p.shape.n_layer, p.shape.d_model) for p in pts}
    step = _step(Ms)
    if side == "low":
        shape: Shape | None = shape_for_M(Ms[0] / step, rule, base)
        if shape is None or shape.M >= Ms[0] or (shape.n_layer, shape.d_model) in have:
            end = smallest_shape(rule, base)
            shape = end if end.M < Ms[0] and (end.n_layer, end.d_model) not in have else None
        if shape is None:
            end = smallest_shape(rule, base)
            return [], (
                f"below: shape rule {rule.name}'s smallest model (L{end.n_layer} d{end.d_model}, M={end.M:.3g}) is "
                f"already in it; a rule with smaller models (sweep.shape_rules.{rule.name}.min_d or min_layers, or a "
                f"shorter model.seq_len) or a larger budget would bracket it"
            )
    else:
        shape = shape_for_M(Ms[-1] * step, rule, base)
        if shape is None or shape.M <= Ms[-1] or (shape.n_layer, shape.d_model) in have:
            end = largest_shape(rule, base)
            shape = end if end.M > Ms[-1] and (end.n_layer, end.d_model) not in have else None
        if shape is None:
            end = largest_shape(rule, base)
            return [], (
                f"above: shape rule {rule.name}'s largest model (L{end.n_layer} d{end.d_model}, M={end.M:.3g}) is "
                f"already in it; a rule with larger models (sweep.shape_rules.{rule.name}.max_d or max_layers) or a "
                f"smaller budget would bracket it"
            )
    t = pts[0] if side == "low" else pts[-1]  # the edge's lr and batch (with sweep.reuse=all, per shape)
    try:
        b, steps = whole_steps(g.budget / shape.M, t.batch_size, base.seq_len)
    except BudgetTooSmall as e:
        return [], f"{side}: {e}"
    if steps < s.min_steps:
        return [], (
            f"above: its next model (M={shape.M:.3g}) would train {steps} steps of {b} tokens, fewer than "
            f"sweep.min_steps={s.min_steps}; a larger budget would"
        )
    return [
        dataclasses.replace(t, run_id=iso_id(g.budget, shape), shape=shape, D=steps * b, batch_size=b, notes=())
    ], ""
