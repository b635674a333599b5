"""Loss scaling L(C) on the IsoFLOP minima: saturating E + A*C^-alpha, a pure power law k*C^-alpha and, when the
study also fitted L(N, D), E_ND + A*C^-alpha with the irreducible loss taken from L(N, D) (two parameters, so it
fits 3 budgets, and it never extrapolates below the irreducible loss the study itself found). A backtest refits
every form without the largest budget and predicts it; `choose_form` picks the form by that backtest where it can
tell the forms apart, by the data's floor (an irreducible loss) where it cannot, and says why."""

from __future__ import annotations

from typing import Any

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


FORMS = {
    "saturating": "E + A*C^-alpha",
    "saturating_E": "E + A*C^-alpha, E from L(N, D)",
    "power": "k*C^-alpha",
}


def _fixed_E(C, L, E: float) -> dict:
    """L = E + A*C^-alpha with E known: a line in (log C, log(L - E)); needs every minimum above E."""
    if not np.all(L > E):
        return {
            "skipped": f"the irreducible loss E={E:.4g} of L(N, D) is not below every budget minimum "
            f"(lowest {L.min():.4g}): the two fits disagree, so this form is not used"
        }
    b0, m = linefit(np.log10(C), np.log10(L - E))
    pred = E + 10**b0 * C**m
    return {
        "form": FORMS["saturating_E"],
        "E": float(E),
        "A": float(10**b0),
        "alpha": float(-m),
        "rmse": float(np.sqrt(np.mean((pred - L) ** 2))),
    }


def fit_losscurve(
    C,
    L,
    boot_L: np.ndarray | None = None,
    min_budgets: int = 3,
    E_fixed: float | None = None,
    boot_E: np.ndarray | None = None,
) -> dict:
    """Every form on budget minima (C, L); boot_L (R, K) from the IsoFLOP bootstrap gives CIs. E_fixed (the
    irreducible loss of L(N, D)) adds the `saturating_E` form; boot_E (R,), that fit's bootstrap E, is paired
    with the IsoFLOP resamples so that its interval carries E's uncertainty too."""
    C, L = np.asarray(C, float), np.asarray(L, float)
    if len(C) < min_budgets:
        return {"skipped": f"only {len(C)} budget minima; need >= {min_budgets}"}
    b0, m = linefit(np.log10(C), np.log10(L))
    res: dict[str, Any] = {
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
    if E_fixed is not None and np.isfinite(E_fixed):
        fe = _fixed_E(C, L, float(E_fixed))
        if "skipped" in fe:
            res["saturating_E_skipped"] = fe["skipped"]
        else:
            res["saturating_E"] = fe
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
        if "saturating_E" in res and E_fixed is not None:  # saturating_E is only fitted with E_fixed
            R = len(boot_L)
            Eb = np.full(R, float(E_fixed)) if boot_E is None or len(boot_E) != R else np.asarray(boot_E, float)
            y = boot_L - Eb[:, None]
            good = ok & (y > 0)
            qb0, qm = linefit(np.log10(C), np.log10(np.where(good, y, 1)), good)
            p = np.stack([Eb, 10**qb0, -qm], -1)  # (R, 3): E, A, alpha as boot_saturating
            res["saturating_E"]["ci95"] = {k: percentile_ci(p[:, i]) for i, k in enumerate(("E", "A", "alpha"))}
            res["boot_saturating_E"] = p
    res["form"] = "saturating" if "saturating" in res else "power"
    res["C_range"] = [float(C.min()), float(C.max())]
    return res


def _at(d: dict, C):
    """One form's loss at C (a dict with E/A/alpha is saturating, with k/alpha a power law)."""
    C = np.asarray(C, float)
    if "E" in d:
        return d["E"] + d["A"] * C ** -d["alpha"]
    return d["k"] * C ** -d["alpha"]


def samples(fit: dict, C: float, form: str | None = None) -> np.ndarray | None:
    """The bootstrap losses (R,) of one form at C (the chosen form by default); None without a bootstrap."""
    form = form or fit["form"]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if form in ("saturating", "saturating_E") and f"boot_{form}" in fit:
            p = fit[f"boot_{form}"]
            return p[:, 0] + p[:, 1] * C ** -p[:, 2]
        if form == "power" and "boot_power" in fit:
            b = fit["boot_power"]
            return 10 ** (b["log_coef"] + b["exponent"] * np.log10(C))
    return None


def choose_form(fit: dict, bt: dict) -> None:
    """Set fit["form"] and fit["form_why"]: by the backtest when it compares at least two forms, else prefer a
    form with a floor (E from L(N, D), then a fitted E) over a power law, which falls to zero loss."""
    have = [f for f in ("saturating_E", "saturating", "power") if f in fit]
    errs = {f: e for f, e in (bt.get("errors_pct") or {}).items() if f in have}
    if len(errs) >= 2:
        best = min(errs, key=lambda f: abs(errs[f]))
        untested = [f for f in have if f not in errs]
        fit["form"] = best
        fit["form_why"] = (
            f"chosen by the backtest (largest budget C={bt['held_out_C']:.3g} held out; loss error "
            + ", ".join(f"{FORMS[f]}: {e:+.2f}%" for f, e in errs.items())
            + ")"
            + (
                f"; {', '.join(FORMS[f] for f in untested)} not backtested (too few budgets without the held-out one)"
                if untested
                else ""
            )
        )
        return
    why_no_bt = bt.get("skipped") or "it could fit only one form without the largest budget"
    for f, why in (
        ("saturating_E", "it has the irreducible loss of L(N, D) as its floor"),
        ("saturating", "it has a fitted floor E"),
    ):
        if f in fit:
            fit["form"] = f
            fit["form_why"] = (
                f"no backtest can compare the forms ({why_no_bt}); {FORMS[f]} because {why}, while a pure "
                f"power law falls towards zero loss"
            )
            return
    fit["form"] = "power"
    fit["form_why"] = (
        "the only form these budgets support (E + A*C^-alpha needs >= 4 budgets, or an L(N, D) fit for its E); "
        "a pure power law falls towards zero loss, so far extrapolations are checked against any irreducible loss"
    )


def predict(fit: dict, C, form: str | None = None) -> np.ndarray:
    """Loss predicted by a fit_losscurve result, in its chosen form unless `form` names another fitted one."""
    return _at(fit[form or fit["form"]], C)


def backtest(C, L, M_opt, min_budgets: int = 3, E_fixed: float | None = None, form: str | None = None) -> dict:
    """Refit every form without the largest budget; how well does each predict its loss, and M_opt(C) its M_opt?

    M_opt may be NaN for budgets in L(C) but not in the M_opt law (their M_opt is not trusted); the M_opt
    backtest then holds out the largest budget that has one. `form` picks the form of loss_pred/loss_err_pct
    (default: what fit_losscurve prefers on the rest)."""
    C, L, M_opt = (np.asarray(a, float) for a in (C, L, M_opt))
    if len(C) < min_budgets + 1:
        return {"skipped": f"backtest needs >= {min_budgets + 1} budgets, have {len(C)}"}
    k = np.argmax(C)
    keep = np.arange(len(C)) != k
    fit = fit_losscurve(C[keep], L[keep], min_budgets=min_budgets, E_fixed=E_fixed)
    preds = {f: float(_at(fit[f], C[k])) for f in FORMS if f in fit}
    errs = {f: 100 * (p - L[k]) / L[k] for f, p in preds.items()}
    f = form if form in preds else fit["form"]
    out = {
        "held_out_C": float(C[k]),
        "form": f,
        "loss_pred": preds[f],
        "loss_obs": float(L[k]),
        "loss_err_pct": errs[f],
        "preds": preds,
        "errors_pct": errs,
    }
    m = np.isfinite(M_opt)
    if m.sum() >= min_budgets + 1:
        j = np.flatnonzero(m)[np.argmax(C[m])]
        rest = m & (np.arange(len(C)) != j)
        b0, a = linefit(np.log10(C[rest]), np.log10(M_opt[rest]))
        mp = float(10 ** (b0 + a * np.log10(C[j])))
        out |= {"M_opt_pred": mp, "M_opt_obs": float(M_opt[j]), "M_opt_err_pct": 100 * (mp - M_opt[j]) / M_opt[j]}
    return out
