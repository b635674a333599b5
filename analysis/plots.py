"""Figures of the fitted laws, one function per figure, each readable without the report (units, legend, title).

Every function draws on `ax=` when given (a pair of axes for the two-panel figures) and otherwise on a new
`matplotlib.figure.Figure`, and returns the figure. Built with matplotlib's object API, never pyplot: importing
this module does not switch the backend of a notebook or an application. `write_all` saves PNGs for the CLI.
Labels say what the data is: the loss kind (validation for run records, as given for tables) and the model-scale
convention (M, or 6N from a table's N).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis.isoflop import window_mask
from analysis.powerlaw import band_at
from scaling.atomic import atomic_file
from scaling.laws import DEEPSEEK


def _axes(ax, n: int, size: tuple[float, float]) -> list[Axes]:
    if ax is None:
        fig = Figure(figsize=size, layout="constrained")
        return list(np.atleast_1d(fig.subplots(1, n)))
    axes = list(ax) if isinstance(ax, Sequence | np.ndarray) else [ax]
    if len(axes) != n:
        raise ValueError(f"this figure needs {n} axes, got {len(axes)}")
    return axes


def loss_label(df: pd.DataFrame) -> str:
    kinds = sorted(set(df.loss_kind)) if "loss_kind" in df and len(df) else ["validation"]
    kind = {"validation": "validation loss", "training": "training loss"}.get(kinds[0], "loss (as given)")
    return (kind if len(kinds) == 1 else "loss (mixed kinds: " + ", ".join(kinds) + ")") + " (nats/token)"


def scale_label(df: pd.DataFrame) -> str:
    scales = sorted(set(df.scale)) if "scale" in df and len(df) else ["M"]
    names = {
        "M": "M (non-embedding FLOPs per token)",
        "6N": "6N from the table's N (FLOPs per token)",
        "C/D": "M = C/D (FLOPs per token)",
    }
    return " / ".join(names.get(s, s) for s in scales)


def _save(fig: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "wb") as f:
        fig.savefig(f, dpi=110, format="png")


def isoflop_curves(r: dict, df: pd.DataFrame, ax: Axes | None = None, title: str = "") -> Figure:
    """Loss vs M per budget, each budget's parabola over its fitted window and its minimum (excluded: grey)."""
    (ax,) = _axes(ax, 1, (7.5, 5))
    iso = df[(df.sweep == "isoflop") & df.budget_group.notna()]
    cmap = colormaps["viridis"]
    buds = (r.get("isoflop") or {}).get("budgets") or []
    n_ex = sum(not b["used"] for b in buds)
    first_ex = next((b for b in buds if not b["used"]), None)
    for k, b in enumerate(buds):
        pts = iso[iso.budget_group == b["budget"]]
        col = cmap(k / max(len(buds) - 1, 1)) if b["used"] else "0.6"
        lab = (
            f"C={b['C']:.2g} FLOPs"
            if b["used"]
            else (f"{n_ex} excluded budget(s), see report" if b is first_ex else None)
        )
        ax.scatter(pts.M, pts.loss, s=14, color=col, label=lab)
        if b.get("curve") and b["M_opt"]:  # the joint estimator's fitted profile (analysis.isoflop)
            ax.plot(b["curve"]["M"], b["curve"]["loss"], color=col, ls="-" if b["used"] else "--", lw=1)
            if b["used"]:
                ax.plot(b["M_opt"], b["loss_min"], "*", ms=11, color=col, mec="k")
        elif len(pts) >= 3 and b["M_opt"]:
            x, y = np.log10(pts.M.to_numpy()), pts.loss.to_numpy()
            w = (b.get("window") or {}).get("half_width_decades") or 0.0
            m = window_mask(x, y, w)
            c = np.polyfit(x[m], y[m], 2)
            xs = np.linspace(x[m].min(), x[m].max(), 100)
            ax.plot(10**xs, np.polyval(c, xs), color=col, ls="-" if b["used"] else "--", lw=1)
            if b["used"]:
                ax.plot(b["M_opt"], b["loss_min"], "*", ms=11, color=col, mec="k")
    ax.set(
        xscale="log",
        xlabel=scale_label(iso),
        ylabel=loss_label(iso),
        title=f"IsoFLOP profiles{title}: "
        + (
            "joint fit, shared skew"
            if (r.get("isoflop") or {}).get("estimator") == "joint"
            else "parabola in log M on each fitted window"
        )
        + ", * = M_opt",
    )
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, ncol=2)
    return ax.figure


def optimal_scaling(r: dict, ax: Sequence[Axes] | None = None, title: str = "") -> Figure:
    """M_opt and D_opt vs C: budget optima, fitted laws with 95% bootstrap bands, DeepSeek's laws, targets."""
    axes = _axes(ax, 2, (12, 5))
    iso = r["isoflop"]
    used = [b for b in iso["budgets"] if b["used"]]
    ex = r.get("extrapolation") or {}
    Cmax = max([b["C"] for b in used] + [e["C"] for e in ex.values()])
    Cs = np.geomspace(min(b["C"] for b in used) / 3, Cmax * 3, 200)
    for a, key, lab in ((axes[0], "M_opt", "M_opt (FLOPs per token)"), (axes[1], "D_opt", "D_opt (tokens)")):
        law = iso[key]
        a.scatter([b["C"] for b in used], [b[key] for b in used], color="C0", zorder=3, label="budget optima")
        a.plot(Cs, law(Cs), color="C0", label=f"fit {law.coef:.3g} C^{law.exponent:.3f}")
        if "boot" in iso:
            bt = iso["boot"]
            lc, e_ = (bt["log_coef"], bt["exponent"]) if key == "M_opt" else (-bt["log_coef"], 1 - bt["exponent"])
            lo, hi = band_at(Cs, lc, e_)
            a.fill_between(Cs, lo, hi, color="C0", alpha=0.2, label="95% bootstrap band")
        a.plot(Cs, DEEPSEEK[key](Cs), "k--", lw=1, label=f"DeepSeek {DEEPSEEK[key].coef} C^{DEEPSEEK[key].exponent}")
        for i, (t, e) in enumerate(ex.items()):
            a.scatter(
                e["C"],
                e["M"] if key == "M_opt" else e["D"],
                marker="D",
                color=f"C{i + 1}",
                zorder=4,
                label=f"{t} (as trained, D={e['D']:.2g})",
            )
        a.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel=lab, title=f"{key} vs compute{title}")
        a.legend(fontsize=7)
    return axes[0].figure


def hparams(r: dict, df: pd.DataFrame, ax: Sequence[Axes] | None = None, title: str = "") -> Figure:
    """Learning rate and batch size vs C: all runs, the near-optimal band, fits with 95% bands (DeepSeek Fig. 3)."""
    axes = _axes(ax, 2, (12, 5))
    hp = r["hparams"]
    pts = df[(df.sweep == "hparams") & df.budget_group.notna()]
    Cs = np.geomspace(pts.C.min() / 3, pts.C.max() * 3, 100)
    for a, key, col, lab in (
        (axes[0], "eta_opt", "lr", "peak learning rate"),
        (axes[1], "B_opt", "batch_size", "batch size (tokens)"),
    ):
        a.scatter(pts.C, pts[col], s=10, color="0.75", label="all runs")
        band = pts[pts.in_band.astype(bool)]
        a.scatter(band.C, band[col], s=22, color="C3", label=f"near-optimal band (<= {hp['band']:.2%} of best)")
        law = hp[key]
        a.plot(Cs, law(Cs), color="C3", label=f"fit {law.coef:.3g} C^{law.exponent:.3f}")
        if "boot" in hp:
            lo, hi = band_at(Cs, hp["boot"][key]["log_coef"], hp["boot"][key]["exponent"])
            a.fill_between(Cs, lo, hi, color="C3", alpha=0.15, label="95% bootstrap band")
        a.plot(Cs, DEEPSEEK[key](Cs), "k--", lw=1, label=f"DeepSeek {DEEPSEEK[key].coef} C^{DEEPSEEK[key].exponent}")
        a.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel=lab, title=f"{lab} vs compute{title}")
        a.legend(fontsize=7)
    return axes[0].figure


def loss_curve(r: dict, ax: Axes | None = None, title: str = "", ylabel: str = "minimum loss (nats/token)") -> Figure:
    """Budget minimum losses vs C with both L(C) forms and the held-out-largest-budget backtest."""
    from analysis.losscurve import fit_losscurve, predict

    (ax,) = _axes(ax, 1, (7.5, 5))
    loss, used = r["loss"], [b for b in r["isoflop"]["budgets"] if b["used"]]
    C = np.array([b["C"] for b in used])
    L = np.array([b["loss_min"] for b in used])
    Cs = np.geomspace(C.min() / 3, C.max() * 30, 200)
    ax.scatter(C, L, color="C0", zorder=3, label="IsoFLOP minima")
    if "saturating" in loss:
        s = loss["saturating"]
        ax.plot(
            Cs,
            s["E"] + s["A"] * Cs ** -s["alpha"],
            color="C0",
            label=f"{s['E']:.3g} + {s['A']:.3g} C^-{s['alpha']:.3f}",
        )
    p = loss["power"]
    ax.plot(Cs, p["k"] * Cs ** -p["alpha"], color="C2", ls=":", label=f"{p['k']:.3g} C^-{p['alpha']:.3f}")
    bt = loss.get("backtest") or {}
    if "loss_pred" in bt:
        keep = C != bt["held_out_C"]
        f = fit_losscurve(C[keep], L[keep])
        ax.plot(Cs, predict(f, Cs), color="C1", ls="--", lw=1, label="fit without the largest budget")
        ax.scatter(
            [bt["held_out_C"]],
            [bt["loss_pred"]],
            marker="x",
            s=60,
            color="C1",
            zorder=4,
            label=f"backtest prediction ({bt['loss_err_pct']:+.2f}%)",
        )
    ax.set(xscale="log", xlabel="compute C (FLOPs)", ylabel=ylabel, title=f"Loss scaling L(C){title}")
    ax.legend(fontsize=7)
    return ax.figure


def parametric(r: dict, df: pd.DataFrame, ax: Axes | None = None, title: str = "") -> Figure:
    """Iso-loss contours of the fitted L(N, D) over (C, N), the runs it was fitted on, the efficient frontier."""
    (ax,) = _axes(ax, 1, (7.5, 5))
    p = r["parametric"]
    pts = df[df.sweep.isin(("isoflop", "grid")) & (df.excluded == "")]
    lc = np.linspace(np.log10(pts.C.min()) - 0.5, np.log10(pts.C.max()) + 1, 120)
    ln = np.linspace(np.log10(pts.N.min()) - 0.5, np.log10(pts.N.max()) + 0.7, 120)
    CC, NN = np.meshgrid(10**lc, 10**ln)
    LL = p["E"] + p["A"] / NN ** p["alpha"] + p["B"] / (CC / (6 * NN)) ** p["beta"]
    cs = ax.contour(CC, NN, LL, levels=np.quantile(LL, np.linspace(0.02, 0.9, 12)), cmap="viridis", linewidths=0.8)
    ax.clabel(cs, fontsize=6, fmt="%.2f")
    sc = ax.scatter(pts.C, pts.N, c=pts.loss, s=12, cmap="viridis", edgecolors="k", linewidths=0.3, label="runs")
    ax.figure.colorbar(sc, ax=ax, label=loss_label(pts))
    ax.plot(
        10**lc, p["M_opt"]["coef"] / 6 * (10**lc) ** p["a"], "r-", label=f"efficient frontier N_opt ~ C^{p['a']:.3f}"
    )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="compute C = 6ND (FLOPs)",
        ylabel="N (the table's N, else M/6: FLOPs-equivalent parameters)",
        title=f"Parametric L(N,D) = {p['E']:.3g} + {p['A']:.3g}/N^{p['alpha']:.3f} + "
        f"{p['B']:.3g}/D^{p['beta']:.3f}{title}",
    )
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    return ax.figure


def write_all(r: dict, df: pd.DataFrame, out: Path, suffix: str = "", name: str = "") -> list[Path]:
    """Every figure the dataset's fits support, as PNGs; returns the paths written."""
    t = f" [{name}]" if name else ""
    iso = df[df.sweep == "isoflop"]
    jobs = [
        ("isoflop", "isoflop" in r or not iso.empty, lambda: isoflop_curves(r, df, title=t)),
        ("optimal_scaling", "isoflop" in r, lambda: optimal_scaling(r, title=t)),
        ("hparams", "hparams" in r, lambda: hparams(r, df, title=t)),
        ("loss_curve", "loss" in r, lambda: loss_curve(r, title=t, ylabel="minimum " + loss_label(iso))),
        ("parametric", "parametric" in r, lambda: parametric(r, df, title=t)),
    ]
    written = []
    for fname, ok, fn in jobs:
        if ok:
            path = out / f"{fname}{suffix}.png"
            _save(fn(), path)
            written.append(path)
    return written
