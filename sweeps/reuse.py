"""sweep.reuse=auto|all|off: which runs share a trunk (scaling.run.trunk, DeepSeek LLM §3.1).

Runs share a trunk when they differ only in their length: the same model, batch size and peak lr (and seed, data,
everything else) at several budgets. Planning rules make that happen often:
- hparams: the batch x lr grids of every budget lie on one lattice (sweeps.plan: lattice=True), so a (batch, lr)
  that is in the grids of several budgets is the same pair of numbers there; and the budgets of a sweep are grouped,
  smallest first, into groups spanning at most `sweep.reuse_span` decades of C (budget_groups); every budget of a
  group trains the model nearest M_opt(C) at the group's geometric-mean budget (a few models that each span several
  budgets, as in DeepSeek's grids) instead of one new model per budget;
- IsoFLOP (`all` only, isoflop_hparams): a shape that recurs in the profiles of several budgets trains with one lr
  and batch there: its budgets are grouped as above, and each group's runs take eta_opt and B_opt at the group's
  geometric-mean budget, snapped to one lattice, instead of each budget's own (so only D differs: the runs branch
  from one trunk, then cool down alone, as Hägele et al. 2024, arXiv 2405.18392, found matches a full schedule);
- the runs of a trunk warm up for the same number of steps: that of its shortest run (warmup_frac of its steps, at
  most max_warmup_steps), written into each run's config as optim.warmup_steps. DeepSeek fixes 2000 steps.
Only the multi-step schedule has a first stage to reuse: with optim.schedule=cosine, auto means off.

`auto` shares hparams trunks only. IsoFLOP sharing stays opt-in (`all`): it moves each run off its budget's own
eta_opt/B_opt, and on the CPU demo's IsoFLOP stage the runs of the smallest budget a shape served were worse than the
same points trained from scratch at every point (median +0.09 nats against a seed-to-seed 0.03), while the larger
budgets' were within the noise (sweeps/README.md, BENCHMARKS.md).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from scaling.run.schedule import warmup_steps
from scaling.run.trunk import branch_point

from .config import REUSE
from .laws import Laws
from .plan import Point, ShapeHparams, group_overrides, most_batch, round_batch, sig

# IsoFLOP reuse snaps a shape's lr and batch to powers of this ratio (times seq_len for the batch): within 19% of
# the law's value, and the same numbers whatever the exact budgets, so a rerun with a budget more keeps its runs
# where their group's centre moves little.
LATTICE = math.sqrt(2.0)
ISOFLOP_NOTE = (
    "sweep.reuse=all: each IsoFLOP shape trains with eta_opt and B_opt at the geometric mean of the budgets it serves "
    "(groups of at most sweep.reuse_span decades), on a lattice of ratio sqrt(2), not at each budget's own"
)


@dataclass(frozen=True)
class Trunk:
    """One launcher job: a trunk and its branches (point indices, shortest first)."""

    members: tuple[int, ...]
    id: str

    def shared_tokens(self, points: Sequence[Point]) -> dict[int, int]:
        """Tokens of each branch's D that the trunk trains for it."""
        return {i: branch_point(points[i].steps) * points[i].batch_size for i in self.members}


def parse_reuse(value: object, schedule: str) -> frozenset[str]:
    """sweep.reuse -> the kinds of sweep (hparams, isoflop) whose runs share trunks; one-line ValueError for `all`
    without the multi-step schedule (nothing to reuse; `auto` then means off)."""
    text = str(value).strip().lower()
    if text not in REUSE:
        raise ValueError(f"sweep.reuse={value!r}: use one of {', '.join(REUSE)}")
    if schedule != "multistep":
        if text == "all":
            raise ValueError(f"sweep.reuse=all needs optim.schedule=multistep (got {schedule}): use sweep.reuse=off")
        return frozenset()
    return frozenset(REUSE[text])


def budget_groups(budgets: Sequence[float], span: float) -> dict[float, float]:
    """Each budget -> the budget whose laws stand for its group: groups of budgets spanning at most `span` decades,
    smallest first, each represented by its geometric mean."""
    out: dict[float, float] = {}
    group: list[float] = []
    for C in sorted(set(budgets)) + [math.inf]:
        if group and (C == math.inf or math.log10(C / group[0]) > span + 1e-9):
            mean = math.exp(sum(math.log(c) for c in group) / len(group))
            out |= {c: mean for c in group}
            group = []
        group.append(C)
    return out


def snap(x: float, unit: float = 1.0) -> float:
    """x on the lattice unit * LATTICE^k (the nearest point in log)."""
    return unit * LATTICE ** round(math.log(x / unit, LATTICE))


def isoflop_hparams(
    points: Sequence[Point], laws: Laws, seq_len: int, min_steps: int, span: float
) -> dict[float, dict[tuple[int, int], ShapeHparams]]:
    """sweep.reuse=all for IsoFLOP profiles: budget -> (n_layer, d_model) -> the lr and batch that shape trains with
    there. A shape's budgets are grouped (budget_groups, at most `span` decades each); a group's runs take
    eta_opt and B_opt at its geometric-mean budget, snapped to the lattice, the batch lowered where the group's
    smallest budget would leave fewer than min_steps steps. `points`: the profiles as planned per budget."""
    Ms: dict[tuple[int, int], dict[float, float]] = {}  # shape -> budget -> M
    for p in points:
        if p.sweep == "isoflop":
            Ms.setdefault((p.shape.n_layer, p.shape.d_model), {})[p.budget] = p.shape.M
    out: dict[float, dict[tuple[int, int], ShapeHparams]] = {}
    for shape, at in Ms.items():
        centre = budget_groups(list(at), span)
        for mean in set(centre.values()):
            group = [C for C in at if centre[C] == mean]
            hp = _group_hparams(laws, mean, min(group) / at[group[0]], seq_len, min_steps)
            for C in group:
                out.setdefault(C, {})[shape] = hp
    return out


def _group_hparams(laws: Laws, centre: float, least_D: float, seq_len: int, min_steps: int) -> ShapeHparams:
    B = round_batch(snap(laws.B_opt(centre), seq_len), seq_len)
    most = most_batch(least_D, seq_len, min_steps)
    lowered = (
        f"sweep.reuse: B_opt(C={centre:.3g}) on the lattice ({B}) leaves a shape's smallest budget fewer than "
        f"{min_steps} steps: its batch lowered to {most}",
    )
    return ShapeHparams(sig(snap(laws.eta_opt(centre))), min(B, most), (ISOFLOP_NOTE, *(lowered if B > most else ())))


def _key(p: Point) -> tuple:
    s = p.shape
    # the kind too: a trunk job gives its branches their run.id, tokens and budget, and the longest run's run.sweep
    return (p.sweep, s.n_layer, s.d_model, s.n_head, s.n_kv_head, p.batch_size, p.lr, p.seed)  # a seed: own trunk


def trunk_id(p: Point) -> str:
    """The trunk's id (its directory under trunks/): unique per _key, so two trunks never share a directory."""
    s, kind = p.shape, "iso_" if p.sweep == "isoflop" else ""
    seed = "" if p.seed is None else f"_seed{p.seed}"  # sweep.seeds: each seed is its own trunk
    return f"trunk_{kind}L{s.n_layer}_D{s.d_model}_B{p.batch_size}_lr{p.lr:.3g}{seed}"


def plan_trunks(
    points: list[Point],
    warmup_frac: float,
    max_warmup: int,
    fixed_warmup: int | None = None,
    kinds: Collection[str] = ("hparams",),
) -> tuple[list[Point], list[Trunk]]:
    """Group the points of `kinds` that can share a trunk (two budgets or more); their points get the trunk's fixed
    warmup (optim.warmup_steps), unless the user fixed one for every run. Returns the points (updated) and trunks."""
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(points):
        if p.sweep in kinds:
            groups.setdefault(_key(p), []).append(i)
    trunks = []
    points = list(points)
    for members in groups.values():
        members = sorted({points[i].steps: i for i in members}.values(), key=lambda i: points[i].steps)
        if len(members) < 2:
            continue
        if fixed_warmup is None:
            w = warmup_steps(points[members[0]].steps, warmup_frac, max_warmup)
            for i in members:
                points[i] = replace(points[i], warmup=w)
        trunks.append(Trunk(tuple(members), trunk_id(points[members[-1]])))
    return points, trunks


def trunk_overrides(passthrough: list[str], points: Sequence[Point], trunk: Trunk) -> list[str]:
    """Hydra overrides of a trunk job: the longest branch's point under the trunk's id, in sweep_dir/trunks/<id>,
    plus trunk.run_ids, trunk.tokens and trunk.budgets (scaling.run.trunk.trunk_job builds each branch's config)."""
    members = [points[i] for i in trunk.members]
    lists: dict[str, list[Any]] = {
        "trunk.run_ids": [p.run_id for p in members],
        "trunk.tokens": [p.D for p in members],
        "trunk.budgets": [p.budget for p in members],
    }
    return group_overrides(passthrough, members[-1], trunk.id, lists, [f"hydra.sweep.subdir=trunks/{trunk.id}"])


def reuse_cost(rows: Iterable[Mapping[str, Any]], column: str) -> float:
    """What a plan's runs cost with reuse, in `column` (est_seconds, gpu_hours, D for tokens) of its rows (plan.csv's,
    read as text or as numbers): every run pays for the part it trains itself (a run's cost taken as proportional to
    its tokens), every trunk once for its longest shared part. Runs alone (no trunk) pay their whole cost."""
    own, trunks = 0.0, dict[str, float]()
    for r in rows:
        cost, D, shared = float(r[column]), float(r["D"]), float(r["shared_tokens"] or 0)
        own += cost * (1 - shared / D)
        if r["trunk"]:
            trunks[r["trunk"]] = max(trunks.get(r["trunk"], 0.0), cost * shared / D)
    return own + sum(trunks.values())
