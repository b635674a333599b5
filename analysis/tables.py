"""The run-level tables a report shows next to its laws (pure: a run table in, JSON-able dicts out).

- `isoflop_tables`: per IsoFLOP budget, loss against model size, one row per run (M, N, D, epochs, loss), with the
  best run and the runs inside the parabola's fitting window marked: what the profile's fit rests on.
- `hparams_grids`: per lr x batch grid, the loss of every cell (DeepSeek's Fig. 2 as a table): rows batch size,
  columns learning rate, the best cell, the near-optimal band and the diverged runs marked.
- `repetition`: the runs that saw their training data more than once (epochs > 1), worst first.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.isoflop import window_mask

MAX_ROWS = 60  # runs listed per IsoFLOP budget (the rest are in runs.csv)
MAX_AXIS = 16  # distinct lr or batch sizes of a grid shown as a table


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def isoflop_tables(df: pd.DataFrame, budgets: list[dict]) -> list[dict]:
    """One table per fitted budget (dicts from analysis.isoflop), rows sorted by M; `df` has budget_group set.

    A budget of more than MAX_ROWS runs (a published table) lists MAX_ROWS of them spread evenly over its sizes,
    its best run among them; all are in runs.csv."""
    iso = df[(df.sweep == "isoflop") & (df.excluded == "") & df.budget_group.notna()]
    by = dict(tuple(iso.groupby("budget_group", sort=False)))
    out = []
    for b in budgets:
        runs = next((v for k, v in by.items() if np.isclose(k, b["budget"], rtol=1e-9)), None)
        if runs is None:
            continue
        runs = runs.sort_values(["M", "loss"])
        x, y = np.log10(runs.M.to_numpy(float)), runs.loss.to_numpy(float)
        w = (b.get("window") or {}).get("half_width_decades") or 0.0
        inside = window_mask(x, y, w)
        best = int(np.argmin(y))
        keep = np.arange(len(runs))
        if len(keep) > MAX_ROWS:
            keep = np.union1d(np.linspace(0, len(runs) - 1, MAX_ROWS - 1).round().astype(int), [best])
        sel = runs.iloc[keep]
        rows = [
            {
                "run_id": str(r.run_id),
                "M": _num(r.M),
                "N": _num(r.N),
                "D": _num(r.D),
                "epochs": _num(r.epochs),
                "loss": _num(r.loss),
                "in_window": bool(inside[i]),
                "best": bool(i == best),
            }
            for i, r in zip(keep, sel.itertuples())
        ]
        out.append(
            {
                "budget": b["budget"],
                "C": b["C"],
                "used": bool(b.get("used")),
                "vertex_M": b.get("M_opt"),
                "n_runs": int(len(runs)),
                "rows": rows,
            }
        )
    return out


def _key(v) -> float:
    return float(f"{v:.6g}")


def _cells(runs: pd.DataFrame, lrs: list[float], bss: list[float]) -> tuple[list, list]:
    """(loss, mark) grids, rows batch size, columns lr: each cell's best run ('best' for the grid's, 'band' inside
    the near-optimal band), None where no run completed."""
    loss: list[list[float | None]] = [[None] * len(lrs) for _ in bss]
    mark = [[""] * len(lrs) for _ in bss]
    ok = runs[np.isfinite(runs.lr) & np.isfinite(runs.batch_size)]
    top = ok.loc[ok.groupby([ok.batch_size.map(_key), ok.lr.map(_key)]).loss.idxmin()]  # repeats: a cell's best
    best = runs.loss.min()
    for r in top.itertuples():
        i, j = bss.index(_key(r.batch_size)), lrs.index(_key(r.lr))
        loss[i][j] = float(r.loss)
        mark[i][j] = "best" if r.loss == best else ("band" if bool(r.in_band) else "")
    return loss, mark


def hparams_grids(df: pd.DataFrame, grids: pd.Series) -> list[dict]:
    """The lr x batch loss table of each grid; `grids` labels the usable hparams runs of `df` (index-aligned).

    Diverged runs join the grid of the usable runs with the same dataset, budget and model; a grid with more than
    MAX_AXIS learning rates or batch sizes is listed without its cells (too wide to read as a table)."""
    hp = df.loc[grids.index]
    bad = df[(df.sweep == "hparams") & (df.status == "diverged") & np.isfinite(df.budget) & np.isfinite(df.M)]
    diverged = dict(tuple(bad.groupby([bad.dataset, bad.budget.map(_key), bad.M.map(_key)], sort=False)))
    out = []
    for g, runs in hp.groupby(grids, sort=False):
        first = runs.iloc[0]
        same = diverged.get((first.dataset, _key(first.budget), _key(first.M)), bad.iloc[:0])
        both = pd.concat([runs[["lr", "batch_size"]], same[["lr", "batch_size"]]])
        lrs = sorted({_key(v) for v in both.lr if np.isfinite(v)})
        bss = sorted({_key(v) for v in both.batch_size if np.isfinite(v)})
        table: dict = {
            "grid": str(g),
            "C": float(np.exp(np.log(runs.C).mean())),
            "M": float(np.exp(np.log(runs.M).mean())),
            "n_runs": int(len(runs)),
            "n_diverged": int(len(same)),
            "epochs": _num(runs.epochs.max()),  # one model at one budget: one D, so one epoch count
            "lr": lrs,
            "batch_size": bss,
        }
        if len(lrs) > MAX_AXIS or len(bss) > MAX_AXIS:
            table["too_wide"] = f"{len(lrs)} learning rates x {len(bss)} batch sizes; cells in runs.csv"
            out.append(table)
            continue
        loss, mark = _cells(runs, lrs, bss)
        for r in same.itertuples():
            if np.isfinite(r.lr) and np.isfinite(r.batch_size):
                i, j = bss.index(_key(r.batch_size)), lrs.index(_key(r.lr))
                if loss[i][j] is None:
                    mark[i][j] = "diverged"
        out.append(table | {"loss": loss, "mark": mark})
    return sorted(out, key=lambda t: (t["C"], t["M"]))  # by compute, as the laws read them (not by run-dir name)


def repetition(df: pd.DataFrame) -> dict | None:
    """The usable runs trained for more than one epoch, worst first (None when no run repeats its data)."""
    ok = df[(df.excluded == "") & (df.epochs > 1)].sort_values("epochs", ascending=False)
    if ok.empty:
        return None
    known = int(((df.excluded == "") & df.epochs.notna()).sum())
    edges = [1, 2, 4, 16, math.inf]  # Muennighoff et al. 2023: ~free up to 4 epochs, worth little past 16
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        n = int(((ok.epochs > lo) & (ok.epochs <= hi)).sum())
        if n:
            bins.append({"epochs": f"{lo:g}-{hi:g}" if hi < math.inf else f"> {lo:g}", "n_runs": n})
    return {
        "n_runs": int(len(ok)),
        "n_known": known,
        "max_epochs": float(ok.epochs.iloc[0]),
        "bins": bins,
        "runs": [{"run_id": str(r.run_id), "epochs": float(r.epochs)} for r in ok.head(MAX_ROWS).itertuples()],
    }
