"""sweep.reuse=auto|off: which hparams runs share a trunk (scaling.run.trunk, DeepSeek LLM §3.1).

Runs share a trunk when they differ only in their length: the same model, batch size and peak lr (and seed, data,
everything else) at several budgets. Three planning rules make that happen often:
- the batch x lr grids of every budget lie on one lattice (sweeps.plan: lattice=True), so a (batch, lr) that is in
  the grids of several budgets is the same pair of numbers there;
- the budgets of an hparams sweep are grouped, smallest first, into groups spanning at most `sweep.reuse_span`
  decades of C; every budget of a group trains the model nearest M_opt(C) at the group's geometric-mean budget
  (a few models that each span several budgets, as in DeepSeek's grids) instead of one new model per budget;
- the runs of a trunk warm up for the same number of steps: that of its shortest run (warmup_frac of its steps, at
  most max_warmup_steps), written into each run's config as optim.warmup_steps. DeepSeek fixes 2000 steps.
Only the multi-step schedule has a first stage to reuse: with optim.schedule=cosine, auto means off.
IsoFLOP runs are not reused (each budget has its own lr and batch, so no two of its runs can share a trunk).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from scaling.run.schedule import warmup_steps
from scaling.run.trunk import branch_point

from .plan import Point


@dataclass(frozen=True)
class Trunk:
    """One launcher job: a trunk and its branches (point indices, shortest first)."""

    members: tuple[int, ...]
    id: str

    def shared_tokens(self, points: Sequence[Point]) -> dict[int, int]:
        """Tokens of each branch's D that the trunk trains for it."""
        return {i: branch_point(points[i].steps) * points[i].batch_size for i in self.members}

    def tokens(self, points: Sequence[Point]) -> float:
        """Tokens actually trained by the trunk and its branches (without reuse: sum of D)."""
        shared = self.shared_tokens(points)
        return max(shared.values()) + sum(points[i].D - shared[i] for i in self.members)


def parse_reuse(value: object, schedule: str) -> bool:
    """sweep.reuse -> whether hparams runs share trunks; one-line ValueError for anything but auto/on/off."""
    text = str(value).strip().lower()
    if text in ("off", "false", "no", "none"):
        return False
    if text not in ("auto", "on", "true"):
        raise ValueError(f"sweep.reuse={value!r}: use auto (share trunks where runs can) or off")
    if schedule != "multistep" and text in ("on", "true"):
        raise ValueError(f"sweep.reuse=on needs optim.schedule=multistep (got {schedule}): use sweep.reuse=off")
    return schedule == "multistep"


def budget_groups(budgets: Sequence[float], span: float) -> dict[float, float]:
    """Each budget -> the budget whose M_opt picks its model: groups of budgets spanning at most `span` decades,
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


def _key(p: Point) -> tuple:
    s = p.shape
    return (s.n_layer, s.d_model, s.n_head, s.n_kv_head, p.batch_size, p.lr, p.seed)  # a seed is its own trunk


def plan_trunks(
    points: list[Point], warmup_frac: float, max_warmup: int, fixed_warmup: int | None = None
) -> tuple[list[Point], list[Trunk]]:
    """Group the hparams points that can share a trunk (two budgets or more); their points get the trunk's fixed
    warmup (optim.warmup_steps), unless the user fixed one for every run. Returns the points (updated) and trunks."""
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(points):
        if p.sweep == "hparams":
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
        first = points[members[-1]]
        s = first.shape
        seed = first.run_id[first.run_id.rfind("_seed") :] if "_seed" in first.run_id else ""  # sweeps.seeds' suffix
        name = f"trunk_L{s.n_layer}_D{s.d_model}_B{first.batch_size}_lr{first.lr:.3g}{seed}"
        trunks.append(Trunk(tuple(members), name))
    return points, trunks


def trunk_overrides(passthrough: list[str], points: Sequence[Point], trunk: Trunk) -> list[str]:
    """Hydra overrides of a trunk job: the longest branch's point under the trunk's id, in sweep_dir/trunks/<id>,
    plus trunk.run_ids, trunk.tokens and trunk.budgets (scaling.run.trunk.trunk_job builds each branch's config)."""
    longest = points[trunk.members[-1]]
    own = [o for o in longest.overrides() if not o.startswith("run.id=")]
    ids = ",".join(f"'{points[i].run_id}'" for i in trunk.members)
    tokens = ",".join(str(points[i].D) for i in trunk.members)
    budgets = ",".join(repr(points[i].budget) for i in trunk.members)
    return [
        *passthrough,
        *own,
        f"run.id={trunk.id}",
        f"hydra.sweep.subdir=trunks/{trunk.id}",
        f"+trunk.run_ids=[{ids}]",
        f"+trunk.tokens=[{tokens}]",
        f"+trunk.budgets=[{budgets}]",
    ]


def trunk_seconds(trunk: Trunk, points: Sequence[Point], est: Sequence[float]) -> float:
    """Estimated seconds of a trunk job: the trunk's share of its longest run, plus each branch's decay stages
    (a run's time taken as proportional to its tokens)."""
    shared = trunk.shared_tokens(points)
    longest = trunk.members[-1]
    total = est[longest] * shared[longest] / points[longest].D
    return total + sum(est[i] * (1 - shared[i] / points[i].D) for i in trunk.members)
