"""Figures, one function per figure, each readable without the report (units, legend, title). Agg backend."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from scaling.laws import DEEPSEEK  # noqa: E402
from analysis.powerlaw import band_at  # noqa: E402


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def isoflop_curves(r: dict, df: pd.DataFrame, path: Path, title: str = "") -> None:
    """Loss vs M per budget, with each budget's parabola and minimum (excluded budgets dashed, grey)."""
    iso = df[(df.sweep == "isoflop") & df.budget_group.notna()]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    cmap = plt.get_cmap("viridis")
    buds = (r.get("isoflop") or {}).get("budgets") or []
    n_ex = sum(not b["used"] for b in buds)
    for k, b in enumerate(buds):
        pts = iso[iso.budget_group == b["budget"]]
        col = cmap(k / max(len(buds) - 1, 1)) if b["used"] else "0.6"
        first_ex = not b["used"] and b is next(x for x in buds if not x["used"])
        lab = f"C={b['C']:.2g} FLOPs" if b["used"] else (f"{n_ex} excluded budget(s), see report" if first_ex else None)
        ax.scatter(pts.M, pts.loss, s=14, color=col, label=lab)
        if len(pts) >= 3 and b["M_opt"]:
            x = np.log10(pts.M.to_numpy())
            c = np.polyfit(x, pts.loss, 2)
            xs = np.linspace(x.min(), x.max(), 100)
            ax.plot(10 ** xs, np.polyval(c, xs), color=col, ls="-" if b["used"] else "--", lw=1)
            if b["used"]:
                ax.plot(b["M_opt"], b["loss_min"], "*", ms=11, color=col, mec="k")
    ax.set(xscale="log", xlabel="M (non-embedding FLOPs per token)", ylabel="validation loss (nats/token)",
           title=f"IsoFLOP profiles{title}: parabola in log M per budget, * = M_opt")
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)


def optimal_scaling(r: dict, path: Path, title: str = "") -> None:
    """M_opt and D_opt vs C: budget optima, fitted laws with 95% bootstrap bands, DeepSeek's laws, targets."""
    iso = r["isoflop"]
    used = [b for b in iso["budgets"] if b["used"]]
    ex = r.get("extrapolation") or {}
    Cmax = max([b["C"] for b in used] + [e["C"] for e in ex.values()])
    Cs = np.geomspace(min(b["C"] for b in used) / 3, Cmax * 3, 200)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, key, lab in ((axes[0], "M_opt", "M_opt (FLOPs per token)"), (axes[1], "D_opt", "D_opt (tokens)")):
        law = iso[key]
        ax.scatter([b["C"] for b in used], [b[key] for b in used], color="C0", zorder=3, label="budget optima")
        ax.plot(Cs, law(Cs), color="C0", label=f"fit {law.coef:.3g} C^{law.exponent:.3f}")
        if "boot" in iso:
            bt = iso["boot"]
            lc, ex_ = (bt["log_coef"], bt["exponent"]) if key == "M_opt" else (-bt["log_coef"], 1 - bt["exponent"])
            lo, hi = band_at(Cs, lc, ex_)
            ax.fill_between(Cs, lo, hi, color="C0", alpha=0.2, label="95% bootstrap band")
        ax.plot(Cs, DEEPSEEK[key](Cs), "k--", lw=1, label=f"DeepSeek {DEEPSEEK[key].coef} C^{DEEPSEEK[key].exponent}")
        for i, (t, e) in enumerate(ex.items()):
            ax.scatter(e["C"], e["M"] if key == "M_opt" else e["D"], marker="D", color=f"C{i + 1}", zorder=4,
                       label=f"{t} (as trained, D={e['D']:.2g})")
        ax.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel=lab, title=f"{key} vs compute{title}")
        ax.legend(fontsize=7)
    _save(fig, path)


def hparams(r: dict, df: pd.DataFrame, path: Path, title: str = "") -> None:
    """Learning rate and batch size vs C: all runs, the near-optimal band, fits with 95% bands (DeepSeek Fig. 3)."""
    hp = r["hparams"]
    pts = df[(df.sweep == "hparams") & df.budget_group.notna()]
    Cs = np.geomspace(pts.C.min() / 3, pts.C.max() * 3, 100)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, key, col, lab in ((axes[0], "eta_opt", "lr", "peak learning rate"),
                              (axes[1], "B_opt", "batch_size", "batch size (tokens)")):
        ax.scatter(pts.C, pts[col], s=10, color="0.75", label="all runs")
        band = pts[pts.in_band.astype(bool)]
        ax.scatter(band.C, band[col], s=22, color="C3", label=f"near-optimal band (<= {hp['band']:.2%} of best)")
        law = hp[key]
        ax.plot(Cs, law(Cs), color="C3", label=f"fit {law.coef:.3g} C^{law.exponent:.3f}")
        if "boot" in hp:
            lo, hi = band_at(Cs, hp["boot"][key]["log_coef"], hp["boot"][key]["exponent"])
            ax.fill_between(Cs, lo, hi, color="C3", alpha=0.15, label="95% bootstrap band")
        ax.plot(Cs, DEEPSEEK[key](Cs), "k--", lw=1, label=f"DeepSeek {DEEPSEEK[key].coef} C^{DEEPSEEK[key].exponent}")
        ax.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel=lab, title=f"{lab} vs compute{title}")
        ax.legend(fontsize=7)
    _save(fig, path)


def loss_curve(r: dict, path: Path, title: str = "") -> None:
    """Budget minimum losses vs C with both L(C) forms and the held-out-largest-budget backtest."""
    from analysis.losscurve import fit_losscurve, predict
    loss, used = r["loss"], [b for b in r["isoflop"]["budgets"] if b["used"]]
    C = np.array([b["C"] for b in used])
    L = np.array([b["loss_min"] for b in used])
    Cs = np.geomspace(C.min() / 3, C.max() * 30, 200)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.scatter(C, L, color="C0", zorder=3, label="IsoFLOP minima")
    if "saturating" in loss:
        s = loss["saturating"]
        ax.plot(Cs, s["E"] + s["A"] * Cs ** -s["alpha"], color="C0", label=f"{s['E']:.3g} + {s['A']:.3g} C^-{s['alpha']:.3f}")
    p = loss["power"]
    ax.plot(Cs, p["k"] * Cs ** -p["alpha"], color="C2", ls=":", label=f"{p['k']:.3g} C^-{p['alpha']:.3f}")
    bt = loss.get("backtest") or {}
    if "loss_pred" in bt:
        keep = C != bt["held_out_C"]
        f = fit_losscurve(C[keep], L[keep])
        ax.plot(Cs, predict(f, Cs), color="C1", ls="--", lw=1, label="fit without the largest budget")
        ax.scatter([bt["held_out_C"]], [bt["loss_pred"]], marker="x", s=60, color="C1", zorder=4,
                   label=f"backtest prediction ({bt['loss_err_pct']:+.2f}%)")
    ax.set(xscale="log", xlabel="compute C (FLOPs)", ylabel="minimum validation loss (nats/token)",
           title=f"Loss scaling L(C){title}")
    ax.legend(fontsize=7)
    _save(fig, path)


def parametric(r: dict, df: pd.DataFrame, path: Path, title: str = "") -> None:
    """Iso-loss contours of the fitted L(N, D) over (C, N), runs, and the efficient frontier N_opt(C)."""
    p = r["parametric"]
    pts = df[(df.sweep == "isoflop") & df.budget_group.notna()]
    lc = np.linspace(np.log10(pts.C.min()) - 0.5, np.log10(pts.C.max()) + 1, 120)
    ln = np.linspace(np.log10(pts.N.min()) - 0.5, np.log10(pts.N.max()) + 0.7, 120)
    CC, NN = np.meshgrid(10 ** lc, 10 ** ln)
    LL = p["E"] + p["A"] / NN ** p["alpha"] + p["B"] / (CC / (6 * NN)) ** p["beta"]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    cs = ax.contour(CC, NN, LL, levels=np.quantile(LL, np.linspace(0.02, 0.9, 12)), cmap="viridis", linewidths=0.8)
    ax.clabel(cs, fontsize=6, fmt="%.2f")
    sc = ax.scatter(pts.C, pts.N, c=pts.loss, s=12, cmap="viridis", edgecolors="k", linewidths=0.3, label="runs")
    fig.colorbar(sc, ax=ax, label="validation loss (nats/token)")
    ax.plot(10 ** lc, p["M_opt"]["coef"] / 6 * (10 ** lc) ** p["a"], "r-", label=f"efficient frontier N_opt ~ C^{p['a']:.3f}")
    ax.set(xscale="log", yscale="log", xlabel="compute C = 6ND (FLOPs)", ylabel="N = M/6 (FLOPs-equivalent parameters)",
           title=f"Parametric L(N,D) = {p['E']:.3g} + {p['A']:.3g}/N^{p['alpha']:.3f} + {p['B']:.3g}/D^{p['beta']:.3f}{title}")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    _save(fig, path)


def write_all(r: dict, df: pd.DataFrame, out: Path, suffix: str = "", name: str = "") -> list[Path]:
    """Every figure the dataset's fits support; returns the paths written."""
    t = f" [{name}]" if name else ""
    jobs = [("isoflop", "isoflop" in r or any(df.sweep == "isoflop"), lambda p: isoflop_curves(r, df, p, t)),
            ("optimal_scaling", "isoflop" in r, lambda p: optimal_scaling(r, p, t)),
            ("hparams", "hparams" in r, lambda p: hparams(r, df, p, t)),
            ("loss_curve", "loss" in r, lambda p: loss_curve(r, p, t)),
            ("parametric", "parametric" in r, lambda p: parametric(r, df, p, t))]
    written = []
    for fname, ok, fn in jobs:
        if ok:
            fn(out / f"{fname}{suffix}.png")
            written.append(out / f"{fname}{suffix}.png")
    return written
