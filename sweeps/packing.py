"""Which runs of a sweep train together as one pack (scaling.run.pack): `sweep.pack=auto|off|K`.

Runs pack when they share everything but the learning rate: the hparams points of one budget and one batch size
(same shape, data, seed, D and steps). `off` (or 1) trains every run alone; `K` packs up to K such runs; `auto`
packs a whole group where it pays: it measures one step of the group's shape and batch size packed and run after
run on this device (scaling.run.pack.speed.measure_speedup, a fraction of a second at CPU-demo shapes; kept in the
throughput cache, so a fresh sweep on this machine decides alike) and packs when the packed step is at least MIN_GAIN
times faster. Models too big to measure here (sweep.measure_max_params) are not
packed by `auto`. Each pack is one launcher job (any launcher) whose task trains the pack; every run keeps its
own run dir and record. Only runs still to do are packed, so a rerun packs what is left.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .plan import Point, group_overrides

MIN_GAIN = 1.1  # auto packs when the packed step is at least this much faster than the runs one after another
MAX_AUTO = 8  # auto packs at most this many runs (memory grows with K; gains flatten beyond)


@dataclass(frozen=True)
class Unit:
    """One launcher job: a single run, or a pack of runs (point indices) with its measured speed-up."""

    members: tuple[int, ...]
    speedup: float = 1.0  # run-after-run / this unit's time (packs: measured; trunks: from their tokens)
    trunk: str | None = None  # a trunk job (sweeps.reuse): the trunk's id, or the id of a pack of trunks
    trunks: tuple[str, ...] = ()  # the trunks of a trunk job, with their branches (sweeps.trunk_packs)

    @property
    def packed(self) -> bool:
        return len(self.members) > 1 and self.trunk is None


def parse_pack(value: object) -> int | None:
    """sweep.pack -> None for auto, else the largest pack (1 = off); one-line ValueError for anything else."""
    text = str(value).strip().lower()
    if text == "auto":
        return None
    if text in ("off", "false", "none", "1"):
        return 1
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 1:
        raise ValueError(f"sweep.pack={value!r}: use auto, off, or the largest number of runs per pack (e.g. 5)")
    return k


def group_key(p: Point) -> tuple | None:
    """Runs with equal keys may share a pack (None: never packed): (shape, batch, D), for `chunk_groups`."""
    if p.sweep != "hparams":
        return None
    s = p.shape
    return ((p.seed, p.budget, s.n_layer, s.d_model, s.n_head, s.n_kv_head), p.batch_size, p.D)  # seeds never mix


def chunk_groups(
    groups: dict[tuple, list[int]], limit: int | None, gain_of: Callable[[int, int], float | None]
) -> list[tuple[tuple[int, ...], float]]:
    """Packs out of groups of items that may train together, keyed (shape, batch, anything else): chunks of at most
    `limit` items (None: auto, at most MAX_AUTO, kept only where `gain_of(first item, K)` measures >= MIN_GAIN),
    each with its gain (1.0 unmeasured). Items of a chunk that auto does not keep are left out (they go alone)."""
    chunks = []
    # Smallest batches first: the gain shrinks as the batch grows (measured: 1.95x at 4 sequences, 1.0x at 16), so
    # under auto, once a batch size does not pay, the larger ones of the same shape are not measured at all.
    not_paying: set[tuple] = set()
    for key in sorted(groups, key=lambda k: (k[0], k[1])):
        members, shape = groups[key], key[0]
        size = min(len(members), MAX_AUTO) if limit is None else limit
        for start in range(0, len(members), max(size, 1)):
            chunk = tuple(members[start : start + size])
            skip = limit is None and shape in not_paying
            gain = gain_of(chunk[0], len(chunk)) if len(chunk) > 1 and not skip else None
            if limit is None and (gain is None or gain < MIN_GAIN):
                if gain is not None:
                    not_paying.add(shape)
                continue  # auto: not worth it (or not measurable)
            chunks.append((chunk, gain if gain is not None else 1.0))
    return chunks


def plan_units(
    points: list[Point], todo: list[int], pack: object, speedup: Callable[[Point, int], float | None]
) -> list[Unit]:
    """The launcher jobs for the runs still to do, in plan order. `speedup(point, K)` measures packing K runs of
    point's shape and batch (None when it cannot be measured here)."""
    groups: dict[tuple, list[int]] = {}
    for i in todo:
        key = group_key(points[i])
        if key is not None:
            groups.setdefault(key, []).append(i)
    units = {
        chunk[0]: Unit(chunk, gain)
        for chunk, gain in chunk_groups(groups, parse_pack(pack), lambda i, K: speedup(points[i], K))
    }
    packed = {i for u in units.values() for i in u.members}
    for i in todo:
        if i not in packed:
            units[i] = Unit((i,))
    return [units[i] for i in sorted(units)]


def pack_id(points: list[Point], unit: Unit) -> str:
    """The pack job's id (its Hydra output dir under the sweep dir): the first run's id without its lr, and K."""
    first = points[unit.members[0]].run_id
    return f"pack_{first.rsplit('_lr', 1)[0]}_x{len(unit.members)}"


def pack_overrides(passthrough: list[str], points: list[Point], unit: Unit) -> list[str]:
    """Hydra overrides of a pack job: the first run's point with the pack's id, plus pack.run_ids and pack.lrs
    (scaling.run.pack.pack_job gives each run its own run.id and optim.lr)."""
    members = [points[i] for i in unit.members]
    lists: dict[str, list[Any]] = {"pack.run_ids": [p.run_id for p in members], "pack.lrs": [p.lr for p in members]}
    return group_overrides(passthrough, members[0], pack_id(points, unit), lists)


def unit_seconds(unit: Unit, est: list[float]) -> float:
    """Estimated seconds of a unit: its runs' single-run estimates, divided by the measured pack speed-up."""
    total = sum(est[i] for i in unit.members)
    return total / unit.speedup if unit.speedup > 0 and math.isfinite(unit.speedup) else total
