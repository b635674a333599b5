"""Chinchilla Approach 3 as corrected by Epoch AI (Besiroglu et al. 2024): L(N, D) = E + A/N^alpha + B/D^beta,
fitted as log L = LSE(a - alpha log N, b - beta log D, e) with a Huber loss (delta 1e-3) on the log residuals,
SUMMED over runs, by L-BFGS-B from the best starts of Chinchilla's initialisation grid."""
from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import minimize

from analysis.powerlaw import percentile_ci

DELTA = 1e-3
# Chinchilla's grid (alpha, beta, e, a, b): 5 * 5 * 5 * 6 * 6 = 4500 starts.
GRID = np.array(list(itertools.product(np.arange(0, 2.01, 0.5), np.arange(0, 2.01, 0.5), np.arange(-1, 1.01, 0.5),
                                       np.arange(0, 26, 5.0), np.arange(0, 26, 5.0))))[:, [3, 4, 2, 0, 1]]  # a b e al be


def _terms(theta: np.ndarray, logN: np.ndarray, logD: np.ndarray) -> np.ndarray:
    a, b, e, al, be = (theta[..., i, None] for i in range(5))
    return np.stack(np.broadcast_arrays(a - al * logN, b - be * logD, e), -1)  # (..., n, 3)


def objective(theta: np.ndarray, logN, logD, logL, w=None) -> np.ndarray:
    """Summed Huber loss, vectorised over leading axes of theta (e.g. all grid starts at once)."""
    t = _terms(theta, logN, logD)
    mx = t.max(-1)
    r = mx + np.log(np.exp(t - mx[..., None]).sum(-1)) - logL
    h = np.where(np.abs(r) <= DELTA, 0.5 * r * r, DELTA * (np.abs(r) - 0.5 * DELTA))
    return (h if w is None else w * h).sum(-1)


def objective_grad(theta: np.ndarray, logN, logD, logL, w) -> tuple[float, np.ndarray]:
    """Objective and its analytic gradient for one theta (what L-BFGS-B calls)."""
    t = _terms(theta, logN, logD)
    mx = t.max(-1)
    ex = np.exp(t - mx[:, None])
    s = ex.sum(-1)
    r = mx + np.log(s) - logL
    p = ex / s[:, None]  # softmax = d LSE / d term
    ar = np.abs(r)
    f = (w * np.where(ar <= DELTA, 0.5 * r * r, DELTA * (ar - 0.5 * DELTA))).sum()
    g = w * np.clip(r, -DELTA, DELTA)
    grad = np.array([g @ p[:, 0], g @ p[:, 1], g @ p[:, 2], -(g * p[:, 0]) @ logN, -(g * p[:, 1]) @ logD])
    return float(f), grad


def _minimise(x0, logN, logD, logL, w):
    return minimize(objective_grad, x0, args=(logN, logD, logL, w), jac=True, method="L-BFGS-B",
                    options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 2000})


def _fit(logN, logD, logL, w, starts: np.ndarray) -> np.ndarray:
    best = min((_minimise(s, logN, logD, logL, w) for s in starts), key=lambda r: r.fun)
    return best.x


def _summary(theta: np.ndarray) -> dict:
    a, b, e, al, be = theta
    out = {"E": np.exp(e), "A": np.exp(a), "B": np.exp(b), "alpha": al, "beta": be, "a": be / (al + be),
           "b": al / (al + be)}
    return {k: (float(v) if np.ndim(v) == 0 else v) for k, v in out.items()}


def refit_batch(theta0: np.ndarray, logN, logD, logL, W: np.ndarray, iters: int = 100) -> np.ndarray:
    """Minimise the summed Huber objective for many weight vectors W (R, n) at once, from theta0 ((5,) or (R, 5)).

    Levenberg-Marquardt on IRLS weights min(1, delta/|r|) (the Huber majoriser): every bootstrap resample
    advances in the same numpy call, so 1000 refits cost about what a few scipy runs would.
    """
    R = len(W)
    th = np.broadcast_to(theta0, (R, 5)).astype(float)
    lam = np.full(R, 1e-3)
    f = objective(th, logN, logD, logL, W)
    for _ in range(iters):
        t = _terms(th, logN, logD)
        mx = t.max(-1)
        ex = np.exp(t - mx[..., None])
        s = ex.sum(-1)
        r = mx + np.log(s) - logL
        p = ex / s[..., None]
        J = np.concatenate([p, -p[..., :2] * np.stack(np.broadcast_arrays(logN, logD), -1)], -1)  # (R, n, 5)
        om = W * np.minimum(1.0, DELTA / np.maximum(np.abs(r), 1e-300))
        H = np.einsum("rni,rn,rnj->rij", J, om, J)
        g = np.einsum("rni,rn->ri", J, om * r)
        diag = np.diagonal(H, axis1=1, axis2=2)
        # Marquardt scaling by diag(H), plus a small ridge: a term that vanishes on every point (its share p
        # underflows to 0) leaves a zero row, which must give a zero step rather than a singular solve.
        ridge = 1e-10 * diag.mean(-1) + 1e-300
        H = H + lam[:, None, None] * np.eye(5) * diag[:, None, :] + ridge[:, None, None] * np.eye(5)
        step = -np.linalg.solve(H, g[..., None])[..., 0]
        f_new = objective(th + step, logN, logD, logL, W)
        better = f_new < f
        th = np.where(better[:, None], th + step, th)
        f = np.where(better, f_new, f)
        lam = np.where(better, lam / 3, lam * 4)
        if np.all(np.abs(step).max(-1) < 1e-9) or np.all(lam > 1e8):
            break
    return th


def fit_parametric(N, D, L, n_boot: int = 1000, seed: int = 0, n_starts: int = 64) -> dict:
    """Multi-start fit: the objective ranks all 4500 grid points at once, the `n_starts` best are descended
    together (refit_batch), and L-BFGS-B polishes the 4 best ends. Then a bootstrap over runs, all resamples
    refitted together from the point fit."""
    logN, logD, logL = np.log(N), np.log(D), np.log(L)
    if len(L) < 10:
        return {"skipped": f"only {len(L)} runs; the 5-parameter fit needs >= 10"}
    w = np.ones(len(L))
    f0 = np.concatenate([objective(GRID[s:s + 500], logN, logD, logL) for s in range(0, len(GRID), 500)])
    starts = GRID[np.argsort(f0)[:n_starts]]
    ends = refit_batch(starts, logN, logD, logL, np.ones((len(starts), len(L))), iters=300)
    theta = _fit(logN, logD, logL, w, ends[np.argsort(objective(ends, logN, logD, logL))[:4]])
    res = _summary(theta) | {"form": "E + A/N^alpha + B/D^beta", "n_runs": int(len(L)),
                             "objective": float(objective(theta, logN, logD, logL)), "theta": theta.tolist(),
                             "N_is": "M/6 (FLOPs-equivalent parameters, so C = 6*N*D) unless the CSV gives N"}
    if not (res["alpha"] > 0 and res["beta"] > 0):  # loss rising with N or D: the data do not constrain the law
        return {"skipped": f"the best fit has a non-positive exponent (alpha={res['alpha']:.3g}, "
                           f"beta={res['beta']:.3g}): these runs do not constrain L(N, D)"}
    G = (res["alpha"] * res["A"] / (res["beta"] * res["B"])) ** (1 / (res["alpha"] + res["beta"]))
    res["M_opt"] = {"coef": float(6 * G * 6 ** -res["a"]), "exponent": res["a"]}  # N_opt = G*(C/6)^a, M = 6N
    if n_boot:
        rng = np.random.default_rng(seed)
        W = np.stack([np.bincount(rng.integers(0, len(L), len(L)), minlength=len(L)) for _ in range(n_boot)])
        boots = np.concatenate([refit_batch(theta, logN, logD, logL, W[s:s + 250].astype(float))
                                for s in range(0, n_boot, 250)])
        summ = _summary(boots.T)
        res["ci95"] = {k: percentile_ci(summ[k]) for k in ("E", "A", "B", "alpha", "beta", "a", "b")}
        res["boot_theta"] = boots
    return res
