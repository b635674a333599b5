"""The second level of the bootstrap: scatter between budgets (or grids) that resampling runs cannot see.

Resampling runs within budgets measures how well each budget's optimum is located from its runs. It cannot see
what moves a whole budget: its data order, its hparams, a grid centred differently, anything shared by the runs of
one budget. Such scatter shows up only as optima lying farther from the law than their run-level precision allows.

Each law is a fit y_k ~ X_k beta across K units (budgets or grids) with p parameters, with per-unit estimates y_k
whose run-level bootstrap variances s_k^2 are known. With w_k = 1/(s_k^2 + tau^2), the weighted residual sum of
squares Q(tau^2) = sum w_k (y_k - X_k beta_w)^2 follows a chi-square with K - p degrees of freedom at the true tau^2,
and falls as tau^2 grows. So each bootstrap resample draws c ~ chi2_{K-p} and takes the tau_r^2 that solves
Q(tau_r^2) = c (0 when Q(0) <= c): the generalized pivotal quantity for tau^2 (Tian 2008; the Q-profile of
Viechtbauer 2007), which carries the uncertainty of a scatter measured on few degrees of freedom into the interval,
where a point estimate (0 half of the time with 3 budgets) would not. The resample then gets budget effects
u_k ~ N(0, tau_r^2), and the law's resample moves by the fit of those effects: beta_r += H u_r, with H the law's own
least-squares weights. The reported between-unit SD is the Paule-Mandel point estimate (Q(tau^2) = K - p).

With K = p units (a line through 2 budgets) there are no degrees of freedom left to see the scatter: the CI is
conditional on there being none, and the caller says so.
"""

from __future__ import annotations

from typing import Any

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


def _q_curve(s2: np.ndarray, spread: float, Q) -> tuple[np.ndarray, np.ndarray]:
    """(tau^2 grid, Q on it): 0, then 400 log-spaced values from far below the smallest s^2 to far above the spread."""
    lo = max(float(np.min(s2)), 1e-300) * 1e-4
    hi = max(spread, float(np.max(s2))) * 1e4 + 1e-300
    t2 = np.r_[0.0, np.geomspace(lo, hi, 400)]
    return t2, np.array([Q(t) for t in t2])


def _solve_q(t2: np.ndarray, q: np.ndarray, c) -> np.ndarray:
    """tau^2 with Q(tau^2) = c on the grid (Q decreasing): 0 where Q(0) <= c."""
    q = np.minimum.accumulate(q)  # numerically monotone
    return np.interp(c, q[::-1], t2[::-1], left=t2[-1], right=0.0)


def _floor(s2: np.ndarray) -> np.ndarray:
    return np.maximum(s2, 1e-12 * max(float(np.max(s2)), 1e-300))


def q_linear(X: np.ndarray, y: np.ndarray, s2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q(tau^2) of a linear law y ~ X beta, refitted with the weights each tau^2 gives, on a grid of tau^2."""
    s2 = _floor(s2)

    def Q(t2: float) -> float:
        w = 1 / (s2 + t2)
        return float(np.sum(w * (y - X @ _wls(X, y, w)) ** 2))

    return _q_curve(s2, float(np.var(y)) * len(y), Q)


def q_residuals(r: np.ndarray, s2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q(tau^2) = sum r^2 / (s^2 + tau^2) for a law fitted once (nonlinear, e.g. E + A*C^-alpha), on a grid."""
    r, s2 = np.asarray(r, float), _floor(np.asarray(s2, float))
    return _q_curve(s2, float(np.sum(r * r)), lambda t2: float(np.sum(r * r / (s2 + t2))))


def paule_mandel(X: np.ndarray, y: np.ndarray, s2: np.ndarray) -> float:
    """tau^2 >= 0 solving sum w (y - X beta_w)^2 = K - p, w = 1/(s2 + tau^2); 0 if no tau^2 > 0 does."""
    K, p = X.shape
    if K <= p:
        return 0.0
    s2 = _floor(s2)

    def Q(t2: float) -> float:
        w = 1 / (s2 + t2)
        return float(np.sum(w * (y - X @ _wls(X, y, w)) ** 2))

    if Q(0.0) <= K - p:
        return 0.0
    lo, hi = 0.0, float(np.var(y) * K + s2.max())
    while Q(hi) > K - p:
        hi *= 4
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if Q(mid) > K - p else (lo, mid)
    return (lo + hi) / 2


def hat(X: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """(p, K): how a weighted least-squares fit's coefficients move per unit shift of each y_k."""
    w = np.ones(len(X)) if w is None else np.asarray(w, float)
    Xw = X * w[:, None]
    return np.linalg.solve(X.T @ Xw, Xw.T)


def _info(grid: tuple[np.ndarray, np.ndarray], s2: np.ndarray, df: int, K: int) -> dict[str, Any]:
    tau2 = float(_solve_q(*grid, df)) if df >= 1 else 0.0
    return {"tau": float(np.sqrt(tau2)), "s": np.sqrt(s2), "df": int(df), "K": int(K), "_grid": grid}


def scatter(X: np.ndarray, y: np.ndarray, y_boot: np.ndarray, robust: bool = True) -> dict[str, Any]:
    """The between-unit scatter of per-unit estimates y (K,) about a linear law in X (K, p), given their run-level
    bootstrap samples y_boot (R, K): {tau (Paule-Mandel), s (per-unit run-level SDs), df, K, _grid (for draws)}.
    `robust`: run-level variances from the interquartile range (vertices of flat profiles have wild tails); else
    the plain variance (bounded, lumpy samples such as a grid's band mean, whose IQR can be 0)."""
    s2 = robust_var(y_boot) if robust else np.nanvar(np.where(np.isfinite(y_boot), y_boot, np.nan), axis=0)
    K, p = X.shape
    ok = np.isfinite(s2) & np.isfinite(y)
    if ok.sum() <= p:
        return {"tau": 0.0, "s": np.sqrt(s2), "df": int(ok.sum() - p), "K": int(K), "_grid": None}
    return _info(q_linear(X[ok], y[ok], s2[ok]), s2, int(ok.sum() - p), K)


def scatter_residuals(r: np.ndarray, s2: np.ndarray, p: int) -> dict[str, Any]:
    """The same for a law fitted once with p parameters, from its residuals r and the units' run-level variances."""
    ok = np.isfinite(r) & np.isfinite(s2)
    if ok.sum() <= p:
        return {"tau": 0.0, "s": np.sqrt(s2), "df": int(ok.sum() - p), "K": len(r), "_grid": None}
    return _info(q_residuals(r[ok], s2[ok]), s2, int(ok.sum() - p), len(r))


def draw_effects(info: dict, R: int, rng: np.random.Generator) -> np.ndarray:
    """(R, K) unit effects u ~ N(0, tau_r^2), tau_r^2 the generalized pivotal draw (zeros when df < 1)."""
    if info["df"] < 1 or info.get("_grid") is None:
        return np.zeros((R, info["K"]))
    t2g, qg = info["_grid"]
    t2 = _solve_q(t2g, qg, rng.chisquare(info["df"], R))
    return rng.standard_normal((R, info["K"])) * np.sqrt(t2)[:, None]


def public(info: dict) -> dict:
    """The info as the report keeps it (no grids; lists, not arrays)."""
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in info.items() if not k.startswith("_")}


def describe(info: dict, what: str, unit: str = "budgets") -> str:
    """One line for the report: what the second level found."""
    if info["df"] < 1:
        return (
            f"{what}: {info['K']} {unit} leave no degrees of freedom to measure scatter between {unit}; "
            f"the CI is conditional on there being none"
        )
    head = (
        f"{what}: the {unit} scatter no more than their run-level precision (between-{unit[:-1]} SD 0)"
        if info["tau"] == 0
        else f"{what}: between-{unit[:-1]} SD {info['tau']:.3g} beyond run-level precision"
    )
    return f"{head}; the CI includes the between-{unit[:-1]} scatter {info['df']} degrees of freedom cannot rule out"
