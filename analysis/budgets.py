"""Group runs into compute budgets: the recorded nominal `budget` when present, else clusters of C."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def cluster_C(C: np.ndarray, rtol: float = 1.15) -> np.ndarray:
    """Label each C with its cluster's geometric-mean C; a run joins a cluster if |log C - log C_group| < log(rtol).

    Greedy over sorted log C, so published points scattered around a budget (or runs that missed C by a
    rounding of the step count) still group, while budgets a factor > rtol apart never merge.
    """
    C = np.asarray(C, float)
    labels = np.full(C.shape, np.nan)
    order = np.argsort(C)
    tol = math.log(rtol)
    group: list[int] = []
    for i in list(order) + [None]:
        if i is not None and group and abs(math.log(C[i]) - np.mean(np.log(C[group]))) < tol:
            group.append(i)
            continue
        if group:
            labels[group] = math.exp(np.mean(np.log(C[group])))
        group = [] if i is None else [i]
    return labels


def assign_budgets(df: pd.DataFrame, rtol: float = 1.15) -> pd.Series:
    """Budget label per run (NaN for runs without C); recorded budgets are rounded to 6 significant digits."""
    rec = df["budget"].map(lambda b: float(f"{b:.6g}") if np.isfinite(b) and b > 0 else np.nan)
    out = rec.to_numpy(float).copy()
    C = df["C"].to_numpy(float)
    need = np.isnan(out) & np.isfinite(C) & (C > 0)
    if not need.any():
        return pd.Series(out, index=df.index)
    keys = list(zip(df["dataset"].fillna("\0").astype(str), df["sweep"].fillna("\0").astype(str), strict=True))
    tol = math.log(rtol)
    for key in dict.fromkeys(k for k, n in zip(keys, need, strict=True) if n):
        mine = np.array([k == key for k in keys])
        # A run without a budget (a blank cell, a corrupt field) joins its sweep's recorded budget within rtol
        # instead of forming a second group at (nearly) the same C; the others are clustered among themselves.
        known = np.unique(out[mine & ~np.isnan(out)])
        rest = np.flatnonzero(mine & need)
        if len(known):
            dist = np.abs(np.log(known)[None, :] - np.log(C[rest])[:, None])
            near = dist.min(axis=1) < tol
            out[rest[near]] = known[dist.argmin(axis=1)[near]]
            rest = rest[~near]
        if len(rest):
            out[rest] = cluster_C(C[rest], rtol)
    return pd.Series(out, index=df.index)
