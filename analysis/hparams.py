"""Batch size and learning rate laws (DeepSeek §3.1): per budget the near-optimal band is every run with
loss <= (1 + band) * best loss; eta_opt = k*C^e and B_opt = k*C^e are fitted on all band points across budgets."""
from __future__ import annotations

import numpy as np

from analysis.powerlaw import PowerLaw, law_ci, linefit


def _quad_design(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], -1)


def penalty(lr: np.ndarray, B: np.ndarray, loss: np.ndarray, lr_fit: float, B_fit: float, near: float = 0.05) -> dict:
    """Loss penalty (%) of training at (lr_fit, B_fit) instead of the grid's best run.

    The loss surface is a quadratic in (log10 lr, log10 B) fitted on the runs within `near` (5%) of the best
    loss, where a quadratic is a fair local model (the far, diverging corners of a grid are not).
    """
    x, y = np.log10(lr), np.log10(B)
    m = loss <= (1 + near) * loss.min()
    if m.sum() < 6 or len(np.unique(x[m])) < 3 or len(np.unique(y[m])) < 3:
        m = np.ones_like(m)
    if m.sum() < 6 or len(np.unique(x)) < 3 or len(np.unique(y)) < 3:
        return {"penalty_pct": None, "note": "grid too small for a quadratic loss surface (need 3 lr x 3 B)"}
    coef, *_ = np.linalg.lstsq(_quad_design(x[m], y[m]), loss[m], rcond=None)
    pred = float(_quad_design(np.log10(lr_fit), np.log10(B_fit)) @ coef)
    inside = x.min() <= np.log10(lr_fit) <= x.max() and y.min() <= np.log10(B_fit) <= y.max()
    return {"penalty_pct": 100 * (pred - loss.min()) / loss.min(), "loss_at_fit": pred,
            "note": "" if inside else "fitted point outside the grid: surface extrapolated"}


def fit_hparams(budget, C, lr, B, loss, band: float = 0.0025, n_boot: int = 1000, seed: int = 0,
                min_budgets: int = 3) -> dict:
    """Returns {"eta_opt", "B_opt": PowerLaw, "budgets": [...], "in_band": bool mask, "boot": ...} or "skipped"."""
    rng = np.random.default_rng(seed)
    budget, C, lr, B, loss = (np.asarray(a, float) for a in (budget, C, lr, B, loss))
    in_band = np.zeros(len(loss), bool)
    groups = [np.flatnonzero(budget == b) for b in np.unique(budget)]
    for g in groups:
        in_band[g] = loss[g] <= (1 + band) * loss[g].min()
    res = {"band": band, "in_band": in_band, "budgets": []}
    if len(groups) < min_budgets:
        res["skipped"] = f"only {len(groups)} budget(s) with hparams runs; need >= {min_budgets}"
        return res
    lc = np.log10(C)
    laws = {}
    for name, v in (("eta_opt", lr), ("B_opt", B)):
        b0, e = linefit(lc, np.log10(v), in_band.astype(float))
        laws[name] = PowerLaw(float(10 ** b0), float(e), n_points=int(in_band.sum()), n_budgets=len(groups))
    if n_boot:
        # Resample runs within each budget, recompute its band, refit on the pooled band points: all at once.
        idx = np.concatenate([g[rng.integers(0, len(g), (n_boot, len(g)))] for g in groups], axis=1)
        seg = np.concatenate([[0], np.cumsum([len(g) for g in groups])])
        L = loss[idx]
        w = np.concatenate([L[:, a:b] <= (1 + band) * L[:, a:b].min(1, keepdims=True)
                            for a, b in zip(seg[:-1], seg[1:])], axis=1).astype(float)
        res["boot"] = {}
        for name, v in (("eta_opt", lr), ("B_opt", B)):
            b0, e = linefit(lc[idx], np.log10(v)[idx], w)
            laws[name].ci95 = law_ci(b0, e)
            res["boot"][name] = {"log_coef": b0, "exponent": e}
    if len(groups) < 3:
        for law in laws.values():
            law.warnings.append(f"fit from {len(groups)} budgets: the CI reflects within-budget scatter only")
    for g in groups:
        Cg = float(np.exp(np.log(C[g]).mean()))
        best = g[np.argmin(loss[g])]
        pen = penalty(lr[g], B[g], loss[g], float(laws["eta_opt"](Cg)), float(laws["B_opt"](Cg)))
        res["budgets"].append({"budget": float(budget[g[0]]), "C": Cg, "n_runs": int(len(g)),
                               "n_band": int(in_band[g].sum()), "loss_min": float(loss[best]),
                               "best_lr": float(lr[best]), "best_batch_size": float(B[best]),
                               "eta_fit": float(laws["eta_opt"](Cg)), "B_fit": float(laws["B_opt"](Cg)), **pen})
    return res | laws
