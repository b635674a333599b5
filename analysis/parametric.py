"""Chinchilla Approach 3 as corrected by Epoch AI (Besiroglu et al. 2024): L(N, D) = E + A/N^alpha + B/D^beta,
fitted as log L = LSE(a - alpha log N, b - beta log D, e) with a Huber loss (delta 1e-3) on the log residuals,
SUMMED over runs, by L-BFGS-B from the best starts of Chinchilla's initialisation grid.

Options for published tables: `tie` (alpha = beta, as Muennighoff et al.), `fix_E` (a known irreducible loss) and
`robust` (drop runs whose log residual is more than `robust` robust standard deviations, 1.4826 * MAD, from the
fit, then refit once: a documented stand-in for dropping outliers by hand). A fit that does not move from its
starting point, or whose bootstrap CIs have zero width, is reported as skipped with the reason, never as a result.
The fit needs at least MIN_RUNS = 10 runs (twice its five parameters), one fewer per constraint (`tie`, `fix_E`);
with fewer it is skipped, and the reason starts with that count.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import minimize

from analysis import resample
from analysis.powerlaw import percentile_ci

DELTA = 1e-3
START_ROWS = 20_000
# Chinchilla's grid (alpha, beta, e, a, b): 5 * 5 * 5 * 6 * 6 = 4500 starts, as (a, b, e, alpha, beta).
GRID = np.array(
    list(
        itertools.product(
            np.arange(0, 2.01, 0.5),
            np.arange(0, 2.01, 0.5),
            np.arange(-1, 1.01, 0.5),
            np.arange(0, 26, 5.0),
            np.arange(0, 26, 5.0),
        )
    )
)[:, [3, 4, 2, 0, 1]]
KEYS = ("E", "A", "B", "alpha", "beta", "a", "b")


class Param:
    """theta (a, b, e, alpha, beta) = T @ phi + t0 for the free parameters phi (ties and fixes are linear)."""

    def __init__(self, tie: bool = False, fix_E: float | None = None):
        cols = [0, 1] + ([] if fix_E is not None else [2]) + [3]
        T = np.zeros((5, len(cols) + (0 if tie else 1)))
        for j, i in enumerate(cols):
            T[i, j] = 1
        T[4, -1] = 1  # beta: its own column, or alpha's when tied
        self.T, self.t0 = T, np.zeros(5)
        if fix_E is not None:
            self.t0[2] = np.log(fix_E)
        self.tie, self.fix_E = tie, fix_E

    def theta(self, phi: np.ndarray) -> np.ndarray:
        return phi @ self.T.T + self.t0

    def phi(self, theta: np.ndarray) -> np.ndarray:
        """Least-squares projection of full thetas onto the free parameters (exact for thetas that obey the ties)."""
        return (theta - self.t0) @ np.linalg.pinv(self.T).T

    def describe(self) -> str:
        parts = ["alpha = beta"] if self.tie else []
        return ", ".join(parts + ([f"E fixed at {self.fix_E:g}"] if self.fix_E is not None else []))


def _terms(theta: np.ndarray, logN, logD) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b, e, al, be = (theta[..., i, None] for i in range(5))
    t0, t1 = a - al * logN, b - be * logD
    return t0, t1, np.broadcast_to(e, t0.shape)


def _lse(theta: np.ndarray, logN, logD):
    """log(exp(t0) + exp(t1) + exp(t2)) and the softmax shares; elementwise on three arrays (fast, no tiny axis)."""
    t0, t1, t2 = _terms(theta, logN, logD)
    mx = np.maximum(np.maximum(t0, t1), t2)
    e0, e1, e2 = np.exp(t0 - mx), np.exp(t1 - mx), np.exp(t2 - mx)
    s = e0 + e1 + e2
    return mx + np.log(s), e0 / s, e1 / s, e2 / s


def _huber(r: np.ndarray) -> np.ndarray:
    ar = np.abs(r)
    return np.where(ar <= DELTA, 0.5 * r * r, DELTA * (ar - 0.5 * DELTA))


def objective(theta: np.ndarray, logN, logD, logL, w=None) -> np.ndarray:
    """Summed Huber loss, vectorised over leading axes of theta (e.g. all grid starts at once)."""
    h = _huber(_lse(theta, logN, logD)[0] - logL)
    return (h if w is None else w * h).sum(-1)


def objective_grad(theta: np.ndarray, logN, logD, logL, w) -> tuple[float, np.ndarray]:
    """Objective and its analytic gradient for one theta (what L-BFGS-B calls)."""
    f, p0, p1, p2 = _lse(theta, logN, logD)
    r = f - logL
    g = w * np.clip(r, -DELTA, DELTA)
    grad = np.array([g @ p0, g @ p1, g @ p2, -(g * p0) @ logN, -(g * p1) @ logD])
    return float((w * _huber(r)).sum()), grad


def _minimise(x0, logN, logD, logL, w, par: Param | None = None):
    """L-BFGS-B on the free parameters (all five when par is None)."""
    par = par or Param()

    def fg(phi):
        f, g = objective_grad(par.theta(phi), logN, logD, logL, w)
        return f, par.T.T @ g

    r = minimize(
        fg,
        par.phi(np.asarray(x0, float)),
        jac=True,
        method="L-BFGS-B",
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 2000},
    )
    r.theta = par.theta(r.x)
    return r


def refit_batch(
    theta0: np.ndarray, logN, logD, logL, W: np.ndarray, iters: int = 100, par: Param | None = None
) -> np.ndarray:
    """Minimise the summed Huber objective for many weight vectors W (R, n) at once, from theta0 ((5,) or (R, 5));
    logL is the runs' log losses, (n,) or one row per resample (R, n).

    Levenberg-Marquardt on IRLS weights min(1, delta/|r|) (the Huber majoriser): every bootstrap resample
    advances in the same numpy call, and a resample leaves the batch as soon as its step is negligible.
    """
    par = par or Param()
    R = len(W)
    th = np.array(np.broadcast_to(theta0, (R, 5)), float)
    phi = par.phi(th)
    k = phi.shape[1]
    lam = np.full(R, 1e-3)
    f = objective(th, logN, logD, logL, W)
    act = np.arange(R)
    X = np.stack(np.broadcast_arrays(logN, logD), -1)
    for _ in range(iters):
        if not len(act):
            break
        tha, Wa = th[act], W[act]
        La = logL[act] if np.ndim(logL) == 2 else logL
        F, p0, p1, p2 = _lse(tha, logN, logD)
        r = F - La
        J = np.stack([p0, p1, p2, -p0 * X[:, 0], -p1 * X[:, 1]], -1) @ par.T  # (R, n, k)
        om = Wa * np.minimum(1.0, DELTA / np.maximum(np.abs(r), 1e-300))
        Jw = J * om[..., None]
        H = np.matmul(Jw.transpose(0, 2, 1), J)
        g = np.einsum("rnk,rn->rk", Jw, r)
        diag = np.diagonal(H, axis1=1, axis2=2)
        # Marquardt scaling by diag(H), plus a small ridge: a term that vanishes on every point (its share p
        # underflows to 0) leaves a zero row, which must give a zero step rather than a singular solve.
        ridge = 1e-10 * diag.mean(-1) + 1e-300
        H = H + np.eye(k) * (lam[act, None, None] * diag[:, None, :] + ridge[:, None, None])
        step = -np.linalg.solve(H, g[..., None])[..., 0]
        new = par.theta(phi[act] + step)
        f_new = objective(new, logN, logD, La, Wa)
        better = f_new < f[act]
        phi[act] = np.where(better[:, None], phi[act] + step, phi[act])
        th[act] = np.where(better[:, None], new, tha)
        f[act] = np.where(better, f_new, f[act])
        lam[act] = np.where(better, lam[act] / 3, lam[act] * 4)
        done = (np.abs(step).max(-1) < 1e-9) | (lam[act] > 1e8)
        act = act[~done]
    return th


def _summary(theta: np.ndarray) -> dict:
    a, b, e, al, be = theta
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        out = {
            "E": np.exp(e),
            "A": np.exp(a),
            "B": np.exp(b),
            "alpha": al,
            "beta": be,
            "a": be / (al + be),
            "b": al / (al + be),
        }
    return {k: (float(v) if np.ndim(v) == 0 else v) for k, v in out.items()}


@dataclass(frozen=True)
class _Fit:
    """A point fit: theta, the start it descended from, the run weights it used (0: dropped by the robust refit)
    and the initialisation grid's best starts on those runs (where a resample's own optimum may lie)."""

    theta: np.ndarray
    start: np.ndarray
    w: np.ndarray
    candidates: np.ndarray
    dropped: list[int] = field(default_factory=list)


def _ranked_grid(logN, logD, logL, w, par: Param) -> np.ndarray:
    """The initialisation grid (under the ties and fixes), best start first on these runs."""
    grid = np.unique(par.theta(par.phi(GRID)), axis=0)
    # The starts are ranked on at most START_ROWS runs (evenly spaced): ranking needs no more, and the grid's
    # objective costs starts x runs.
    sub = np.linspace(0, len(logL) - 1, min(len(logL), START_ROWS)).astype(int)
    step = resample.chunk_size(len(sub), len(grid), per_row=8)
    f0 = np.concatenate(
        [objective(grid[s : s + step], logN[sub], logD[sub], logL[sub], w[sub]) for s in range(0, len(grid), step)]
    )
    return grid[np.argsort(f0)]


def _point_fit(logN, logD, logL, w, par: Param, n_starts: int) -> _Fit:
    """Best of the grid's `n_starts` best starts, descended together, the 4 best polished."""
    ranked = _ranked_grid(logN, logD, logL, w, par)
    starts = ranked[:n_starts]
    ends = refit_batch(starts, logN, logD, logL, np.broadcast_to(w, (len(starts), len(w))), iters=300, par=par)
    order = np.argsort(objective(ends, logN, logD, logL, w))[:4]
    polished = [_minimise(ends[i], logN, logD, logL, w, par) for i in order]
    j = int(np.argmin([p.fun for p in polished]))
    return _Fit(polished[j].theta, starts[order[j]], w, ranked[:CANDIDATES])


def _robust_refit(fit: _Fit, logN, logD, logL, par: Param, n_starts: int, robust: float, need: int) -> _Fit:
    """Refit without the runs whose log residual is beyond `robust` robust SDs (1.4826 * MAD), if enough remain."""
    r = _lse(fit.theta, logN, logD)[0] - logL
    s = 1.4826 * np.median(np.abs(r - np.median(r)))
    out = np.abs(r - np.median(r)) > robust * s
    if not out.any() or (~out).sum() < need:
        return fit
    refit = _point_fit(logN, logD, logL, (~out).astype(float), par, n_starts)
    return replace(refit, dropped=np.flatnonzero(out).tolist())


MIN_RUNS = 10  # runs the five-parameter fit needs (twice its parameters); one fewer per tie or fixed E


def min_runs(tie: bool = False, fix_E: float | None = None) -> int:
    """The fewest runs fit_parametric accepts with these constraints (10, 9 or 8)."""
    return MIN_RUNS - int(tie) - int(fix_E is not None)


def _too_few(n: int, need: int) -> str:
    return (
        f"needs >= {need} runs (MIN_RUNS: 10 for the five parameters, one fewer per tie or fixed E), got {n}: "
        "add (N, D) runs or constrain the fit (--tie-exponents, --fix-E)"
    )


def _not_a_result(fit: _Fit, logN, logD, logL, par: Param) -> str | None:
    """Why this point fit is not a result (not finite, or the optimiser never moved), else None."""
    f = float(objective(fit.theta, logN, logD, logL, fit.w))
    if not np.all(np.isfinite(fit.theta)) or not np.isfinite(f):
        return "the parametric fit did not converge to finite values"
    # Still at its start with a non-zero gradient: the optimiser failed (a start that happens to be the exact
    # optimum has a zero gradient and is a result).
    grad = par.T.T @ objective_grad(fit.theta, logN, logD, logL, fit.w)[1]
    if np.allclose(fit.theta, fit.start, rtol=0, atol=1e-8) and np.abs(grad).max() > 1e-8:
        return (
            f"the optimiser made no progress from its starting point {np.round(fit.start, 3).tolist()} "
            f"(objective {f:.3g}): the runs do not constrain L(N, D)"
        )
    return None


def _result(fit: _Fit, logN, logD, logL, par: Param, robust: float | None) -> dict:
    """The report's parametric section for a point fit ({"skipped": why} where an exponent is not positive)."""
    res = _summary(fit.theta) | {
        "form": "E + A/N^alpha + B/D^beta",
        "n_runs": int(fit.w.sum()),
        "objective": float(objective(fit.theta, logN, logD, logL, fit.w)),
        "theta": fit.theta.tolist(),
        "constraints": par.describe() or "none",
        "robust": robust,
        "dropped": fit.dropped,
        "N_is": "M/6 (FLOPs-equivalent parameters, so C = 6*N*D) unless the input gives N",
    }
    if not (res["alpha"] > 0 and res["beta"] > 0):  # loss rising with N or D: the data do not constrain the law
        return {
            "skipped": f"the best fit has a non-positive exponent (alpha={res['alpha']:.3g}, "
            f"beta={res['beta']:.3g}): these runs do not constrain L(N, D)"
        }
    G = (res["alpha"] * res["A"] / (res["beta"] * res["B"])) ** (1 / (res["alpha"] + res["beta"]))
    res["M_opt"] = {"coef": float(6 * G * 6 ** -res["a"]), "exponent": res["a"]}  # N_opt = G*(C/6)^a, M = 6N
    return res


# The bootstrap refits each resample from the point fit and from the EXTRA_STARTS best of the grid's CANDIDATES
# best starts (ranked again on the resample), and keeps its best end. A local refit from the point fit cannot leave
# the point fit's basin, and on small grids a resample's optimum often lies in another one (the point fit at E -> 0,
# the resample's at E > 0): from the point fit alone, alpha's interval covered 88% of 12-run grids, with the extra
# starts 97% (BENCHMARKS.md). Where no resample of the first PILOT leaves the point fit's basin, the rest are refitted
# from the point fit alone: the extra starts cost time and, on grids that determine the law, never win.
CANDIDATES = 64
EXTRA_STARTS = 2
PILOT = 100
MOVED_RTOL = 1e-6  # an extra start's end counts as another optimum when its objective is lower by more than this
PER_ROW = 30  # numbers refit_batch holds per run and resample (the Jacobian and its weighted copy)
PER_ROW_EXTRA = PER_ROW * (1 + EXTRA_STARTS) + 12 * CANDIDATES  # ... and the candidates' ranking temporaries


def _refit_resamples(fit: _Fit, logN, logD, logL, W: np.ndarray, par: Param, extra: bool) -> tuple[np.ndarray, bool]:
    """Each resample (a row of run weights W) refitted from the point fit and, with `extra`, from its own best
    candidates; its best end, and whether any resample's best end came from a candidate."""
    from_point = refit_batch(fit.theta, logN, logD, logL, W, par=par)
    if not extra:
        return from_point, False
    R = len(W)
    rank = objective(fit.candidates[None], logN, logD, logL, W[:, None, :])  # (R, CANDIDATES)
    starts = fit.candidates[np.argsort(rank, 1)[:, :EXTRA_STARTS]].reshape(-1, 5)
    ends = refit_batch(starts, logN, logD, logL, np.repeat(W, EXTRA_STARTS, 0), iters=300, par=par)
    ends = ends.reshape(R, EXTRA_STARTS, 5)
    f_ends = objective(ends, logN, logD, logL, W[:, None, :])
    j = np.argmin(f_ends, 1)
    best, f_best = ends[np.arange(R), j], f_ends[np.arange(R), j]
    f_point = objective(from_point, logN, logD, logL, W)
    moved = f_best < f_point - MOVED_RTOL * np.abs(f_point)
    return np.where(moved[:, None], best, from_point), bool(moved.any())


def _bootstrap(fit: _Fit, logN, logD, logL, par: Param, n_boot: int, seed: int, trunk) -> np.ndarray:
    """(n_boot, 5) thetas of resamples of runs (of trunks, with all their branches, where `trunk` names them), in
    chunks of at most 250 resamples (a few hundred runs' temporaries stay in cache)."""
    rng = np.random.default_rng(seed)
    keep = np.flatnonzero(fit.w > 0)
    u = resample.units(np.zeros(len(keep)), None if trunk is None else np.asarray(trunk, object)[keep])
    boots = np.zeros((n_boot, 5))
    pilot, extra, done = min(PILOT, n_boot), True, 0
    for count in (pilot, n_boot - pilot):
        moved_any = False
        per_row = PER_ROW_EXTRA if extra else PER_ROW
        for sl, wk in resample.resamples(u, count, rng, per_row=per_row, label="parametric L(N, D)", most=250):
            W = np.zeros((len(wk), len(logL)))
            W[:, keep] = wk
            boots[done + sl.start : done + sl.stop], moved = _refit_resamples(fit, logN, logD, logL, W, par, extra)
            moved_any |= moved
        done += count
        extra = extra and moved_any  # after the pilot: the extra starts stay only where some resample needed them
    return boots


def _with_ci(res: dict, boots: np.ndarray, fix_E: float | None) -> dict:
    """res with its percentile CIs and bootstrap thetas, or {"skipped": why} where no resample moved."""
    summ = _summary(boots.T)
    ci = {k: percentile_ci(summ[k]) for k in KEYS}
    free = [k for k in ("E", "A", "B", "alpha") if not (k == "E" and fix_E is not None)]
    if all(ci[k][1] - ci[k][0] <= 1e-12 * max(1.0, abs(res[k])) for k in free):
        return {
            "skipped": "every bootstrap refit stayed at the point fit (zero-width CIs): the optimiser "
            "cannot move on these runs, so the fit is not reported"
        }
    return res | {"ci95": ci, "boot_theta": boots}


def fit_parametric(
    N,
    D,
    L,
    n_boot: int = 1000,
    seed: int = 0,
    n_starts: int = 32,
    tie: bool = False,
    fix_E: float | None = None,
    robust: float | None = None,
    trunk=None,
) -> dict:
    """Multi-start point fit, optional robust refit, then a bootstrap over runs (over trunks, with all their
    branches, where `trunk` names them), each resample refitted from the point fit and from its own best grid
    starts. "dropped" lists the indices a robust refit left out."""
    par = Param(tie, fix_E)
    logN, logD, logL = np.log(N), np.log(D), np.log(L)
    need = min_runs(tie, fix_E)
    if len(L) < need:
        return {"skipped": _too_few(len(L), need)}
    fit = _point_fit(logN, logD, logL, np.ones(len(L)), par, n_starts)
    if robust:
        fit = _robust_refit(fit, logN, logD, logL, par, n_starts, robust, need)
    why = _not_a_result(fit, logN, logD, logL, par)
    if why:
        return {"skipped": why}
    res = _result(fit, logN, logD, logL, par, robust)
    if "skipped" in res or not n_boot:
        return res
    return _with_ci(res, _bootstrap(fit, logN, logD, logL, par, n_boot, seed, trunk), fix_E)
