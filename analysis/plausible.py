"""Plausibility rules for losses and compute: a run whose numbers cannot be physical is excluded with a named
reason before any fit sees it (one absurd loss can otherwise become a budget's whole near-optimal band).

The limits are deliberately loose: they catch unit mix-ups, corrupted records and placeholders (0, 1e-300, 1e300),
not unusual science. `Limits` holds them; `analysis.fit` exposes the ones a user may need to move as CLI options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Limits:
    """Plausible ranges; every lower bound is exclusive (a loss or a FLOP count of 0 is never data)."""

    loss_min: float = 0.01  # nats/token; a loss must be > this (no language model reaches 0.01 nats/token)
    loss_max: float = 20.0  # nats/token; ln(vocab) for a 100M-token vocabulary is 18.4
    C_max: float = 1e30  # FLOPs; ~1e5 x the largest published training run
    M_max: float = 1e17  # FLOPs per token (6N for N = 1.7e16 parameters)
    D_max: float = 1e16  # tokens; more than all text ever written
    mismatch: float = 0.05  # relative |C - M*D| / C above which a row gets a unit/convention warning

    def check(self) -> None:
        if not (0 <= self.loss_min < self.loss_max and self.C_max > 0 and self.M_max > 0 and self.D_max > 0):
            raise ValueError(
                f"need 0 <= --loss-range LO < HI and a positive --max-compute (got loss "
                f"({self.loss_min:g}, {self.loss_max:g}], max C {self.C_max:g})"
            )


DEFAULT_LIMITS = Limits()


def _bad(name: str, v: float, hi: float, unit: str, option: str) -> str:
    """The named reason for a non-positive or absurdly large value, or "" when it is plausible."""
    if not math.isfinite(v):
        return f"{name} missing or not finite"
    if v <= 0:
        return f"non-positive {name} ({v:.3g})"
    if v > hi:
        return f"implausible {name} {v:.3g} {unit} (plausible: (0, {hi:.3g}]{option})"
    return ""


def numbers_reason(r, lim: Limits) -> str:
    """Why this row's loss or compute is implausible ("" when it is fine); r has loss, C, M, D attributes."""
    if not math.isfinite(r.loss):
        return "no finite loss"
    if not lim.loss_min < r.loss <= lim.loss_max:
        return (
            f"implausible loss {r.loss:.6g} (plausible: ({lim.loss_min:g}, {lim.loss_max:g}] nats/token; "
            f"see --loss-range)"
        )
    # M and D first: a C derived from a bad M is reported as the M it came from.
    return (
        _bad("M", r.M, lim.M_max, "FLOPs/token", "")
        or _bad("D", r.D, lim.D_max, "tokens", "")
        or _bad("C", r.C, lim.C_max, "FLOPs", "; see --max-compute")
    )


def duplicates(df: pd.DataFrame, usable: pd.Series) -> pd.Series:
    """For each usable row that repeats an earlier usable row's numbers, the reason naming that row; else "".

    A duplicated row is the same measurement counted twice: it narrows every CI without adding information.
    """
    key = ["dataset", "sweep", "C", "M", "D", "lr", "batch_size", "loss"]
    sub = df.loc[usable, key].astype(object).where(df.loc[usable, key].notna(), "nan")
    dup = sub.duplicated(keep="first")
    first = sub.reset_index().groupby(key, sort=False)["index"].transform("first").to_numpy()
    out = pd.Series("", index=df.index, dtype=object)
    for i, j in zip(sub.index[dup.to_numpy()], first[dup.to_numpy()]):
        out[i] = f"duplicate of run {df.at[j, 'run_id']} (same dataset, sweep, C, M, D, lr, batch size and loss)"
    return out


def unit_warnings(df: pd.DataFrame, lim: Limits) -> list[str]:
    """Unit/convention warnings on the usable rows (one line per kind and dataset, with a count and an example)."""
    out = []
    for name, d in df.groupby("dataset", sort=True):
        hp = d[d.sweep == "hparams"]
        checks = [
            (hp.lr > 1, "learning rate > 1 (is lr in percent, or a log?)", "lr"),
            (
                hp.batch_size < hp.seq_len.where(hp.seq_len > 0),
                "batch size smaller than seq_len (batch_size must be "
                "tokens per step; sequences given? multiply by seq_len)",
                "batch_size",
            ),
        ]
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = (d.C - d.M * d.D).abs() / d.C
        checks.append(
            (
                rel > lim.mismatch,
                f"C differs from M*D by more than {lim.mismatch:.0%} (C must be M*D "
                f"FLOPs with M per token; check the M/N convention)",
                "C",
            )
        )
        for mask, what, col in checks:
            mask = mask.fillna(False).astype(bool)
            if mask.any():
                i = mask.idxmax()
                out.append(
                    f"{name}: {int(mask.sum())} run(s) with {what}; e.g. {d.at[i, 'run_id']}: {col}={d.at[i, col]:.4g}"
                )
    return out
