"""Figures of the fitted laws, one function per figure, each readable without the report (units, legend, title).

Every figure draws the data it has whatever failed to fit (the raw points are what show why a fit failed), and its
title says what was fitted and what was not. Every function takes (r, df, ax=None, title="") — r a dataset's
report dict, df its run table — draws on `ax=` when given (a pair of axes for the two-panel figures) and otherwise
on a new `matplotlib.figure.Figure`, and returns the figure. `figure(kind, ...)` is the one entry point of both
the CLI (`write_all`, PNGs) and the notebook API (`FitResult.plot`), so both render the same figure.
Built with matplotlib's object API, never pyplot: importing this module does not switch the backend of a
notebook or an application. Labels say what the data is: the loss kind (validation for run records, as given
for tables) and the model-scale convention (M, or 6N from a table's N).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis import metric, nd_plots
from analysis.isoflop import window_mask
from analysis.powerlaw import band_at
from scaling.base.atomic import atomic_file
from scaling.base.laws import DEEPSEEK


def _figure(ax: Axes) -> Figure:
    fig = ax.get_figure(root=True)
    assert isinstance(fig, Figure)
    return fig


def _title(ax: Axes, text: str, width: int = 90) -> None:
    ax.set_title("\n".join(textwrap.wrap(text, width)), fontsize=9)


def _legend(ax: Axes, **kw) -> None:
    """A legend only when something is labelled (an empty one is a matplotlib warning and an empty box)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize=7, **kw)


def _why(text: str, n: int = 70) -> str:
    return textwrap.shorten(str(text).split(" [excluded: ")[0], n, placeholder="...")


def _reason(warning: str) -> str:
    """A budget's warning as a legend entry: its head ('best run at the edge of the grid', 'too flat')."""
    return textwrap.shorten(warning.split(":")[0].split(";")[0], 34, placeholder="...")


def loss_label(df: pd.DataFrame) -> str:
    """The loss axis label: the kind in the data's own words and the unit (never nats/token unless known)."""
    return metric.label(df)


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


def _used(df: pd.DataFrame, sweeps: tuple[str, ...]) -> pd.DataFrame:
    ok = df.excluded == "" if "excluded" in df else pd.Series(True, index=df.index)
    return df[df.sweep.isin(sweeps) & ok & df.budget_group.notna() & (df.loss > 0)]


def _budgets(r: dict) -> list[dict]:
    """The IsoFLOP per-budget fits, whether or not the law was fitted."""
    return (r.get("isoflop") or {}).get("budgets") or r.get("isoflop_budgets") or []


def _status(r: dict, key: str, law: str) -> str:
    """'<law> not fitted: <why>' for a section that is absent from the dataset's report."""
    why = (r.get("skipped") or {}).get(key) or (r.get("not_applicable") or {}).get(key)
    return f"{law} not fitted" + (f": {_why(why)}" if why else "")


def isoflop_curves(r: dict, df: pd.DataFrame, ax: Axes | None = None, title: str = "") -> Figure:
    """Loss vs M per budget: every run, each budget's parabola over its fitted window and its vertex; budgets left
    out of the M_opt law are hollow, with their reason in the legend."""
    (ax,) = nd_plots.axes_of(ax, 1, (7.5, 5))
    iso = _used(df, ("isoflop",))
    fits = _budgets(r)
    groups = sorted(iso.budget_group.unique())
    cmap = colormaps["viridis"]
    n_in = 0
    for k, g in enumerate(groups):
        pts = iso[iso.budget_group == g]
        b = next((f for f in fits if np.isclose(f["budget"], g, rtol=1e-9)), {})
        col = cmap(0.9 * k / max(len(groups) - 1, 1))
        used = bool(b.get("used"))
        n_in += used
        why = "" if used else f", left out: {_reason((b.get('warnings') or ['not fitted'])[0])}"
        ax.scatter(
            pts.M, pts.loss, s=18, color=col if used else "none", edgecolors=col, label=f"C={g:.2g}{why}", zorder=3
        )
        if b.get("curve") and b.get("M_opt"):  # the joint estimator's fitted profile (analysis.isoflop)
            ax.plot(b["curve"]["M"], b["curve"]["loss"], color=col, ls="-" if used else "--", lw=1)
            ax.plot(b["M_opt"], b["loss_min"], "*", ms=11, color=col if used else "none", mec=col if not used else "k")
        elif len(pts) >= 3 and b.get("M_opt"):
            x, y = np.log10(pts.M.to_numpy(float)), pts.loss.to_numpy(float)
            w = (b.get("window") or {}).get("half_width_decades") or 0.0
            m = window_mask(x, y, w)
            c = np.polyfit(x[m], y[m], 2)
            xs = np.linspace(x[m].min(), x[m].max(), 100)
            ax.plot(10**xs, np.polyval(c, xs), color=col, ls="-" if used else "--", lw=1)
            ax.plot(b["M_opt"], b["loss_min"], "*", ms=11, color=col if used else "none", mec=col if not used else "k")
    ax.set(xscale="log", xlabel=scale_label(iso), ylabel=loss_label(iso))
    law = (
        f"M_opt law on {n_in} of {len(groups)} budgets"
        if "isoflop" in r
        else _status(r, "isoflop", "M_opt law") or "M_opt law not fitted"
    )
    how = (
        "joint fit of every budget (shared skew), * = each budget's minimum"
        if (r.get("isoflop") or {}).get("estimator", "joint") == "joint" and any(f.get("curve") for f in fits)
        else "parabola in log M per budget, * = its vertex"
    )
    _title(ax, f"IsoFLOP profiles{title}: {len(iso)} runs; {how}; {law}")
    _legend(ax, ncol=2 if n_in == len(groups) and len(groups) > 4 else 1)
    return _figure(ax)


def optimal_scaling(r: dict, df: pd.DataFrame, ax: Sequence[Axes] | None = None, title: str = "") -> Figure:
    """M_opt and D_opt vs C: budget optima (hollow: left out of the law), the fitted laws with 95% bootstrap
    bands when fitted, DeepSeek's laws, the targets."""
    axes = nd_plots.axes_of(ax, 2, (12, 5))
    iso = r.get("isoflop")
    buds = [b for b in _budgets(r) if b.get("M_opt")]
    used = [b for b in buds if b["used"]]
    left = [b for b in buds if not b["used"]]
    ex = r.get("extrapolation") or {}
    known = [b["C"] for b in _budgets(r)] + [e["C"] for e in ex.values()]
    if not known:
        known = list(_used(df, ("isoflop",)).C) or [1e18]
    Cs = np.geomspace(min(known) / 3, max(known) * 3, 200)
    other = [s for s in r.get("scales", ["M"]) if s != "M"]  # a table's own model scale (6N, C/D), not DeepSeek's M
    for a, key, lab in ((axes[0], "M_opt", "M_opt (FLOPs per token)"), (axes[1], "D_opt", "D_opt (tokens)")):
        a.scatter([b["C"] for b in used], [b[key] for b in used], color="C0", zorder=3, label="budget optima (in law)")
        if left:
            a.scatter(
                [b["C"] for b in left],
                [b[key] for b in left],
                color="none",
                edgecolors="C0",
                zorder=3,
                label="budget vertices left out of the law",
            )
        if iso:
            law = iso[key]
            a.plot(Cs, law(Cs), color="C0", label=f"fit {law.coef:.3g} C^{law.exponent:.3f}")
            if "boot" in iso:
                bt = iso["boot"]
                lc, e_ = (bt["log_coef"], bt["exponent"]) if key == "M_opt" else (-bt["log_coef"], 1 - bt["exponent"])
                lo, hi = band_at(Cs, lc, e_)
                a.fill_between(Cs, lo, hi, color="C0", alpha=0.2, label="95% bootstrap band")
        a.plot(Cs, DEEPSEEK[key](Cs), "k--", lw=1, alpha=0.4 if other else 1, label=deepseek_label(key, other))
        for i, (t, e) in enumerate(ex.items()):
            a.scatter(
                e["C"],
                e["M"] if key == "M_opt" else e["D"],
                marker="D",
                color=f"C{i + 1}",
                zorder=4,
                label=f"{t} (as trained, D={e['D']:.2g})",
            )
        a.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel=lab)
        state = f"fitted on {len(used)} budgets" if iso else _status(r, "isoflop", "law")
        _title(a, f"{key} vs compute{title}: {state}", 60)
        _legend(a)
    return _figure(axes[0])


def deepseek_label(key: str, other: list[str]) -> str:
    law = DEEPSEEK[key]
    if not other:
        return f"DeepSeek {law.coef} C^{law.exponent}"
    return f"DeepSeek {law.coef} C^{law.exponent} (in M, C = M*D; this table's scale is {', '.join(other)})"


def hparams(r: dict, df: pd.DataFrame, ax: Sequence[Axes] | None = None, title: str = "") -> Figure:
    """Learning rate and batch size vs C: all runs, the near-optimal band, fits with 95% bands when fitted
    (DeepSeek Fig. 3)."""
    axes = nd_plots.axes_of(ax, 2, (12, 5))
    hp = r.get("hparams")
    pts = _used(df, ("hparams",))
    Cs = np.geomspace(pts.C.min() / 3, pts.C.max() * 3, 100) if len(pts) else np.geomspace(1e17, 1e21, 100)
    band = f"near-optimal band (<= {hp['band']:.2%} of best)" if hp else "near-optimal band of each grid"
    for a, key, col, lab in (
        (axes[0], "eta_opt", "lr", "peak learning rate"),
        (axes[1], "B_opt", "batch_size", "batch size (tokens)"),
    ):
        a.scatter(pts.C, pts[col], s=10, color="0.75", label="all runs")
        near = pts[pts.in_band.astype(bool)] if "in_band" in pts else pts.iloc[:0]
        if len(near):
            a.scatter(near.C, near[col], s=22, color="C3", label=band)
        if hp:
            law = hp[key]
            a.plot(Cs, law(Cs), color="C3", label=f"fit {law.coef:.3g} C^{law.exponent:.3f}")
            if "boot" in hp:
                lo, hi = band_at(Cs, hp["boot"][key]["log_coef"], hp["boot"][key]["exponent"])
                a.fill_between(Cs, lo, hi, color="C3", alpha=0.15, label="95% bootstrap band")
        a.plot(Cs, DEEPSEEK[key](Cs), "k--", lw=1, label=f"DeepSeek {DEEPSEEK[key].coef} C^{DEEPSEEK[key].exponent}")
        a.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel=lab)
        n_b = pts.budget_group.nunique()
        state = f"fitted on {n_b} budgets" if hp else _status(r, "hparams", "law")
        _title(a, f"{lab} vs compute{title}: {len(pts)} runs; {state}", 60)
        _legend(a)
    return _figure(axes[0])


def _loss_minima(r: dict) -> list[dict]:
    """The budget minima L(C) rests on: its own list (well-determined minima left out of the M_opt law included),
    else every IsoFLOP budget of the law with a minimum."""
    return (r.get("loss") or {}).get("budgets") or [
        b for b in _budgets(r) if b["used"] and b.get("loss_min") is not None
    ]


def _draw_minima(ax: Axes, best: pd.DataFrame, C: np.ndarray, L: np.ndarray, in_law: np.ndarray) -> None:
    """The lowest run of each budget grey, the fitted minima blue (hollow where left out of the M_opt law)."""
    ax.scatter(best.C, best.loss, marker="s", s=16, color="0.6", label="lowest run of each budget", zorder=2)
    if in_law.any():
        ax.scatter(C[in_law], L[in_law], color="C0", zorder=3, label="IsoFLOP minima (parabola vertices)")
    if (~in_law).any():
        ax.scatter(
            C[~in_law],
            L[~in_law],
            color="none",
            edgecolors="C0",
            zorder=3,
            label="well-determined minima left out of the M_opt law",
        )


def _draw_loss_forms(ax: Axes, loss: dict, Cs: np.ndarray) -> None:
    """Every fitted L(C) form over Cs."""
    if "saturating" in loss:
        s = loss["saturating"]
        ax.plot(
            Cs,
            s["E"] + s["A"] * Cs ** -s["alpha"],
            color="C0",
            label=f"{s['E']:.3g} + {s['A']:.3g} C^-{s['alpha']:.3f}",
        )
    if "saturating_E" in loss:
        s = loss["saturating_E"]
        ax.plot(
            Cs,
            s["E"] + s["A"] * Cs ** -s["alpha"],
            color="C4",
            ls="-.",
            label=f"{s['E']:.3g} (E of L(N, D)) + {s['A']:.3g} C^-{s['alpha']:.3f}",
        )
    p = loss["power"]
    ax.plot(Cs, p["k"] * Cs ** -p["alpha"], color="C2", ls=":", label=f"{p['k']:.3g} C^-{p['alpha']:.3f}")


def _draw_backtest(ax: Axes, loss: dict, C: np.ndarray, L: np.ndarray, Cs: np.ndarray) -> None:
    """The fit without the largest budget, and its prediction there, when the backtest was run."""
    from analysis.losscurve import fit_losscurve, predict

    bt = loss.get("backtest") or {}
    if "loss_pred" not in bt:
        return
    keep = C != bt["held_out_C"]
    f = fit_losscurve(C[keep], L[keep], E_fixed=(loss.get("saturating_E") or {}).get("E"))
    form = bt.get("form") if bt.get("form") in f else None
    ax.plot(Cs, predict(f, Cs, form), color="C1", ls="--", lw=1, label="fit without the largest budget")
    ax.scatter(
        [bt["held_out_C"]],
        [bt["loss_pred"]],
        marker="x",
        s=60,
        color="C1",
        zorder=4,
        label=f"backtest prediction ({bt['loss_err_pct']:+.2f}%)",
    )


def loss_curve(r: dict, df: pd.DataFrame, ax: Axes | None = None, title: str = "") -> Figure:
    """Budget minimum losses vs C with every fitted L(C) form (the one used for predictions named in the title)
    and the held-out-largest-budget backtest when fitted; the lowest run of each IsoFLOP budget otherwise."""
    (ax,) = nd_plots.axes_of(ax, 1, (7.5, 5))
    iso = _used(df, ("isoflop",))
    loss = r.get("loss")
    used = _loss_minima(r)
    best = iso.loc[iso.groupby("budget_group").loss.idxmin()] if len(iso) else iso
    C = np.array([b["C"] for b in used])
    L = np.array([b["loss_min"] for b in used])
    _draw_minima(ax, best, C, L, np.array([b.get("in_M_opt_law", True) for b in used], bool))
    allC = np.concatenate([C, best.C.to_numpy(float)])
    Cs = np.geomspace(allC.min() / 3, allC.max() * 30, 200) if len(allC) else np.geomspace(1e17, 1e21, 200)
    if loss:
        _draw_loss_forms(ax, loss, Cs)
        _draw_backtest(ax, loss, C, L, Cs)
    ax.set(xscale="log", xlabel="compute C (FLOPs)", ylabel="minimum " + loss_label(iso))
    if loss:
        chosen = loss[loss["form"]]["form"] if loss.get("form") in loss else "?"
        state = f"fitted on {len(used)} budget minima; used: {chosen}"
    else:
        state = _status(r, "loss", "L(C)")
    _title(ax, f"Loss scaling L(C){title}: {state}")
    _legend(ax)
    return _figure(ax)


def parametric(r: dict, df: pd.DataFrame, ax: Axes | None = None, title: str = "") -> Figure:
    """The iso-loss map: the runs over (C, N) coloured by loss; when L(N, D) is fitted, its iso-loss contours and
    the compute-optimal frontier with its 95% bootstrap band."""
    (ax,) = nd_plots.axes_of(ax, 1, (7.5, 5))
    p = r.get("parametric")
    pts = df[df.sweep.isin(("isoflop", "grid")) & (df.excluded == "") & (df.loss > 0) & (df.N > 0) & (df.C > 0)]
    if len(pts):
        lc = np.linspace(np.log10(pts.C.min()) - 0.5, np.log10(pts.C.max()) + 1, 120)
        ln = np.linspace(np.log10(pts.N.min()) - 0.5, np.log10(pts.N.max()) + 0.7, 120)
    else:
        lc, ln = np.linspace(17, 21, 120), np.linspace(7, 10, 120)
    if p:
        CC, NN = np.meshgrid(10**lc, 10**ln)
        LL = p["E"] + p["A"] / NN ** p["alpha"] + p["B"] / (CC / (6 * NN)) ** p["beta"]
        levels = np.unique(np.quantile(LL[np.isfinite(LL)], np.linspace(0.02, 0.9, 12)))
        if len(levels) > 1:
            cs = ax.contour(CC, NN, LL, levels=levels, cmap="viridis", linewidths=0.8)
            ax.clabel(cs, fontsize=6, fmt="%.2f")
        ax.plot(
            10**lc,
            p["M_opt"]["coef"] / 6 * (10**lc) ** p["a"],
            "r-",
            label=f"compute-optimal frontier N_opt ~ C^{p['a']:.3f}",
        )
        nd_plots.frontier_band(ax, p, 10**lc)
    if len(pts):
        sc = ax.scatter(pts.C, pts.N, c=pts.loss, s=12, cmap="viridis", edgecolors="k", linewidths=0.3, label="runs")
        _figure(ax).colorbar(sc, ax=ax, label=loss_label(pts))
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="compute C = 6ND (FLOPs)",
        ylabel="N (the table's N, else M/6: FLOPs-equivalent parameters)",
        xlim=(10 ** lc[0], 10 ** lc[-1]),
        ylim=(10 ** ln[0], 10 ** ln[-1]),
    )
    if p:
        head = (
            f"Parametric L(N,D) = {p['E']:.3g} + {p['A']:.3g}/N^{p['alpha']:.3f} + "
            f"{p['B']:.3g}/D^{p['beta']:.3f}{title}: fitted on {p['n_runs']} runs"
        )
    else:
        head = f"Runs over compute and size{title}: {len(pts)} runs; {_status(r, 'parametric', 'L(N, D)')}"
    _title(ax, head)
    _legend(ax)
    return _figure(ax)


def fit_diagnostic(r: dict, df: pd.DataFrame, ax: Sequence[Axes] | None = None, title: str = "") -> Figure:
    """Observed vs predicted L(N, D) and its residuals (analysis.nd_plots); a diagnostic of the fit, so drawn only
    where L(N, D) was fitted (`figure` says why not otherwise)."""
    return nd_plots.fit_diagnostic(r, df, ax=ax, title=title)


@dataclass(frozen=True)
class Kind:
    """One figure: how to draw it, which runs it shows, and the law it cannot be drawn without (None: it draws its
    runs whatever failed to fit)."""

    draw: Callable[..., Figure]
    sweeps: tuple[str, ...]
    law: str | None = None


# kind -> Kind; a kind is drawn (by write_all, as <kind>.png) when its runs exist and its law, if any, was fitted.
FIGURES: dict[str, Kind] = {
    "isoflop": Kind(isoflop_curves, ("isoflop",)),
    "optimal_scaling": Kind(optimal_scaling, ("isoflop",)),
    "hparams": Kind(hparams, ("hparams",)),
    "loss_curve": Kind(loss_curve, ("isoflop",)),
    "parametric": Kind(parametric, ("isoflop", "grid")),
    "fit_diagnostic": Kind(fit_diagnostic, ("isoflop", "grid"), law="parametric"),
}
LAW_NAMES = {"parametric": "L(N, D)"}
# Other names of a figure (res.plot("iso_loss")): drawn once, under the registered name, by write_all.
ALIASES = {"iso_loss": "parametric"}


def has_data(kind: str, df: pd.DataFrame) -> bool:
    return bool(len(_used(df, FIGURES[ALIASES.get(kind, kind)].sweeps)))


def figure(kind: str, r: dict, df: pd.DataFrame, ax=None, title: str = "") -> Figure:
    """One figure by name: what `write_all` saves and `FitResult.plot` returns. ValueError for an unknown kind, one
    whose runs are not in the data (an IsoFLOP figure of an hparams-only table), or one whose law was not fitted."""
    k = FIGURES.get(ALIASES.get(kind, kind))
    if k is None:
        raise ValueError(f"unknown plot {kind!r}; choose one of {', '.join([*FIGURES, *ALIASES])}")
    if not has_data(kind, df):
        raise ValueError(f"no {' or '.join(k.sweeps)} runs to draw for {kind!r}")
    if k.law and k.law not in r:
        raise ValueError(f"{kind!r} is a diagnostic of a fit: {_status(r, k.law, LAW_NAMES.get(k.law, k.law))}")
    return k.draw(r, df, ax=ax, title=title)


def write_all(r: dict, df: pd.DataFrame, out: Path, suffix: str = "", name: str = "") -> list[Path]:
    """Every figure the dataset's runs (and, for a fit's diagnostic, its fits) support, as PNGs; returns the paths
    written."""
    t = f" [{name}]" if name else ""
    written = []
    for kind, k in FIGURES.items():
        if has_data(kind, df) and (k.law is None or k.law in r):
            path = out / f"{kind}{suffix}.png"
            _save(figure(kind, r, df, title=t), path)
            written.append(path)
    return written
