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
    out = rec.copy()
    need = out.isna() & np.isfinite(df["C"]) & (df["C"] > 0)
    for _, idx in df[need].groupby(["dataset", "sweep"], dropna=False).groups.items():
        out.loc[idx] = cluster_C(df.loc[idx, "C"].to_numpy(), rtol)
    return out
