"""`sweep.seeds=N`: every point of a plan trained with N seeds (the run's `seed` key: model init and data order).

The first seed is the sweep's own `seed` (conf/run.yaml, or the user's `seed=...`) and keeps the point's run id, so
raising sweep.seeds on a finished sweep trains only the new repeats; the others add `_seed<k>` to the id. Repeats of
a point share everything else, so analysis.fit averages them into one point and reports their spread
(analysis.seeds). Planning, extending and packing work on points; this module only multiplies them.
"""

from __future__ import annotations

import dataclasses
import math

from .plan import Point


def seed_values(n: int, base_seed: int) -> list[int]:
    return [base_seed + k for k in range(n)]


def with_seeds(points: list[Point], n: int, base_seed: int) -> list[Point]:
    """The points trained: all points at the first seed, then all at the second, ... (a sweep cut short still has
    whole grids). One seed: the points themselves, unchanged (no `seed=` override, the same run ids as before)."""
    if n == 1:
        return list(points)
    return [
        dataclasses.replace(p, run_id=p.run_id + (f"_seed{s}" if k else ""), seed=s)
        for k, s in enumerate(seed_values(n, base_seed))
        for p in points
    ]


def point_losses(points: list[Point], n: int, base_seed: int, loss: dict[str, float | None]) -> dict[str, float]:
    """Each point's mean loss over its seeds ({run_id of the first seed: mean}); inf when a repeat diverged (it
    holds no loss), absent when a repeat has no record yet."""
    out = {}
    for p in points:
        ids = [r.run_id for r in with_seeds([p], n, base_seed)]
        if any(i not in loss for i in ids):
            continue
        vals = [v for v in (loss[i] for i in ids) if v is not None and math.isfinite(v)]
        out[p.run_id] = sum(vals) / len(vals) if len(vals) == len(ids) else math.inf
    return out
