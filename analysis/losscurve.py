"""Loss scaling L(C) on the IsoFLOP minima: saturating E + A*C^-alpha and a pure power law k*C^-alpha,
plus a backtest that refits without the largest budget and predicts it."""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares

from analysis.powerlaw import linefit, percentile_ci

ALPHAS = np.geomspace(1e-3, 3.0, 1200)  # 0.7% steps: finer than any bootstrap CI we will report


def _grid_fit(c: np.ndarray, Y: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Batched E + A*c^-alpha with E, A >= 0: linear in (E, A) for fixed alpha, so scan alpha (variable projection).

    c (K,) normalised compute, Y/W (R, K) -> (R, 3) [E, A, alpha]; NaN rows where < 3 points. Every weighted sum
    the closed form needs is one matrix product over (resamples x alphas), so no Python loop over either.
    """
    f = c[None, :] ** -ALPHAS[:, None]  # (G, K)
    WY = W * Y
    sw, sy, syy = W.sum(-1)[:, None], WY.sum(-1)[:, None], (WY * Y).sum(-1)[:, None]
    sf, sff, sfy = W @ f.T, W @ (f * f).T, WY @ f.T  # (R, G)
    with np.errstate(invalid="ignore", divide="ignore"):
        mf, my = sf / sw, sy / sw
        A = (sfy - sw * mf * my) / (sff - sw * mf * mf)
        E = my - A * mf
        A0 = sfy / sff  # E clamped at 0
        A, E = np.where(E < 0, A0, A), np.maximum(E, 0)
        E, A = np.where(A < 0, my, E), np.maximum(A, 0)
        sse = syy - 2 * E * sy - 2 * A * sfy + E * E * sw + 2 * E * A * sf + A * A * sff
    sse = np.where(np.isfinite(sse), sse, np.inf)
    g = sse.argmin(-1)
    r = np.arange(len(g))
    out = np.stack([E[r, g], A[r, g], ALPHAS[g]], -1)
    out[W.sum(-1) < 3] = np.nan
    return out


def fit_saturating(C, L) -> dict:
    """Point fit of L = E + A*C^-alpha (grid start, least-squares polish)."""
    C, L = np.asarray(C, float), np.asarray(L, float)
    cref = float(np.exp(np.log(C).mean()))
    E, A, al = _grid_fit(C / cref, L[None], np.ones((1, len(L))))[0]
    r = least_squares(
        lambda p: p[0] + p[1] * (C / cref) ** -p[2] - L, [E, A, al], bounds=([0, 0, 1e-4], [np.inf, np.inf, 5])
    )
    E, A, al = r.x
    return {
        "form": "E + A*C^-alpha",
        "E": float(E),
        "A": float(A * cref**al),
        "alpha": float(al),
        "rmse": float(np.sqrt(np.mean(r.fun**2))),
    }


def fit_losscurve(C, L, boot_L: np.ndarray | None = None, min_budgets: int = 3) -> dict:
    """Both forms on budget minima (C, L); boot_L (R, K) from the IsoFLOP bootstrap gives CIs."""
    C, L = np.asarray(C, float), np.asarray(L, float)
    if len(C) < min_budgets:
        return {"skipped": f"only {len(C)} budget minima; need >= {min_budgets}"}
    b0, m = linefit(np.log10(C), np.log10(L))
    res = {
        "power": {
            "form": "k*C^-alpha",
            "k": float(10**b0),
            "alpha": float(-m),
            "rmse": float(np.sqrt(np.mean((10 ** (b0 + m * np.log10(C)) - L) ** 2))),
        }
    }
    if len(C) >= 4:  # three parameters through three points would be an interpolation, not a fit
        res["saturating"] = fit_saturating(C, L)
    else:
        res["saturating_skipped"] = f"E + A*C^-alpha needs >= 4 budgets, have {len(C)}"
    if boot_L is not None and len(boot_L):
        ok = np.isfinite(boot_L)
        pb0, pm = linefit(np.log10(C), np.log10(np.where(ok & (boot_L > 0), boot_L, 1)), ok & (boot_L > 0))
        res["power"]["ci95"] = {"k": [10**v for v in percentile_ci(pb0)], "alpha": percentile_ci(-pm)}
        res["boot_power"] = {"log_coef": pb0, "exponent": pm}
        if "saturating" in res:
            cref = float(np.exp(np.log(C).mean()))
            p = _grid_fit(C / cref, np.where(ok, boot_L, 0), ok.astype(float))
            p[:, 1] *= cref ** p[:, 2]
            res["saturating"]["ci95"] = {k: percentile_ci(p[:, i]) for i, k in enumerate(("E", "A", "alpha"))}
            res["boot_saturating"] = p
    res["form"] = "saturating" if "saturating" in res else "power"
    return res


def predict(fit: dict, C) -> np.ndarray:
    """Loss predicted by the preferred form of a fit_losscurve result."""
    C = np.asarray(C, float)
    if fit["form"] == "saturating":
        s = fit["saturating"]
        return s["E"] + s["A"] * C ** -s["alpha"]
    return fit["power"]["k"] * C ** -fit["power"]["alpha"]


def backtest(C, L, M_opt, min_budgets: int = 3) -> dict:
    """Refit without the largest budget; how well do L(C) and M_opt(C) predict it?"""
    C, L, M_opt = (np.asarray(a, float) for a in (C, L, M_opt))
    if len(C) < min_budgets + 1:
        return {"skipped": f"backtest needs >= {min_budgets + 1} budgets, have {len(C)}"}
    k = np.argmax(C)
    keep = np.arange(len(C)) != k
    fit = fit_losscurve(C[keep], L[keep], min_budgets=min_budgets)
    b0, a = linefit(np.log10(C[keep]), np.log10(M_opt[keep]))
    lp, mp = float(predict(fit, C[k])), float(10 ** (b0 + a * np.log10(C[k])))
    return {
        "held_out_C": float(C[k]),
        "form": fit["form"],
        "loss_pred": lp,
        "loss_obs": float(L[k]),
        "loss_err_pct": 100 * (lp - L[k]) / L[k],
        "M_opt_pred": mp,
        "M_opt_obs": float(M_opt[k]),
        "M_opt_err_pct": 100 * (mp - M_opt[k]) / M_opt[k],
    }
