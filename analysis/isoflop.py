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

from dataclasses import dataclass, field

import numpy as np

from analysis import between as bt
from analysis import resample
from analysis.isojoint import LN10, PRIOR_SD, Cells, JointModel, cell_means, shape, start
from analysis.powerlaw import PowerLaw, law_ci, linefit, percentile_ci


def _solve_parabolas(p: list[np.ndarray], rhs: np.ndarray) -> np.ndarray:
    """Normal equations of y = c0 + c1 x + c2 x^2 from the moments p[k] = sum w x^k (k <= 4) and
    rhs[..., k] = sum w x^k y (k <= 2); NaN rows where singular. One np.linalg.solve call for every resample."""
    A = np.stack([np.stack(p[i : i + 3], -1) for i in range(3)], -2)
    det = np.linalg.det(A)
    ok = np.abs(det) > 1e-9 * np.maximum(p[0], 1) ** 3
    A = np.where(ok[..., None, None], A, np.eye(3))
    c = np.linalg.solve(A, rhs[..., None])[..., 0]
    return np.where(ok[..., None], c, np.nan)


def parabolas(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Weighted quadratic fits y = c0 + c1 x + c2 x^2 along the last axis, batched; NaN rows where singular."""
    w = np.ones_like(x) if w is None else w
    p = [(w * x**k).sum(-1) for k in range(5)]
    return _solve_parabolas(p, np.stack([(w * x**k * y).sum(-1) for k in range(3)], -1))


def parabolas_from_cells(x: np.ndarray, W: np.ndarray, S: np.ndarray) -> np.ndarray:
    """The same fits from cell sums: x (cells,) sizes, W/S (R, cells) weight and weighted-loss totals."""
    X = np.stack([x**k for k in range(5)], -1)  # (cells, 5)
    p = list((W @ X).T)
    return _solve_parabolas(p, S @ X[:, :3])


def _vertex(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x*, y*) of each parabola; NaN where it does not open upwards (no minimum)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        good = c[..., 2] > 0
        xv = np.where(good, -c[..., 1] / (2 * c[..., 2]), np.nan)
    return xv, c[..., 0] + c[..., 1] * xv + c[..., 2] * xv**2


WINDOW = 0.75  # decades either side of the best size (see the module docstring)
MIN_WINDOW_SIZES = 5
ADAPTIVE_TOL = 0.05  # decades of vertex bias the adaptive window accepts from the profile's skew
ESTIMATORS = ("joint", "window", "all", "adaptive")
DEFAULT_ESTIMATOR = "joint"
# LM iterations of a resample's per-budget (free-vertex) refit: a budget whose resample is flat walks its vertex out
# along a sloppy valley; by then it is far outside its sizes, which is all its percentile interval needs to know.
FREE_ITERS = 20
JOINT_ITERS = 40  # from the first (shared-Jacobian) step, 8 iterations put the exponent within 1% of its SD
ESTIMATOR_TEXT = {
    "joint": "joint fit of every budget's profile (shared Chinchilla-form skew, minima on one power law)",
    "window": "a parabola per budget on the sizes within the fitting window of its best size, then a line",
    "all": "a parabola per budget on all its sizes, then a line",
    "adaptive": "a parabola per budget on a window set by the profile's measured skew, then a line",
}


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


def adaptive_half_width(logM: np.ndarray, loss: np.ndarray) -> float:
    """The window the profile's own skew calls for: 0 (all sizes) unless a cubic on the whole profile finds a skew
    beyond twice its standard error; then the half-width h whose vertex bias 0.3*|c3/c2|*h^2 (a parabola on a
    window of a profile c2 v^2 + c3 v^3) is ADAPTIVE_TOL decades, at least 0.5."""
    xs = np.unique(logM)
    if len(xs) <= MIN_WINDOW_SIZES:
        return 0.0
    best = xs[np.argmin([loss[logM == x].mean() for x in xs])]
    v = logM - best
    X = np.stack([v**k for k in range(4)], -1)
    coef, *_ = np.linalg.lstsq(X, loss, rcond=None)
    dof = len(loss) - 4
    if dof < 1 or coef[2] <= 0:
        return 0.0
    resid = loss - X @ coef
    cov = np.linalg.pinv(X.T @ X) * float(resid @ resid) / dof
    if abs(coef[3]) <= 2 * np.sqrt(max(cov[3, 3], 0)):
        return 0.0
    h = float(np.sqrt(ADAPTIVE_TOL / (0.3 * abs(coef[3] / coef[2]))))
    return max(h, WINDOW) if h < (xs[-1] - xs[0]) / 2 else 0.0


@dataclass(frozen=True)
class IsoRuns:
    """IsoFLOP runs, one entry each: the nominal budget that labels its profile, its model scale (M, or 6*N1, 6*N2
    for the counting conventions), compute C and loss; `trunk` the trunk a branch was cut from (None/NaN for runs
    trained alone; None: no run shares one), whose branches the bootstrap draws together."""

    budget: np.ndarray
    scale: np.ndarray
    C: np.ndarray
    loss: np.ndarray
    trunk: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("budget", "scale", "C", "loss"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), float))


@dataclass
class _PointFit:
    """What a profile's bootstrap needs of its point fit: the runs inside its fitting window, the unit coordinates
    of its sizes (log10 M = centre + half * u) and the parabola's vertex in them (set when `ok`: >= 3 sizes)."""

    inside: np.ndarray
    centre: float
    half: float
    ok: bool
    xv: float = float("nan")
    yv: float = float("nan")
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # `inside` as indices of all the runs


@dataclass(frozen=True)
class _Sizes:
    """A profile's sizes (log10 M): all of them, those in its fitting window, and the one with the lowest mean loss."""

    all: np.ndarray
    window: np.ndarray
    best: float

    def edge_text(self, vM: float) -> str:
        side = "smallest" if self.best == self.all[0] else "largest"
        return (
            f"best run at the edge of the grid: M={10**self.best:.3g} is the {side} of {len(self.all)} sizes "
            f"(grid {10 ** self.all[0]:.3g}..{10 ** self.all[-1]:.3g}), so the minimum may lie beyond it "
            f"(vertex M={vM:.3g}); extend the grid {'below' if side == 'smallest' else 'above'} it"
        )


def _budget_row(C: np.ndarray, loss: np.ndarray, sizes: _Sizes, inside: np.ndarray, half_width: float) -> dict:
    """A profile's report row before its fit: its runs, sizes, best size and fitting window."""
    xs = sizes.window
    return {
        "C": float(np.exp(np.mean(np.log(C)))),
        "n_runs": int(len(loss)),
        "n_sizes": int(len(sizes.all)),
        "warnings": [],
        "notes": [],
        "M_range": [float(10 ** sizes.all[0]), float(10 ** sizes.all[-1])],
        "best_M": float(10**sizes.best),  # the size with the lowest (mean) loss; the vertex may differ
        "window": {
            "M": [float(10 ** xs[0]), float(10 ** xs[-1])],
            "n_runs": int(inside.sum()),
            "n_sizes": int(len(xs)),
            "half_width_decades": float(half_width) if half_width > 0 else None,
        },
    }


def _point_budget(logM, C, loss, half_width: float, off_centre: float, joint: bool) -> tuple[dict, _PointFit]:
    """One profile's point fit: the report row (warnings exclude the budget from the law; notes do not) and what
    its bootstrap needs."""
    xall = np.unique(logM)
    means = np.array([loss[logM == x].mean() for x in xall])
    inside = window_mask(logM, loss, half_width)
    sizes = _Sizes(xall, np.unique(logM[inside]), xall[int(np.argmin(means))])
    out = _budget_row(C, loss, sizes, inside, half_width)
    xs = sizes.window
    fit = _PointFit(inside, (xs[0] + xs[-1]) / 2, max((xs[-1] - xs[0]) / 2, 1e-12), len(xs) >= 3)
    if not fit.ok:
        out["warnings"].append(f"only {len(xs)} distinct model sizes; need >= 3 for a parabola")
        return out, fit
    u = (logM[inside] - fit.centre) / fit.half  # unit coordinates keep the normal equations well conditioned
    xv, yv = _vertex(parabolas(u, loss[inside]))
    fit.xv, fit.yv = float(xv), float(yv)
    why = _vertex_warning(sizes, fit, off_centre, joint)
    if why:
        out["warnings"].append(why)
    return out, fit


def _vertex_warning(sizes: _Sizes, fit: _PointFit, off_centre: float, joint: bool) -> str | None:
    """Why a profile's vertex cannot serve the law, or None.

    Two different failures: the best size itself is the smallest or largest (the minimum may lie beyond the grid:
    extend it), or the best size is inside but the parabola's vertex falls outside the fitted sizes (the vertex is
    extrapolated: a skewed or noisy profile; add sizes around it). The joint fit needs only the minimum bracketed."""
    xall, xs, xv = sizes.all, sizes.window, fit.xv
    edge_best = len(xall) >= 3 and sizes.best in (xall[0], xall[-1])
    vM = 10 ** (fit.centre + fit.half * xv) if np.isfinite(xv) else float("nan")
    if joint:
        return sizes.edge_text(vM) if edge_best and not (np.isfinite(xv) and abs(xv) <= 1) else None
    if not np.isfinite(xv):
        return "too flat: the parabola has no minimum (curvature <= 0)"
    if edge_best:
        return sizes.edge_text(vM)
    if abs(xv) > 1:
        rank = int(np.searchsorted(xall, sizes.best)) + 1
        return (
            f"vertex outside the fitted sizes: the parabola's minimum M={vM:.3g} lies outside "
            f"{10 ** xs[0]:.3g}..{10 ** xs[-1]:.3g} while the best run (M={10**sizes.best:.3g}, size {rank} of "
            f"{len(xall)}) is inside; the vertex is extrapolated: add sizes around it or repeat runs (noise)"
        )
    if abs(xv) > off_centre:
        return (
            f"off-centre: vertex is {abs(xv):.0%} of the half-width from the centre of the fitted sizes "
            f"{10 ** xs[0]:.3g}..{10 ** xs[-1]:.3g} (limit {off_centre:.0%}); "
            f"re-centre the grid on M~{vM:.3g}"
        )
    return None


def _flat_warning(bx: np.ndarray, half: float) -> str | None:
    """A bootstrap of vertices (unit coordinates) too spread to locate the minimum, or None."""
    bad = np.mean(~np.isfinite(bx))
    if bad > 0.1:
        return f"too flat: {bad:.0%} of bootstrap parabolas have no minimum"
    lo, hi = percentile_ci(bx)
    if hi - lo > 2:  # in unit coordinates the fitted sizes span 2
        return (
            f"too flat: 95% CI of log10 M_opt spans {(hi - lo) * half:.2f} decades, wider than the fitted sizes "
            f"({2 * half:.2f})"
        )
    return None


def _finish_budget(out: dict, v: float | None, y: float | None, bv: np.ndarray, by: np.ndarray) -> dict:
    """Fill a budget's optimum (log10 M v, loss y) and its bootstrap samples into its report row."""
    M_opt = float(10**v) if v is not None and np.isfinite(v) else None
    out |= {
        "M_opt": M_opt,
        "D_opt": out["C"] / M_opt if M_opt else None,
        "loss_min": float(y) if M_opt and y is not None and np.isfinite(y) else None,
        "boot_logM": bv,
        "boot_loss": by,
    }
    if len(bv) and M_opt:
        out["ci95"] = {"M_opt": [10**q for q in percentile_ci(bv)], "loss_min": percentile_ci(by)}
    return out


def _finish_parabola(out: dict, fit: _PointFit, bx: np.ndarray, by: np.ndarray) -> dict:
    """A parabola's optimum into its report row, with its bootstrap vertices bx (unit coordinates) and minima by;
    a bootstrap too spread to locate the minimum excludes the budget."""
    if not fit.ok:
        return _finish_budget(out, None, None, bx, by)
    if len(bx) and np.isfinite(fit.xv) and not out["warnings"] and (why := _flat_warning(bx, fit.half)):
        out["warnings"].append(why)
    v = fit.centre + fit.half * fit.xv if np.isfinite(fit.xv) else None
    return _finish_budget(out, v, fit.yv, fit.centre + fit.half * bx, by)


def fit_budget(
    logM: np.ndarray,
    C: np.ndarray,
    loss: np.ndarray,
    n_boot: int,
    rng: np.random.Generator,
    off_centre: float = 2 / 3,
    window: float = WINDOW,
) -> dict:
    """One IsoFLOP profile on its own (a parabola on the window): vertex, loss_min, warnings and `boot_logM`/
    `boot_loss` (n_boot vertex samples, runs resampled with replacement within the window)."""
    out, fit = _point_budget(logM, C, loss, window, off_centre, joint=False)
    if not fit.ok:
        return _finish_budget(out, None, None, np.full(n_boot, np.nan), np.full(n_boot, np.nan))
    u = (logM[fit.inside] - fit.centre) / fit.half
    L = loss[fit.inside]
    bx = by = np.zeros(0)
    if n_boot:
        idx = rng.integers(0, len(u), (n_boot, len(u)))
        bx, by = _vertex(parabolas(u[idx], L[idx]))
    return _finish_parabola(out, fit, bx, by)


def _law(lc: np.ndarray, b0: float, a: float, n: int) -> tuple[PowerLaw, PowerLaw]:
    """M_opt = 10^b0 * C^a and D_opt = C / M_opt."""
    M_law = PowerLaw(float(10**b0), float(a), n_points=n, n_budgets=n)
    D_law = PowerLaw(float(10**-b0), float(1 - a), n_points=n, n_budgets=n)
    return M_law, D_law


def _joint_start(k, x, Y, W, K):
    """Per-budget starting values for the joint fits: parabola vertex, minimum and curvature per e-fold^2."""
    v0, y0, c0 = np.zeros(K), np.zeros(K), np.zeros(K)
    for j in range(K):
        m = k == j
        c = parabolas(x[m], Y[m], W[m])
        xv, yv = _vertex(c)
        ok = np.isfinite(xv) and x[m].min() <= xv <= x[m].max()
        v0[j] = xv if ok else x[m][np.argmin(Y[m])]
        y0[j] = yv if ok else Y[m].min()
        c0[j] = 2 * c[2] / LN10**2 if ok else np.nan
    c0 = np.where(np.isfinite(c0), c0, np.nanmedian(c0) if np.isfinite(c0).any() else 0.01)
    return v0, y0, c0


@dataclass
class _Profiles:
    """Every budget's point fit (its report row and _PointFit), and the cells of (budget, size) whose weight and
    loss totals per resample are all the fits of the law need."""

    runs: IsoRuns
    logM: np.ndarray
    per: list[dict]
    fits: list[_PointFit]
    cells: Cells
    cell_in: np.ndarray  # cells holding a run inside its budget's fitting window


@dataclass(frozen=True)
class _Boot:
    """How the law is resampled: n_boot resamples from rng, the budgets it needs, the scatter between them added."""

    n: int
    rng: np.random.Generator
    min_budgets: int
    between: bool


def _half_width(estimator: str, window: float, logM: np.ndarray, loss: np.ndarray) -> float:
    """The fitting window of one profile under `estimator` (0: all its sizes)."""
    fixed = {"window": window, "all": 0.0, "joint": 0.0}.get(estimator)
    return adaptive_half_width(logM, loss) if fixed is None else fixed


def _profiles(runs: IsoRuns, estimator: str, window: float, off_centre: float) -> _Profiles:
    logM = np.log10(runs.scale)
    ub, kb = np.unique(runs.budget, return_inverse=True)
    per, fits = [], []
    for j, b in enumerate(ub):
        m = kb == j
        h = _half_width(estimator, window, logM[m], runs.loss[m])
        out, fit = _point_budget(logM[m], runs.C[m], runs.loss[m], h, off_centre, estimator == "joint")
        fit.rows = np.flatnonzero(m)[fit.inside]
        per.append(out | {"budget": float(b)})
        fits.append(fit)
    cells = Cells(kb, logM)
    in_fit = np.zeros(len(runs.loss), bool)
    for f in fits:
        if f.ok:
            in_fit[f.rows] = True
    cell_in = np.zeros(cells.n, bool)
    cell_in[cells.of_run[in_fit]] = True
    return _Profiles(runs, logM, per, fits, cells, cell_in)


def fit_isoflop(
    runs: IsoRuns,
    n_boot: int = 1000,
    seed: int = 0,
    min_budgets: int = 3,
    *,
    off_centre: float = 2 / 3,
    window: float = WINDOW,
    estimator: str = DEFAULT_ESTIMATOR,
    between: bool = True,
    between_from: dict | None = None,
) -> dict:
    """IsoFLOP law on `runs`, one profile per budget label.

    The bootstrap resamples runs within budgets (trunks with their branches, where runs.trunk names them).
    `between`: add the scatter between budgets to the law's CI (analysis.between); `between_from`: take that scatter
    from another fit of the same runs (another model-scale convention) instead of measuring it, which spares the
    joint estimator its per-budget bootstrap.
    Returns {"budgets": [...], "M_opt": PowerLaw, "D_opt": PowerLaw, "boot": {...}, "estimator", "between"} or
    {"budgets", "skipped"}.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"--iso-estimator must be one of {', '.join(ESTIMATORS)}, not {estimator!r}")
    rng = np.random.default_rng(seed)
    prof = _profiles(runs, estimator, window, off_centre)
    u = resample.units(runs.budget, runs.trunk)
    res: dict = {
        "budgets": prof.per,
        "estimator": estimator,
        "estimator_text": ESTIMATOR_TEXT[estimator],
        "resampled": f"{u.n_units} trunks and lone runs (branches of a trunk drawn together)"
        if u.clustered
        else "runs within budgets",
    }
    boot = _Boot(n_boot, rng, min_budgets, between)
    if estimator == "joint":
        return _fit_joint(res, prof, boot, between_from)
    return _fit_two_stage(res, prof, boot)


def _boot_sums(prof: _Profiles, strata: np.ndarray, boot: _Boot, label: str):
    """Per-chunk cell totals (W, S) of a run bootstrap that resamples trunks (or runs) within strata (budgets, or a
    budget's fitting window and the rest of it, so that every resample keeps the window's number of runs)."""
    u = resample.units(strata, prof.runs.trunk)
    for sl, w in resample.resamples(u, boot.n, boot.rng, per_row=3, label=label):
        yield sl, *prof.cells.sums(w, prof.runs.loss)


def _skip(res: dict, per: list[dict], min_budgets: int) -> dict | None:
    used = [r for r in per if r["used"]]
    if len(used) >= min_budgets:
        return None
    why = "; ".join(f"C={r['C']:.3g}: {', '.join(r['warnings'])}" for r in per if not r["used"])
    res["skipped"] = f"only {len(used)} usable budget(s) for the IsoFLOP law (of {len(per)}); need >= {min_budgets}" + (
        f" [excluded: {why}]" if why else ""
    )
    return res


def _two_stage_boot(prof: _Profiles, boot: _Boot) -> tuple[np.ndarray, np.ndarray]:
    """(n_boot, budgets) vertices (unit coordinates) and minima of every profile's resampled parabola."""
    K = len(prof.per)
    bx, by = np.full((boot.n, K), np.nan), np.full((boot.n, K), np.nan)
    if not boot.n:
        return bx, by
    cols = [np.flatnonzero(prof.cell_in & (prof.cells.k == j)) for j in range(K)]
    inside = np.zeros(len(prof.runs.loss), bool)
    for f in prof.fits:
        inside[f.rows] = True
    strata = 2 * np.unique(prof.runs.budget, return_inverse=True)[1] + inside
    for sl, W, S in _boot_sums(prof, strata, boot, "IsoFLOP"):
        for j, f in enumerate(prof.fits):
            if f.ok:
                u = (prof.cells.x[cols[j]] - f.centre) / f.half
                bx[sl, j], by[sl, j] = _vertex(parabolas_from_cells(u, W[:, cols[j]], S[:, cols[j]]))
    return bx, by


def _fit_two_stage(res: dict, prof: _Profiles, boot: _Boot) -> dict:
    """Approach 2: a parabola per budget (on its window), then a line through the vertices."""
    per = prof.per
    bx, by = _two_stage_boot(prof, boot)
    for j, (out, f) in enumerate(zip(per, prof.fits)):
        _finish_parabola(out, f, bx[:, j], by[:, j])
    for out in per:
        out["used"] = not out["warnings"]
    if _skip(res, per, boot.min_budgets):
        return res
    used = [j for j, r in enumerate(per) if r["used"]]
    lc = np.log10([per[j]["C"] for j in used])
    lm = np.log10([per[j]["M_opt"] for j in used])
    b0, a = linefit(lc, lm)
    laws = _law(lc, float(b0), float(a), len(used))
    if boot.n:
        bm = np.stack([per[j]["boot_logM"] for j in used], -1)  # (n_boot, budgets)
        ok = np.isfinite(bm)
        bb0, ba = linefit(lc, np.where(ok, bm, 0), ok.astype(float))
        X = np.stack([np.ones_like(lc), lc], -1)
        info = _between(X, lm, bm, None, boot, bb0, ba)
        _law_samples(res, laws, info, (bb0, ba, bm, lc))
    return _laws(res, laws, len(used))


def _between(X, y, y_boot, w, boot: _Boot, bb0: np.ndarray, ba: np.ndarray, given: dict | None = None) -> dict:
    """The scatter between budgets about the law (measured, or `given` by another fit of the same runs); with
    boot.between, drawn into the law's samples (bb0, ba) in place. Returns the full info (its "_grid" serves
    `given`)."""
    info = bt.scatter(X, y, y_boot) if given is None else dict(given)
    on = boot.between
    if on and info["df"] >= 1 and info.get("_grid") is not None and info["K"] == len(X):
        u = bt.draw_effects(info, len(bb0), boot.rng)
        H = bt.hat(X, w)
        bb0 += u @ H[0]
        ba += u @ H[1]
    info["added"] = bool(on)
    info["text"] = bt.describe(info, "M_opt law") if on else "M_opt law: scatter between budgets not added (off)"
    return info


def _law_samples(res: dict, laws: tuple[PowerLaw, PowerLaw], info: dict, samples: tuple) -> None:
    """The law's bootstrap into res and its CIs: samples = (log10 coefficient, exponent, each resample's log10
    M_opt per budget, log10 C per budget)."""
    bb0, ba, logM, lc = samples
    M_law, D_law = laws
    res["between"], res["boot_between"] = bt.public(info), info
    M_law.ci95, D_law.ci95 = law_ci(bb0, ba), law_ci(-bb0, 1 - ba)
    res["boot"] = {"log_coef": bb0, "exponent": ba, "logM": logM, "logC": lc}


def _laws(res: dict, laws: tuple[PowerLaw, PowerLaw], n: int) -> dict:
    """res with the M_opt and D_opt laws, each warned when fitted from fewer than 3 budgets."""
    if n < 3:
        for law in laws:
            law.warnings.append(
                f"fit from {n} budgets: the line passes through them exactly and the "
                f"CI reflects within-budget scatter only"
            )
    return res | {"M_opt": laws[0], "D_opt": laws[1]}


@dataclass
class _Joint:
    """The joint fit's point estimates on the used budgets' cells (x centred at xc, budgets renumbered 0..Ku-1):
    jm shares one power law for the minima, fm frees each budget's vertex."""

    used: np.ndarray  # indices of the used budgets
    keep: np.ndarray  # cells of the used budgets
    xc: float
    sk: np.ndarray
    sx: np.ndarray
    lc: np.ndarray  # log10 C of the used budgets
    jm: JointModel
    fm: JointModel
    th: np.ndarray
    th_free: np.ndarray


def _joint_point(prof: _Profiles) -> _Joint:
    per, cells = prof.per, prof.cells
    used = np.array([j for j, r in enumerate(per) if r["used"]])
    remap = np.full(len(per), -1)
    remap[used] = np.arange(len(used))
    keep = prof.cell_in & (remap[cells.k] >= 0)  # cells of the used budgets
    xc = float(np.mean(prof.logM))
    sk, sx = remap[cells.k[keep]], cells.x[keep] - xc  # the used budgets' cells
    lc = np.log10([per[j]["C"] for j in used])
    W1, S1 = _cell_totals(cells, prof.runs.loss, keep)
    Y1 = cell_means(W1, S1)
    v0, y0, c0 = _joint_start(sk, sx, Y1, W1, len(used))
    z = lc - lc.mean()
    jm, fm = JointModel(sk, sx, z), JointModel(sk, sx, z, free_vertex=True)
    th = start(jm, Y1, W1, v0, y0, c0, iters=100)  # enough for the residuals; the regularised refit polishes
    # The shape prior's unit is the runs' noise, measured about the unregularised joint fit (a parabola's residuals
    # on a wide skewed profile are mostly misfit, which would let the prior overrule the shape the data show).
    r = jm.predict(th[None])[0] - Y1
    var = float((W1 * r * r).sum() / max(W1.sum() - jm.P, 1))
    jm.prior_w = fm.prior_w = var / PRIOR_SD**2
    th = jm.solve(th, W1[None], Y1[None], iters=500)[0]
    th_free = start(fm, Y1, W1, v0, y0, c0)
    return _Joint(used, keep, xc, sk, sx, lc, jm, fm, th, th_free)


def _joint_boot(prof: _Profiles, J: _Joint, boot: _Boot, given: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """Resampled parameters of the joint fit and (unless the between-budget scatter is `given`) of the free one."""
    jb = np.full((boot.n, J.jm.P), np.nan)
    fb = np.full((boot.n, J.fm.P), np.nan)
    for sl, W, S in _boot_sums(prof, prof.runs.budget, boot, "IsoFLOP joint fit") if boot.n else ():
        Wk, Yk = W[:, J.keep], cell_means(W[:, J.keep], S[:, J.keep])
        step = resample.chunk_size(len(J.sk), len(Wk), per_row=40)  # LM temporaries per cell
        for s in range(0, len(Wk), step):
            rows = slice(sl.start + s, min(sl.start + s + step, sl.stop))
            jb[rows] = J.jm.solve(J.th, Wk[s : s + step], Yk[s : s + step], iters=JOINT_ITERS)
            if given is None:
                fb[rows] = J.fm.solve(J.th_free, Wk[s : s + step], Yk[s : s + step], iters=FREE_ITERS)
    return jb, fb


def _joint_budgets(prof: _Profiles, J: _Joint, fb: np.ndarray, flat_check: bool) -> None:
    """Every used budget's own optimum (the free-vertex fit, on the shape the budgets share) into its report row,
    with a note where it lies outside its sizes or (flat_check) where its resamples cannot locate it."""
    v_free, _, _, y_free, c_free = J.fm.split(J.th_free)
    bv, _, _, by, _ = J.fm.split(fb)
    for i, j in enumerate(J.used):
        out = prof.per[j]
        _finish_budget(out, J.xc + v_free[i], y_free[i], J.xc + bv[:, i], by[:, i])
        x_in = J.sx[J.sk == i]
        lo, hi = x_in.min(), x_in.max()
        if not lo <= v_free[i] <= hi:
            out["notes"].append(
                f"this budget's own minimum (M={10 ** (J.xc + v_free[i]):.3g}) lies outside its sizes; "
                f"the joint fit places it from the shape the other budgets share"
            )
        elif flat_check and (
            why := _flat_warning((bv[:, i] - (lo + hi) / 2) / max((hi - lo) / 2, 1e-12), (hi - lo) / 2)
        ):
            out["notes"].append(why + "; kept: the joint fit weighs it by what its runs say")
        xs = np.linspace(lo, hi, 60)
        g = shape(LN10 * (xs - v_free[i]), *np.exp(J.th_free[:2]))[0]
        out["curve"] = {"M": (10 ** (J.xc + xs)).tolist(), "loss": (y_free[i] + c_free[i] * g).tolist()}
    for out in prof.per:
        if not out["used"]:
            _finish_budget(out, None, None, np.zeros(0), np.zeros(0))


def _fit_joint(res: dict, prof: _Profiles, boot: _Boot, given: dict | None) -> dict:
    """Every used budget's profile at once (analysis.isojoint); per-budget optima from the same shape, each free
    (bootstrapped too unless the between-budget scatter is `given`)."""
    for out in prof.per:
        out["used"] = not out["warnings"]
    if _skip(res, prof.per, boot.min_budgets):
        for out in prof.per:
            _finish_budget(out, None, None, np.zeros(0), np.zeros(0))
        return res
    J = _joint_point(prof)
    jb, fb = _joint_boot(prof, J, boot, given)
    _joint_budgets(prof, J, fb, bool(boot.n) and given is None)
    th, lc, xc = J.th, J.lc, J.xc
    b0 = xc + th[0] - th[1] * lc.mean()  # log10 M_opt = xc + m0 + a (lc - mean lc)
    laws = _law(lc, b0, th[1], len(J.used))
    res["shape"] = {"alpha": float(np.exp(th[2])), "beta": float(np.exp(th[3]))}
    if boot.n:
        ba = jb[:, 1].copy()
        bb0 = xc + jb[:, 0] - ba * lc.mean()
        v_free = J.fm.split(J.th_free)[0]
        bv = J.fm.split(fb)[0]
        X = np.stack([np.ones_like(lc), lc], -1)
        info = _between(X, xc + v_free, xc + bv, _budget_weights(xc + bv, given, len(J.used)), boot, bb0, ba, given)
        _law_samples(res, laws, info, (bb0, ba, xc + bv, lc))
    return _laws(res, laws, len(J.used))


def _budget_weights(logM_boot: np.ndarray, given: dict | None, K: int) -> np.ndarray:
    """Each budget's weight in the law's second level: the inverse of its optimum's variance over the resamples (or
    of the scatter `given` by another fit; equal weights when that fit kept other budgets)."""
    s2 = bt.robust_var(logM_boot) if given is None else np.asarray(given["s"], float) ** 2
    if len(s2) != K:
        s2 = np.ones(K)
    return 1 / np.where(np.isfinite(s2) & (s2 > 0), s2, np.nanmax(s2) if np.isfinite(s2).any() else 1.0)


def _cell_totals(cells: Cells, loss, keep) -> tuple[np.ndarray, np.ndarray]:
    """(W, S) of the point fit (every run once) on the kept cells."""
    W, S = cells.sums(np.ones((1, len(loss))), loss)
    return W[0, keep], S[0, keep]
