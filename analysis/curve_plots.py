"""Plots of training curves (from analysis.curves.load_curves): each function draws on `ax=` when given (else on a
new Figure) and returns the figure.

- `isoflop_curves`: per IsoFLOP budget, training loss against tokens, one line per run coloured by M, so the
  trade-off is visible as it forms: small models drop fast and flatten, large ones start slow.
- `hparams_valley`: per hparams budget, final loss against peak learning rate, one line per batch size: the valley
  DeepSeek's near-optimal band is cut from; diverged runs are marked at the top edge at their learning rate.
- `write_curve_plots(curves, out_dir)`: both, for every budget, as PNG files (what `analysis.fit` calls).

Figures are built with matplotlib's object API (`matplotlib.figure.Figure`), never pyplot: importing this module
does not switch the backend of a notebook or an application that imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

from scaling.base.atomic import atomic_file


def _ax(ax: Axes | None, size: tuple[float, float] = (6.0, 4.2)) -> Axes:
    return ax if ax is not None else Figure(figsize=size, layout="constrained").add_subplot()


def _figure(ax: Axes) -> Figure:
    fig = ax.get_figure(root=True)
    assert isinstance(fig, Figure)
    return fig


def _si(v: float) -> str:
    """Compact tick label: 2e7 -> '20M', 1.5e9 -> '1.5B' (token counts)."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}"


def _sci(v: float) -> str:
    """Compact tick label: 0.002 -> '2e-3', 0.0015 -> '1.5e-3' (learning rates)."""
    m, e = f"{v:.2e}".split("e")
    return f"{float(m):g}e{int(e)}"


def log_ticks(ax: Axes, lo: float, hi: float, fmt: Callable[[float], str], max_ticks: int = 5) -> None:
    """At most `max_ticks` labelled x ticks at 1-2-5 steps (finer inside a narrow range), no minor labels.

    Matplotlib labels minor ticks of a log axis that spans less than a decade, and on a panel a few inches wide
    labels such as 2x10^-3, 3x10^-3, 4x10^-3 run into each other; short labels at a few round values do not."""
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo <= hi):
        return
    decades = range(int(np.floor(np.log10(lo))) - 1, int(np.ceil(np.log10(hi))) + 1)
    for mantissas in ((1,), (1, 3), (1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [m * 10.0**d for d in decades for m in mantissas if lo <= m * 10.0**d <= hi]
        if len(ticks) >= 3:
            break
    ticks = ticks[:: -(-len(ticks) // max_ticks)] if len(ticks) > max_ticks else ticks
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _budgets(curves: pd.DataFrame, sweep: str) -> list[float]:
    sub = curves[curves.sweep == sweep]
    return sorted(pd.to_numeric(sub.budget, errors="coerce").dropna().unique().tolist())


def _at_budget(curves: pd.DataFrame, sweep: str, budget: float | None) -> pd.DataFrame:
    sub = curves[curves.sweep == sweep]
    if budget is not None:
        sub = sub[np.isclose(pd.to_numeric(sub.budget, errors="coerce"), budget, rtol=1e-6)]
    return sub


def isoflop_curves(
    curves: pd.DataFrame, budget: float | None = None, ax: Axes | None = None, y: str = "loss_ema"
) -> Figure:
    """Training loss (`y`, default the smoothed loss) against tokens for the isoflop runs at `budget`, by M."""
    ax = _ax(ax)
    sub = _at_budget(curves, "isoflop", budget)
    runs = sub.groupby("run_id", sort=False)
    Ms = pd.to_numeric(sub.groupby("run_id").M.first(), errors="coerce")  # records are untrusted: NaN, not a crash
    ok = Ms[Ms > 0]
    norm = LogNorm(ok.min(), ok.max()) if len(ok) and ok.max() > ok.min() else Normalize(0, 1)
    cmap = colormaps["viridis"]
    for rid, run in runs:
        run = run.sort_values("tokens")
        diverged = (run.status == "diverged").any()
        color = cmap(norm(Ms[rid])) if Ms[rid] > 0 else "0.5"  # grey: a run whose M is unknown
        ax.plot(run.tokens, run[y], color=color, lw=1.2, ls=":" if diverged else "-")
    ax.set_xscale("log")
    tok = pd.to_numeric(sub.tokens, errors="coerce")
    tok = tok[tok > 0]
    if len(tok):
        log_ticks(ax, float(tok.min()), float(tok.max()), _si)
    ax.set_xlabel("tokens trained")
    ax.set_ylabel(f"training loss ({y}, nats/token)")
    title = "IsoFLOP runs" if budget is None else f"IsoFLOP C = {budget:.3g} FLOPs"
    ax.set_title(f"{title}: {len(Ms)} runs")
    if len(Ms):
        ax.figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="M (FLOPs/token)")
    return _figure(ax)


def _final(curves: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its record keys and final loss (the record's val_loss, else its last smoothed train loss)."""
    last = curves.sort_values("step").groupby("run_id", sort=False).tail(1).set_index("run_id")
    final = pd.to_numeric(last.get("run_val_loss"), errors="coerce") if "run_val_loss" in last else np.nan
    last["final_loss"] = pd.Series(final, index=last.index).fillna(last.loss_ema)
    return last


def hparams_valley(curves: pd.DataFrame, budget: float | None = None, ax: Axes | None = None) -> Figure:
    """Final loss against peak lr, one line per batch size, at one hparams budget; diverged runs marked x on top."""
    ax = _ax(ax)
    runs = _final(_at_budget(curves, "hparams", budget))
    lr = pd.to_numeric(runs.get("run_lr", runs.get("lr")), errors="coerce")
    runs = runs.assign(peak_lr=lr, batch_size=pd.to_numeric(runs.batch_size, errors="coerce"))
    ok = runs[runs.status == "completed"]
    bad = runs[runs.status == "diverged"]
    batches = sorted(runs.batch_size.dropna().unique())
    cmap = colormaps["plasma"]
    for k, b in enumerate(batches):
        col = cmap(0.85 * k / max(len(batches) - 1, 1))
        pts = ok[ok.batch_size == b].sort_values("peak_lr")
        ax.plot(pts.peak_lr, pts.final_loss, "o-", color=col, ms=4, lw=1.2, label=f"B = {int(b):,} tokens")
        div = bad[bad.batch_size == b]
        if len(div):
            top = ok.final_loss.max() if len(ok) else 1.0
            ax.plot(div.peak_lr, np.full(len(div), top), "x", color=col, ms=8, mew=2, clip_on=False)
    if len(bad):
        ax.plot([], [], "x", color="0.3", label=f"diverged ({len(bad)})")
    ax.set_xscale("log")
    lrs = runs.peak_lr[runs.peak_lr > 0]
    if len(lrs):
        log_ticks(ax, float(lrs.min()), float(lrs.max()), _sci)
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("final loss (nats/token)")
    title = "hparams runs" if budget is None else f"hparams C = {budget:.3g} FLOPs"
    ax.set_title(f"{title}: {len(runs)} runs")
    if batches:
        ax.legend(fontsize=7)
    return _figure(ax)


def _grid(n: int) -> Figure:
    cols = min(n, 3)
    return Figure(figsize=(5.2 * cols, 4.0 * -(-n // cols)), layout="constrained")


def write_curve_plots(curves: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """isoflop_training_curves.png and hparams_valley.png (one panel per budget) in out_dir; the paths written."""
    out_dir = Path(out_dir)
    written = []
    for sweep, name, draw in (
        ("isoflop", "isoflop_training_curves.png", isoflop_curves),
        ("hparams", "hparams_valley.png", hparams_valley),
    ):
        budgets = _budgets(curves, sweep)
        if not budgets:
            continue
        fig = _grid(len(budgets))
        cols = min(len(budgets), 3)
        for i, b in enumerate(budgets):
            draw(curves, b, ax=fig.add_subplot(-(-len(budgets) // cols), cols, i + 1))
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_file(out_dir / name, "wb") as f:
            fig.savefig(f, format="png", dpi=110)
        written.append(out_dir / name)
    return written
