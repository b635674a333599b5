"""The second level of the bootstrap: scatter between budgets (or grids) that resampling runs cannot see.

Resampling runs within budgets measures how well each budget's optimum is located from its runs. It cannot see
what moves a whole budget: its data order, its hparams, a grid centred differently, anything shared by the runs of
one budget. Such scatter shows up only as optima lying farther from the law than their run-level precision allows.

Each law is a linear fit y_k = X_k beta across K units (budgets or grids), with per-unit estimates y_k whose run-level
bootstrap variances s_k^2 are known. The between-unit variance tau^2 is the Paule-Mandel estimate (the tau^2 at
which the weighted residual sum of squares sum (y_k - X_k beta)^2 / (s_k^2 + tau^2) equals its degrees of freedom
K - p; 0 when the optima scatter no more than their precision). Each bootstrap resample then gets its own budget
effects u_k ~ N(0, tau_r^2), with tau_r^2 = tau^2 (K - p) / chi2_{K-p} drawn afresh (tau^2 is itself estimated from
K - p degrees of freedom; this gives the intervals Student-t tails when the budgets are few), and the law's resample
moves by the fit of those effects: beta_r += H u_r, with H the law's own least-squares weights.

With K = p units (a line through 2 budgets) there are no degrees of freedom left to see the scatter: the CI is
conditional on there being none, and the caller says so.
"""

from __future__ import annotations

import numpy as np


def robust_var(samples: np.ndarray) -> np.ndarray:
    """Per-column variance from the interquartile range (a flat budget's few wild vertices do not dominate)."""
    s = np.asarray(samples, float)
    out = np.full(s.shape[-1], np.nan)
    for k in range(s.shape[-1]):
        v = s[:, k][np.isfinite(s[:, k])]
        if len(v) >= 4:
            q1, q3 = np.percentile(v, [25, 75])
            out[k] = ((q3 - q1) / 1.349) ** 2
    return out


def _wls(X: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    sw = np.sqrt(w)
    return np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)[0]


def paule_mandel(X: np.ndarray, y: np.ndarray, s2: np.ndarray) -> float:
    """tau^2 >= 0 solving sum w (y - X beta_w)^2 = K - p, w = 1/(s2 + tau^2); 0 if no tau^2 > 0 does."""
    K, p = X.shape
    if K <= p:
        return 0.0
    s2 = np.maximum(s2, 1e-12 * max(float(np.nanmax(s2)), 1e-300))

    def Q(t2: float) -> float:
        w = 1 / (s2 + t2)
        return float(np.sum(w * (y - X @ _wls(X, y, w)) ** 2))

    if Q(0.0) <= K - p:
        return 0.0
    lo, hi = 0.0, float(np.var(y) + s2.max()) + 1e-12
    while Q(hi) > K - p:
        hi *= 4
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if Q(mid) > K - p else (lo, mid)
    return (lo + hi) / 2


def tau2_from_residuals(r: np.ndarray, s2: np.ndarray, p: int) -> float:
    """Paule-Mandel for a law fitted once (nonlinear, e.g. E + A*C^-alpha): tau^2 >= 0 with
    sum r^2 / (s2 + tau^2) = K - p for the point fit's residuals r; 0 when they need no extra scatter."""
    r, s2 = np.asarray(r, float), np.asarray(s2, float)
    K = len(r)
    if K <= p:
        return 0.0
    s2 = np.maximum(s2, 1e-12 * max(float(np.max(s2)), 1e-300))

    def Q(t2: float) -> float:
        return float(np.sum(r * r / (s2 + t2)))

    if Q(0.0) <= K - p:
        return 0.0
    lo, hi = 0.0, float(np.mean(r * r)) * K + 1e-300
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if Q(mid) > K - p else (lo, mid)
    return (lo + hi) / 2


def hat(X: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """(p, K): how a weighted least-squares fit's coefficients move per unit shift of each y_k."""
    w = np.ones(len(X)) if w is None else np.asarray(w, float)
    Xw = X * w[:, None]
    return np.linalg.solve(X.T @ Xw, Xw.T)


def draw_effects(tau2: float, K: int, df: int, R: int, rng: np.random.Generator) -> np.ndarray:
    """(R, K) unit effects with tau_r^2 = tau2 * df / chi2_df per resample (zeros when tau2 = 0 or df < 1)."""
    if tau2 <= 0 or df < 1:
        return np.zeros((R, K))
    t2 = tau2 * df / rng.chisquare(df, R)
    return rng.standard_normal((R, K)) * np.sqrt(t2)[:, None]


def scatter(X: np.ndarray, y: np.ndarray, y_boot: np.ndarray) -> dict:
    """The between-unit scatter of per-unit estimates y (K,) about a linear law in X (K, p), given their run-level
    bootstrap samples y_boot (R, K): {tau, s (per-unit run-level SDs), df, K}."""
    s2 = robust_var(y_boot)
    K, p = X.shape
    ok = np.isfinite(s2) & np.isfinite(y)
    tau2 = paule_mandel(X[ok], y[ok], s2[ok]) if ok.sum() > p else 0.0
    return {"tau": float(np.sqrt(tau2)), "s": np.sqrt(s2), "df": int(ok.sum() - p), "K": int(K)}


def describe(info: dict, what: str, unit: str = "budgets") -> str:
    """One line for the report: what the second level found."""
    if info["df"] < 1:
        return (
            f"{what}: {info['K']} {unit} leave no degrees of freedom to measure scatter between {unit}; "
            f"the CI is conditional on there being none"
        )
    if info["tau"] == 0:
        return f"{what}: the {unit} scatter no more than their run-level precision (between-{unit[:-1]} SD 0)"
    return f"{what}: between-{unit[:-1]} SD {info['tau']:.3g} beyond run-level precision, added to the CI"
