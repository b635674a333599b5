"""Packs of trunks: `sweep.pack` together with `sweep.reuse` (scaling.run.trunk.train_trunks).

Under reuse an hparams grid has one trunk per (model, batch, lr); the trunks of one model and batch size differ only
in their peak learning rate, and where they serve branches of the same lengths (the budgets of one reuse group share
one grid, so they do) they share every step: the same batches, the same branch points. Such trunks train as one pack
(scaling.run.pack's stacked model): one job takes the K trunks to each branch point, and trains the K branches there
as one pack too. They are packed by sweeps.packing's rule: `sweep.pack=K` puts at most K trunks in a job, `auto`
packs where a packed step of their shape and batch measures at least MIN_GAIN faster, `off` never.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from scaling.base.cli import fmt_seconds

from .packing import Unit, chunk_groups, parse_pack, unit_seconds
from .plan import Point, group_overrides
from .reuse import Trunk, reuse_cost, trunk_overrides


def trunk_seconds(trunk: Trunk, points: Sequence[Point], seconds: Sequence[float]) -> float:
    """Estimated seconds of one trunk job (sweeps.reuse.reuse_cost): its longest shared part once, plus each
    branch's own decay stages."""
    shared = trunk.shared_tokens(points)
    rows = [{"s": seconds[i], "D": points[i].D, "shared_tokens": shared[i], "trunk": trunk.id} for i in trunk.members]
    return reuse_cost(rows, "s")


def trunk_key(points: Sequence[Point], trunk: Trunk) -> tuple:
    """Trunks with equal keys may share a pack: (shape, batch, their branches but for lr and run id)."""
    p = points[trunk.members[-1]]
    s = p.shape
    branches = tuple(
        tuple(o for o in points[i].overrides() if not o.startswith(("optim.lr=", "run.id="))) for i in trunk.members
    )
    return ((p.seed, s.n_layer, s.d_model, s.n_head, s.n_kv_head), p.batch_size, branches)


def trunk_units(
    points: Sequence[Point],
    trunks: Sequence[Trunk],
    todo: Sequence[int],
    pack: object,
    speedup: Callable[[Point, int], float | None],
    seconds: Sequence[float],
) -> list[Unit]:
    """The launcher jobs of the trunks with a branch still to do: packs of trunks where sweep.pack says so (auto:
    measured by `speedup(point, K)`, as runs are packed), the other trunks alone."""
    left = set(todo)
    live = [t for t in trunks if any(i in left for i in t.members)]
    groups: dict[tuple, list[int]] = {}
    for j, t in enumerate(live):
        groups.setdefault(trunk_key(points, t), []).append(j)
    chunks = chunk_groups(groups, parse_pack(pack), lambda j, K: speedup(points[live[j].members[-1]], K))
    packed = {j for chunk, _ in chunks for j in chunk}
    chunks += [((j,), 1.0) for j in range(len(live)) if j not in packed]
    return [_unit(points, [live[j] for j in chunk], gain, seconds) for chunk, gain in chunks]


def _unit(points: Sequence[Point], trunks: list[Trunk], gain: float, seconds: Sequence[float]) -> Unit:
    """A job of one trunk or a pack of them; its speed-up over the runs trained alone one after another counts the
    tokens the trunks save and the measured gain of packing them."""
    members = tuple(sorted(i for t in trunks for i in t.members))
    alone = sum(seconds[i] for i in members)
    with_reuse = sum(trunk_seconds(t, points, seconds) for t in trunks) / gain
    label = trunks[0].id if len(trunks) == 1 else f"{trunks[0].id.rsplit('_lr', 1)[0]}_x{len(trunks)}"
    return Unit(members, alone / with_reuse if with_reuse > 0 else 1.0, label, tuple(t.id for t in trunks))


def trunk_job_overrides(
    passthrough: list[str], points: Sequence[Point], by_id: dict[str, Trunk], unit: Unit
) -> list[str]:
    """Hydra overrides of a trunk job (sweeps.reuse.trunk_overrides), or of a pack of trunks: the first trunk's job
    under the pack's id (its bookkeeping dir trunks/<id>), each trunk's id, peak lr and branch run ids
    (scaling.run.trunk.trunk_job gives each trunk its own)."""
    trunks = [by_id[t] for t in unit.trunks]
    if len(trunks) == 1:
        return trunk_overrides(passthrough, points, trunks[0])
    first = trunks[0]
    assert unit.trunk is not None  # a pack of trunks is a unit of trunks (trunk_units), so it has a trunk id
    lists: dict[str, list[Any]] = {
        "trunk.run_ids": [[points[i].run_id for i in t.members] for t in trunks],
        "trunk.tokens": [points[i].D for i in first.members],
        "trunk.budgets": [points[i].budget for i in first.members],
        "trunk.ids": [t.id for t in trunks],
        "trunk.lrs": [points[t.members[-1]].lr for t in trunks],
    }
    subdir = f"hydra.sweep.subdir=trunks/{unit.trunk}"
    return group_overrides(passthrough, points[first.members[-1]], unit.trunk, lists, [subdir])


def report(points: Sequence[Point], units: Sequence[Unit], seconds: Sequence[float]) -> list[str]:
    """The plan's lines for packs of trunks (none without): each pack, and the sweep's estimated total."""
    packs = [u for u in units if len(u.trunks) > 1]
    if not packs:
        return []
    alone = sum(seconds[i] for u in units for i in u.members)
    lines = [
        f"trunk packs (sweep.pack with sweep.reuse; scaling.run.trunk): {len(packs)} packs of "
        f"{sum(len(u.trunks) for u in packs)} trunks serving {sum(len(u.members) for u in packs)} runs"
    ]
    for u in packs:
        lrs = sorted(points[i].lr for i in u.members)
        lines.append(
            f"  {u.trunk}: {len(u.trunks)} trunks, lr {lrs[0]:.3g}..{lrs[-1]:.3g}, {len(u.members)} branches, "
            f"est. {fmt_seconds(unit_seconds(u, list(seconds)))}"
        )
    total = sum(unit_seconds(u, list(seconds)) for u in units)
    lines.append(f"est. total {fmt_seconds(total)} with trunks and packs ({fmt_seconds(alone)} run after run)")
    return lines
