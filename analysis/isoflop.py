"""IsoFLOP profiles (Chinchilla Approach 2, as DeepSeek §3.2): a parabola of loss in log10 M per budget, then
M_opt = M_base * C^a and D_opt = D_base * C^b across budgets, with a bootstrap that resamples runs within budgets.

The window rule. The parabola is the second-order Taylor expansion of the profile at its minimum. At fixed C the
profile is L = E + A'*M^-alpha + B'*M^beta, whose third/second derivative ratio at the minimum is (beta - alpha) per
e-fold of M: it is set by the exponents, not by C or the loss scale. A least-squares parabola on a window of
half-width h decades centred on the minimum therefore misplaces the vertex by about |beta - alpha| * ln(10) * h^2 / 10
decades: for a strongly skewed profile (|beta - alpha| = 0.5) that is 0.065 decades (16% in M) at h = 0.75, but
0.26 decades (a factor 1.8) over a 3-decade profile fitted whole. A narrower window cuts the bias further but costs
variance (the edge points carry the curvature), so h = 0.75 keeps a typical 1-1.5-decade grid whole and trims only
wide published profiles. Each profile is fitted on the sizes within `window` decades of its best size (lowest mean
loss), widened to the 5 sizes nearest it when fewer fall inside (a parabola with 2 spare degrees of freedom);
`window=0` fits every point (the classic rule).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis.powerlaw import PowerLaw, law_ci, linefit, percentile_ci


def parabolas(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Weighted quadratic fits y = c0 + c1 x + c2 x^2 along the last axis, batched; NaN rows where singular.

    Normal equations solved in one np.linalg.solve call: this is what makes 1000 resamples cheap.
    """
    w = np.ones_like(x) if w is None else w
    p = [(w * x**k).sum(-1) for k in range(5)]
    A = np.stack([np.stack(p[i : i + 3], -1) for i in range(3)], -2)
    rhs = np.stack([(w * x**k * y).sum(-1) for k in range(3)], -1)
    det = np.linalg.det(A)
    ok = np.abs(det) > 1e-9 * np.maximum(p[0], 1) ** 3
    A = np.where(ok[..., None, None], A, np.eye(3))
    c = np.linalg.solve(A, rhs[..., None])[..., 0]
    return np.where(ok[..., None], c, np.nan)


def _vertex(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x*, y*) of each parabola; NaN where it does not open upwards (no minimum)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        good = c[..., 2] > 0
        xv = np.where(good, -c[..., 1] / (2 * c[..., 2]), np.nan)
    return xv, c[..., 0] + c[..., 1] * xv + c[..., 2] * xv**2


WINDOW = 0.75  # decades either side of the best size (see the module docstring)
MIN_WINDOW_SIZES = 5


def window_mask(logM: np.ndarray, loss: np.ndarray, window: float = WINDOW) -> np.ndarray:
    """Runs inside the fitting window: sizes within `window` decades of the size with the lowest mean loss,
    at least the MIN_WINDOW_SIZES sizes nearest it; every run when window <= 0."""
    xs = np.unique(logM)
    if window <= 0 or len(xs) <= MIN_WINDOW_SIZES:
        return np.ones(len(logM), bool)
    best = xs[np.argmin([loss[logM == x].mean() for x in xs])]
    keep = xs[np.abs(xs - best) <= window + 1e-9]
    if len(keep) < MIN_WINDOW_SIZES:
        keep = xs[np.argsort(np.abs(xs - best), kind="stable")[:MIN_WINDOW_SIZES]]
    return np.isin(logM, keep)


def fit_budget(
    logM: np.ndarray,
    C: np.ndarray,
    loss: np.ndarray,
    n_boot: int,
    rng: np.random.Generator,
    off_centre: float = 2 / 3,
    window: float = WINDOW,
) -> dict:
    """One IsoFLOP profile: vertex, loss_min, warnings (any warning excludes the budget from the law)
    and `boot_logM`/`boot_loss` (n_boot vertex samples, runs resampled with replacement within the window)."""
    xall = np.unique(logM)
    Cg = float(np.exp(np.mean(np.log(C))))
    out: dict[str, Any] = {
        "C": Cg,
        "n_runs": int(len(loss)),
        "n_sizes": int(len(xall)),
        "warnings": [],
        "M_range": [float(10 ** xall[0]), float(10 ** xall[-1])],
    }
    inside = window_mask(logM, loss, window)
    best_x = logM[np.argmin(loss)]
    edge_best = best_x in (xall[0], xall[-1])
    out["best_M"] = float(10**best_x)  # the size of the lowest-loss run (the vertex may differ)
    logM, loss = logM[inside], loss[inside]
    xs = np.unique(logM)
    centre, half = (xs[0] + xs[-1]) / 2, max((xs[-1] - xs[0]) / 2, 1e-12)
    out["window"] = {
        "M": [float(10 ** xs[0]), float(10 ** xs[-1])],
        "n_runs": int(len(loss)),
        "n_sizes": int(len(xs)),
        "half_width_decades": float(window) if window > 0 else None,
    }
    if len(xs) < 3:
        out["warnings"].append(f"only {len(xs)} distinct model sizes; need >= 3 for a parabola")
        return out | {
            "M_opt": None,
            "D_opt": None,
            "loss_min": None,
            "boot_logM": np.full(n_boot, np.nan),
            "boot_loss": np.full(n_boot, np.nan),
        }
    u = (logM - centre) / half  # unit coordinates keep the normal equations well conditioned
    xv, yv = _vertex(parabolas(u, loss))
    if n_boot:
        idx = rng.integers(0, len(u), (n_boot, len(u)))
        bx, by = _vertex(parabolas(u[idx], loss[idx]))
    else:
        bx = by = np.zeros(0)
    w = out["warnings"]
    if not np.isfinite(xv):
        w.append("too flat: the parabola has no minimum (curvature <= 0)")
    else:
        # Two different failures: the best run itself is the smallest or largest size (the minimum may lie beyond
        # the grid: extend it), or the best run is inside but the parabola's vertex falls outside the fitted sizes
        # (the vertex is extrapolated: a skewed or noisy profile; add sizes around it).
        vM = 10 ** (centre + half * xv)
        if edge_best:
            side = "smallest" if best_x == xall[0] else "largest"
            w.append(
                f"best run at the edge of the grid: M={10**best_x:.3g} is the {side} of {len(xall)} sizes "
                f"(grid {10 ** xall[0]:.3g}..{10 ** xall[-1]:.3g}), so the minimum may lie beyond it "
                f"(vertex M={vM:.3g}); extend the grid {'below' if side == 'smallest' else 'above'} it"
            )
        elif abs(xv) > 1:
            rank = int(np.searchsorted(xall, best_x)) + 1
            w.append(
                f"vertex outside the fitted sizes: the parabola's minimum M={vM:.3g} lies outside "
                f"{10 ** xs[0]:.3g}..{10 ** xs[-1]:.3g} while the best run (M={10**best_x:.3g}, size {rank} of "
                f"{len(xall)}) is inside; the vertex is extrapolated: add sizes around it or repeat runs (noise)"
            )
        elif abs(xv) > off_centre:
            w.append(
                f"off-centre: vertex is {abs(xv):.0%} of the half-width from the centre of the fitted sizes "
                f"{10 ** xs[0]:.3g}..{10 ** xs[-1]:.3g} (limit {off_centre:.0%}); "
                f"re-centre the grid on M~{10 ** (centre + half * xv):.3g}"
            )
        if n_boot:
            bad = np.mean(~np.isfinite(bx))
            lo, hi = percentile_ci(bx)
            if bad > 0.1:
                w.append(f"too flat: {bad:.0%} of bootstrap parabolas have no minimum")
            elif hi - lo > 2:  # in unit coordinates the grid spans 2
                w.append(
                    f"too flat: 95% CI of log10 M_opt spans {(hi - lo) * half:.2f} decades, wider than "
                    f"the fitted sizes ({2 * half:.2f})"
                )
    M_opt = float(10 ** (centre + half * xv)) if np.isfinite(xv) else None
    out |= {
        "M_opt": M_opt,
        "D_opt": Cg / M_opt if M_opt else None,
        "loss_min": float(yv) if np.isfinite(yv) else None,
        "boot_logM": centre + half * bx,
        "boot_loss": by,
    }
    if n_boot and M_opt:
        out["ci95"] = {"M_opt": [10**v for v in percentile_ci(out["boot_logM"])], "loss_min": percentile_ci(by)}
    return out


def fit_isoflop(
    budget: np.ndarray,
    scale: np.ndarray,
    C: np.ndarray,
    loss: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    min_budgets: int = 3,
    off_centre: float = 2 / 3,
    window: float = WINDOW,
) -> dict:
    """IsoFLOP law on runs labelled by `budget`; `scale` is M (or 6*N1, 6*N2 for the counting conventions).

    Returns {"budgets": [...], "M_opt": PowerLaw, "D_opt": PowerLaw, "boot": {...}} or {"budgets", "skipped"}.
    """
    rng = np.random.default_rng(seed)
    logM = np.log10(scale)
    per = []
    for b in np.unique(budget):
        m = budget == b
        r = fit_budget(logM[m], C[m], loss[m], n_boot, rng, off_centre, window)
        per.append(r | {"budget": float(b), "used": not r["warnings"]})
    used = [r for r in per if r["used"]]
    res: dict[str, Any] = {"budgets": per}
    if len(used) < min_budgets:
        why = "; ".join(f"C={r['C']:.3g}: {', '.join(r['warnings'])}" for r in per if not r["used"])
        res["skipped"] = (
            f"only {len(used)} usable budget(s) for the IsoFLOP law (of {len(per)}); need >= "
            f"{min_budgets}" + (f" [excluded: {why}]" if why else "")
        )
        return res
    lc = np.log10([r["C"] for r in used])
    lm = np.log10([r["M_opt"] for r in used])
    b0, a = linefit(lc, lm)
    M_law = PowerLaw(float(10**b0), float(a), n_points=len(used), n_budgets=len(used))
    D_law = PowerLaw(float(10**-b0), float(1 - a), n_points=len(used), n_budgets=len(used))
    if n_boot:
        bm = np.stack([r["boot_logM"] for r in used], -1)  # (n_boot, budgets)
        ok = np.isfinite(bm)
        bb0, ba = linefit(lc, np.where(ok, bm, 0), ok.astype(float))
        M_law.ci95, D_law.ci95 = law_ci(bb0, ba), law_ci(-bb0, 1 - ba)
        res["boot"] = {"log_coef": bb0, "exponent": ba, "logM": bm, "logC": lc}
    if len(used) < 3:
        for law in (M_law, D_law):
            law.warnings.append(
                f"fit from {len(used)} budgets: the line passes through them exactly and the "
                f"CI reflects within-budget scatter only"
            )
    return res | {"M_opt": M_law, "D_opt": D_law}
