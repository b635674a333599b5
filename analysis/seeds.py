"""Repeats of one point (sweep.seeds=N: the same run trained with N seeds) are averaged before fitting, and their
seed-to-seed spread is reported beside the near-optimal band's width.

A point is everything a run is but its seed: dataset, sweep, budget, M, D, lr and batch size. Its runs fit as one
row holding their mean loss (the bootstrap then resamples points, whose noise the mean already reduced), and the
spread says how much of a grid's ordering is noise: a band narrower than the spread picks its members by luck.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

KEY = ["dataset", "sweep", "budget_group", "M", "D", "lr", "batch_size"]


@dataclass
class Repeats:
    members: dict = field(default_factory=dict)  # row index of a point's mean -> every row index of its repeats
    summary: dict | None = None  # the spread, for report.json (None: no repeats)
    warnings: list = field(default_factory=list)

    def spread_notes(self, notes: dict) -> dict:
        """Per-row notes of the fit ({row: [...]}), from each point's row to every one of its repeats."""
        return {m: v for i, v in notes.items() for m in self.members.get(i, [i])}

    def spread_mask(self, mask: pd.Series) -> pd.Series:
        """A per-row boolean (in_band) from each point's row to every one of its repeats."""
        idx = [m for i in mask.index for m in self.members.get(i, [i])]
        vals = [v for i, v in zip(mask.index, mask.to_numpy()) for _ in self.members.get(i, [i])]
        return pd.Series(vals, index=idx)


def merge_repeats(df: pd.DataFrame, band: float) -> tuple[pd.DataFrame, Repeats]:
    """(one row per point, with the mean loss of its seeds; Repeats) -- df itself when no point was repeated."""
    if "seed" not in df or df.empty:
        return df, Repeats()
    key = df[KEY].astype(object).where(df[KEY].notna(), "nan")
    groups = key.groupby(KEY, sort=False, dropna=False).groups
    repeated = [list(ix) for ix in groups.values() if len(ix) > 1 and df.loc[list(ix), "seed"].nunique() > 1]
    if not repeated:
        return df, Repeats()
    out = df.copy()
    members, rel = {}, []
    for ix in repeated:
        loss = df.loc[ix, "loss"].to_numpy(float)
        out.loc[ix[0], "loss"] = loss.mean()
        members[ix[0]] = ix
        rel.append(loss.std(ddof=1) / loss.mean())
    out = out.drop(index=[i for ix in repeated for i in ix[1:]])
    rel_a = np.asarray(rel)
    median = float(np.median(rel_a))
    summary = {
        "points": len(repeated),
        "runs": int(sum(len(ix) for ix in repeated)),
        "seeds_max": int(max(len(ix) for ix in repeated)),
        "spread_rel_median": median,
        "spread_rel_max": float(rel_a.max()),
        "band": band,
        "line": (
            f"{len(repeated)} points trained with several seeds ({sum(len(ix) for ix in repeated)} runs), fitted on "
            f"their mean loss; seed-to-seed SD {median:.3%} of the loss (median over points, max {rel_a.max():.3%}) "
            f"beside the near-optimal band's {band:.3%}"
        ),
    }
    rep = Repeats(members, summary)
    if band > 0 and median > band:
        rep.warnings.append(
            f"the seed-to-seed spread ({median:.3%} of the loss, median SD over {len(repeated)} repeated points) "
            f"exceeds the near-optimal band ({band:.3%}): which runs are in the band is decided by noise; widen "
            f"--band or train more seeds"
        )
    return out, rep
