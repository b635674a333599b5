"""Figures of the fitted L(N, D) beyond its iso-loss map (analysis.plots.parametric): the fit diagnostic
(predicted against observed loss, and the relative residuals against compute, coloured by tokens per parameter, where
a wrong functional form shows as a trend), and the bootstrap band of the compute-optimal frontier drawn on the map.
Object API only (no pyplot), like analysis.plots."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from analysis import metric
from analysis.predict import n_opt


def axes_of(ax, n: int, size: tuple[float, float]) -> list[Axes]:
    """The n axes a figure draws on: the caller's (one Axes or a sequence of n), or a new figure's 1 x n row."""
    if ax is None:
        fig = Figure(figsize=size, layout="constrained")
        return list(np.atleast_1d(fig.subplots(1, n)))
    axes = list(ax) if isinstance(ax, Sequence | np.ndarray) else [ax]
    if len(axes) != n:
        raise ValueError(f"this figure needs {n} axes, got {len(axes)}")
    return axes


def fitted_runs(r: dict, df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs L(N, D) was fitted on, runs its robust refit dropped), as analysis.sections selects them."""
    pts = df[df.sweep.isin(("isoflop", "grid")) & (df.excluded == "")]
    gone = pts.run_id.isin(set((r.get("parametric") or {}).get("dropped_runs") or []))
    return pts[~gone], pts[gone]


def predicted(p: dict, N, D) -> np.ndarray:
    return p["E"] + p["A"] / np.asarray(N, float) ** p["alpha"] + p["B"] / np.asarray(D, float) ** p["beta"]


def fit_diagnostic(r: dict, df: pd.DataFrame, ax: Sequence[Axes] | None = None, title: str = "") -> Figure:
    """Two panels: observed vs predicted L(N, D) with the identity line; relative residual (%) vs C, coloured by
    tokens per parameter D/N. Runs a robust refit dropped are grey crosses (not fitted, still shown)."""
    a0, a1 = axes_of(ax, 2, (12, 5))
    p = r["parametric"]
    pts, gone = fitted_runs(r, df)
    lab = metric.label(pts if len(pts) else df)
    pred = predicted(p, pts.N, pts.D)
    res = 100 * (pts.loss.to_numpy() / pred - 1)
    tpp = (pts.D / pts.N).to_numpy()
    norm = LogNorm(vmin=max(tpp.min(), 1e-12), vmax=max(tpp.max(), tpp.min() * 1.01)) if len(tpp) else None
    sc = a0.scatter(pred, pts.loss, c=tpp, norm=norm, cmap="plasma", s=14, edgecolors="k", linewidths=0.3)
    lo = float(min(pred.min(), pts.loss.min())) if len(pts) else 0.0
    hi = float(max(pred.max(), pts.loss.max())) if len(pts) else 1.0
    a0.plot([lo, hi], [lo, hi], "k--", lw=1, label="observed = predicted")
    a1.scatter(pts.C, res, c=tpp, norm=norm, cmap="plasma", s=14, edgecolors="k", linewidths=0.3)
    if len(gone):
        gp = predicted(p, gone.N, gone.D)
        a0.scatter(gp, gone.loss, marker="x", color="0.5", label=f"dropped by the robust refit ({len(gone)})")
        a1.scatter(gone.C, 100 * (gone.loss.to_numpy() / gp - 1), marker="x", color="0.5")
    a1.axhline(0, color="k", lw=1, ls="--")
    rmse = float(np.sqrt(np.mean(res**2))) if len(res) else float("nan")
    a0.set(
        xlabel=f"predicted {lab}",
        ylabel=f"observed {lab}",
        title=f"L(N, D) fit on {len(pts)} runs{title}: observed vs predicted",
    )
    a1.set(
        xscale="log",
        xlabel="compute C = 6ND (FLOPs)",
        ylabel="residual: observed / predicted - 1 (%)",
        title=f"relative residuals (rms {rmse:.2g}%){title}; a trend with C or D/N means the form misfits",
    )
    for a in (a0, a1):
        a.title.set_fontsize(9)
    a0.legend(fontsize=7)
    a0.figure.colorbar(sc, ax=[a0, a1], label="tokens per parameter D/N")
    fig = a0.get_figure(root=True)  # the root Figure, as every figure of analysis.plots returns
    assert isinstance(fig, Figure)
    return fig


def frontier_band(ax: Axes, p: dict, Cs: np.ndarray) -> None:
    """The 95% bootstrap band of the compute-optimal N_opt(C) of L(N, D), on an iso-loss map (N = y axis)."""
    boot = p.get("boot_theta")
    if boot is None or not len(boot):
        return
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        n = n_opt(np.asarray(boot, float), np.asarray(Cs, float))  # (R, len(Cs))
    n = np.where(np.isfinite(n) & (n > 0), n, np.nan)
    if np.isnan(n).all():
        return
    lo, hi = np.nanpercentile(n, [2.5, 97.5], axis=0)
    ax.fill_between(Cs, lo, hi, color="r", alpha=0.15, label="95% bootstrap band of the frontier")
